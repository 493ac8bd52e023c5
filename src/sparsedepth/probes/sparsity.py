"""Sparsity measures: weight density, attention entropy / effective support, expert load, nominal density.

The official repository has no code for these (its analysis scripts were never committed, paper-spec 1.8,
5.11), so the definitions below are ours, following the proposal in paper-spec 1.8:

- Weight density (weight-decay study): for each weight matrix W of a block,
  ρ(τ) = fraction of entries with |W_ij| > τ·std(W), τ ∈ {0.1, 0.5}; pooled per kind (attn_qkv, attn_out,
  ffn_in, ffn_out, router; each matrix uses its own std, stacked experts one std per expert) and per layer.
  A Gaussian matrix gives ρ(0.1) = 0.920, ρ(0.5) = 0.617 (``gaussian_reference``); smaller = more
  near-zero weights. Plus a histogram of |W|/std(W) per layer with fixed bins (fractions).
- Attention entropy (sequence-length study): per layer, head and query t, H = −Σ_j a_tj log a_tj over the
  t+1 visible keys, and the effective support exp(H)/(t+1) ∈ (0, 1] (1 = uniform over the visible keys);
  averaged over windows and queries. Read from the attention probabilities of the ``math`` backend
  (``block.attn.probs``), which is switched on for this pass and restored.
- Expert load (MoE): from ``block.ffn.routing`` (top-k assignments), the fraction f_e of assignments per
  expert; load_balance = max(0, 1 − std(f)/mean(f)) (official compute_moe_global_metrics), load entropy
  −Σ f log f (and divided by log E), fraction of experts used, and the mean router probability per expert.
  The official utilisation hook routes the wrong tensor and records nothing (paper-spec 1.7); here the
  router's own top-k choice is counted.
- Nominal density: KV heads per query head 1/G (GQA) and active experts k/E (MoE).
"""
from __future__ import annotations

import math

import torch

from .adapters import ModelAdapter, as_adapter
from .collector import StreamProbe, WindowBatch, check_windows, run_stream_probes

__all__ = ["weight_density", "attention_sparsity", "ExpertProbe", "expert_load", "nominal_density", "TAUS",
           "HIST_EDGES"]

TAUS = (0.1, 0.5)
HIST_EDGES = [0.25 * i for i in range(21)] + [float("inf")]  # |w|/std in [0, 5] by 0.25, then overflow
GAUSSIAN_REFERENCE = {str(t): math.erfc(t / math.sqrt(2)) for t in TAUS}


def weight_density(model, taus: tuple[float, ...] = TAUS) -> dict:
    """``{"taus", "per_layer": {tau: [L]}, "per_kind": {kind: {tau: [L]}}, "per_matrix": {name: {tau: [L]}},
    "hist": {"edges", "per_layer"}, "gaussian_reference"}`` (None where a layer lacks that kind/matrix)."""
    ad = as_adapter(model)
    edges = torch.tensor(HIST_EDGES[1:-1], dtype=torch.float32)
    per_layer = {str(t): [] for t in taus}
    per_kind: dict[str, dict[str, list]] = {}
    per_matrix: dict[str, dict[str, list]] = {}
    hist = []
    L = ad.n_layers
    for l in range(L):
        tot = {str(t): 0 for t in taus}
        kind_cnt: dict[str, dict[str, float]] = {}
        counts = torch.zeros(len(HIST_EDGES) - 1, dtype=torch.float64)
        size = 0
        for name, kind, w in ad.weight_matrices(l):
            w = w.float()
            std = w.flatten(1).std(dim=1).clamp_min(1e-30)[:, None, None]
            r = (w.abs() / std)
            kc = kind_cnt.setdefault(kind, {"size": 0, **{str(t): 0 for t in taus}})
            kc["size"] += r.numel()
            pm = per_matrix.setdefault(name, {str(t): [None] * L for t in taus})
            for t in taus:
                c = int((r > t).sum())
                kc[str(t)] += c
                tot[str(t)] += c
                pm[str(t)][l] = c / r.numel()
            counts += torch.bincount(torch.bucketize(r.flatten().cpu(), edges, right=True),
                                     minlength=len(HIST_EDGES) - 1).double()
            size += r.numel()
        for t in taus:
            per_layer[str(t)].append(tot[str(t)] / max(size, 1))
        for kind, kc in kind_cnt.items():
            dst = per_kind.setdefault(kind, {str(t): [None] * L for t in taus})
            for t in taus:
                dst[str(t)][l] = kc[str(t)] / kc["size"]
        hist.append((counts / max(size, 1)).tolist())
    return {"taus": list(taus), "per_layer": per_layer, "per_kind": per_kind, "per_matrix": per_matrix,
            "hist": {"edges": [e if math.isfinite(e) else None for e in HIST_EDGES], "per_layer": hist,
                     "quantity": "|w| / std(W), fraction of a layer's weights per bin (last bin: > 5)"},
            "gaussian_reference": GAUSSIAN_REFERENCE}


