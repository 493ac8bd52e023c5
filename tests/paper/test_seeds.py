"""Several seeds per depth (the gpu profile's depth sweep): tables, claims and figures aggregate the seeds of a
setting into the mean and its min–max range, and a single seed gives exactly what it gave before.

Results are hand-made, shaped like ``results.load_results``: seed 1 of every depth is seed 0 scaled by a known
factor, so every expected mean and range follows from the inputs. Also ``scripts/compare_runs.py``, which
sets two runs side by side step by step."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_script
from sparsedepth.paper.spec import experiments as ex
from sparsedepth.paper.report import plots, tables
from sparsedepth.paper.analysis import frame
from sparsedepth.paper.analysis import scorecard as sc
from sparsedepth.paper.pipeline.run_result import RunResult
from sparsedepth.paper.spec.reported import PAPER

PROFILE = "gpu"  # the profile with two depth seeds
SCALE = {"variance": 1.5, "usefulness": 0.5, "causal": 0.8, "jacobian": 2.0}  # seed 1 = seed 0 times these


def _run(name: str, meta: dict, L: int, seed: int) -> RunResult:
    """One depth variant: last-layer variance and scores falling/growing with L as the paper's, seed 1 scaled."""
    f = (lambda k: SCALE[k]) if seed else (lambda k: 1.0)
    metrics = [{"step": s, "layer_var": [float(s * L * (i + 1)) * f("variance") for i in range(L)],
                "final_var": 1.0 + s * f("variance")} for s in range(1, 11)]
    probes = {"usefulness": {"score": (1.0 - L / 64) * f("usefulness")},
              "causal": {"score": (1.0 / L) * f("causal")}, "permutation": {"score": 2.0 / L},
              "jacobian": {"jacobian_norm": [f("jacobian") / (L * (i + 1)) for i in range(L)]}}
    return RunResult("depth", name, {"model": {"n_layers": L}, "seed": seed}, hash=f"h{L}-{seed}", meta=meta,
                     metrics=metrics, probes=probes, eval={"perplexity": {"ppl": 20.0 + L}},
                     summary={"done": True}, provenance={})


@pytest.fixture(scope="module")
def two_seeds() -> dict[str, RunResult]:
    metas = ex.variant_meta(PROFILE, "depth")
    assert {m["seed"] for m in metas.values()} == {0, 1}
    return {name: _run(name, m, m["value"], m["seed"]) for name, m in metas.items()}


def _seed0(res: dict) -> dict:
    return {n: r for n, r in res.items() if r.meta["seed"] == 0}


# ------------------------------------------------------------------------------------------ scorecard


def test_rows_are_seed_means_with_their_range(two_seeds):
    rows = sc.our_rows(PROFILE, "depth", two_seeds)
    assert [r["name"] for r in rows] == [f"L{L}" for L in ex.scale(PROFILE).depths]  # one row per depth
    for r in rows:
        a = frame.readings(two_seeds[r["name"]])
        b = frame.readings(two_seeds[f"{r['name']}-seed1"])
        assert r["seeds"] == 2 and r["present"]
        for m in ("usefulness", "causal", "permutation", "variance_end", "variance_peak", "ppl"):
            assert r[m] == pytest.approx((a[m] + b[m]) / 2), m
            assert r["spread"][m] == pytest.approx((min(a[m], b[m]), max(a[m], b[m]), 2)), m
        assert r["jacobian"] == pytest.approx([(x + y) / 2 for x, y in zip(a["jacobian"], b["jacobian"])])
        lo, hi, n = r["spread"]["jacobian_mean"]
        assert lo < hi and n == 2  # seed 1's Jacobian is twice seed 0's


def test_a_missing_seed_counts_one(two_seeds):
    res = {n: r for n, r in two_seeds.items() if n != "L16-seed1"}
    row = sc.setting_row(PROFILE, "depth", res, 16)
    assert row["seeds"] == 1 and row["usefulness"] == frame.readings(res["L16"])["usefulness"]
    assert row["spread"]["usefulness"][2] == 1
    assert sc.setting_row(PROFILE, "depth", {}, 16) is None
    card = sc.checks(PROFILE, {"depth": res})
    assert "L=16: " in card[0].ours and "[n=1]" in card[0].ours


