"""Shared by the GPU tier (tests/gpu/): the CUDA marker, the error measure and bf16 autocast.

Error measure: ``max |y - y_ref| / max |y_ref|`` in float64 (the max abs error of a unit-scale output). bf16 keeps
8 mantissa bits, about 4e-3 per rounding, and a few roundings stack: fast paths under bf16 autocast must stay
within ``BF16_TOL`` of a float32 reference; float32 paths within ``F32_TOL``.
"""
from __future__ import annotations

import pytest
import torch

BF16_TOL = 2e-2
F32_TOL = 1e-4

CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref|, in float64."""
    a, ref = a.detach().double(), ref.detach().double()
    return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def worst(outs: dict[str, torch.Tensor], refs: dict[str, torch.Tensor]) -> tuple[float, str]:
    """The largest ``rel_err`` over matching entries, and its key (for the assertion message)."""
    errs = {k: rel_err(outs[k], refs[k]) for k in refs}
    key = max(errs, key=errs.get)
    return errs[key], key


def autocast(enabled: bool = True):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)


@pytest.fixture(autouse=True)
def _exact_float32():
    """float32 references must really be float32 (no TF32 matmuls)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
