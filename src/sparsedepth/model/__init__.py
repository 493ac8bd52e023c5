"""The decoder family: dense, GQA and MoE behind one ModelConfig."""
from .attention import resolve_backend
from .transformer import STAT_KEYS, Block, ModelOutput, RMSNorm, Transformer, build_model

__all__ = ["Block", "ModelOutput", "RMSNorm", "STAT_KEYS", "Transformer", "build_model", "resolve_backend"]
