"""Trajectory frames, log-token trends and their charts on hand-made trajectories."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from sparsedepth.paper.analysis.trend import trend
from sparsedepth.paper.report.trajectories import trajectory_chart, trajectory_frame, trend_frame

TOKENS = [1e6, 1e7, 1e8]


def point(tokens: float, usefulness: float, ratio: list[float], var: float | None = None) -> dict:
    p = {"step": int(tokens // 1000), "tokens": tokens, "val_loss": 5.0 - math.log10(tokens) / 4,
         "usefulness": {"score": usefulness, "loss_ratio": ratio, "r2": [0.9, 0.8],
                        "skip": {"score": usefulness / 2, "loss_ratio": [r * 2 for r in ratio]}}}
    if var is not None:
        p["variance"] = {"last_layer_var": var, "final_norm_var": 1.0, "layer_var": [var / 2, var],
                         "max_abs": [3.0, var]}
    return p


def traj(scores, ratios, variances=(None, None, None)) -> dict:
    return {"points": [point(t, s, r, v) for t, s, r, v in zip(TOKENS, scores, ratios, variances)]}


def test_trend_crossing_toward_away_and_flat():
    # 0.1 per decade from 0.3 at 1e6: reaches 0.6 at 1e9
    t = trend(TOKENS, [0.3, 0.4, 0.5], target=0.6)
    assert t["slope_per_decade"] == pytest.approx(0.1) and t["crossing_tokens"] == pytest.approx(1e9, rel=1e-9)
    assert trend(TOKENS, [0.5, 0.4, 0.3], target=0.6)["crossing_tokens"] is None  # moving away: never
    assert trend(TOKENS, [0.4, 0.4, 0.4], target=0.6)["crossing_tokens"] is None  # flat: never
    assert trend(TOKENS, [0.5, 0.6, 0.7], target=0.6)["crossing_tokens"] == pytest.approx(1e7)  # already reached
    with pytest.raises(ValueError, match="two distinct"):
        trend([1e6, 1e6], [0.1, 0.2])


def test_frame_is_tidy_and_skips_missing_statistics(tmp_path):
    a = traj([0.2, 0.3, 0.4], [[1.0, 1.2]] * 3, variances=(2.0, 4.0, 8.0))
    b = traj([0.5, 0.4, 0.3], [[1.1, 1.3]] * 3)  # no variance probed
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "trajectory.json").write_text(json.dumps(b))
    f = trajectory_frame({"L=12": a, "L=32": tmp_path / "b"})
    assert list(f.columns) == ["setting", "step", "tokens", "statistic", "value", "basis"]
    assert set(f.basis) == {"along"}  # hand-made points, all on one footing
    assert set(f[f.setting == "L=32"].statistic) >= {"usefulness", "usefulness_skip", "loss_ratio", "val_loss"}
    assert "last_layer_var" not in set(f[f.setting == "L=32"].statistic)
    ratio = f[(f.setting == "L=12") & (f.statistic == "loss_ratio")].value.tolist()
    assert ratio == pytest.approx([1.1] * 3)
    assert f[(f.setting == "L=12") & (f.statistic == "max_abs")].value.tolist() == [3.0, 4.0, 8.0]
    tf = trend_frame(f, "usefulness", target=0.5).set_index("setting")
    assert tf.loc["L=12", "crossing_tokens"] == pytest.approx(1e9) and "1e+09" not in tf.loc["L=12", "label"]
    assert "reaches 0.5 at 1B tokens" in tf.loc["L=12", "label"] and "never reaches 0.5" in tf.loc["L=32", "label"]


def test_seeds_average_and_charts_mark_targets():
    s0 = traj([0.2, 0.3, 0.4], [[1.0, 1.2]] * 3)
    s1 = traj([0.4, 0.5, 0.6], [[1.0, 1.2]] * 3)
    f = trajectory_frame({"L=16": [s0, s1]})
    assert trend_frame(f, "usefulness").iloc[0]["intercept"] == pytest.approx(-0.3)  # mean 0.3, 0.4, 0.5
    spec = trajectory_chart(f, "usefulness", target=1.1).to_dict()
    assert "extrapolation" in json.dumps(spec)
    with pytest.raises(ValueError, match="unknown statistic"):
        trajectory_chart(f, "nonsense")
    per_setting = json.dumps(trajectory_chart(f, "usefulness", target={"L=16": 0.81}, target_tokens=5e9).to_dict())
    assert "diamond" in per_setting and "reaches 0.81 at" in per_setting and "tokens" in per_setting
    with pytest.raises(ValueError, match="target_tokens"):
        trajectory_chart(f, "usefulness", target={"L=16": 0.81})


def test_trends_fit_the_points_on_one_footing_and_show_the_final_probes_apart():
    """Points before the last on cheaper settings: the last point's own cheaper reading continues the line;
    the final probes (fuller settings, here reading 0.9 where the cheap ones read 0.4) are drawn, not fitted."""
    from sparsedepth.paper.pipeline.run_result import along_series
    from sparsedepth.paper.report.trajectories import trend_table

    t = traj([0.2, 0.3, 0.9], [[1.0, 1.2]] * 3)
    t["along"] = {"n_windows": 4}
    *_, last = t["points"]
    last["final"] = True
    last["along"] = {"settings": {"first_windows": 4}, "usefulness": {**last["usefulness"], "score": 0.4}}
    series = along_series(t)
    assert [p["usefulness"]["score"] for p in series] == [0.2, 0.3, 0.4] and not series[-1]["final"]
    f = trajectory_frame({"L=8": t})
    use = f[f.statistic == "usefulness"]
    assert use[use.basis == "along"].value.tolist() == [0.2, 0.3, 0.4] and use[use.basis == "final"].value.tolist() == [0.9]
    assert trend_frame(f, "usefulness").iloc[0]["slope_per_decade"] == pytest.approx(0.1)
    row = trend_table(f, {}).set_index("statistic").loc["usefulness"]
    assert row["last"] == pytest.approx(0.4) and row["final probes"] == pytest.approx(0.9)
    assert "not fitted" in json.dumps(trajectory_chart(f, "usefulness").to_dict())
    # a trajectory written before the last point kept its cheaper reading: the series stops before it
    del last["along"]
    assert [p["step"] for p in along_series(t)] == [p["step"] for p in t["points"][:2]]
    # no cheaper settings at all: every point, the last (the final probes) included
    t["along"] = {}
    assert along_series(t) == t["points"]


def test_trend_table_marks_a_statistic_whose_last_points_turn_back():
    from sparsedepth.paper.report.trajectories import TAIL, trend_table

    tokens = [10 ** (6 + k / 2) for k in range(8)]
    peaked, rising = [12, 16, 22, 32, 47, 59, 52, 39], [12, 16, 22, 32, 39, 47, 52, 59]
    f = pd.DataFrame([{"setting": s, "step": k, "tokens": t, "statistic": "last_layer_var", "value": v,
                       "basis": "along"} for s, vs in (("L=12", peaked), ("L=16", rising))
                      for k, (t, v) in enumerate(zip(tokens, vs))])
    table = trend_table(f, {"last_layer_var": 400}).set_index("setting")
    assert table.loc["L=12", TAIL] == "turn back" and table.loc["L=16", TAIL] == ""
    assert (table["per decade"] > 0).all()  # the line calls both rising: the column is what tells them apart
