"""The theory simulator's gradient norms against autograd through a stack written out here in float64 (its
variance growth is checked against the closed form, at a tolerance of the growth, in test_theory.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsedepth.theory import simulate


def _stack_grad_norms(density: float, depth: int, d: int, n_tokens: int, n_grad: int, seed: int, s: int,
                      sublayer: str) -> np.ndarray:
    """‖d loss / d(masked effective weights)‖_F per block, loss = Σ_t <u, RMSNorm(x_L,t)>, by autograd in float64.

    Draws the same random numbers as ``simulate`` (its documented common-random-number scheme: x0, u, then per
    block and matrix W then the uniforms of the mask) but computes the stack and its gradient independently."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + s)
    x0 = torch.randn(n_tokens, d, generator=gen)
    u = torch.randn(d, generator=gen)
    u = (u / u.norm()).double()
    shapes = [(d, d)] if sublayer == "linear" else [(4 * d, d), (d, 4 * d)]
    x = x0[:n_grad].double()
    mats, masks = [], []
    for _ in range(depth):
        block = []
        for o, i in shapes:
            w = torch.randn(o, i, generator=gen) / math.sqrt(i)
            m = torch.rand(o, i, generator=gen) < density
            a = torch.where(m, w, 0.0).double().requires_grad_()
            block.append(a)
            masks.append(m)
        mats.append(block)
        z = x / x.pow(2).mean(-1, keepdim=True).sqrt()
        h = z @ block[0].T
        if len(block) == 2:
            h = torch.relu(h) @ block[1].T
        x = x + h
    loss = (x / x.pow(2).mean(-1, keepdim=True).sqrt() @ u).sum()
    flat = [a for block in mats for a in block]
    grads = torch.autograd.grad(loss, flat)
    per = [(g * m).pow(2).sum() for g, m in zip(grads, masks)]
    k = len(shapes)
    return np.array([float(sum(per[l * k:(l + 1) * k]).sqrt()) for l in range(depth)])


@pytest.mark.parametrize("sublayer", ["linear", "mlp"])
def test_grad_norm_matches_autograd_on_a_small_stack(sublayer):
    kw = dict(depth=4, d_model=16, n_tokens=12, n_grad_tokens=5, seed=2)
    rows = simulate(densities=0.5, sublayer=sublayer, n_seeds=1, n_jac_tokens=0, **kw)
    ref = _stack_grad_norms(0.5, 4, 16, 12, 5, seed=2, s=0, sublayer=sublayer)
    got = np.array([r["grad_norm"] for r in rows])
    assert np.allclose(got, ref, rtol=1e-4), (got, ref)
    assert np.allclose([r["grad_ratio"] for r in rows], ref / ref[0], rtol=1e-4)  # one seed: a plain ratio

