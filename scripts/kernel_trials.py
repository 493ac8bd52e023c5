"""Trial kernels for the two outliers of the H200 step profile (docs/performance.md): the SwiGLU backward and
the cross-entropy over the 50304-way head. Each candidate is checked against the model's own code and timed
forward + backward at the gpu profile's shapes; nothing here is used by the trainer until it has been measured.

    python scripts/kernel_trials.py                      # CUDA: check, then time at the gpu shapes
    TRITON_INTERPRET=1 python scripts/kernel_trials.py --check-only --device cpu   # arithmetic only, small shapes

Candidates:
- ``swiglu``: one Triton kernel each way on the fused up-projection output ``[N, 2H]`` (value half, gate half,
  as ``SwiGLU.up``). The backward writes both halves of the gradient into one buffer, so no ``torch.cat`` pass.
- ``linear_ce``: the head matmul by cuBLAS, then one Triton kernel per row that computes the loss and writes
  the gradient of the logits over the logits themselves (read twice, written once: the least traffic a
  materialised head allows). The backward's scalar ``grad_output`` scales the two small matmul results, not
  the 6.6 GB of logits.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sparsedepth.atomic import atomic_write_json  # noqa: E402


# ---- SwiGLU activation on the fused [N, 2H] up-projection output --------------------------------------------

@triton.jit
def _swiglu_fwd(h_ptr, y_ptr, n_elem, H: tl.constexpr, BLOCK: tl.constexpr):
    off = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = off < n_elem
    row, col = off // H, off % H
    v = tl.load(h_ptr + row * (2 * H) + col, mask=mask).to(tl.float32)
    g = tl.load(h_ptr + row * (2 * H) + H + col, mask=mask).to(tl.float32)
    y = v * g * tl.sigmoid(g)
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd(h_ptr, dy_ptr, dh_ptr, n_elem, H: tl.constexpr, BLOCK: tl.constexpr):
    off = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = off < n_elem
    row, col = off // H, off % H
    base = row * (2 * H) + col
    v = tl.load(h_ptr + base, mask=mask).to(tl.float32)
    g = tl.load(h_ptr + base + H, mask=mask).to(tl.float32)
    dy = tl.load(dy_ptr + off, mask=mask).to(tl.float32)
    s = tl.sigmoid(g)
    tl.store(dh_ptr + base, (dy * g * s).to(dh_ptr.dtype.element_ty), mask=mask)  # d/dv = silu(g)
    tl.store(dh_ptr + base + H, (dy * v * s * (1 + g * (1 - s))).to(dh_ptr.dtype.element_ty), mask=mask)


class SwiGLUAct(torch.autograd.Function):
    """silu(gate) * value for ``h = [value | gate]`` along the last dimension."""

    BLOCK = 1024

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        h = h.contiguous()
        H = h.shape[-1] // 2
        y = h.new_empty(*h.shape[:-1], H)
        n = y.numel()
        _swiglu_fwd[(triton.cdiv(n, SwiGLUAct.BLOCK),)](h, y, n, H, BLOCK=SwiGLUAct.BLOCK)
        ctx.save_for_backward(h)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> torch.Tensor:
        (h,) = ctx.saved_tensors
        dy = dy.contiguous()
        dh = torch.empty_like(h)
        n = dy.numel()
        _swiglu_bwd[(triton.cdiv(n, SwiGLUAct.BLOCK),)](h, dy, dh, n, h.shape[-1] // 2, BLOCK=SwiGLUAct.BLOCK)
        return dh


def swiglu_reference(h: torch.Tensor) -> torch.Tensor:
    value, gate = h.chunk(2, dim=-1)  # as sparsedepth.model.moe.SwiGLU
    return F.silu(gate) * value


# ---- head matmul + cross-entropy, gradient written over the logits ------------------------------------------

@triton.jit
def _ce_loss_and_grad(logits_ptr, targets_ptr, loss_ptr, V, inv_n, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * V
    target = tl.load(targets_ptr + row)
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    for start in range(0, V, BLOCK):  # pass 1: online max and sum of exp, per lane
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        # lanes past V (or not yet past any column) hold -inf: exp(-inf - -inf) would be NaN, so guard them
        s = tl.where(m_new == float("-inf"), 0.0, s * tl.exp(m - m_new) + tl.exp(x - m_new))
        m = m_new
    m_row = tl.max(m, 0)
    lse = m_row + tl.log(tl.sum(tl.where(m == float("-inf"), 0.0, s * tl.exp(m - m_row)), 0))
    x_t = tl.load(base + target).to(tl.float32)
    tl.store(loss_ptr + row, lse - x_t)
    for start in range(0, V, BLOCK):  # pass 2: d(mean loss)/d(logits) = (softmax - onehot) / N, in place
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(base + cols, mask=cols < V, other=0.0).to(tl.float32)
        grad = (tl.exp(x - lse) - (cols == target).to(tl.float32)) * inv_n
        tl.store(base + cols, grad.to(logits_ptr.dtype.element_ty), mask=cols < V)


class LinearCrossEntropy(torch.autograd.Function):
    """mean cross-entropy of ``hn @ weight.T`` against ``targets``; the logits buffer ends up holding the
    gradient, so the logits themselves are not returned."""

    BLOCK = 4096

    @staticmethod
    def forward(ctx, hn: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hn2 = hn.reshape(-1, hn.shape[-1])
        logits = hn2 @ weight.t()
        n, V = logits.shape
        losses = torch.empty(n, device=hn.device, dtype=torch.float32)
        _ce_loss_and_grad[(n,)](logits, targets.reshape(-1), losses, V, 1.0 / n, BLOCK=LinearCrossEntropy.BLOCK)
        ctx.save_for_backward(hn2, weight, logits)
        ctx.hn_shape = hn.shape
        return losses.mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        hn2, weight, grad_logits = ctx.saved_tensors
        g = grad_out.to(grad_logits.dtype)
        d_hn = (grad_logits @ weight).mul_(g).reshape(ctx.hn_shape)
        d_w = (grad_logits.t() @ hn2).mul_(g)
        return d_hn, d_w, None


def linear_ce_reference(hn: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hn, weight)  # as sparsedepth.model.transformer._output
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


# ---- checks and timings --------------------------------------------------------------------------------------

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
    y, g = _grads(SwiGLUAct.apply, h)
    out["swiglu"] = {"out": _rel(y, y_ref), "grad_h": _rel(g[0], g_ref[0])}
    l_ref, gl_ref = _grads(linear_ce_reference, hn, w, t)
    lo, gl = _grads(LinearCrossEntropy.apply, hn, w, t)
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


def time_all(n: int, d: int, hidden: int, vocab: int) -> dict:
    dev, bf = "cuda", torch.bfloat16
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
        "swiglu act, triton": _time_fwd_bwd(SwiGLUAct.apply, [h], False),
        "ffn (up, act, down), compiled reference": _time_fwd_bwd(torch.compile(ffn(swiglu_reference)), [x, w_up, w_down], True),
        "ffn (up, act, down), triton act": _time_fwd_bwd(ffn(SwiGLUAct.apply), [x, w_up, w_down], True),
        "head + cross-entropy, compiled reference (the trainer's)": _time_fwd_bwd(torch.compile(linear_ce_reference), [hn, w, t], True),
        "head + cross-entropy, triton": _time_fwd_bwd(LinearCrossEntropy.apply, [hn, w, t], False),
    }
    return {k: round(v, 3) for k, v in rows.items()}


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
    if args.out:
        atomic_write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
