"""The zero-shot scorer on CUDA: the same scores as on the CPU (float32, no autocast), and no synchronisation
with the device per batch (on a GPU shared with training runs each one left it idle while the host waited)."""
from __future__ import annotations

import random
import warnings

import torch

from gpu_common import CUDA, F32_TOL, _exact_float32  # noqa: F401 - the fixture is autouse
from sparsedepth.config import ModelConfig
from sparsedepth.eval import score_tokens
from sparsedepth.model import build_model

pytestmark = CUDA


def _requests(n: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(n)
    return [([rng.randrange(512) for _ in range(rng.randint(1, 60))],
             [rng.randrange(512) for _ in range(rng.randint(1, 12))]) for _ in range(n)]


def _model() -> torch.nn.Module:
    return build_model(ModelConfig(vocab_size=512, d_model=128, n_layers=2, n_heads=4, max_seq_len=64), "cuda")


def test_cuda_scores_match_the_cpu():
    model, reqs = _model(), _requests(100)
    got = score_tokens(model, reqs, batch_size=16, autocast=False)
    ref = score_tokens(model.cpu(), reqs, batch_size=16)
    scale = max(abs(v) for v, _ in ref)
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, ref)) <= F32_TOL * scale


def _syncs(model: torch.nn.Module, n_batches: int) -> int:
    """Synchronising CUDA operations of one scoring call of ``n_batches`` batches of 8 requests."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            score_tokens(model, _requests(8 * n_batches), batch_size=8)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_scorer_synchronises_a_fixed_number_of_times_whatever_the_batches():
    model = _model()
    _syncs(model, 1)  # warm-up: first-call setup (cuBLAS handles, allocator) is not the scorer's
    few, many = _syncs(model, 2), _syncs(model, 12)
    assert many == few <= 2, f"{few} synchronisations for 2 batches, {many} for 12: one or more per batch"