def attention_sparsity(model, windows: torch.Tensor, *, n_windows: int = 4) -> dict:
    """Entropy and effective support per layer (mean over heads) and per layer and head, from
    ``n_windows`` windows run one at a time (probabilities are [H, T, T]). Returns ``{"skipped": reason}``
    when the model exposes no attention probabilities."""
    ad = as_adapter(model)
    w = check_windows(windows, ad)[:n_windows]
    sums: dict[int, torch.Tensor] = {}
    count = 0

    def on_layer(l, probs):
        p = probs.float()  # [B, H, T, T], rows sum to 1 over the visible keys
        ent = torch.special.entr(p).sum(-1)  # [B, H, T]; entr(0) = 0
        visible = torch.arange(1, p.shape[-1] + 1, device=p.device, dtype=torch.float32)
        sup = ent.exp() / visible
        s = torch.stack([ent.sum((0, 2)), sup.sum((0, 2))]).double().cpu()  # [2, H]
        sums[l] = sums.get(l, 0) + s

    for i in range(w.shape[0]):
        idx = w[i:i + 1, :-1].to(ad.device)
        reason = ad.attention_probs(idx, on_layer)
        if reason is not None:
            return {"skipped": reason}
        count += idx.numel()
    L = ad.n_layers  # a layer without attention probabilities (a custom block) gets None
    ent = [(sums[l][0] / count).tolist() if l in sums else None for l in range(L)]
    sup = [(sums[l][1] / count).tolist() if l in sums else None for l in range(L)]
    mean = lambda v: sum(v) / len(v) if v else None  # noqa: E731
    return {"entropy": [mean(e) for e in ent], "support": [mean(s) for s in sup],
            "entropy_per_head": ent, "support_per_head": sup, "n_windows": int(w.shape[0]),
            "seq_len": int(w.shape[1] - 1), "backend": "math" if ad.kind == "sparsedepth" else "eager"}


class ExpertProbe(StreamProbe):
    """Counts top-k routing assignments per layer and expert during the base forwards."""

    name = "expert"

    def __init__(self, adapter: ModelAdapter):
        super().__init__(adapter)
        self.mods = adapter.routing_modules()
        e = adapter.info().get("n_experts") or 0
        L = adapter.n_layers
        self.counts = torch.zeros(L, max(e, 1), dtype=torch.float64)
        self.prob = torch.zeros(L, max(e, 1), dtype=torch.float64)
        self.tokens = torch.zeros(L, dtype=torch.float64)

    def hooks(self):
        if not self.mods:
            return []

        def make(l):
            def hook(module, args, out):
                probs, experts = out
                e = probs.shape[-1]
                self.counts[l] += torch.bincount(experts.reshape(-1), minlength=e).double().cpu()
                self.prob[l] += probs.double().sum(0).cpu()
                self.tokens[l] += probs.shape[0]
            return hook

        return [(m, make(l)) for l, m in enumerate(self.mods) if m is not None]

    def update(self, batch: WindowBatch, pass_index: int) -> None:
        pass  # everything arrives through the routing hooks

    def result(self) -> dict:
        if not self.mods:
            return {"skipped": "no routing modules (dense model, or a Hugging Face MoE whose router is not hooked)"}
        e = self.counts.shape[1]
        f = self.counts / self.counts.sum(1, keepdim=True).clamp_min(1)
        std = f.std(1, unbiased=False)
        mean = f.mean(1)
        lb = (1 - std / mean.clamp_min(1e-30)).clamp_min(0)
        ent = torch.special.entr(f).sum(1)
        return {"n_experts": e, "top_k": self.adapter.info().get("top_k"), "load": f.tolist(),
                "load_balance": lb.tolist(), "load_balance_mean": float(lb.mean()),
                "load_entropy": ent.tolist(), "load_entropy_norm": (ent / math.log(e)).tolist() if e > 1 else None,
                "used_fraction": ((self.counts > 0).double().mean(1)).tolist(),
                "mean_prob": (self.prob / self.tokens.clamp_min(1)[:, None]).tolist()}


def expert_load(model, windows: torch.Tensor, *, batch_tokens: int = 4096) -> dict:
    """Expert utilisation per layer; see ``ExpertProbe`` and the module doc."""
    ad = as_adapter(model)
    p = ExpertProbe(ad)

    if p.mods:
        run_stream_probes(ad, windows, [p], batch_tokens=batch_tokens)
    return p.result()


def nominal_density(model) -> dict:
    """``{"kv": 1/G, "group_size": G, "experts": k/E (1.0 dense), "n_experts", "top_k"}``."""
    return as_adapter(model).nominal_density()
