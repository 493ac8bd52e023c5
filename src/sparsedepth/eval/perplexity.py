"""Held-out perplexity at a stated context length.

For windows w of T+1 tokens (inputs w[:T], targets w[1:]):

    loss = (1 / (n T)) * sum_{windows, t} -log p(w[t+1] | w[:t+1]),    ppl = exp(loss)

Every position of every window counts (no sliding stride), so the number depends on T: compare runs at the
same ``seq_len`` (paper-spec section 5, item 15).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from .zero_shot import _logits, eval_mode


def perplexity(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 8,
               autocast: bool | None = None) -> dict[str, float | int]:
    """``{"loss", "ppl", "seq_len", "n_tokens"}`` of ``model`` on ``windows`` [n, T+1] (from
    ``sparsedepth.data.val_windows``). Batched, no_grad; per-batch cross-entropy in float32, summed in
    float64. ``autocast`` (default: on CUDA) runs the forward in bfloat16."""
    if windows.dim() != 2 or windows.shape[1] < 2 or windows.shape[0] < 1:
        raise ValueError(f"windows must be a [n, seq_len + 1] tensor with n >= 1 and seq_len >= 1, got {tuple(windows.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seq_len = windows.shape[1] - 1
    max_len = getattr(getattr(model, "cfg", None), "max_seq_len", None)
    if max_len is not None and seq_len > max_len:
        raise ValueError(f"windows hold seq_len {seq_len} tokens but the model's max_seq_len is {max_len}; "
                         f"draw windows with seq_len <= {max_len}")
    device = next(model.parameters()).device
    autocast = device.type == "cuda" if autocast is None else autocast
    total = 0.0
    with eval_mode(model):
        for start in range(0, windows.shape[0], batch_size):
            w = windows[start:start + batch_size].to(device, dtype=torch.long)
            ctx = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with ctx:
                logits = _logits(model, w[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum")
            total += float(loss.double())
    n_tokens = windows.shape[0] * seq_len
    loss = total / n_tokens
    return {"loss": loss, "ppl": math.exp(loss), "seq_len": int(seq_len), "n_tokens": int(n_tokens)}
