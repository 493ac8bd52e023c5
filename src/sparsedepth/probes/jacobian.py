"""Block Jacobians: how close is each block to the identity map?

For block l with input X = h_l and output Y = h_{l+1} (each [B, T, d]) the token-averaged Jacobian, including
the causal cross-position terms (paper-spec 1.3), is

    J[i, j] = (1 / (B·T)) Σ_{b, t'} Σ_{t ≥ t'} ∂Y[b, t, i] / ∂X[b, t', j],

i.e. row i is the vector-Jacobian product of Σ_{b,t} Y[b, t, i] with respect to X, summed over (b, t').
It is computed exactly with ``torch.func.vjp`` and ``torch.func.vmap`` over the d one-hot cotangents
(chunked, so memory stays bounded), in float32 with float64 accumulation. The residual connection
contributes exactly δ_ij. Per layer:

    jacobian_norm     = ||J − I||_F / d                 (RMS entry of J − I; the paper's "Frobenius norm")
    off_diagonal_norm = ||J ⊙ (1 − I)||_F / sqrt(d² − d)
    diagonal_mean, diagonal_std (unbiased) of diag(J)
    frobenius_norm    = ||J||_F,   spectral_norm = σ_max(J),   deviation_spectral_norm = σ_max(J − I)

Origin: Sun et al. 2025's argument that deep blocks' derivatives approach the identity.
Differences from the official code (paper-spec 1.3, 5.3): it runs and accumulates in bf16, which quantises
diagonal entries near 1 at ≈2⁻⁷ — the same order as the reported ||J − I||_F/d; its "element-wise" method
equals the row-wise one divided by the micro-batch size; its dense last layer differentiates the
post-final-norm state (paper-spec 1.0); and its data are unseeded chunks of a training shard. Here: float32
(a float32 copy of the block if the model is bf16), raw block outputs for every layer, seeded held-out windows.
J is stored output × input (the official stores its transpose; the norms are the same).

Cost: d VJPs per layer per micro-batch, hence a small default sample (4 windows × 128 tokens) and the
option to probe only some ``layers``. Attention runs on the ``math``/``eager`` path, whose ops torch.func
can batch (the fused SDPA backward has no batching rule).
"""
from __future__ import annotations

import copy

import torch

from .adapters import as_adapter, hidden
from .collector import ActivationCollector, BlockCall

__all__ = ["jacobian", "block_jacobian", "jacobian_metrics"]


