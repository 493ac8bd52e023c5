"""Hand-written Triton kernels for the two outliers of the H200 step profile (docs/performance.md), selected by
``ModelConfig.kernels = "triton"``; the default ``"torch"`` leaves the model exactly as it was.

- :func:`swiglu`: ``silu(gate) * value`` on the fused up-projection output ``[..., 2H]`` (value half, then gate
  half, as ``SwiGLU.up``). The compiled graph's backward ran at half its forward's bandwidth; this one reads
  value, gate and the output gradient once and writes both halves of the gradient into one buffer.
- :func:`linear_cross_entropy`: the head matmul (cuBLAS), then one kernel per row that computes the loss and
  overwrites the logits with ``softmax - onehot``: the logits are read twice and written once, the least
  traffic a materialised head allows. The per-row loss gradients scale the two small matmuls of the backward
  (``[N, d]`` and ``[V, d]``), never the ``[N, V]`` buffer. The logits themselves are not returned, and targets
  must lie in ``[0, V)`` (not checked on the device, as that would cost a host sync per step).

Both are ``torch.library`` custom ops, opaque to ``torch.compile`` (one graph node each, no graph break). They run
where Triton and CUDA are available; :func:`resolve` says what a model on a device will use, and every other
case takes the plain torch code, so a CPU model with ``kernels = "triton"`` computes exactly what ``"torch"`` does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import KERNELS

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: torch's CPU wheels do not bring Triton
    triton = None


def resolve(name: str, device: torch.device | str) -> str:
    """The kernels a model on ``device`` runs for the configured ``name``: "triton" only on CUDA with Triton."""
    if name not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {name!r}")
    return "triton" if name == "triton" and triton is not None and torch.device(device).type == "cuda" else "torch"


def swiglu_reference(h: torch.Tensor) -> torch.Tensor:
    value, gate = h.chunk(2, dim=-1)
    return F.silu(gate) * value


def cross_entropy_reference(hn: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hn, weight)
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


if triton is not None:
    @triton.jit
    def _swiglu_fwd(h_ptr, y_ptr, n_elem, H: tl.constexpr, BLOCK: tl.constexpr):
        off = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = off < n_elem
        base = (off // H) * (2 * H) + off % H
        v = tl.load(h_ptr + base, mask=mask).to(tl.float32)
        g = tl.load(h_ptr + base + H, mask=mask).to(tl.float32)
        tl.store(y_ptr + off, (v * g * tl.sigmoid(g)).to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _swiglu_bwd(h_ptr, dy_ptr, dh_ptr, n_elem, H: tl.constexpr, BLOCK: tl.constexpr):
        off = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = off < n_elem
        base = (off // H) * (2 * H) + off % H
        v = tl.load(h_ptr + base, mask=mask).to(tl.float32)
        g = tl.load(h_ptr + base + H, mask=mask).to(tl.float32)
        dy = tl.load(dy_ptr + off, mask=mask).to(tl.float32)
        s = tl.sigmoid(g)
        tl.store(dh_ptr + base, (dy * g * s).to(dh_ptr.dtype.element_ty), mask=mask)  # d/dvalue = silu(g)
        tl.store(dh_ptr + base + H, (dy * v * s * (1 + g * (1 - s))).to(dh_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _ce_rows(logits_ptr, targets_ptr, loss_ptr, V, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * V
        target = tl.load(targets_ptr + row)
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        for start in range(0, V, BLOCK):  # pass 1: running max and sum of exp, per lane
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, x)
            # a lane that has seen only padding holds -inf: exp(-inf - -inf) is NaN, so it keeps 0
            s = tl.where(m_new == float("-inf"), 0.0, s * tl.exp(m - m_new) + tl.exp(x - m_new))
            m = m_new
        m_row = tl.max(m, 0)
        lse = m_row + tl.log(tl.sum(tl.where(m == float("-inf"), 0.0, s * tl.exp(m - m_row)), 0))
        tl.store(loss_ptr + row, lse - tl.load(base + target).to(tl.float32))
        for start in range(0, V, BLOCK):  # pass 2: d(row loss)/d(logits) = softmax - onehot, in place
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(base + cols, mask=cols < V, other=0.0).to(tl.float32)
            grad = tl.exp(x - lse) - (cols == target).to(tl.float32)
            tl.store(base + cols, grad.to(logits_ptr.dtype.element_ty), mask=cols < V)

# Launch parameters, read at each call (scripts/kernel_trials.py sweeps them): elements per program and warps of
# the SwiGLU kernels, columns per loop iteration and warps of the cross-entropy kernel.
LAUNCH = {"ew_block": 1024, "ew_warps": 4, "ce_block": 4096, "ce_warps": 8}


@torch.library.custom_op("sparsedepth::swiglu_fwd", mutates_args=())
def _swiglu_fwd_op(h: torch.Tensor) -> torch.Tensor:
    H = h.shape[-1] // 2
    y = h.new_empty(*h.shape[:-1], H)
    b = LAUNCH["ew_block"]
    _swiglu_fwd[(triton.cdiv(y.numel(), b),)](h, y, y.numel(), H, BLOCK=b, num_warps=LAUNCH["ew_warps"])
    return y


@_swiglu_fwd_op.register_fake
def _(h):
    return h.new_empty(*h.shape[:-1], h.shape[-1] // 2)


@torch.library.custom_op("sparsedepth::swiglu_bwd", mutates_args=())
def _swiglu_bwd_op(h: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    dh = torch.empty_like(h)
    b = LAUNCH["ew_block"]
    _swiglu_bwd[(triton.cdiv(dy.numel(), b),)](h, dy, dh, dy.numel(), h.shape[-1] // 2, BLOCK=b,
                                                num_warps=LAUNCH["ew_warps"])
    return dh


@_swiglu_bwd_op.register_fake
def _(h, dy):
    return torch.empty_like(h)


def _swiglu_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _swiglu_backward(ctx, dy):
    (h,) = ctx.saved_tensors
    return _swiglu_bwd_op(h, dy.contiguous())


_swiglu_fwd_op.register_autograd(_swiglu_backward, setup_context=_swiglu_setup)


@torch.library.custom_op("sparsedepth::linear_ce", mutates_args=())
def _linear_ce_op(hn: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row losses [N] float32, softmax - onehot [N, V] in the logits' dtype)."""
    grad = hn @ weight.t()
    losses = torch.empty(grad.shape[0], device=hn.device, dtype=torch.float32)
    _ce_rows[(grad.shape[0],)](grad, targets, losses, grad.shape[1], BLOCK=LAUNCH["ce_block"],
                               num_warps=LAUNCH["ce_warps"])
    return losses, grad


