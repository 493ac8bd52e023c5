"""The notebook sections on scale, on hand-made depth runs probed along training (the fixture of
test_usefulness_readings) under a temporary output root: trajectory figure and trend table, the rungs table
and what the usefulness score measures are written; without trajectories or a second rung each says so and
writes nothing."""
from __future__ import annotations

import pandas as pd

from sparsedepth.paper.analysis import scorecard
from sparsedepth.paper.pipeline import results as R
from sparsedepth.paper.report import notebook, rungs

from test_usefulness_readings import _run  # the same folder (pytest puts it on the path)

ORDER = ["L=12", "L=16", "L=24", "L=32"]


def sweep(d: int, trans: float) -> dict:
    """The whole gpu depth sweep, hand-made, at width ``d``."""
    return {f"L{L}": _run(f"L={L}", d, 0.01, trans) for L in (12, 16, 24, 32)}


def test_sections_write_their_figures_and_tables(tmp_path, monkeypatch):
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    res = sweep(1024, 0.08)
    figures, tables = tmp_path / "figures" / "gpu-wide", tmp_path / "paper_results" / "gpu-wide" / "tables"

    assert notebook.trajectory_figure("depth", "gpu-wide", res, ORDER) is not None
    assert (figures / "depth_trajectories.png").stat().st_size > 0
    trends = pd.read_csv(tables / "depth_trajectory_trends.csv")
    assert {"usefulness_paper_compat", "loss_ratio", "max_abs"} <= set(trends.statistic)

    notebook.rungs_table("depth", "gpu-wide", res)  # only one rung with results: nothing written
    assert not (tables / "depth_rungs.csv").exists()
    gpu = rungs.scorecard_path("gpu")
    gpu.parent.mkdir(parents=True)
    scorecard.scorecard("gpu", {"depth": sweep(512, 0.04)}).to_csv(gpu, index=False)
    notebook.rungs_table("depth", "gpu-wide", res)
    table = pd.read_csv(tables / "depth_rungs.csv")
    assert set(table.rung) == {"gpu", "gpu-wide"} and set(table.id) >= {"depth.variance", "depth.usefulness"}
    assert "with scale" in table.columns

    notebook.usefulness_section("depth", "gpu-wide", res, ORDER)
    assert (figures / "depth_usefulness_readings.png").stat().st_size > 0
    assert (figures / "depth_usefulness_along_training.png").stat().st_size > 0
    split = pd.read_csv(tables / "depth_usefulness_readings.csv")
    assert list(split.rung.unique()) == ["gpu-wide"] and split.transposition.gt(0).all()


def test_sections_without_trajectories_say_so_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    res = {"L12": _run("L=12", 512, 0.01, 0.04, probed=False)}
    assert notebook.trajectory_figure("depth", "gpu-long", res, ORDER) is None
    notebook.rungs_table("depth", "cpu", res)
    notebook.usefulness_section("depth", "gpu-long", res, ORDER)
    written = sorted(p.name for p in (tmp_path / "figures" / "gpu-long").iterdir())
    assert written == ["depth_usefulness_readings.csv", "depth_usefulness_readings.png",
                       "depth_usefulness_readings.svg"]  # the final probes' per-layer readings, nothing along training
