"""MoE measures on hand counts: the layer's load-balancing and z losses, and the expert-load probe's balance,
entropy and usage, each worked out by hand (numbers in the comments), not by re-running the formula."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_config
from sparsedepth.model import build_model
from sparsedepth.model.moe import MoEFeedForward, _grouped_mm_ok
from sparsedepth.probes import as_adapter
from sparsedepth.probes.sparsity import ExpertProbe


def test_layer_aux_losses_on_hand_counts():
    cfg = tiny_config(d_model=8, n_experts=2, top_k=1, expert_hidden=4)
    moe = MoEFeedForward(cfg)
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(2, 8))  # logits = the first two inputs
        for p in (moe.w_gate, moe.w_up, moe.w_down):
            p.normal_(0, 0.1)
    ln3 = math.log(3)
    x = torch.zeros(4, 8)
    x[:3, 0] = ln3  # probs (3/4, 1/4): expert 0
    x[3, 1] = ln3  # probs (1/4, 3/4): expert 1
    _, aux, load = moe(x)
    # n = (3, 1), mean probs = (2.5/4, 1.5/4); lb = (E/k)(1/N) Σ n_e p̄_e = 2 · 1/4 · (3·0.625 + 0.375) = 1.125
    assert aux[0].item() == pytest.approx(1.125, rel=1e-6)
    assert aux[1].item() == pytest.approx(math.log(4) ** 2, rel=1e-6)  # logsumexp(ln 3, 0) = ln 4 for every token
    assert load.tolist() == pytest.approx([0.75, 0.25])


def test_expert_probe_on_hand_counts():
    model = build_model(tiny_config(n_layers=2, n_experts=4, top_k=2, expert_hidden=8))
    probe = ExpertProbe(as_adapter(model))
    (m0, hook0), (m1, hook1) = probe.hooks()
    # layer 0, two batches of one token each, top-2: experts 0, 1 then 0, 2 -> counts (2, 1, 1, 0),
    # fractions f = (1/2, 1/4, 1/4, 0); layer 1: one token to experts 3, 2 -> f = (0, 0, 1/2, 1/2)
    hook0(m0, None, (torch.tensor([[0.5, 0.3, 0.1, 0.1]]), torch.tensor([[0, 1]])))
    hook0(m0, None, (torch.tensor([[0.4, 0.1, 0.3, 0.2]]), torch.tensor([[0, 2]])))
    hook1(m1, None, (torch.tensor([[0.1, 0.1, 0.3, 0.5]]), torch.tensor([[3, 2]])))
    res = probe.result()
    assert res["load"][0] == pytest.approx([0.5, 0.25, 0.25, 0.0])
    assert res["load"][1] == pytest.approx([0.0, 0.0, 0.5, 0.5])
    # population std of f: sqrt(mean f² − mean²) = sqrt(0.09375 − 0.0625) = √2/8; lb = 1 − std/mean = 1 − 1/√2
    assert res["load_balance"][0] == pytest.approx(1 - 2 ** -0.5, rel=1e-12)
    assert res["load_balance"][1] == pytest.approx(0.0, abs=1e-12)  # std = mean = 1/4
    assert res["load_balance_mean"] == pytest.approx((1 - 2 ** -0.5) / 2, rel=1e-12)
    assert res["load_entropy"][0] == pytest.approx(1.5 * math.log(2), rel=1e-12)  # ½ ln 2 + 2 · ¼ ln 4
    assert res["load_entropy_norm"][0] == pytest.approx(0.75, rel=1e-12)  # / ln 4
    assert res["used_fraction"] == pytest.approx([0.75, 0.5])
    assert res["mean_prob"][0] == pytest.approx([0.45, 0.2, 0.2, 0.15])  # over both batches' tokens
    assert res["mean_prob"][1] == pytest.approx([0.1, 0.1, 0.3, 0.5])
    assert res["n_experts"] == 4 and res["top_k"] == 2


def test_expert_probe_balance_floors_at_zero_when_one_expert_takes_most():
    model = build_model(tiny_config(n_layers=1, n_experts=4, top_k=1, expert_hidden=8))
    probe = ExpertProbe(as_adapter(model))
    ((module, hook),) = probe.hooks()
    hook(module, None, (torch.full((4, 4), 0.25), torch.tensor([[0], [0], [0], [1]])))
    res = probe.result()
    # f = (3/4, 1/4, 0, 0): std/mean = √(0.15625 − 0.0625)/0.25 = √1.5 > 1, so the balance is 0, not negative
    assert res["load_balance"][0] == 0.0 and res["used_fraction"][0] == 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_matmul_path_is_for_bf16_on_cuda_only(dtype):
    # the CPU (and float32 CUDA) path is the per-expert loop; bf16 off CUDA must not take the grouped GEMM
    assert not _grouped_mm_ok(torch.zeros(3, 4, dtype=dtype))