@_linear_ce_op.register_fake
def _(hn, weight, targets):
    return (hn.new_empty(hn.shape[0], dtype=torch.float32), hn.new_empty(hn.shape[0], weight.shape[0]))


def _linear_ce_setup(ctx, inputs, output):
    hn, weight, _ = inputs
    ctx.save_for_backward(hn, weight, output[1])
    ctx.mark_non_differentiable(output[1])


def _linear_ce_backward(ctx, d_losses, _d_grad):
    hn, weight, grad = ctx.saved_tensors
    d = d_losses.unsqueeze(1).to(grad.dtype)  # the row weights go on the [N, d] side, never on [N, V]
    return (grad @ weight) * d, grad.t() @ (hn * d), None


_linear_ce_op.register_autograd(_linear_ce_backward, setup_context=_linear_ce_setup)


def swiglu_triton(h: torch.Tensor) -> torch.Tensor:
    """The Triton activation, wherever Triton runs (CUDA, or the CPU interpreter with TRITON_INTERPRET=1)."""
    return _swiglu_fwd_op(h.contiguous())


def linear_cross_entropy_triton(hn: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The Triton head + loss on ``hn``'s and ``weight``'s dtype, wherever Triton runs."""
    losses, _ = _linear_ce_op(hn.reshape(-1, hn.shape[-1]).contiguous(), weight.contiguous(),
                              targets.reshape(-1).contiguous())
    return losses.mean()


def _use_triton(kernels: str, x: torch.Tensor) -> bool:
    return resolve(kernels, x.device) == "triton"


def swiglu(h: torch.Tensor, kernels: str = "triton") -> torch.Tensor:
    """``silu(gate) * value`` for ``h = [value | gate]``; Triton where ``kernels`` says so and ``h`` is on CUDA."""
    return swiglu_triton(h) if _use_triton(kernels, h) else swiglu_reference(h)


def linear_cross_entropy(hn: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         kernels: str = "triton") -> torch.Tensor:
    """Mean cross-entropy of ``hn @ weight.T`` against ``targets`` (every target counts: no ignore index).

    Under autocast the matmul runs in the autocast dtype, as ``nn.Linear`` would; the loss is float32."""
    if not _use_triton(kernels, hn):
        return cross_entropy_reference(hn, weight, targets)
    if torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
        hn, weight = hn.to(dt), weight.to(dt)
    with torch.autocast("cuda", enabled=False):
        return linear_cross_entropy_triton(hn, weight, targets)
