"""Usefulness score: can a block be replaced by its best linear map without hurting the loss?

For each block l fit ``Y ≈ X W + b`` (X = h_l, Y = h_{l+1}, all tokens of the windows) by least squares, run
the model with block l replaced by ``x ↦ x W + b`` and compare losses (paper-spec 1.4):

    loss_ratio_l = L_l / L_0,   useful_l = loss_ratio_l > 1.1,   score = (#useful layers) / L,

with L = mean next-token cross-entropy over the windows. Beside it, ``skip`` scores plain layer removal
(block l replaced by the identity, h_{l+1} = h_l) the same way. The identity is one of the linear maps the
fit chooses from, so where removal hurts and the fitted replacement does not, the block's effect is linear;
where both hurt alike, it is what no linear map captures. Protocol (as the official code): the map is fitted
and evaluated on the same windows; nothing is held out between fit and evaluation.

Fit: normal equations in float64 from streamed sums (Σx, Σy, Σxxᵀ, Σxyᵀ, Σ|y|²), so memory does not grow
with the number of tokens. The bias is eliminated by centring (W = Cov(X)⁻¹ Cov(X, Y), b = ȳ − x̄W) and the
covariance is Jacobi-scaled before a Cholesky solve; when Cholesky fails or the scaled condition number
exceeds ``max_cond``, a ridge ``λ·tr(C)/d·I`` is added (reported per layer as ``ridge``).

Origin: least-squares layer linearisation (Razzhigaev et al. 2024; ReplaceMe 2025); the 10 % threshold and the
fraction-of-layers aggregation are the paper's. Differences from the official code (paper-spec 5.1, 5.16):
it sets ``nn.Linear.weight = W`` and so applies ``x Wᵀ + b`` (the transpose of the fit) — reproduced here
only under ``paper_compat`` and reported next to the fixed value; it fits with ``torch.linalg.lstsq`` on all
tokens held in GPU memory in bf16-derived fp32, and fits the dense last layer to the post-final-norm state
(double norm); here every layer uses the raw stream.
"""
from __future__ import annotations

import torch

from .adapters import as_adapter
from .collector import StreamProbe, WindowBatch, loss_sum, replay, run_stream_probes

__all__ = ["UsefulnessProbe", "usefulness", "solve_linear"]

THRESHOLD = 1.1


