"""OLMo-style pre-LN decoder: dense, GQA and MoE behind one ``ModelConfig`` (paper-spec 2.1-2.3).

Residual stream: ``u_l = h_l + Attn(N_a(h_l))``, ``h_{l+1} = u_l + FFN(N_f(u_l))``, logits = ``W_out N(h_L)``.

Reading internals without a second code path: every quantity the probes need passes through a module that
accepts ordinary forward hooks:
- ``model.blocks[l]``: input ``h_l`` (raw residual stream) and output tuple ``(h_{l+1}, aux, stats)``;
  a forward hook may return a replacement tuple (identity skip, linear replacement);
- ``block.attn`` / ``block.ffn``: sublayer outputs before the residual add (MoE: a tuple, output first);
- ``block.attn.probs``: attention probabilities (``math`` backend only);
- ``block.ffn.routing``: MoE router probabilities and chosen experts.
Training telemetry (``forward(..., telemetry=True)``) is computed inside the graph as small float32 tensors,
so the trainer reads every layer's statistics with a single host sync.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from . import kernels as kern
from .attention import Attention, resolve_backend, rope_cache
from .moe import MoEFeedForward, SwiGLU

STAT_KEYS = ("out_var", "attn_var", "ffn_var", "attn_norm", "ffn_norm")


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * g, computed in float32 and cast back (OLMo)."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()).type_as(x)


def token_var(x: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of the unbiased variance across the hidden dimension (paper-spec 1.1), float32."""
    x = x.detach().float()
    # explicit form: torch's var(-1) is several times slower on CPU for the small tensors of the CPU profiles
    return (x - x.mean(-1, keepdim=True)).pow(2).sum(-1).div(x.shape[-1] - 1).mean()


