"""The hand-written Triton kernels (SwiGLU activation, head + cross-entropy) against the model's torch code,
forward and backward, in float32 and bf16.

bf16: both the kernel and torch's bf16 code are compared with a float32 computation on the same bf16 inputs,
and the kernel must be at least about as close as torch is (it rounds once, torch after every op)."""
from __future__ import annotations

import pytest
import torch

from gpu_common import BF16_TOL, CUDA, F32_TOL, _exact_float32  # noqa: F401 - the fixture is autouse
from sparsedepth.model import kernels as kern

pytestmark = CUDA
triton = pytest.importorskip("triton")


def _norm_rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    return float((a - ref).norm() / ref.norm().clamp_min(1e-30))


def _run(fn, *inputs):
    """(output, gradients of the floating inputs) of ``fn`` for a fixed random output weighting."""
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out = fn(*leaves)
    weight = torch.randn(out.shape, generator=torch.Generator("cuda").manual_seed(1), device="cuda")
    (out.float() * weight).sum().backward()
    return [out.detach().float()] + [x.grad.float() for x in leaves if x.requires_grad]


def _case(dtype, n=2048, d=256, hidden=512, vocab=5003):
    g = torch.Generator("cuda").manual_seed(0)
    h = torch.randn(n, 2 * hidden, device="cuda", generator=g).to(dtype)
    hn = torch.randn(n, d, device="cuda", generator=g).to(dtype)
    w = (torch.randn(vocab, d, device="cuda", generator=g) * 0.05).to(dtype)  # vocab not a block multiple
    t = torch.randint(0, vocab, (n,), device="cuda", generator=g)
    return h, hn, w, t


def _f32(fn):
    return lambda *xs: fn(*(x.float() if x.is_floating_point() else x for x in xs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("kernel", ["swiglu", "linear_ce"])
def test_triton_kernel_matches_torch(kernel, dtype):
    h, hn, w, t = _case(dtype)
    if kernel == "swiglu":
        fast, ref, inputs = kern.swiglu_triton, kern.swiglu_reference, (h,)
    else:
        fast, ref, inputs = kern.linear_cross_entropy_triton, kern.cross_entropy_reference, (hn, w, t)
    got, exact = _run(fast, *inputs), _run(_f32(ref), *inputs)
    names = ["out"] + [f"grad{i}" for i in range(len(got) - 1)]
    if dtype == torch.float32:
        for name, a, b in zip(names, got, exact):
            assert _norm_rel(a, b) < F32_TOL, f"{kernel} {name}: {_norm_rel(a, b):.2e}"
        return
    torch_bf16 = _run(ref, *inputs)
    for name, a, b, c in zip(names, got, exact, torch_bf16):
        fast_err, torch_err = _norm_rel(a, b), _norm_rel(c, b)
        assert fast_err < BF16_TOL and fast_err <= 2 * torch_err + 1e-3, \
            f"{kernel} {name}: kernel {fast_err:.2e}, torch bf16 {torch_err:.2e} from float32"


@pytest.mark.parametrize("family", ["dense", "moe"])
def test_model_with_the_kernels_matches_torch_code(family):
    """A float32 model set to "triton" runs them on CUDA, and its loss and gradients are torch's."""
    import dataclasses

    from sparsedepth.config import ModelConfig
    from sparsedepth.model import build_model

    extra = {"n_experts": 4, "top_k": 2, "expert_hidden": 64, "shared_expert_hidden": 64} if family == "moe" else {}
    cfg = ModelConfig(vocab_size=1000, d_model=128, n_layers=2, n_heads=4, max_seq_len=64, **extra)
    ref = build_model(cfg, "cuda")
    fast = build_model(dataclasses.replace(cfg, kernels="triton"), "cuda")
    fast.load_state_dict(ref.state_dict())
    assert fast.kernels == "triton" and ref.kernels == "torch"
    idx = torch.randint(0, cfg.vocab_size, (4, 65), device="cuda")
    grads = []
    for model in (fast, ref):
        out = model(idx[:, :-1], idx[:, 1:])
        out.loss.backward()
        grads.append({"loss": out.loss.detach(), **{n: p.grad for n, p in model.named_parameters()}})
    for name in grads[1]:
        assert _norm_rel(grads[0][name], grads[1][name]) < F32_TOL, name