def solve_linear(n: int, sx: torch.Tensor, sy: torch.Tensor, sxx: torch.Tensor, sxy: torch.Tensor, *,
                 max_cond: float = 1e12, ridge: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Least squares ``y ≈ x W + b`` from float64 sums over n rows. Returns (W [d_in, d_out], b, ridge λ used,
    condition number of the Jacobi-scaled covariance)."""
    mx, my = sx / n, sy / n
    cxx = sxx / n - torch.outer(mx, mx)
    cxy = sxy / n - torch.outer(mx, my)
    s = cxx.diagonal().clamp_min(0).sqrt()
    s = torch.where(s > 0, s, torch.ones_like(s))
    cs, rs = cxx / torch.outer(s, s), cxy / s[:, None]
    ev = torch.linalg.eigvalsh(cs)
    cond = float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf")
    lam = 0.0
    chol, info = torch.linalg.cholesky_ex(cs)
    eye = torch.eye(cs.shape[0], dtype=cs.dtype, device=cs.device)
    scale = float(cs.trace()) / cs.shape[0]
    while int(info) != 0 or (lam == 0.0 and cond > max_cond):
        lam = ridge * scale if lam == 0.0 else lam * 100
        chol, info = torch.linalg.cholesky_ex(cs + lam * eye)
        if lam > scale:  # cannot happen for a PSD covariance; guard against NaN input
            raise FloatingPointError("usefulness fit: covariance is not positive semi-definite (NaN/inf streams?)")
    w = torch.cholesky_solve(rs, chol) / s[:, None]
    return w, my - mx @ w, lam, cond


class UsefulnessProbe(StreamProbe):
    """Two passes: pass 0 streams the fit sums and the base loss, pass 1 evaluates each replacement by
    replaying layers l+1..L-1 from the replaced stream (the prefix is the cached base stream)."""

    name = "usefulness"
    passes = 2

    def __init__(self, adapter, *, paper_compat: bool = False, threshold: float = THRESHOLD,
                 max_cond: float = 1e12, ridge: float = 1e-8):
        super().__init__(adapter)
        L, d, dev = adapter.n_layers, adapter.d_model, adapter.device
        self.paper_compat, self.threshold, self.max_cond, self.ridge = paper_compat, threshold, max_cond, ridge
        z = dict(dtype=torch.float64, device=dev)
        self.sx, self.sy, self.syy = torch.zeros(L, d, **z), torch.zeros(L, d, **z), torch.zeros(L, **z)
        self.sxx, self.sxy = torch.zeros(L, d, d, **z), torch.zeros(L, d, d, **z)
        self.n = 0
        self.base = 0.0
        self.loss = torch.zeros(L, dtype=torch.float64)
        self.loss_t = torch.zeros(L, dtype=torch.float64)
        self.loss_skip = torch.zeros(L, dtype=torch.float64)
        self.n_eval = 0

    def update(self, batch: WindowBatch, pass_index: int) -> None:
        s = batch.streams
        if pass_index == 0:
            for l in range(self.adapter.n_layers):
                x, y = s[l].reshape(-1, s[l].shape[-1]).double(), s[l + 1].reshape(-1, s[l].shape[-1]).double()
                self.sx[l] += x.sum(0)
                self.sy[l] += y.sum(0)
                self.syy[l] += y.pow(2).sum()
                self.sxx[l] += x.T @ x
                self.sxy[l] += x.T @ y
            self.n += batch.n_tokens
            self.base += loss_sum(self.adapter, s[-1], batch.targets)
            return
        for l in range(self.adapter.n_layers):
            x = s[l].double()
            variants = [(self.w[l], self.loss)] + ([(self.w[l].T, self.loss_t)] if self.paper_compat else [])
            for wmat, acc in variants:
                h = (x @ wmat + self.b[l]).float()
                out = replay(self.adapter, batch, l + 1, h)
                acc[l] += loss_sum(self.adapter, out, batch.targets)
            self.loss_skip[l] += loss_sum(self.adapter, replay(self.adapter, batch, l + 1, s[l]), batch.targets)
        self.n_eval += batch.n_tokens

    def end_pass(self, pass_index: int) -> None:
        if pass_index != 0:
            return
        self.w, self.b, self.lam, self.cond, self.r2 = [], [], [], [], []
        for l in range(self.adapter.n_layers):
            w, b, lam, cond = solve_linear(self.n, self.sx[l], self.sy[l], self.sxx[l], self.sxy[l],
                                           max_cond=self.max_cond, ridge=self.ridge)
            self.w.append(w), self.b.append(b), self.lam.append(lam), self.cond.append(cond)
            # R² of the fit from the same sums: residual = tr(Cyy) - 2 tr(Wᵀ Cxy) + tr(Wᵀ Cxx W)
            n, mx, my = self.n, self.sx[l] / self.n, self.sy[l] / self.n
            cxx = self.sxx[l] / n - torch.outer(mx, mx)
            cxy = self.sxy[l] / n - torch.outer(mx, my)
            tyy = float(self.syy[l] / n - my @ my)
            res = tyy - 2 * float((w * cxy).sum()) + float((w * (cxx @ w)).sum())
            self.r2.append(1.0 - res / tyy if tyy > 0 else 1.0)
        del self.sxx, self.sxy  # the largest buffers; the solution is all pass 1 needs

    def _scores(self, loss: torch.Tensor) -> dict:
        base = self.base / max(self.n, 1)
        lm = (loss / max(self.n_eval, 1)).tolist()
        ratio = [v / base for v in lm]
        useful = [r > self.threshold for r in ratio]
        return {"loss_ratio": ratio, "useful": useful, "score": sum(useful) / len(useful), "loss": lm,
                "loss_increase": [v - base for v in lm], "mean_ratio": sum(ratio) / len(ratio)}

    def result(self) -> dict:
        out = {**self._scores(self.loss), "base_loss": self.base / max(self.n, 1), "threshold": self.threshold,
               "ridge": self.lam, "cond": [c if c != float("inf") else None for c in self.cond], "r2": self.r2,
               "n_tokens": self.n, "protocol": "fitted and evaluated on the same windows (as the official code)",
               "skip": {**self._scores(self.loss_skip), "note": "block replaced by the identity (layer removed)"}}
        if self.paper_compat:
            out["paper_compat"] = {**self._scores(self.loss_t),
                                   "note": "official bug: the replacement applies x @ W^T + b (nn.Linear.weight = W)"}
        return out


def usefulness(model, windows: torch.Tensor, *, paper_compat: bool = False, threshold: float = THRESHOLD,
               batch_tokens: int = 4096, max_cond: float = 1e12, ridge: float = 1e-8) -> dict:
    """``{"loss_ratio": [L], "useful": [L], "score", "base_loss", ... , "paper_compat": {...}}``; see module doc."""
    ad = as_adapter(model)
    p = UsefulnessProbe(ad, paper_compat=paper_compat, threshold=threshold, max_cond=max_cond, ridge=ridge)
    run_stream_probes(ad, windows, [p], batch_tokens=batch_tokens)
    return p.result()