def test_claims_use_the_seed_mean_and_show_the_range(two_seeds):
    checks = {c.id: c for c in sc.checks(PROFILE, {"depth": two_seeds})}
    use = checks["depth.usefulness"]
    assert use.status == "holds" and use.ours.count("n=2") == 4 and "paired by seed, 2 seeds" in use.noise
    mean16 = sc.setting_row(PROFILE, "depth", two_seeds, 16)["usefulness"]
    assert f"L=16: {mean16:.4g} [" in use.ours
    # the rule sees each seed's slope: seed 1 rising steeply against seed 0's fall leaves their mean within
    # its standard error, and both rising contradicts the claim
    flipped = copy.deepcopy(two_seeds)
    for name, r in flipped.items():
        if r.meta["seed"] == 1:
            r.probes["usefulness"]["score"] = 10.0 * r.meta["value"]
    assert {c.id: c for c in sc.checks(PROFILE, {"depth": flipped})}["depth.usefulness"].status == "inconclusive"
    for name, r in flipped.items():
        r.probes["usefulness"]["score"] = (10.0 + r.meta["seed"]) * r.meta["value"]
    assert {c.id: c for c in sc.checks(PROFILE, {"depth": flipped})}["depth.usefulness"].status == "contradicted"


def test_compare_has_range_columns_only_with_several_seeds(two_seeds):
    df = sc.compare(PROFILE, "depth", two_seeds)
    assert len(df) == 4 and list(df["variant"]) == [f"L{L}" for L in ex.scale(PROFILE).depths]
    assert list(df["seeds"]) == [2, 2, 2, 2]
    cols = list(df.columns)
    i = cols.index("ours_usefulness")
    assert cols[i + 1: i + 3] == ["ours_usefulness_min", "ours_usefulness_max"]
    row = df.iloc[0]
    assert row["ours_usefulness_min"] <= row["ours_usefulness"] <= row["ours_usefulness_max"]
    assert row["ours_usefulness_min"] < row["ours_usefulness_max"]
    # one seed (smoke): the table of before, no seed columns, values of the one run
    smoke = {n: _run(n, m, m["value"], 0) for n, m in ex.variant_meta("smoke", "depth").items()}
    one = sc.compare("smoke", "depth", smoke)
    assert not any(c.endswith(("_min", "_max")) for c in one.columns) and "seeds" not in one.columns
    assert list(one["ours_usefulness"]) == [frame.readings(r)["usefulness"] for r in smoke.values()]
    assert [(r["variants"], r["spread"]["usefulness"][2]) for r in sc.our_rows("smoke", "depth", smoke)] == [(1, 1)] * 4


# ------------------------------------------------------------------------------------------ tables


def test_paper_vs_ours_carries_the_range(two_seeds):
    cmp = sc.compare(PROFILE, "depth", two_seeds)
    long = plots.compare_long(cmp, ["usefulness", "ppl"]).assign(experiment="depth")
    wide = tables.side_by_side(long, ["experiment", "variant", "setting", "metric"])
    assert list(wide.columns)[-4:] == ["paper", "ours", "ours_min", "ours_max"] and len(wide) == 8
    u = wide[(wide.variant == "L12") & (wide.metric == "usefulness")].iloc[0]
    assert u["ours"] == pytest.approx(cmp.iloc[0]["ours_usefulness"])
    assert (u["ours_min"], u["ours_max"]) == pytest.approx(
        (cmp.iloc[0]["ours_usefulness_min"], cmp.iloc[0]["ours_usefulness_max"]))
    plain = tables.side_by_side(long.drop(columns=["value_min", "value_max"]), ["experiment", "variant", "setting",
                                                                                "metric"])
    assert list(plain.columns)[-2:] == ["paper", "ours"]


# ------------------------------------------------------------------------------------------ figures


