"""Probes along training: the points, bitwise-unchanged training, last point = probes.json, resume, --trajectory."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from conftest import word_corpus
from sparsedepth.cli import main as cli_main
from sparsedepth.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, config_hash
from sparsedepth.probes import probe_run
from sparsedepth.probes.trajectory import probe_cost, probe_steps, read_trajectory, summarize
from sparsedepth.train import train
from sparsedepth.train.checkpoint import load_state

PROBE = {"n_windows": 4, "seq_len": 32, "paper_compat": True, "jacobian_windows": 1, "jacobian_seq_len": 16,
         "probes": "variance,jacobian,usefulness,causal,permutation,angular_distance,block_influence"}
TIMING = {"tokens_per_s", "mfu"}


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory) -> DataConfig:
    return word_corpus(tmp_path_factory.mktemp("corpus"))


def make_cfg(data: DataConfig, **kw) -> TrainConfig:
    base = dict(seq_len=32, batch_size=8, micro_batch_size=4, steps=16, log_interval=2, telemetry_interval=3,
                eval_interval=8, eval_batches=2, device="cpu", spike_window=16)
    return TrainConfig(model=ModelConfig(vocab_size=512, d_model=32, n_layers=3, n_heads=2, max_seq_len=64),
                       optim=OptimConfig(lr=3e-3, warmup_steps=2), data=data, **{**base, **kw})


def rows(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_state(run, name: str) -> dict:
    return load_state(run / "checkpoints" / "step-00000016", name)


def same(a, b) -> bool:
    """Bitwise equality of nested checkpoint state (tensors, lists, dicts, numbers)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def runs(data_cfg, tmp_path_factory):
    """The same run trained without and with 4 probe points."""
    root = tmp_path_factory.mktemp("runs")
    plain = make_cfg(data_cfg)
    probed = dataclasses.replace(plain, probe_points=4, probe=PROBE, keep_probe_checkpoints=True)
    train(plain, root / "plain", progress=False)
    train(probed, root / "probed", progress=False)
    return plain, probed, root


def test_probe_steps_are_log_spaced_log_steps_ending_at_the_last():
    cfg = TrainConfig(steps=1000, log_interval=10, probe_points=8, optim=OptimConfig(warmup_steps=50))
    steps = probe_steps(cfg)
    assert steps[0] == 50 and steps[-1] == 1000 and len(steps) == 8
    assert all(s % 10 == 0 for s in steps) and steps == sorted(set(steps))
    ratios = [b / a for a, b in zip(steps, steps[1:])]
    assert max(ratios) / min(ratios) < 1.2  # evenly spaced in log steps, up to rounding to log steps
    assert probe_steps(dataclasses.replace(cfg, probe_points=0)) == []
    assert probe_steps(dataclasses.replace(cfg, probe_points=1)) == [1000]


def test_probe_settings_do_not_change_the_hash_and_are_checked():
    cfg = TrainConfig()
    assert config_hash(cfg) == config_hash(dataclasses.replace(cfg, probe_points=8, probe={"n_windows": 8},
                                                               probe_along={"probes": "variance"},
                                                               keep_probe_checkpoints=True))
    with pytest.raises(ConfigError, match="probe_along"):
        TrainConfig(probe_along={"windows": 4})
    with pytest.raises(ConfigError, match="probe_points"):
        TrainConfig(probe_points=-1)


def test_probing_along_training_leaves_training_bit_for_bit_unchanged(runs):
    plain, probed, root = runs
    assert rows(root / "plain") == rows(root / "probed")
    assert same(final_state(root / "plain", "model.pt"), final_state(root / "probed", "model.pt"))
    ta, tb = final_state(root / "plain", "train.pt"), final_state(root / "probed", "train.pt")
    for key in ("optim", "rng", "sched", "monitor", "step"):  # wall_s differs: probing takes time
        assert same(ta[key], tb[key]), key
    sa = json.loads((root / "plain" / "summary.json").read_text())
    sb = json.loads((root / "probed" / "summary.json").read_text())
    assert sa["val_loss"] == sb["val_loss"] and sa["final_loss"] == sb["final_loss"]
    assert not (root / "plain" / "trajectory.json").exists()