def token_norm(x: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of the per-token L2 norm (token-normalised, unlike the official Frobenius norm)."""
    return x.detach().float().norm(dim=-1).mean()


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = MoEFeedForward(cfg) if cfg.is_moe else SwiGLU(cfg.d_model, cfg.ffn_hidden)
        # LayerNorm Scaling (Sun et al. 2025): normed inputs times 1/sqrt(l+1), l 0-indexed.
        self.lns = 1.0 / math.sqrt(layer_idx + 1) if cfg.layernorm_scaling else 1.0

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, telemetry: bool = False):
        a = self.attn(self.attn_norm(x) * self.lns, cos, sin)
        u = x + a
        f = self.ffn(self.ffn_norm(u) * self.lns)
        if isinstance(f, tuple):
            f, aux, load = f
        else:
            aux, load = x.new_zeros(2, dtype=torch.float32), None
        out = u + f
        stats = None
        if telemetry:
            stats = {"vec": torch.stack([token_var(out), token_var(a), token_var(f), token_norm(a), token_norm(f)]),
                     "load": None if load is None else load.detach()}
        return out, aux, stats


class ModelOutput(NamedTuple):
    logits: torch.Tensor | None  # None where the fused head + loss ran (training with kernels="triton")
    loss: torch.Tensor | None  # lm_loss + weighted aux losses
    lm_loss: torch.Tensor | None
    aux_loss: torch.Tensor | None  # [lb, z] per layer, shape [L, 2], unweighted
    stats: dict | None  # telemetry: STAT_KEYS -> [L] tensors, "final_var" scalar, "expert_load" [L, E]


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)  # untied from the embedding
        cos, sin = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        w = torch.full((cfg.n_layers,), 1.0)
        if cfg.moe_aux_scaling == "mean":
            w /= cfg.n_layers
        elif cfg.moe_aux_scaling == "compound":  # the official bug: block l gets weight / L^(l+1)
            w = torch.tensor([float(cfg.n_layers) ** -(i + 1) for i in range(cfg.n_layers)])
        self.register_buffer("aux_layer_weight", w, persistent=False)
        self._output_fn = _output  # compile_regions swaps in a compiled version
        self.kernels = "torch"  # set_kernels: what ModelConfig.kernels resolves to on this model's device
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, init_std^2) for every matrix and embedding, no depth scaling; norm gains 1 (paper-spec 2.1)."""
        for p in self.parameters():
            if p.dim() == 1:  # only the RMSNorm gains are vectors
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, mean=0.0, std=self.cfg.init_std)

    @property
    def attn_backend(self) -> str:
        return self.blocks[0].attn.backend

    def set_attn_backend(self, name: str) -> str:
        """Switch every attention layer to ``name`` (resolved for this model's device); returns what will run."""
        resolved = resolve_backend(name, self.embed.weight.device)
        for blk in self.blocks:
            blk.attn.backend = resolved
        return resolved

    def set_kernels(self, name: str) -> str:
        """Use the hand-written kernels (``"triton"``) where this model's device allows; returns what will run."""
        self.kernels = kern.resolve(name, self.embed.weight.device)
        for m in self.modules():
            if isinstance(m, SwiGLU):
                m.kernels = self.kernels
        return self.kernels

    def output(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        """(final normed stream, logits, mean LM loss or None): the head and loss, one compilable region."""
        return self._output_fn(self, x, targets)

    def compile_regions(self, hooks_eager: bool = False) -> None:
        """Regional compilation: torch.compile each block and the head + loss, not the whole forward.

        Every block has the same code and shapes, so one compiled graph serves all layers and every depth:
        compile time stops growing with L and the inductor cache is shared by the depth sweep's models.
        Parameter names and the state dict are unchanged. Blocks are compiled in place (``nn.Module.compile``),
        module hooks included; ``hooks_eager`` compiles only each block's ``forward``, so hooks that must not be
        traced (FSDP's parameter gathering) stay outside the graph.
        """
        for blk in self.blocks:
            if hooks_eager:
                blk.forward = torch.compile(blk.forward)
            else:
                blk.compile()
        self._output_fn = torch.compile(_output)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, telemetry: bool = False) -> ModelOutput:
        bsz, seqlen = idx.shape
        if seqlen > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {seqlen} exceeds model.max_seq_len {self.cfg.max_seq_len}")
        x = self.embed(idx)
        auxes, vecs, loads = [], [], []
        for blk in self.blocks:
            x, aux, st = blk(x, self.rope_cos, self.rope_sin, telemetry)
            auxes.append(aux)
            if telemetry:
                vecs.append(st["vec"])
                loads.append(st["load"])
        hn, logits, lm_loss = self.output(x, targets)
        aux = torch.stack(auxes)
        loss = lm_loss
        if targets is not None:
            if self.cfg.is_moe:
                w = torch.tensor([self.cfg.lb_loss_weight, self.cfg.z_loss_weight], device=aux.device)
                loss = loss + (aux * w).sum(-1).mul(self.aux_layer_weight).sum()
        stats = None
        if telemetry:
            v = torch.stack(vecs)  # [L, len(STAT_KEYS)]
            stats = {k: v[:, i] for i, k in enumerate(STAT_KEYS)}
            stats["final_var"] = token_var(hn)
            if self.cfg.is_moe:
                stats["expert_load"] = torch.stack(loads)
        return ModelOutput(logits, loss, lm_loss, aux, stats)


def _output(model: "Transformer", x: torch.Tensor, targets: torch.Tensor | None):
    hn = model.norm(x)
    if targets is not None and model.kernels == "triton" and torch.is_grad_enabled():
        # training: head and loss in one op whose logits buffer ends up holding their gradient
        return hn, None, kern.linear_cross_entropy(hn, model.head.weight, targets, model.kernels)
    logits = model.head(hn)
    lm_loss = None
    if targets is not None:
        lm_loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
    return hn, logits, lm_loss


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu") -> Transformer:
    """Construct on ``device`` and resolve the attention backend and kernels there (``model.attn_backend`` and
    ``model.kernels`` say which)."""
    model = Transformer(cfg).to(device)
    model.set_attn_backend(cfg.attn_backend)
    model.set_kernels(cfg.kernels)
    return model