def test_seed_mean_builds_a_band_and_leaves_one_seed_alone(two_seeds):
    df = plots.last_layer_variance_frame(two_seeds)
    assert {"variance_min", "variance_max", "seeds"} <= set(df.columns)
    assert df.groupby(["label", "series", "step"]).size().max() == 1 and set(df["seeds"]) == {2}
    assert list(dict.fromkeys(df["variant"])) == [f"L{L}" for L in ex.scale(PROFILE).depths]
    r = df[(df.label == "L=12") & (df.series == plots.RESIDUAL) & (df.step == 10)].iloc[0]
    seed0 = 10 * 12 * 12  # layer_var[-1] at step 10 of L=12
    assert r["variance"] == pytest.approx(seed0 * (1 + SCALE["variance"]) / 2)
    assert (r["variance_min"], r["variance_max"]) == pytest.approx((seed0, seed0 * SCALE["variance"]))
    single = plots.last_layer_variance_frame(_seed0(two_seeds))
    assert list(single.columns) == ["variant", "label", "step", "series", "variance"]
    assert plots.seed_mean(single, "variance", ["label", "series", "step"]) is single
    with pytest.raises(ValueError, match="must include the label"):
        plots.seed_mean(df.assign(label="same"), "variance", ["step"])


def _marks(spec: dict) -> list[str]:
    """Every mark type in a Vega-Lite spec, however nested (layer, facet spec, concat)."""
    out, stack = [], [spec]
    while stack:
        s = stack.pop()
        if isinstance(s, dict):
            if "mark" in s:
                out.append(s["mark"] if isinstance(s["mark"], str) else s["mark"]["type"])
            stack.extend(s.values())
        elif isinstance(s, list):
            stack.extend(s)
    return out


def test_charts_draw_the_range_only_with_several_seeds(two_seeds):
    order = plots.order_of(two_seeds)
    assert order == [f"L={L}" for L in ex.scale(PROFILE).depths]  # each label once
    df = plots.last_layer_variance_frame(two_seeds)
    spec = plots.variance_chart(df, order, sweep_title="L", title="t").to_dict()
    assert sorted(_marks(spec)) == ["area", "line"]
    single = plots.last_layer_variance_frame(_seed0(two_seeds))
    assert _marks(plots.variance_chart(single, order, sweep_title="L", title="t").to_dict()) == ["line"]

    jac = plots.paper_jacobian_frame(PAPER["depth"]["jacobian"], two_seeds)
    ours = jac[jac.source == plots.OURS]
    assert len(ours) == sum(ex.scale(PROFILE).depths) and set(ours["seeds"]) == {2}
    assert (ours["value_min"] * SCALE["jacobian"]).to_numpy() == pytest.approx(ours["value_max"].to_numpy())
    assert jac[jac.source == plots.PAPER][["value_min", "value_max", "seeds"]].isna().all().all()
    chart = plots.per_layer_chart(jac, [f"L={d}" for d in PAPER["depth"]["jacobian"]], color="depth",
                                  facet="source", log_y=True, y_title="J", title="t", sweep_title="L")
    assert "area" in _marks(chart.to_dict())
    one = plots.paper_jacobian_frame(PAPER["depth"]["jacobian"], _seed0(two_seeds))
    assert list(one.columns) == ["source", "depth", "layer", "value", "ours"]

    heat = plots.layer_variance_frame(two_seeds)
    assert heat.groupby(["label", "step", "layer"]).size().max() == 1 and set(heat["seeds"]) == {2}


