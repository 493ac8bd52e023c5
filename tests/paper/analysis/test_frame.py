"""The tidy frame of readings and the one seed average: hand-made results with known seeds, so every mean and
range follows from the inputs; the scorecard's rows and the figures' bands both come out of it."""
from __future__ import annotations

import pandas as pd
import pytest

from sparsedepth.paper.analysis import frame
from sparsedepth.paper.analysis import scorecard as sc
from sparsedepth.paper.pipeline.run_result import RunResult
from sparsedepth.paper.report import plots
from sparsedepth.paper.spec import experiments as ex

PROFILE = "gpu"  # three seeds per weight-decay setting


def _run(name: str, meta: dict, ppl: float, useful: float | None) -> RunResult:
    probes = {} if useful is None else {"usefulness": {"score": useful}}
    return RunResult("weight_decay", name, {}, meta=meta, probes=probes, eval={"perplexity": {"ppl": ppl}},
                     metrics=[{"step": s, "layer_var": [1.0, ppl * s]} for s in (1, 2)])


@pytest.fixture()
def seeded() -> dict[str, RunResult]:
    """Every weight-decay variant at gpu: ppl = 10 * (seed + 1) + the setting's index; usefulness only on
    seed 0 and 2 of the first setting."""
    out = {}
    for name, m in ex.variant_meta(PROFILE, "weight_decay").items():
        keys = list(dict.fromkeys(mm["paper_key"] for mm in ex.variant_meta(PROFILE, "weight_decay").values()))
        i = keys.index(m["paper_key"])
        useful = 0.1 * (m["seed"] + 1) if i == 0 and m["seed"] != 1 else None
        out[name] = _run(name, m, 10.0 * (m["seed"] + 1) + i, useful)
    return out


def test_tidy_has_one_row_per_variant_and_reading(seeded):
    df = frame.tidy(seeded.values())
    assert list(df.columns) == frame.COLUMNS
    assert not df.duplicated(["experiment", "variant", "seed", "metric"]).any()
    assert set(df["metric"]) <= set(frame.SCALARS) and df["value"].notna().all()
    ppl = df[df.metric == "ppl"]
    assert len(ppl) == len(seeded)  # every run has a perplexity
    r = seeded["wd0.1-seed2"]
    row = ppl[ppl.variant == "wd0.1-seed2"].iloc[0]
    assert (row.experiment, row.setting, row.seed, row.label, row.value) == (
        "weight_decay", r.setting, 2, r.label, r.perplexity())
    assert len(df[df.metric == "usefulness"]) == 2  # absent readings have no row
    assert frame.tidy([]).empty and list(frame.tidy([]).columns) == frame.COLUMNS


def test_average_seeds_gives_mean_range_and_count():
    df = pd.DataFrame({"variant": ["a", "a-seed1", "a-seed2", "b"], "setting": [1, 1, 1, 2],
                       "value": [1.0, 2.0, 6.0, 5.0]})
    out = frame.average_seeds(df, "value", ["setting"])
    assert list(out["setting"]) == [1, 2] and list(out["variant"]) == ["a", "b"]
    assert list(out["value"]) == [3.0, 5.0] and list(out["seeds"]) == [3, 1]
    assert list(out["value_min"]) == [1.0, 5.0] and list(out["value_max"]) == [6.0, 5.0]


def test_scorecard_rows_are_the_seed_average_of_the_tidy_frame(seeded):
    rows = {r["key"]: r for r in sc.our_rows(PROFILE, "weight_decay", seeded)}
    tidy = frame.tidy(seeded.values())
    expected = frame.average_seeds(tidy, "value", ["setting", "metric"])
    for rec in expected.to_dict("records"):
        row = rows[rec["setting"]]
        assert row[rec["metric"]] == rec["value"]
        assert row["spread"][rec["metric"]] == (rec["value_min"], rec["value_max"], rec["seeds"])
    first = next(iter(rows.values()))
    assert first["seeds"] == 3 and first["ppl"] == pytest.approx((10 + 20 + 30) / 3)
    assert first["by_seed"]["usefulness"] == {0: pytest.approx(0.1), 2: pytest.approx(0.3)}
    assert first["usefulness"] == pytest.approx(0.2) and first["spread"]["usefulness"][2] == 2


def test_figures_average_seeds_the_same_way(seeded):
    df = plots.last_layer_variance_frame(seeded)
    first = next(iter(seeded.values()))
    band = df[(df.label == first.label) & (df.series == plots.RESIDUAL) & (df.step == 2)].iloc[0]
    # layer_var[-1] = 2 * ppl at step 2: the seeds' ppl 10, 20, 30
    assert (band["variance"], band["variance_min"], band["variance_max"], band["seeds"]) == (40.0, 20.0, 60.0, 3)
