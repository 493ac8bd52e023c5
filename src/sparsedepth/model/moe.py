"""Dropless mixture-of-experts SwiGLU feed-forward (paper-spec 2.3).

Router: softmax over all experts in float32, top-k token choice; the expert weights are the raw softmax
probabilities of the chosen experts (the official setting) unless ``moe_renormalize``. Tokens are sorted by
expert and each expert runs one matmul over its contiguous slice (a grouped GEMM on CUDA where torch has
``_grouped_mm``), so no token is dropped and nothing loops over tokens.

Aux losses, per layer (olmo-core formulas):
- load balancing ``lb = (E/k) * (1/N) * sum_e n_e * mean_prob_e`` (n_e = top-k assignments to e; 1 when
  perfectly balanced);
- router z-loss ``z = mean_tokens logsumexp(logits)^2``.
Their weights are applied once per layer by the decoder (``ModelConfig.moe_aux_scaling``), not compounded.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from . import kernels as kern


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(d_model, 2 * hidden, bias=False)  # value and gate halves, fused like OLMo's ff_proj
        self.down = nn.Linear(hidden, d_model, bias=False)
        self.kernels = "torch"  # Transformer.set_kernels: "triton" runs the hand-written activation on CUDA

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(kern.swiglu(self.up(x), self.kernels))


class Routing(NamedTuple):
    logits: torch.Tensor  # [N, E] float32
    probs: torch.Tensor  # [N, E]
    weights: torch.Tensor  # [N, k] gate weights of the chosen experts
    order: torch.Tensor  # [N*k] assignment indices (token-major) sorted by expert
    token_of: torch.Tensor  # [N*k] source token of each sorted assignment
    counts: torch.Tensor  # [E] assignments per expert


def _grouped_mm_ok(x: torch.Tensor) -> bool:
    return x.is_cuda and x.dtype == torch.bfloat16 and hasattr(torch, "_grouped_mm")


class MoEFeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, h, e = cfg.d_model, cfg.expert_hidden, cfg.n_experts
        self.n_experts, self.top_k, self.renormalize = e, cfg.top_k, cfg.moe_renormalize
        self.router = nn.Linear(d, e, bias=False)
        # Expert weights stacked as [E, in, out] so a grouped matmul (or a slice per expert) uses them directly.
        self.w_gate = nn.Parameter(torch.empty(e, d, h))
        self.w_up = nn.Parameter(torch.empty(e, d, h))
        self.w_down = nn.Parameter(torch.empty(e, h, d))
        self.shared = SwiGLU(d, cfg.shared_expert_hidden) if cfg.shared_expert_hidden else None
        self.routing = nn.Identity()  # (probs, top-k indices) pass through here so hooks can read routing

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., d] -> (output [..., d], aux [lb, z], expert load [E] as assignment fractions)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        r = self.route(x)
        out = self.combine(x, self._experts(self.dispatch(x, r), r.counts), r)
        load = r.counts.float() / (x.shape[0] * self.top_k)
        lb = self.n_experts / self.top_k * (load * self.top_k * r.probs.mean(0)).sum()
        z = torch.logsumexp(r.logits, dim=-1).pow(2).mean()
        return out.reshape(shape), torch.stack([lb, z]), load

    # The stages of forward, separate so scripts/moe_trials.py can time each one.

    def route(self, x: torch.Tensor) -> Routing:
        """Router softmax, top-k choice and the expert-sorted order of the N*k assignments (x is [N, d])."""
        logits = self.router(x).float()
        probs = logits.softmax(-1)
        weights, experts = probs.topk(self.top_k, dim=-1)  # [N, k]
        if self.renormalize:
            weights = weights / weights.sum(-1, keepdim=True)
        self.routing((probs, experts))
        flat = experts.reshape(-1)
        order = flat.argsort(stable=True)
        # scatter_add into a fixed [E] tensor, not bincount: its output size is data dependent, which breaks
        # the compiled graph in two
        counts = torch.zeros(self.n_experts, dtype=torch.long, device=x.device).scatter_add_(
            0, flat, torch.ones_like(flat))
        return Routing(logits, probs, weights, order, order // self.top_k, counts)

    def dispatch(self, x: torch.Tensor, r: Routing) -> torch.Tensor:
        """The token row of every assignment, in expert-sorted order."""
        if x.is_cuda and torch.is_autocast_enabled("cuda"):  # the residual stream is float32 under autocast:
            x = x.to(torch.get_autocast_dtype("cuda"))  # cast once, before the k-fold gather
        return x[r.token_of]

    def combine(self, x: torch.Tensor, ys: torch.Tensor, r: Routing) -> torch.Tensor:
        """Each token's gate-weighted sum of its k expert outputs (plus the shared expert).

        The expert-sorted rows are put back in assignment order (a permutation: no two rows land on one
        place), then each token sums its k rows in the stream's dtype. Adding the rows straight into their
        tokens with ``index_add_`` needs atomic adds on CUDA: not deterministic, and 1.6-1.8 % slower in
        training on the H200 (docs/performance.md, scripts/moe_trials.py)."""
        rows = torch.empty_like(ys).index_copy_(0, r.order, ys).view(-1, self.top_k, ys.shape[-1])
        return self.mix_shared(x, (rows.to(x.dtype) * r.weights.unsqueeze(-1).to(x.dtype)).sum(1))

    def mix_shared(self, x: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
        """The routed output blended with the shared expert's, where there is one."""
        if self.shared is None:
            return routed
        k = self.top_k  # official: shared/(k+1) + k/(k+1) * routed
        return self.shared(x) / (k + 1) + routed * (k / (k + 1))

    def _experts(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """SwiGLU of each expert on its contiguous slice of expert-sorted tokens: bf16 grouped GEMMs on CUDA
        (training), else one matmul triple per expert. One zero-padded batched matmul for all experts was
        tried for the float32 probes on CUDA and saved 2-3 % of the MoE probe suite (docs/performance.md)."""
        if _grouped_mm_ok(xs):
            offs = counts.cumsum(0).to(torch.int32)
            gate = torch._grouped_mm(xs, self.w_gate.to(xs.dtype), offs=offs)
            up = torch._grouped_mm(xs, self.w_up.to(xs.dtype), offs=offs)
            return torch._grouped_mm(F.silu(gate) * up, self.w_down.to(xs.dtype), offs=offs)
        outs = []
        # One host sync for the split sizes; the loop is over experts, never over tokens.
        for e, chunk in enumerate(xs.split(counts.tolist())):
            if chunk.shape[0]:
                outs.append((F.silu(chunk @ self.w_gate[e].to(chunk.dtype)) * (chunk @ self.w_up[e].to(chunk.dtype)))
                            @ self.w_down[e].to(chunk.dtype))
            else:
                outs.append(chunk)
        return torch.cat(outs)
