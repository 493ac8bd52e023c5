"""W&B logging, read back from the offline run files: the config, per-layer series grouped per statistic, one
chart per statistic, and the probe and evaluation scores in the summary; switched on without changing the config."""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from sparsedepth.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, config_hash
from sparsedepth.train import train
from sparsedepth.train.telemetry import WANDB_ENV, read_metrics, wandb_enabled, wandb_log_scores, wandb_run_id

pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc32, length, type) records


def read_records(path: Path) -> list:
    """Every protobuf Record of an offline run's ``.wandb`` file (wandb 0.31 ships no Python reader)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + n > len(data):  # still being written
            break
        pending += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST: one record complete
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            records.append(rec)
            pending = b""
    return records


def _finished(path: Path) -> bool:
    return any(rec.WhichOneof("record_type") == "exit" for rec in read_records(path))


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def read_offline_runs(run_dir: Path) -> dict:
    """history rows by step, the merged summary and config of every offline W&B run in ``run_dir/wandb``."""
    out = {"history": {}, "summary": {}, "config": {}, "ids": set()}
    files = sorted(run_dir.glob("wandb/offline-run-*/*.wandb"))
    assert files, f"no offline W&B run under {run_dir}"
    deadline = time.monotonic() + 60  # run.finish() can return before W&B's service has written the file out
    while not all(_finished(f) for f in files):
        assert time.monotonic() < deadline, "an offline W&B run was never written out"
        time.sleep(0.2)
    for path in files:
        for rec in read_records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                row = _items(rec.history.item)
                out["history"].setdefault(row["_step"], {}).update(row)
            elif kind == "summary":
                out["summary"].update(_items(rec.summary.update))
            elif kind == "config":
                out["config"].update(_items(rec.config.update))
            elif kind == "run":
                out["ids"].add(rec.run.run_id)
                out["config"].update(_items(rec.run.config.update))
    return out


def _cfg(tmp_path: Path) -> TrainConfig:
    words = [f"w{i}" for i in range(120)]
    docs = [" ".join(words[(7 * d + 3 * k) % 120] for k in range(80)) for d in range(30)]
    (tmp_path / "corpus.txt").write_text("\n<|endoftext|>\n".join(docs))
    return TrainConfig(model=ModelConfig(vocab_size=300, d_model=32, n_layers=3, n_heads=2, max_seq_len=64),
                       optim=OptimConfig(warmup_steps=1), seq_len=32, batch_size=4, steps=6, log_interval=1,
                       telemetry_interval=2, device="cpu",
                       data=DataConfig(corpus=str(tmp_path / "corpus.txt"), vocab_size=300,
                                       cache_dir=str(tmp_path / "cache")))


def test_switch_is_an_opt_in_that_leaves_the_config_alone(monkeypatch):
    monkeypatch.delenv(WANDB_ENV, raising=False)
    assert not wandb_enabled(False) and wandb_enabled(True)
    monkeypatch.setenv(WANDB_ENV, "1")
    assert wandb_enabled(False)
    monkeypatch.setenv(WANDB_ENV, "0")
    assert not wandb_enabled(False)
    monkeypatch.setenv(WANDB_ENV, "maybe")
    with pytest.raises(ConfigError, match="SPARSEDEPTH_WANDB='maybe'"):
        wandb_enabled(False)


def test_offline_run_holds_config_per_layer_series_charts_and_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv(WANDB_ENV, "1")
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    # the scores a finished run gets after its probes and evaluation (results._execute calls this)
    probes = {"usefulness": {"score": 0.667, "useful": [True, True, False]}, "causal": {"score": 0.25},
              "permutation": {"score": 0.5, "stderr": 0.1}, "jacobian": {"mean_jacobian_norm": 0.004}}
    (run / "probes.json").write_text(json.dumps(probes))
    (run / "eval.json").write_text(json.dumps({"perplexity": {"ppl": 250.0}, "mean_acc": 0.3}))
    logged = wandb_log_scores(run, cfg.wandb_project, wandb_run_id(config_hash(cfg)))
    assert logged["probes/usefulness/score"] == 0.667 and "probes/usefulness/useful" not in logged

    wb = read_offline_runs(run)
    assert wb["ids"] == {wandb_run_id(config_hash(cfg))}  # the scores joined the training run
    assert wb["config"]["seq_len"] == 32 and wb["config"]["model"]["n_layers"] == 3

    rows = [r for r in read_metrics(run) if "layer_var" in r]
    assert [r["step"] for r in rows] == [2, 4, 6]
    for row in rows:
        hist = wb["history"][row["step"]]
        for stat in ("layer_var", "attn_var", "ffn_var", "layer_grad_norm"):
            series = [hist[f"per_layer/{stat}/layer_{i}"] for i in (1, 2, 3)]
            assert series == pytest.approx(row[stat], rel=1e-6), stat
        assert hist["loss"] == pytest.approx(row["loss"])
    for stat in ("layer_var", "attn_var", "ffn_var", "layer_grad_norm"):  # one chart each: 3 layers x 3 steps
        assert wb["summary"][f"per_layer_charts/{stat}_table/nrows"] == 3 * 3, stat

    s = wb["summary"]
    assert s["probes/usefulness/score"] == 0.667 and s["probes/causal/score"] == 0.25
    assert s["probes/jacobian/mean_jacobian_norm"] == 0.004 and s["eval/perplexity/ppl"] == 250.0
    assert s["eval/mean_acc"] == 0.3


def test_off_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv(WANDB_ENV, raising=False)
    cfg = _cfg(tmp_path)
    cfg.steps = 2
    train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "wandb").exists()
