"""The official-decay figure and table on hand-made weight-decay results: values land under the right decay and
λ, seeds are averaged, a missing official sweep or a missing gain gives a note instead of an error."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from sparsedepth.paper.pipeline.run_result import RunResult
from sparsedepth.paper.report import official_decay as od
from sparsedepth.paper.spec import reported as paper


def _run(lam: float, residual: float, postnorm: float, gain: float | None = None, seed: int = 0) -> RunResult:
    """A result shaped like load_results' entries: two telemetry rows, the last one is the end of training."""
    last = {"step": 20, "layer_var": [1.0, residual], "final_var": postnorm}
    if gain is not None:
        last["final_gain"] = gain
    first = {"step": 10, "layer_var": [1.0, 99.0], "final_var": 99.0, **({"final_gain": 9.0} if gain else {})}
    return RunResult("weight_decay", f"wd{lam}-seed{seed}", {}, meta={"value": lam, "seed": seed},
                     metrics=[first, {"step": 15, "loss": 3.0}, last])


def _ours() -> dict:
    """Our sweep: two seeds of λ = 0.1 (the second with a gain logged), the other λ without any gain."""
    return {"wd0": _run(0.0, 40.0, 1.2), "wd0.1": _run(0.1, 30.0, 1.2),
            "wd0.1-seed1": _run(0.1, 34.0, 1.4, gain=1.1, seed=1), "wd3": _run(3.0, 0.3, 1.6)}


def _official() -> dict:
    return {"wd0": _run(0.0, 40.0, 1.2, gain=1.1), "wd3": _run(3.0, 20.0, 0.01, gain=0.1)}


def _cell(table: pd.DataFrame, lam: float, column: str) -> float:
    return float(table.loc[table["λ"] == lam, column].iloc[0])


def test_table_puts_each_reading_under_its_decay_and_lambda():
    runs = od.run_rows({"weight_decay": _ours(), "weight_decay_official": _official()})
    assert len(runs) == 6 and set(runs.decay) == set(od.DECAYS.values())
    table = od.summary_table(runs)
    assert list(table["λ"]) == [0.0, 0.01, 0.1, 1.0, 3.0]
    # the last telemetry row is the end of training, not the first or the largest
    assert _cell(table, 3.0, "h_L, official") == 20.0 and _cell(table, 3.0, "N_f(h_L), official") == 0.01
    assert _cell(table, 3.0, "h_L, ours") == 0.3 and _cell(table, 3.0, "mean |g|, official") == 0.1
    assert _cell(table, 3.0, "N_f / mean|g|², official") == pytest.approx(0.01 / 0.1 ** 2)
    # ours at λ = 0.1: the mean of two seeds; the gain only from the seed that logged it
    assert _cell(table, 0.1, "h_L, ours") == pytest.approx(32.0)
    assert _cell(table, 0.1, "mean |g|, ours") == pytest.approx(1.1)
    assert math.isnan(_cell(table, 0.1, "h_L, official")) and math.isnan(_cell(table, 0.01, "h_L, ours"))
    assert math.isnan(_cell(table, 3.0, "mean |g|, ours"))  # never logged: blank, not zero
    paper_end = [paper.rows("weight_decay")[lam]["variance_end"] for lam in table["λ"]]
    assert list(table["paper's logged variance (end)"]) == paper_end
    assert list(table["runs, ours"]) == [1, 0, 2, 0, 1] and list(table["runs with mean |g|, ours"]) == [0, 0, 1, 0, 0]
    means = od.setting_means(runs)
    assert int(means.loc[(means.decay == od.DECAYS["weight_decay"]) & (means.lam == 0.1), "seeds"].iloc[0]) == 2


def test_figure_draws_every_recorded_quantity():
    runs = od.run_rows({"weight_decay": _ours(), "weight_decay_official": _official()})
    chart, long = od.figure(runs)
    assert chart.to_dict()["facet"]["field"] == "quantity"
    official = long[long.decay == od.DECAYS["weight_decay_official"]]
    assert set(official.quantity) == set(od.QUANTITIES.values())
    ours = long[long.decay == od.DECAYS["weight_decay"]]
    assert set(ours[ours["λ"] == "3"].quantity) == {od.QUANTITIES["residual"], od.QUANTITIES["postnorm"]}
    assert not long["value"].isna().any()


def test_missing_official_sweep_gives_a_note_not_an_error():
    runs = od.run_rows({"weight_decay": _ours(), "weight_decay_official": None})
    note = od.missing_note("gpu", runs)
    assert "not trained yet at this profile" in note
    assert "sparsedepth run --profile gpu weight_decay_official" in note
    assert "gain not recorded" in note
    table = od.summary_table(runs)
    assert table[[c for c in table if c.endswith("official")]].isna().all().all()
    chart, long = od.figure(runs)  # ours alone still plots
    assert set(long.decay) == {od.DECAYS["weight_decay"]}


def test_section_without_any_results(tmp_path):
    table, chart, note = od.section("smoke", root=tmp_path)
    assert chart is None and "not trained yet" in note and "no results" in note
    assert len(table) == 5 and (table[["runs, ours", "runs with mean |g|, ours"]] == 0).all().all()
    counts = ["λ", "paper's logged variance (end)", "runs, ours", "runs with mean |g|, ours"]
    assert table.drop(columns=counts).isna().all().all()
    assert not (tmp_path / "figures").exists()  # nothing written from nothing


def test_section_writes_table_and_figure(tmp_path):
    table, chart, note = od.section("smoke", _ours(), root=tmp_path)
    assert chart is not None and "not trained yet" in note
    for path in (tmp_path / "figures" / "smoke" / f"{od.NAME}.png",
                 tmp_path / "paper_results" / "smoke" / "tables" / f"{od.NAME}.md"):
        assert path.stat().st_size > 0, path
