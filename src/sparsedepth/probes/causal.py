"""Causal (skip) score: how much does removing block s change what later blocks compute?

Skip block s by identity substitution (h̄_{s+1} = h_s, the block's output replaced by its input) and compare
every later block's residual update with the unperturbed one, layer for layer:

    Δ_l = h_{l+1} − h_l (base run),   Δ̄_l = h̄_{l+1} − h̄_l (run with s skipped),
    C[s, l] = mean_tokens ||Δ̄_l − Δ_l||₂ / mean_tokens ||Δ_l||₂      for l > s, else 0

(L2 over the hidden dimension per token; a ratio of means, 0 when the denominator is below 1e-8).

Scalar: ``score`` = mean over s = 0..L−2 of ``per_layer[s] = mean_{l>s} C[s, l]``. We choose this because the
official code's only aggregation is exactly that per-skipped-layer average (mean(C[s, s+1:])), so averaging it
weights every skipped layer equally; the alternative, the mean of the strict upper triangle
(``score_upper_mean``), weights early layers by their number of successors (L−1−s). Both are reported; the
paper's own aggregation is unreleased (paper-spec 1.5). ``per_layer[L−1]`` is 0 (no later layers) and is
excluded from ``score``. With one layer both scores are undefined: null, with a ``reason``.

Origin: Csordás, Manning, Potts 2025 (effect of skipping a layer on later layers' computations).
Differences from the official code (paper-spec 1.5, 5.2): it skips via ``config.skip_layer_ids`` and reads
``output_hidden_states``, whose tuple shortens by one for dense models, so it compares block l+1 of the
skipped run with block l of the base run (and its last "update" involves the post-final-norm state); here the
stream comes from hooks and the skipped run keeps the same layer indices, so C[s, l] always compares block l
with block l. Computed in float32, not bf16.

Implementation: one base forward per micro-batch (the collector); each skip replays layers s+1..L−1 from the
cached h_s, which is the same computation as a full forward with an identity hook on block s.
"""
from __future__ import annotations

import torch

from .adapters import as_adapter
from .collector import StreamProbe, WindowBatch, replay, run_stream_probes

__all__ = ["CausalProbe", "causal"]


class CausalProbe(StreamProbe):
    name = "causal"

    def __init__(self, adapter):
        super().__init__(adapter)
        L = adapter.n_layers
        self.num = torch.zeros(L, L, dtype=torch.float64)
        self.den = torch.zeros(L, dtype=torch.float64)
        self.count = 0

    def update(self, batch: WindowBatch, pass_index: int) -> None:
        s_ = batch.streams
        L = self.adapter.n_layers
        deltas = [s_[l + 1] - s_[l] for l in range(L)]
        self.den += torch.stack([d.norm(dim=-1).double().sum() for d in deltas]).cpu()
        for s in range(L - 1):
            row = torch.zeros(L, dtype=torch.float64, device=s_[0].device)

            def on_layer(l, x, y, row=row):
                row[l] = ((y - x) - deltas[l]).norm(dim=-1).double().sum()

            replay(self.adapter, batch, s + 1, s_[s], on_layer=on_layer)  # block s replaced by identity
            self.num[s] += row.cpu()
        self.count += batch.n_tokens

    def result(self) -> dict:
        L = self.adapter.n_layers
        den = self.den / max(self.count, 1)
        num = self.num / max(self.count, 1)
        c = torch.where(den[None, :] >= 1e-8, num / den.clamp_min(1e-300)[None, :], torch.zeros_like(num))
        c = torch.triu(c, diagonal=1)
        per_layer = [float(c[s, s + 1:].mean()) if s < L - 1 else 0.0 for s in range(L)]
        upper = c[torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)]
        out = {"matrix": c.tolist(), "per_layer": per_layer,
               "score": sum(per_layer[:-1]) / (L - 1) if L > 1 else None,
               "score_upper_mean": float(upper.mean()) if upper.numel() else None,
               "update_norm": den.tolist(), "n_tokens": self.count,
               "aggregation": "score = mean over skipped layers s of mean_{l>s} C[s,l]"}
        if L < 2:  # no block has a later block whose computation it could change
            out["reason"] = "undefined for a 1-layer model: no layer follows a skipped one"
        return out


def causal(model, windows: torch.Tensor, *, batch_tokens: int = 4096) -> dict:
    """``{"matrix": [[L]*L], "per_layer": [L], "score", "score_upper_mean", ...}``; see module doc."""
    ad = as_adapter(model)
    p = CausalProbe(ad)
    run_stream_probes(ad, windows, [p], batch_tokens=batch_tokens)
    return p.result()