def test_trajectory_last_point_equals_the_final_probes(runs):
    _, probed, root = runs
    traj = read_trajectory(root / "probed")
    steps = [p["step"] for p in traj["points"]]
    assert steps == probe_steps(probed) and steps[-1] == probed.steps and traj["points"][-1]["final"]
    assert [p["tokens"] for p in traj["points"]] == [s * probed.tokens_per_step for s in steps]
    written = json.loads((root / "probed" / "probes.json").read_text())  # by the last point
    res = probe_run(root / "probed", out="probes-again.json", **PROBE)
    assert summarize(written) == summarize(res)
    last = traj["points"][-1]
    assert {k: last[k] for k in summarize(res)} == summarize(res)
    summary = json.loads((root / "probed" / "summary.json").read_text())
    assert last["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    # both variance readings, the three usefulness variants and the activation maxima are there
    u, v = last["usefulness"], last["variance"]
    assert len(u["loss_ratio"]) == len(u["paper_compat"]["loss_ratio"]) == len(u["skip"]["loss_ratio"]) == 3
    assert v["last_layer_var"] == v["layer_var"][-1] and v["final_norm_var"] > 0 and len(v["max_abs"]) == 3
    # removing a block loses at least as much as its best linear replacement on the fitted windows, in this model
    assert all(s >= r - 1e-3 for s, r in zip(u["skip"]["loss_ratio"], u["loss_ratio"]))
    cost = probe_cost(root / "probed")
    assert cost["points"] == len(steps) and cost["probe_s"] > 0 and cost["fraction"] > 0


def test_resume_keeps_earlier_points(data_cfg, runs, tmp_path):
    _, probed, root = runs
    run = tmp_path / "resumed"
    train(probed, run, stop_at_step=8, progress=False)
    early = read_trajectory(run)["points"]
    assert early and all(p["step"] <= 8 for p in early)
    train(probed, run, progress=False)
    points = read_trajectory(run)["points"]
    assert points[:len(early)] == early  # kept as written, not probed again
    full = read_trajectory(root / "probed")["points"]
    assert [p["step"] for p in points] == [p["step"] for p in full]
    assert points[-1]["usefulness"] == full[-1]["usefulness"]  # bitwise resume: the same weights, the same probes


def test_cheaper_points_along_the_way(data_cfg, tmp_path):
    cfg = make_cfg(data_cfg, probe_points=3, probe=PROBE, probe_along={"n_windows": 2, "probes": "variance,usefulness"})
    train(cfg, tmp_path / "run", progress=False)
    points = read_trajectory(tmp_path / "run")["points"]
    assert [p["settings"].get("first_windows") for p in points] == [2, 2, None]
    assert "jacobian" not in points[0] and "usefulness" in points[0] and "jacobian" in points[-1]
    # the final weights probed the cheaper way too, so a trend can run on one footing to the end
    along = points[-1]["along"]
    assert along["settings"] == points[0]["settings"] and "jacobian" not in along and along["probe_s"] > 0
    assert along["usefulness"]["loss_ratio"] != points[-1]["usefulness"]["loss_ratio"]  # 2 windows, not all
    final = json.loads((tmp_path / "run" / "probes.json").read_text())
    assert summarize(final) == {k: points[-1][k] for k in summarize(final)}  # the final probes are untouched


def test_cli_probes_kept_checkpoints(runs, tmp_path, capsys):
    _, probed, root = runs
    run = tmp_path / "copy"
    shutil.copytree(root / "probed", run)
    (run / "trajectory.json").unlink()
    args = ["probe", str(run), "--trajectory", "--quiet", "--n-windows", "4", "--seq-len", "32", "--paper-compat",
            "--jacobian-windows", "1", "--jacobian-seq-len", "16", "--probes", PROBE["probes"]]
    assert cli_main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] == probe_steps(probed)
    again = read_trajectory(run)["points"]
    before = read_trajectory(root / "probed")["points"]
    assert [p["causal"] for p in again] == [p["causal"] for p in before]
    assert all(p["source"].endswith(f"step-{p['step']:08d}") for p in again)
    assert cli_main(["probe", str(tmp_path / "nowhere"), "--trajectory", "--quiet"]) == 2