def test_score_bars_get_error_bars(two_seeds):
    cmp = sc.compare(PROFILE, "depth", two_seeds)
    long = plots.compare_long(cmp, ["usefulness", "permutation"], relative=["usefulness"])
    ours = long[long.source == plots.OURS].set_index(["metric", "variant"])
    base = cmp.iloc[0]["ours_usefulness"]
    for i, v in enumerate(cmp["variant"]):
        assert ours.loc[("usefulness", v), "shown_max"] == pytest.approx(cmp.iloc[i]["ours_usefulness_max"] / base)
    assert long[long.source == plots.PAPER][["value_min", "shown_max"]].isna().all().all()
    spec = plots.compare_bars_chart(long, title="t", x_title="depth", relative=["usefulness"]).to_dict()
    # permutation: bars with error rules; usefulness (÷ first setting): dots, error rules and the dashed line at 1
    assert sorted(_marks(spec)) == ["bar", "point", "rule", "rule", "rule"]
    one = plots.compare_long(sc.compare("smoke", "depth", {}), ["usefulness"])
    assert list(one.columns) == ["variant", "setting", "metric", "source", "value", "shown"]


def test_fake_results_are_not_degenerate(two_seeds):
    """Guard for the tests above: the two seeds really differ where a range is checked."""
    a, b = two_seeds["L12"], two_seeds["L12-seed1"]
    assert a.probes["usefulness"]["score"] != b.probes["usefulness"]["score"]
    assert not np.allclose(a.metrics[-1]["layer_var"], b.metrics[-1]["layer_var"])


def test_seed_spread_trains_each_seed_and_reuses_finished_runs(tmp_path, monkeypatch, capsys):
    ss = load_script("seed_spread")
    assert ss.parse_seeds("0-2,5") == [0, 1, 2, 5] and ss.parse_seeds("3") == [3]
    with pytest.raises(SystemExit, match="--seeds"):
        ss.parse_seeds("a-b")
    monkeypatch.setenv("SPARSEDEPTH_OUTPUT_ROOT", str(tmp_path))
    args = ["--profile", "smoke", "--experiment", "gqa", "--variants", "G1,G4", "--seeds", "0-1", "--quiet",
            "--device", "cpu"]
    assert ss.main(args) == 0
    out = capsys.readouterr().out
    assert "G1 - G4: mean" in out and "worst" in out
    lines = (tmp_path / "paper_results" / "smoke" / "seed_spread" / "gqa.csv").read_text().splitlines()
    assert lines[0] == "variant,seed,val_loss,steps,run" and len(lines) == 5
    runs = {ln.split(",")[4] for ln in lines[1:]}
    assert len(runs) == 4  # every (variant, seed) is its own config
    assert ss.main(args) == 0  # a second call reuses the finished runs
    assert (tmp_path / "paper_results" / "smoke" / "seed_spread" / "gqa.csv").read_text().splitlines() == lines
    with pytest.raises(SystemExit, match="unknown"):
        ss.main(["--profile", "smoke", "--experiment", "gqa", "--variants", "G9"])


def test_compare_runs_reports_the_relative_gap_per_field(tmp_path):
    cr = load_script("compare_runs")
    src = Path(__file__).resolve().parents[2] / "paper_results" / "cpu" / "depth" / "L4" / "metrics.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    for name, scale in (("a", 1.0), ("b", 1.01)):
        (tmp_path / name).mkdir()
        out = [{**r, **({"val_loss": r["val_loss"] * scale} if "val_loss" in r else {})} for r in rows]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
    res = cr.compare(cr.load_metrics(tmp_path / "a"), cr.load_metrics(tmp_path / "b"))
    assert res["val loss"]["steps"] and res["val loss"]["max_rel_diff"] == pytest.approx(0.01)
    assert res["train loss"]["max_rel_diff"] == 0 and res["last-layer variance"]["max_rel_diff"] == 0
    with pytest.raises(SystemExit, match="metrics.jsonl"):
        cr.load_metrics(tmp_path / "missing")
    assert cr.readings(tmp_path / "a") == {}  # a run directory without result files: curves only
    folder = src.parent
    r = cr.readings(folder)
    assert {"ppl", "acc", "acc_se", "permutation", "variance_end", "jacobian_mean"} <= set(r)
    assert r["ppl"] == pytest.approx(json.loads((folder / "eval.json").read_text())["perplexity"]["ppl"])