def _f32(obj):
    """Floating tensors inside call arguments, cast to float32 (for a float32 copy of a bf16 block)."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, tuple):
        return tuple(_f32(o) for o in obj)
    if isinstance(obj, list):
        return [_f32(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _f32(v) for k, v in obj.items()}
    return obj


def block_jacobian(block: torch.nn.Module, call: BlockCall, x: torch.Tensor, chunk_size: int | None = None
                   ) -> torch.Tensor:
    """Σ over the (b, t') of ∂(Σ_{b,t} Y[b,t,i]) / ∂X[b,t',j] as a float64 [d, d] matrix (not yet divided by the
    token count). ``block`` is called as ``call(block, x)``; x is float32 [B, T, d]."""
    d = x.shape[-1]
    chunk = min(d, chunk_size or d)

    def f(inp):
        return hidden(call(block, inp)).float()

    with torch.no_grad():  # parameters are constants; torch.func differentiates only w.r.t. x
        _, vjp_fn = torch.func.vjp(f, x)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        rows = []
        for i in range(0, d, chunk):
            e = eye[i:i + chunk]
            cot = e[:, None, None, :].expand(e.shape[0], *x.shape)
            (g,) = torch.func.vmap(vjp_fn)(cot)  # [c, B, T, d]
            rows.append(torch.sum(g, dim=(1, 2), dtype=torch.float64))
            del g
    return torch.cat(rows)


def jacobian_metrics(j: torch.Tensor) -> dict:
    """The per-layer scalars of a [d, d] Jacobian (see module doc)."""
    j = j.double()
    d = j.shape[0]
    eye = torch.eye(d, dtype=j.dtype, device=j.device)
    diag = j.diagonal()
    return {
        "jacobian_norm": float(torch.linalg.matrix_norm(j - eye) / d),
        "off_diagonal_norm": float(torch.linalg.matrix_norm(j * (1 - eye)) / (d * d - d) ** 0.5) if d > 1 else 0.0,
        "diagonal_mean": float(diag.mean()),
        "diagonal_std": float(diag.std()) if d > 1 else 0.0,
        "frobenius_norm": float(torch.linalg.matrix_norm(j)),
        "spectral_norm": float(torch.linalg.matrix_norm(j, ord=2)),
        "deviation_spectral_norm": float(torch.linalg.matrix_norm(j - eye, ord=2)),
    }


def _auto_chunk(ad, tokens: int, seq_len: int) -> int:
    """Cotangents per vmap call so one call's intermediates stay near 1 GiB (GPU) / 128 MiB (CPU)."""
    d = ad.d_model
    heads = ad.info().get("n_heads") or 1
    per = tokens * (16 * d + heads * seq_len)  # floats per cotangent: FFN hidden + attention scores
    budget = (1 << 28) if ad.device.type == "cuda" else (1 << 25)
    return max(1, min(d, budget // max(per, 1)))


def jacobian(model, windows: torch.Tensor, *, n_windows: int = 4, seq_len: int = 128,
             layers: list[int] | None = None, chunk_size: int | None = None, batch_tokens: int = 512,
             return_matrices: bool = False) -> dict:
    """Per-layer Jacobian metrics on the first ``n_windows`` windows cut to ``seq_len`` tokens.

    Returns lists of length L for each key of ``jacobian_metrics`` (None for layers not in ``layers``), plus
    means over the probed layers, ``n_tokens`` and, with ``return_matrices``, the [L][d][d] matrices."""
    ad = as_adapter(model)
    if n_windows < 1 or seq_len < 1:
        raise ValueError(f"jacobian: n_windows and seq_len must be >= 1, got {n_windows}, {seq_len}")
    w = windows[:n_windows, : seq_len + 1]
    L = ad.n_layers
    layers = list(range(L)) if layers is None else sorted(set(layers))
    if any(not 0 <= l < L for l in layers):
        raise ValueError(f"jacobian: layers must be in [0, {L - 1}], got {layers}")
    sums = {l: torch.zeros(ad.d_model, ad.d_model, dtype=torch.float64, device=ad.device) for l in layers}
    n = 0
    with ad.attention_mode("math"):
        for batch in ActivationCollector(ad, w, batch_tokens=batch_tokens):
            chunk = chunk_size or _auto_chunk(ad, batch.n_tokens, batch.inputs.shape[1])
            for l in layers:
                blk, call = ad.blocks[l], batch.calls[l]
                if ad.dtype != torch.float32:  # never differentiate in bf16
                    blk = copy.deepcopy(blk).float()
                    call = BlockCall(_f32(call.args), _f32(call.kwargs), call.key)
                sums[l] += block_jacobian(blk, call, batch.streams[l], chunk)
            n += batch.n_tokens
    per = {l: jacobian_metrics(sums[l] / n) for l in layers}
    keys = list(next(iter(per.values())).keys()) if per else []
    out: dict = {k: [per[l][k] if l in per else None for l in range(L)] for k in keys}
    for k in ("jacobian_norm", "off_diagonal_norm", "diagonal_mean"):
        if per:
            out[f"mean_{k}"] = sum(per[l][k] for l in layers) / len(layers)
    out.update({"layers": layers, "n_tokens": n, "n_windows": int(w.shape[0]), "seq_len": int(w.shape[1] - 1),
                "method": "exact token-averaged VJP rows (cross-position terms), float32, float64 accumulation"})
    if return_matrices:
        out["matrices"] = [(sums[l] / n).tolist() if l in sums else None for l in range(L)]
    return out
