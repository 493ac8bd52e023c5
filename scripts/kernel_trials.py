"""Check and time the hand-written kernels of ``sparsedepth.model.kernels`` against the model's torch code,
forward + backward at the gpu profile's shapes (the two outliers of docs/performance.md's kernel profile).

    PYTHONPATH=src python scripts/kernel_trials.py --out trials.json        # CUDA: check, then time
    TRITON_INTERPRET=1 PYTHONPATH=src python scripts/kernel_trials.py --check-only --device cpu
                                          # the kernels' arithmetic on CPU (Triton's interpreter), small shapes

The training-step effect (``ModelConfig.kernels``) is measured by ``sparsedepth bench --only ablation
--names default,kernels-torch`` (the gpu profile trains with the kernels); this script isolates each kernel
and sweeps its launch parameters.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sparsedepth.atomic import atomic_write_json  # noqa: E402
from sparsedepth.model.kernels import (LAUNCH, cross_entropy_reference, linear_cross_entropy_triton,  # noqa: E402
                                       swiglu_reference, swiglu_triton)


def _grads(fn, *inputs):
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out = fn(*leaves)
    (out.float().sum() if out.dim() else out).backward()
    return out.detach().float(), [x.grad.float() for x in leaves if x.requires_grad]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check(device: str, dtype: torch.dtype, n: int, d: int, hidden: int, vocab: int, seed: int = 0) -> dict:
    """Relative errors of each candidate's output and gradients against the reference code."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    h = torch.randn(n, 2 * hidden, generator=gen).to(device, dtype)
    hn = torch.randn(n, d, generator=gen).to(device, dtype)
    w = (torch.randn(vocab, d, generator=gen) * 0.02).to(device, dtype)
    t = torch.randint(0, vocab, (n,), generator=gen).to(device)
    out = {}
    y_ref, g_ref = _grads(swiglu_reference, h)
    y, g = _grads(swiglu_triton, h)
    out["swiglu"] = {"out": _rel(y, y_ref), "grad_h": _rel(g[0], g_ref[0])}
    l_ref, gl_ref = _grads(cross_entropy_reference, hn, w, t)
    lo, gl = _grads(linear_cross_entropy_triton, hn, w, t)
    out["linear_ce"] = {"loss": _rel(lo, l_ref), "grad_hn": _rel(gl[0], gl_ref[0]), "grad_w": _rel(gl[1], gl_ref[1])}
    return out


def _time_fwd_bwd(fn, inputs, autocast: bool) -> float:
    """Best-of-runs ms of forward + backward (triton.testing.do_bench: L2 flushed, warm-up excluded)."""
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]

    def step():
        with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
            out = fn(*leaves)
        out.backward(torch.ones_like(out))
        for x in leaves:
            x.grad = None

    for _ in range(3):  # compile and autotune outside the timing
        step()
    return float(triton.testing.do_bench(step, warmup=10, rep=200, return_mode="min"))


def time_all(n: int, d: int, hidden: int, vocab: int, dev: str = "cuda") -> dict:
    bf = torch.bfloat16
    h = torch.randn(n, 2 * hidden, device=dev, dtype=bf)
    x = torch.randn(n, d, device=dev, dtype=bf)
    w_up = torch.randn(2 * hidden, d, device=dev, dtype=bf) * 0.02
    w_down = torch.randn(d, hidden, device=dev, dtype=bf) * 0.02
    hn = torch.randn(n, d, device=dev, dtype=bf)
    w = torch.randn(vocab, d, device=dev, dtype=bf) * 0.02
    t = torch.randint(0, vocab, (n,), device=dev)

    def ffn(act):
        return lambda x, w_up, w_down: F.linear(act(F.linear(x, w_up)), w_down)

    rows = {
        "swiglu act, eager reference": _time_fwd_bwd(swiglu_reference, [h], False),
        "swiglu act, compiled reference (the trainer's)": _time_fwd_bwd(torch.compile(swiglu_reference), [h], False),
        "swiglu act, triton": _time_fwd_bwd(swiglu_triton, [h], False),
        "ffn (up, act, down), compiled reference": _time_fwd_bwd(torch.compile(ffn(swiglu_reference)), [x, w_up, w_down], True),
        "ffn (up, act, down), triton act": _time_fwd_bwd(ffn(swiglu_triton), [x, w_up, w_down], True),
        "head + cross-entropy, compiled reference (the trainer's)": _time_fwd_bwd(torch.compile(cross_entropy_reference), [hn, w, t], True),
        "head + cross-entropy, triton": _time_fwd_bwd(linear_cross_entropy_triton, [hn, w, t], False),
    }
    return {k: round(v, 3) for k, v in rows.items()}


def sweep_launch(n: int, d: int, hidden: int, vocab: int, dev: str = "cuda") -> list[dict]:
    """Each kernel alone under a few launch parameters (``kernels.LAUNCH``), which is restored afterwards."""
    bf = torch.bfloat16
    h = torch.randn(n, 2 * hidden, device=dev, dtype=bf)
    hn = torch.randn(n, d, device=dev, dtype=bf)
    w = torch.randn(vocab, d, device=dev, dtype=bf) * 0.02
    t = torch.randint(0, vocab, (n,), device=dev)
    saved, rows = dict(LAUNCH), []
    try:
        for block, warps in ((1024, 4), (2048, 4), (2048, 8), (4096, 8)):
            LAUNCH.update(ew_block=block, ew_warps=warps)
            rows.append({"kernel": "swiglu", "block": block, "warps": warps,
                         "ms_fwd_bwd": round(_time_fwd_bwd(swiglu_triton, [h], False), 3)})
        LAUNCH.update(saved)
        for block, warps in ((2048, 4), (4096, 4), (4096, 8), (8192, 8), (8192, 16)):
            LAUNCH.update(ce_block=block, ce_warps=warps)
            rows.append({"kernel": "linear_ce", "block": block, "warps": warps,
                         "ms_fwd_bwd": round(_time_fwd_bwd(linear_cross_entropy_triton, [hn, w, t], False), 3)})
    finally:
        LAUNCH.clear()
        LAUNCH.update(saved)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--check-only", action="store_true", help="check the arithmetic, time nothing")
    ap.add_argument("--tokens", type=int, default=65536, help="tokens per step (gpu profile: 64 x 1024)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    small = args.device == "cpu"
    shape = dict(n=64, d=32, hidden=48, vocab=1000) if small else dict(n=4096, d=512, hidden=2048, vocab=50304)
    res = {"check": check(args.device, torch.float32 if small else torch.bfloat16, **shape)}
    for name, errs in res["check"].items():
        print(f"check {name}: " + ", ".join(f"{k} rel. error {v:.2e}" for k, v in errs.items()))
    if not args.check_only:
        res["shapes"] = dict(n=args.tokens, d=512, hidden=2048, vocab=50304)
        res["ms_fwd_bwd"] = time_all(**res["shapes"])
        res["device"] = torch.cuda.get_device_name()
        for name, ms in res["ms_fwd_bwd"].items():
            print(f"{ms:9.3f} ms  {name}")
        res["launch_sweep"] = sweep_launch(**res["shapes"])
        for r in res["launch_sweep"]:
            print(f"{r['ms_fwd_bwd']:9.3f} ms  {r['kernel']} triton, block {r['block']}, {r['warps']} warps")
    if args.out:
        atomic_write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
