"""Probes along training on CUDA: a compiled bf16 run probes its own weights at its points, the last point is
the final probes, and the points' validation loss is taken in the training's precision (bf16 autocast), so
the last one agrees with the loss the trainer logged."""
from __future__ import annotations

import json

import pytest

from conftest import word_corpus
from gpu_common import CUDA, _exact_float32  # noqa: F401 - the fixture is autouse
from sparsedepth.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from sparsedepth.probes.trajectory import probe_steps, read_trajectory, summarize
from sparsedepth.train import train

pytestmark = CUDA

PROBE = {"n_windows": 4, "seq_len": 64, "paper_compat": True, "jacobian_windows": 1, "jacobian_seq_len": 32,
         "probes": "variance,jacobian,usefulness,causal,permutation,angular_distance,block_influence"}


def _cfg(data: DataConfig) -> TrainConfig:
    return TrainConfig(model=ModelConfig(vocab_size=512, d_model=128, n_layers=3, n_heads=4, max_seq_len=128),
                       optim=OptimConfig(lr=3e-3, warmup_steps=4), data=data, seq_len=64, batch_size=16,
                       micro_batch_size=8, steps=40, log_interval=4, eval_interval=20, eval_batches=4,
                       device="cuda", compile=True, probe_points=3, probe=PROBE,
                       probe_along={"n_windows": 2, "jacobian_windows": 1})


def test_a_compiled_bf16_run_probes_along_training(tmp_path):
    (tmp_path / "corpus").mkdir()
    cfg = _cfg(word_corpus(tmp_path / "corpus"))
    assert cfg.uses_bf16("cuda") and cfg.compile_mode == "blocks"  # the gpu profile's setting
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    points = read_trajectory(run)["points"]
    assert [p["step"] for p in points] == probe_steps(cfg) and points[-1]["final"]
    assert [p["settings"].get("first_windows") for p in points] == [2, 2, None]
    assert points[-1]["along"]["settings"] == points[0]["settings"]  # the final weights on the points' settings
    final = summarize(json.loads((run / "probes.json").read_text()))
    assert {k: points[-1][k] for k in final} == final
    # the trainer evaluates the same windows under bf16 autocast with its compiled blocks, the point eagerly
    summary = json.loads((run / "summary.json").read_text())
    assert points[-1]["val_loss"] == pytest.approx(summary["val_loss"], rel=2e-3)
    assert all(0 < p["probe_s"] for p in points)
