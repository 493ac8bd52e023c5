"""What the usefulness score measures, on hand-made runs probed along training at two widths: the per-layer
frame, the split of the official excess, findings written from the numbers (they follow the data), the charts,
and a sweep's trajectory targets."""
from __future__ import annotations

import json

import pytest

from sparsedepth.paper.pipeline.run_result import RunResult
from sparsedepth.paper.report import trajectories
from sparsedepth.paper.report import usefulness_readings as ur

TOKENS = [1e6, 1e7, 1e8, 1e9]
LAYERS = 4


def _point(t: int, nonlin: float, trans: float) -> dict:
    """Point t: every layer's correct fit costs ``nonlin`` x (t + 1), the transposition adds ``trans`` x (t + 1)
    mostly in layer 1, where the largest activation sits."""
    lin = [1 + nonlin * (t + 1)] * LAYERS
    extra = [trans * (t + 1) * w for w in (0.5, 2.5, 0.5, 0.5)]
    return {"step": 10 ** (t + 1), "tokens": TOKENS[t], "val_loss": 4.0, "final": t == len(TOKENS) - 1,
            "usefulness": {"score": 0.0, "loss_ratio": lin, "r2": [0.9] * LAYERS,
                           "paper_compat": {"score": 0.0, "loss_ratio": [a + b for a, b in zip(lin, extra)]},
                           "skip": {"score": 1.0, "loss_ratio": [x + 0.5 for x in lin]}},
            "variance": {"layer_var": [1.0] * LAYERS, "final_norm_var": 1.0, "max_abs": [10.0, 500.0, 12.0, 11.0]}}


def _run(label: str, d: int, nonlin: float, trans: float, probed: bool = True) -> RunResult:
    points = [_point(t, nonlin, trans) for t in range(len(TOKENS))]
    traj = {"points": points} if probed else None
    probes = {"usefulness": {"threshold": 1.1, **points[-1]["usefulness"]}, "variance": points[-1]["variance"]}
    return RunResult("depth", label, {"model": {"d_model": d}}, meta={"label": label, "paper_key": int(label[2:])},
                     probes=probes, summary={"tokens": TOKENS[-1], "steps": 10 ** 4}, trajectory=traj)


def rungs(nonlin=0.01, trans=0.04):
    return {"gpu": {"L12": _run("L=12", 512, nonlin, trans), "L16": _run("L=16", 512, nonlin, trans)},
            "gpu-wide": {"L12": _run("L=12", 1024, nonlin, 2 * trans), "L16": _run("L=16", 1024, nonlin, 2 * trans)}}


def test_frame_and_split_of_the_official_excess():
    layers = ur.layer_frame(rungs())
    assert set(layers.reading) == set(ur.READINGS)
    assert len(layers) == 2 * 2 * len(TOKENS) * LAYERS * len(ur.READINGS)
    ex = ur.excess_frame(layers)
    last = ex[(ex.rung == "gpu") & ex.final & (ex.setting == "L=12")].iloc[0]
    assert last.nonlinearity == pytest.approx(0.04) and last.transposition == pytest.approx(0.04 * 4 * 1.0)
    assert last.removal == pytest.approx(0.54) and last.share == pytest.approx(0.16 / 0.2)
    assert last.useful_linear == 0 and last.useful_official == 4  # 1.04 + at least 0.08 in every layer
    assert last.corr_max_abs > 0.9
    assert last.official_above_removal == 0  # removal costs 0.5 more than the correct fit, the transposition less
    big = ur.excess_frame(ur.layer_frame(rungs(trans=0.2)))
    assert big[big.final & (big.rung == "gpu")].official_above_removal.tolist() == [0.25, 0.25]  # layer 1: 2.0 > 0.5


def test_findings_follow_the_numbers():
    text = ur.findings(ur.excess_frame(ur.layer_frame(rungs())))
    assert "mostly from **the transposition**" in text
    assert "the transposition excess grows in 2 of 2 settings" in text
    assert "rises faster than the correct fit's own excess in 2 of 2 settings" in text
    assert "From d = 512 to d = 1024 at the same tokens" in text and "transposition's by x2" in text
    assert "Plain removal costs" in text and "correlate at r = +" in text
    assert "costs more than removing the block in 0 % of the layers" in text
    # the other way round: a small transposition, the nonlinearity carries the excess
    flipped = ur.findings(ur.excess_frame(ur.layer_frame(rungs(nonlin=0.05, trans=0.001))))
    assert "mostly from **the blocks' nonlinearity**" in flipped and "the transposition" not in flipped.split("**")[3]


