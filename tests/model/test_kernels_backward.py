"""The hand-written kernels' arithmetic on CPU.

- The head + cross-entropy op's backward is plain torch (two matmuls scaled by the per-row loss gradients, from
  the ``softmax - onehot`` buffer the kernel leaves): checked against autograd of the reference loss.
- The Triton kernels themselves run under Triton's CPU interpreter where the ``triton`` wheel is installed. It is
  not in requirements.txt: the wheel is 286 MB (994 MiB installed, for triton 3.9.0) and torch's CPU wheels do
  not need it, so on CPU-only installs this test skips; the GPU tier (tests/gpu) checks the kernels on CUDA.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sparsedepth.model import kernels as kern

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_ce_backward_matches_autograd(dtype):
    g = torch.Generator().manual_seed(0)
    n, d, vocab = 12, 6, 11
    hn = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(vocab, d, generator=g, dtype=dtype, requires_grad=True)
    t = torch.randint(0, vocab, (n,), generator=g)
    d_losses = torch.rand(n, generator=g, dtype=torch.float32) + 0.5  # per-row weights, as a mean's 1/N would be
    losses = F.cross_entropy(hn @ w.T, t, reduction="none")
    ref_hn, ref_w = torch.autograd.grad((losses * d_losses.to(dtype)).sum(), [hn, w])
    with torch.no_grad():  # what the kernel leaves in its logits buffer
        buf = (hn @ w.T).softmax(-1) - F.one_hot(t, vocab).to(dtype)
    ctx = SimpleNamespace(saved_tensors=(hn.detach(), w.detach(), buf))
    got_hn, got_w, got_t = kern._linear_ce_backward(ctx, d_losses, None)
    assert got_t is None
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got_hn, ref_hn, rtol=tol, atol=tol)
    torch.testing.assert_close(got_w, ref_w, rtol=tol, atol=tol)


def test_triton_kernels_under_the_interpreter(tmp_path):
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    out = tmp_path / "check.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "kernel_trials.py"), "--check-only", "--device", "cpu",
                    "--out", str(out)], env=env, check=True, capture_output=True, timeout=300)
    errs = json.loads(out.read_text())["check"]  # float32, relative to the torch reference
    assert set(errs) == {"swiglu", "linear_ce"}
    assert all(v < 1e-5 for e in errs.values() for v in e.values()), errs
