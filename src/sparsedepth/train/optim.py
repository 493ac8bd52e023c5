"""AdamW with explicit weight-decay groups, and the linear-warmup cosine schedule (paper-spec 2.5).

Decay groups. By default only matrices are decayed: every parameter with two or more dimensions (attention
and FFN projections, the untied output head, the MoE router and the stacked expert tensors ``[E, d, h]``)
except the token embedding; RMSNorm gains and the embedding are not. ``paper_compat_decay=True`` decays
everything, which is what the official code really did (its no-decay flag is never read, paper-spec 2.5).
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from ..config import OptimConfig, TrainConfig


def param_groups(model: nn.Module, cfg: OptimConfig) -> tuple[list[dict], dict]:
    """AdamW parameter groups and a JSON-ready summary ``{group: {"count", "numel", "names"}}``.

    Names in the summary collapse layer indices (``blocks.*.attn.qkv.weight``) so the log stays short.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.dim() >= 2 and id(p) not in embeddings
        (decay if cfg.paper_compat_decay or is_matrix else no_decay).append((name, p))
    groups, summary = [], {}
    for label, items, wd in (("decay", decay, cfg.weight_decay), ("no_decay", no_decay, 0.0)):
        if not items:
            continue
        groups.append({"params": [p for _, p in items], "weight_decay": wd, "name": label})
        summary[label] = {
            "weight_decay": wd,
            "count": len(items),
            "numel": sum(p.numel() for _, p in items),
            "names": sorted({re.sub(r"\.\d+\.", ".*.", n) for n, _ in items}),
        }
    return groups, summary


def format_groups(summary: dict) -> str:
    """One line per group, for stdout."""
    return "\n".join(f"param group {k}: weight_decay={v['weight_decay']} tensors={v['count']} "
                     f"params={v['numel']:,} [{', '.join(v['names'])}]" for k, v in summary.items())


def build_optimizer(groups: list[dict], cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """torch AdamW (decoupled decay ``p <- p - lr * wd * p``); the fused kernel on CUDA."""
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **fused)


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of ``lr`` for optimiser step ``step`` (1-based, as OLMo's global step).

    Warmup: ``step / warmup_steps`` (linear from 0). Then cosine from 1 to ``alpha_f`` over the remaining
    steps: ``alpha_f + (1 - alpha_f) * (1 + cos(pi * (step - W) / (S - W))) / 2``, so step S gets
    exactly ``alpha_f``.
    """
    w = cfg.warmup_steps
    if step <= w:
        return step / w
    if total_steps <= w:
        return 1.0
    progress = min(1.0, (step - w) / (total_steps - w))
    return cfg.alpha_f + (1.0 - cfg.alpha_f) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR whose ``last_epoch`` counts completed steps; the next step (``last_epoch + 1``) uses
    ``lr * lr_factor(last_epoch + 1)``. Always planned for ``cfg.steps``, also when a run stops early."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda done: lr_factor(done + 1, cfg.optim, cfg.steps))
