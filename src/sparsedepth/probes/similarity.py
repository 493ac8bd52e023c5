"""Residual-stream statistics: output variance, angular distance, block influence and the logit lens.

All read the raw stream h_0 (input of block 0) ... h_L (output of the last block) from the collector and
fold each micro-batch into float64 running sums. Cosines are computed in float64 because the angles of
interest are small (arccos is ill-conditioned near 1).
"""
from __future__ import annotations

import math

import torch

from .adapters import as_adapter
from .collector import StreamProbe, WindowBatch, loss_sum, run_stream_probes

__all__ = ["VarianceProbe", "AngularDistanceProbe", "BlockInfluenceProbe", "LogitLensProbe",
           "layer_variance", "angular_distance", "block_influence", "logit_lens"]


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)


class VarianceProbe(StreamProbe):
    """Per-layer output variance at inference: ``layer_var[l] = mean_tokens Var_d(h_{l+1})`` with the
    unbiased (÷(d−1)) variance across the hidden dimension of each token (paper-spec 1.1).

    Origin: Sun et al. 2025 (Curse of Depth): Pre-LN output variance grows with depth.
    Difference from the official code (paper-spec 5.4): its last entry is Var_d(ln_f(h_L)), the post-final-norm
    tensor with its learned gain; here every entry is the raw residual stream, and the post-norm value is
    reported separately as ``final_norm_var`` (``embed_var`` is h_0). ``max_abs[l]`` is the largest
    |h_{l+1}| entry over all tokens and dimensions (massive activations; ``embed_max_abs`` for h_0)."""

    name = "variance"

    def __init__(self, adapter):
        super().__init__(adapter)
        self.sums = torch.zeros(adapter.n_layers + 2, dtype=torch.float64)
        self.max_abs = torch.zeros(adapter.n_layers + 1, dtype=torch.float64)
        self.count = 0

    def update(self, batch: WindowBatch, pass_index: int) -> None:
        s = batch.streams
        self.max_abs = torch.maximum(self.max_abs, torch.stack([x.abs().amax().double() for x in s]).cpu())
        vals = [x.var(-1).double().sum() for x in s]  # h_0 .. h_L
        post = self.adapter.final_norm(s[-1].to(self.adapter.dtype)).float().var(-1).double().sum()
        self.sums += torch.stack(vals + [post]).cpu()
        self.count += batch.n_tokens

    def result(self) -> dict:
        v = (self.sums / max(self.count, 1)).tolist()
        m = self.max_abs.tolist()
        return {"layer_var": v[1:-1], "embed_var": v[0], "final_norm_var": v[-1], "max_abs": m[1:],
                "embed_max_abs": m[0], "n_tokens": self.count}


class AngularDistanceProbe(StreamProbe):
    """Angular distance between layers (Gromov et al. 2024):
    ``d(h_i, h_j) = arccos(cos(h_i, h_j)) / π`` on the last token of each window, averaged over windows.

    ``matrix`` is (L+1)×(L+1) over the states h_0 ... h_L (entry [i][j]: stream before block i vs before
    block j); ``n1[l] = d(h_l, h_{l+1})`` is block l's own change (the n = 1 curve of Gromov et al.).
    Not implemented in the official repo (paper-spec 1.9); states are raw residual streams (paper-spec 5.2)."""

    name = "angular_distance"

    def __init__(self, adapter):
        super().__init__(adapter)
        n = adapter.n_layers + 1
        self.sum = torch.zeros(n, n, dtype=torch.float64)
        self.count = 0

    def update(self, batch: WindowBatch, pass_index: int) -> None:
        v = torch.stack([x[:, -1] for x in batch.streams], dim=1).double()  # [B, L+1, d]
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        ang = torch.arccos((v @ v.transpose(1, 2)).clamp(-1.0, 1.0)) / math.pi
        self.sum += ang.sum(0).cpu()
        self.count += v.shape[0]

    def result(self) -> dict:
        m = self.sum / max(self.count, 1)
        m.fill_diagonal_(0.0)
        return {"n1": torch.diagonal(m, 1).tolist(), "matrix": m.tolist(), "token": "last",
                "n_windows": self.count}


class BlockInfluenceProbe(StreamProbe):
    """Block Influence (ShortGPT, Men et al. 2024): ``BI_l = 1 − E_t cos(h_{l,t}, h_{l+1,t})`` over all tokens,
    with h_l the input and h_{l+1} the output of block l. Not in the official repo (paper-spec 1.9)."""

    name = "block_influence"

    def __init__(self, adapter):
        super().__init__(adapter)
        self.sum = torch.zeros(adapter.n_layers, dtype=torch.float64)
        self.count = 0

    def update(self, batch: WindowBatch, pass_index: int) -> None:
        s = batch.streams
        self.sum += torch.stack([_cos(s[l], s[l + 1]).sum() for l in range(len(s) - 1)]).cpu()
        self.count += batch.n_tokens

    def result(self) -> dict:
        return {"block_influence": (1.0 - self.sum / max(self.count, 1)).tolist()}


class LogitLensProbe(StreamProbe):
    """Logit lens: ``loss[l] = mean_tokens CE(head(N_f(h_{l+1})), next token)``, decoding block l's output
    with the model's own final norm applied to that stream (its RMS statistics recomputed on h_{l+1}) and the
    model's head. The last entry equals the model's loss; ``embedding_loss`` decodes h_0.
    Origin: nostalgebraist 2020 "logit lens" (not in the official repo)."""

    name = "logit_lens"

    def __init__(self, adapter):
        super().__init__(adapter)
        self.sum = torch.zeros(adapter.n_layers + 1, dtype=torch.float64)
        self.count = 0

    def update(self, batch: WindowBatch, pass_index: int) -> None:
        for i, h in enumerate(batch.streams):
            self.sum[i] += loss_sum(self.adapter, h, batch.targets)
        self.count += batch.n_tokens

    def result(self) -> dict:
        m = (self.sum / max(self.count, 1)).tolist()
        return {"loss": m[1:], "embedding_loss": m[0], "base_loss": m[-1]}


def _run(cls, model, windows, batch_tokens: int) -> dict:
    ad = as_adapter(model)
    p = cls(ad)
    run_stream_probes(ad, windows, [p], batch_tokens=batch_tokens)
    return p.result()


def layer_variance(model, windows: torch.Tensor, *, batch_tokens: int = 4096) -> dict:
    """``{"layer_var": [L], "embed_var", "final_norm_var", "n_tokens"}``; see ``VarianceProbe``."""
    return _run(VarianceProbe, model, windows, batch_tokens)


def angular_distance(model, windows: torch.Tensor, *, batch_tokens: int = 4096) -> dict:
    """``{"n1": [L], "matrix": [[L+1]*(L+1)]}``; see ``AngularDistanceProbe``."""
    return _run(AngularDistanceProbe, model, windows, batch_tokens)


def block_influence(model, windows: torch.Tensor, *, batch_tokens: int = 4096) -> list[float]:
    """``[L]`` block influences; see ``BlockInfluenceProbe``."""
    return _run(BlockInfluenceProbe, model, windows, batch_tokens)["block_influence"]


def logit_lens(model, windows: torch.Tensor, *, batch_tokens: int = 4096) -> dict:
    """``{"loss": [L], "embedding_loss", "base_loss"}``; see ``LogitLensProbe``."""
    return _run(LogitLensProbe, model, windows, batch_tokens)
