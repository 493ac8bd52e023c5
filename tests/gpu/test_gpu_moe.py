"""The MoE layer's CUDA paths (bf16 grouped GEMMs through ``torch._grouped_mm``, and the per-expert loop) under bf16
autocast against a float32 loop over tokens, forward and every gradient, with and without renormalised gates
and a shared expert."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpu_common import BF16_TOL, CUDA, _exact_float32, autocast, worst  # noqa: F401 - the fixture is autouse
from sparsedepth.config import ModelConfig
from sparsedepth.model import moe as moe_mod

pytestmark = CUDA


def naive_moe(moe: moe_mod.MoEFeedForward, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Float32 loop over tokens and their experts; the top-k choice is borrowed from the run under test, so
    near-ties that bf16 router logits break differently do not count as errors."""
    probs = (x.float() @ moe.router.weight.float().T).softmax(-1)
    rows = []
    for i, tok in enumerate(x.float()):
        w = probs[i, experts[i]]
        if moe.renormalize:
            w = w / w.sum()
        out = torch.zeros_like(tok)
        for p, e in zip(w, experts[i].tolist()):
            out = out + p * ((F.silu(tok @ moe.w_gate[e].float()) * (tok @ moe.w_up[e].float())) @ moe.w_down[e].float())
        if moe.shared is not None:
            k = moe.top_k
            out = moe.shared(tok) / (k + 1) + out * k / (k + 1)
        rows.append(out)
    return torch.stack(rows)


@pytest.mark.parametrize("renormalize, shared", [(False, 0), (True, 0), (False, 256)], ids=["raw", "renorm", "shared"])
@pytest.mark.parametrize("path", ["grouped", "loop"])
def test_moe_path_matches_a_float32_token_loop(path, renormalize, shared, monkeypatch, d=256, n=384):
    if path == "grouped" and not hasattr(torch, "_grouped_mm"):
        pytest.skip(f"torch {torch.__version__} has no torch._grouped_mm")
    cfg = ModelConfig(vocab_size=256, d_model=d, n_heads=4, n_experts=8, top_k=2, expert_hidden=256,
                      shared_expert_hidden=shared, moe_renormalize=renormalize)
    moe = moe_mod.MoEFeedForward(cfg).cuda()
    with torch.no_grad():  # unit-scale expert outputs; a router sharp enough to prefer some experts
        for p in moe.parameters():
            p.normal_(0, (p.shape[-2] if p.dim() == 3 else p.shape[-1]) ** -0.5)
    x = torch.randn(n, d, device="cuda")
    probe = torch.randn(n, d, device="cuda")
    params = dict(moe.named_parameters())
    chosen = []
    moe.routing.register_forward_hook(lambda m, a, o: chosen.append(a[0][1]))
    used = []
    original = moe_mod._grouped_mm_ok
    monkeypatch.setattr(moe_mod, "_grouped_mm_ok",
                        lambda t: used.append(original(t)) or (path == "grouped" and original(t)))

    def grads(out: torch.Tensor, xr: torch.Tensor) -> dict[str, torch.Tensor]:
        gs = torch.autograd.grad((out.float() * probe).sum(), [xr, *params.values()], allow_unused=True)
        res = {"out": out.float(), "grad_x": gs[0]}
        res.update({f"grad_{k}": g for k, g in zip(params, gs[1:]) if g is not None})
        return res

    xr = x.clone().requires_grad_(True)
    with autocast():
        test = grads(moe(xr)[0], xr)
    if path == "grouped":
        assert any(used), "the grouped path did not run"
    monkeypatch.undo()
    xr = x.clone().requires_grad_(True)
    err, where = worst(test, grads(naive_moe(moe, xr, chosen[0]), xr))
    assert err < BF16_TOL, f"{path}: {err:.2e} at {where}"