def test_settings_follow_the_sweep_order_within_each_rung():
    runs = {"gpu": {v: _run(f"L={v}", 512, 0.01, 0.04) for v in (32, 8, 16)},
            "gpu-wide": {v: _run(f"L={v}", 1024, 0.01, 0.04) for v in (16, 8)}}
    ex = ur.excess_frame(ur.layer_frame(runs))
    assert list(dict.fromkeys(ex.setting)) != ["L=8", "L=16", "L=32"]  # the pivot's string order
    got = ur.in_order(ex, ["L=8", "L=16", "L=32"])
    pairs = list(dict.fromkeys(zip(got.rung, got.setting)))
    assert pairs == [("gpu", "L=8"), ("gpu", "L=16"), ("gpu", "L=32"), ("gpu-wide", "L=8"), ("gpu-wide", "L=16")]
    assert (got.groupby(["rung", "setting"]).step.apply(lambda s: s.is_monotonic_increasing)).all()
    assert len(got) == len(ex) and ur.in_order(ex.iloc[:0], ["L=8"]).empty


def test_final_probes_only_and_charts():
    final_only = {"cpu": {"L3": _run("L=3", 96, 0.01, 0.04, probed=False)}}
    layers = ur.layer_frame(final_only)
    ex = ur.excess_frame(layers)
    assert len(ex) == 1 and bool(ex.final.iloc[0])
    assert "No run here was probed along training" in ur.findings(ex)
    assert ur.excess_chart(ex) is None
    spec = json.dumps(ur.layer_chart(layers).to_dict())
    assert "largest |h|" in spec and "official" in spec
    full = ur.layer_frame(rungs())
    assert ur.excess_chart(ur.excess_frame(full)) is not None
    assert "No usefulness" not in ur.findings(ur.excess_frame(full))
    assert ur.findings(ur.excess_frame(ur.layer_frame({}))).startswith("- No run here has both")


def test_sweep_targets_and_figure():
    res = rungs()["gpu"]
    targets = trajectories.sweep_targets("depth", res)
    assert targets["usefulness"] == {"L=12": 1.0, "L=16": 0.813}  # the paper's fractions per setting
    assert targets["loss_ratio_paper_compat"] == 1.1 and targets["last_layer_var"]["L=16"] == 600.0
    assert targets["jacobian"]["L=12"] > 0
    chart, frame, _ = trajectories.sweep_figure("depth", res, ["L=12", "L=16"])
    assert chart is not None and set(frame.setting) == {"L=12", "L=16"}
    table = trajectories.trend_table(frame, targets)
    row = table[(table.statistic == "loss_ratio_paper_compat") & (table.setting == "L=12")].iloc[0]
    assert row["target"] == 1.1 and row["reaches it at"] != "never" and row["per decade"] > 0
    assert (table[table.statistic == "max_abs"]["reaches it at"] == "—").all()
    assert (table[table.statistic == "loss_ratio_skip"]["reaches it at"] == "never").all()  # 1.5, rising away
    unprobed = {"L12": _run("L=12", 512, 0.01, 0.04, probed=False)}
    assert trajectories.sweep_figure("depth", unprobed)[0] is None


def test_a_real_trajectory_reads_like_its_final_probes(tmp_path):
    """A tiny run probed along training: every point reads through RunResult.at_point, and the last point's
    readings are the final probes' (probes.json) readings."""
    from conftest import word_corpus
    from sparsedepth.config import ModelConfig, OptimConfig, TrainConfig
    from sparsedepth.paper.analysis import frame
    from sparsedepth.probes.trajectory import read_trajectory
    from sparsedepth.train import train

    probe = {"n_windows": 4, "seq_len": 32, "paper_compat": True, "jacobian_windows": 1, "jacobian_seq_len": 16,
             "probes": "variance,jacobian,usefulness,causal,permutation"}
    cfg = TrainConfig(model=ModelConfig(vocab_size=512, d_model=32, n_layers=3, n_heads=2, max_seq_len=64),
                      optim=OptimConfig(lr=3e-3, warmup_steps=2), data=word_corpus(tmp_path), seq_len=32,
                      batch_size=8, micro_batch_size=4, steps=16, log_interval=2, eval_batches=2, device="cpu",
                      probe_points=3, probe=probe)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    r = RunResult("depth", "L3", {"model": {"d_model": 32}}, meta={"label": "L=3", "paper_key": 12},
                  probes=json.loads((run / "probes.json").read_text()), trajectory=read_trajectory(run),
                  summary=json.loads((run / "summary.json").read_text()))
    points = r.points()
    assert len(points) == 3
    last, final = frame.readings(r.at_point(points[-1])), frame.readings(r)
    for m in ("usefulness", "useful_layers", "loss_ratio", "loss_ratio_compat", "causal", "permutation",
              "jacobian_mean"):
        assert last[m] is not None and last[m] == pytest.approx(final[m], rel=1e-9), m
    assert last["variance_end"] == pytest.approx(r.probed_last_layer_var())
    layers = ur.layer_frame({"cpu": {"L3": r}})
    assert set(layers.reading) == set(ur.READINGS) and layers.step.nunique() == 3
    assert len(ur.excess_frame(layers)) == 3
    assert set(trajectories.sweep_frame({"L3": r}).statistic) >= {"usefulness_skip", "max_abs", "jacobian", "causal"}
