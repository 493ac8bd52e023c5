"""Causal self-attention with RoPE, MHA/GQA and four interchangeable backends.

Backends (``ModelConfig.attn_backend``):
- ``sdpa``: torch ``scaled_dot_product_attention`` (FlashAttention / memory-efficient kernels on CUDA, a
  fused CPU kernel elsewhere). Available everywhere. GQA goes through SDPA's ``enable_gqa``: on the H200 expanding
  K/V heads first (``repeat_interleave``) made a G=4 layer 33 % slower (3.41 vs 2.57 ms forward+backward).
- ``cudnn``: the same SDPA call restricted to NVIDIA's cuDNN fused attention kernel (CUDA only; K/V heads
  expanded for GQA). In the compiled training step on the H200 SDPA already picks cuDNN's kernels, so both
  train at one speed (651k tokens/s); a single eager layer timed cuDNN 16-25 % slower in one round and
  within 8 % either way in another (bench ``attention``).
- ``xformers``: ``xformers.ops.memory_efficient_attention`` (CUDA only: xformers has no CPU kernels). Its
  grouped 5-D form has no backward kernel, so K/V heads are expanded to the query heads first.
- ``math``: explicit softmax(QK^T/sqrt(d))V in float32. The reference for tests, and the only path that
  exposes attention probabilities (through the ``probs`` identity module, for forward hooks).
- ``auto``: a documented rule, not a guess: ``sdpa`` everywhere. On the H200 SDPA measured 1.5-1.8x faster
  than xformers 0.0.35 for forward+backward, and restricting it to FlashAttention-2 or memory-efficient
  attention slowed the L=16 training step by 5 % and 24 % (``sparsedepth bench``, ``scripts/profile_step.py
  --sdpa``); on CPU neither xformers nor cuDNN can run. The resolved name is stored in ``Attention.backend``
  and reported by the trainer.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import ATTN_BACKENDS, ModelConfig


def resolve_backend(name: str, device: torch.device | str) -> str:
    """Map a configured backend to the one that will run on ``device``; errors name the fix."""
    dev = torch.device(device).type
    if name not in ATTN_BACKENDS:  # fail here, not at the first forward
        raise ValueError(f"unknown attention backend {name!r}; choose one of {ATTN_BACKENDS}")
    if name == "auto":
        return "sdpa"
    if name == "cudnn" and dev != "cuda":
        raise RuntimeError("attn_backend='cudnn' needs a CUDA device (it is NVIDIA's cuDNN attention kernel); "
                           "use attn_backend='sdpa' or 'auto' elsewhere")
    if name == "xformers":
        if dev != "cuda":
            raise RuntimeError("attn_backend='xformers' needs a CUDA device (xformers has no CPU kernels); "
                               "use attn_backend='sdpa' or 'auto' on CPU")
        try:
            import xformers.ops  # noqa: F401
        except Exception as e:  # ImportError, or its CUDA extension failing to load
            raise RuntimeError(f"attn_backend='xformers' but xformers cannot be imported ({e}); "
                               "install xformers==0.0.35 (and libcudart.so.12) or use attn_backend='sdpa'") from e
    return name


def rope_cache(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [seq_len, head_dim/2] in float32 (RoPE is applied in full precision, as OLMo does)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the last dim; x is [B, T, H, hd]."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        kv_dim = cfg.n_kv_heads * cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, cfg.d_model + 2 * kv_dim, bias=False)  # fused, as OLMo's att_proj
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.probs = nn.Identity()  # math backend routes probabilities through here so hooks can read them
        self.backend = cfg.attn_backend if cfg.attn_backend != "auto" else "sdpa"

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        bsz, seqlen, d = x.shape
        kv_dim = self.n_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([d, kv_dim, kv_dim], dim=-1)
        q = apply_rope(q.view(bsz, seqlen, self.n_heads, self.head_dim), cos[:seqlen], sin[:seqlen])
        k = apply_rope(k.view(bsz, seqlen, self.n_kv_heads, self.head_dim), cos[:seqlen], sin[:seqlen])
        v = v.view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        g = self.n_heads // self.n_kv_heads
        # xformers' grouped 5-D form has no backward kernel, and cuDNN's support for SDPA's enable_gqa depends
        # on the torch version: give both MHA shapes
        if g > 1 and self.backend in ("cudnn", "xformers"):
            k, v = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
        if self.backend in ("sdpa", "cudnn"):
            kernel = sdpa_kernel([SDPBackend.CUDNN_ATTENTION]) if self.backend == "cudnn" else nullcontext()
            with kernel:
                y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   is_causal=True, enable_gqa=self.backend == "sdpa" and g > 1)
            y = y.transpose(1, 2)
        elif self.backend == "xformers":
            import xformers.ops as xops

            y = xops.memory_efficient_attention(q, k, v, attn_bias=xops.LowerTriangularMask())
        elif self.backend == "math":
            y = self._math(q, k, v)
        else:
            raise RuntimeError(f"unknown attention backend {self.backend!r}")
        return self.out(y.reshape(bsz, seqlen, d))

    def _math(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        g, dtype = self.n_heads // self.n_kv_heads, q.dtype
        q, k, v = (t.transpose(1, 2).float() for t in (q, k, v))  # [B, H, T, hd]
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        t = scores.shape[-1]
        causal = torch.ones(t, t, dtype=torch.bool, device=scores.device).tril()
        probs = self.probs(scores.masked_fill(~causal, float("-inf")).softmax(-1))  # [B, H, T, T]
        return (probs @ v).transpose(1, 2).to(dtype)