def _trajectory_run(folder: Path, causal: list[float], tokens: list[int]) -> Path:
    """A run directory with metrics.jsonl and a trajectory.json whose points hold a causal score each."""
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "loss": 3.0}) + "\n"
                                                  for i in range(len(tokens))))
    points = [{"step": i + 1, "tokens": t, "val_loss": 3.0, "causal": {"score": c}}
              for i, (t, c) in enumerate(zip(tokens, causal))]
    (folder / "trajectory.json").write_text(json.dumps({"points": points}))
    return folder


def test_compare_runs_sets_the_seed_gap_along_training_against_a_setting_gap(tmp_path):
    from sparsedepth.paper.analysis.trend import fmt_tokens

    cr = load_script("compare_runs")
    tokens = [10 ** 7, 10 ** 7 * 2, 10 ** 7 * 4, 10 ** 8]
    base = [0.1 + 0.05 * np.log10(t / 1e7) for t in tokens]  # 0.05 per decade, 0.2 at 1e9 tokens
    ref = _trajectory_run(tmp_path / "ref", base, tokens)
    other = _trajectory_run(tmp_path / "other", [b + d for b, d in zip(base, (0.01, -0.01, 0.01, 0.02))], tokens)
    setting = _trajectory_run(tmp_path / "setting", [b - 0.015 for b in base[:3]], tokens[:3])
    rows = {r["statistic"]: r for r in cr.trajectory_gaps(ref, other, setting, {"causal": 0.2})}
    r = rows["causal"]
    assert r["points"] == 4 and r["max_gap"] == pytest.approx(0.02) and r["last_gap"] == pytest.approx(0.02)
    assert r["slope_reference"] == pytest.approx(0.05) and r["slope_se_reference"] == pytest.approx(0, abs=1e-9)
    assert r["slope_other"] != pytest.approx(0.05)
    # the setting holds three of the points: its gap beats the seed gap (0.01) at each of them
    assert (r["clear"], r["shared"]) == (3, 3) and r["setting_gap"] == pytest.approx(-0.015)
    assert r["reaches_reference"] == fmt_tokens(1e9)
    assert cr.trajectory_gaps(ref, tmp_path / "none") == []  # no trajectory there: nothing to compare
    figure = tmp_path / "seeds.png"
    assert cr.main([str(ref), str(other), "--figure", str(figure), "--names", "a,b", "--statistics", "causal"]) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="--names"):
        cr.main([str(ref), str(other), "--figure", str(figure), "--names", "a"])


def test_compare_runs_reads_the_probes_of_a_run_directory_without_evaluation():
    cr = load_script("compare_runs")
    folder = Path(__file__).resolve().parents[2] / "paper_results" / "gpu-long" / "seed-check" / "depth-L12-seed1"
    if not (folder / "probes.json").is_file():
        pytest.skip("no committed gpu-long seed check in this checkout")
    r = cr.readings(folder)
    assert "acc" not in r  # trained and probed, not evaluated: perplexity is the training's validation one
    assert r["ppl"] == pytest.approx(json.loads((folder / "summary.json").read_text())["val_ppl"])
    assert r["causal"] == pytest.approx(json.loads((folder / "probes.json").read_text())["causal"]["score"])


def test_compare_runs_compares_a_stopped_run_on_the_points_it_holds():
    """gpu-long's L = 32 stopped before its last point: compared with L = 24, only the points both hold count."""
    cr = load_script("compare_runs")
    results = Path(__file__).resolve().parents[2] / "paper_results" / "gpu-long"
    partial, reference = results / "partial" / "depth-L32", results / "depth" / "L24"
    if not (partial / "trajectory.json").is_file() or not (reference / "trajectory.json").is_file():
        pytest.skip("no committed gpu-long L = 32 partial run in this checkout")
    held = json.loads((partial / "trajectory.json").read_text())["points"]
    assert not json.loads((partial / "summary.json").read_text())["done"]
    rows = {r["statistic"]: r for r in cr.trajectory_gaps(reference, partial)}
    assert rows["causal"]["points"] == len(held) < len(json.loads((reference / "trajectory.json").read_text())["points"])
    assert rows["causal"]["tokens"][-1] == held[-1]["tokens"]
