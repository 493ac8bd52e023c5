"""Chart builders and table writers on synthetic results shaped like ``results.load_results``: every builder
draws, every file of ``save_chart`` / ``write_table`` is written and non-empty, aggregation bounds the points
per curve, CSVs carry the expected columns, and bad input fails with a message that names the problem."""
from __future__ import annotations

import json
import math

import altair as alt
import numpy as np
import pandas as pd
import pytest

from sparsedepth.paper.pipeline.run_result import RunResult
from sparsedepth.paper.report import plots, tables


def _run(n_layers: int, steps: int, *, label: str, paper_label: str = "", wd: float = 0.1, seq_len: int = 64,
         experts: int = 0, kv: int = 4, seed: int = 0) -> RunResult:
    """One synthetic variant: telemetry every step, probes with the keys probes.json has."""
    rng = np.random.default_rng(seed)
    metrics = []
    for s in range(1, steps + 1):
        rec = {"step": s, "loss": 5.0 / math.sqrt(s), "lr": 1e-3, "grad_norm": 1.0}
        rec["layer_var"] = [float((l + 1) * n_layers * (1 + 0.1 * rng.random()) * (1 + s / steps))
                            for l in range(n_layers)]
        rec["final_var"] = float(1.0 + 0.01 * rng.random())
        if experts:
            rec["expert_load"] = [list(rng.dirichlet(np.ones(experts))) for _ in range(n_layers)]
        metrics.append(rec)
    metrics[3]["final_var"] = float("nan")  # a non-finite value must be dropped, not plotted
    probes = {
        "variance": {"layer_var": [float(l + 1) for l in range(n_layers)]},
        "jacobian": {"jacobian_norm": [0.01 / (l + 1) for l in range(n_layers)], "mean_jacobian_norm": 0.005},
        "usefulness": {"score": 0.75, "loss_ratio": [1.2] * n_layers, "useful": [True] * n_layers, "base_loss": 3.0},
        "causal": {"score": 0.3, "per_layer": [0.3] * n_layers,
                   "matrix": [[0.1 * (j > i) for j in range(n_layers)] for i in range(n_layers)]},
        "permutation": {"score": 0.7, "stderr": 0.01, "n_pairs": 6},
        "block_influence": [0.1] * n_layers,
        "logit_lens": {"loss": [5.0 - l * 0.1 for l in range(n_layers)]},
        "sparsity": {
            "weight_density": {"per_layer": {"0.1": [0.9 - wd / 10] * n_layers, "0.5": [0.6 - wd / 10] * n_layers},
                               "gaussian_reference": {"0.1": 0.92, "0.5": 0.617}},
            "attention": {"entropy": [math.log(seq_len) / 2] * n_layers, "support": [8 / seq_len] * n_layers},
            "expert": ({"load": [list(rng.dirichlet(np.ones(experts))) for _ in range(n_layers)]} if experts
                       else {"skipped": "dense"}),
            "nominal_density": {"kv": kv / 4, "experts": (2 / experts) if experts else 1.0},
        },
        "meta": {"model": {"n_layers": n_layers}, "n_tokens": 256}, "timings": {"total": 1.0},
    }
    cfg = {"model": {"n_layers": n_layers, "n_heads": 4, "n_kv_heads": kv, "n_experts": experts, "top_k": 2},
           "optim": {"weight_decay": wd}, "seq_len": seq_len}
    meta = {"label": label, "paper_label": paper_label or label, "paper_key": n_layers}
    return RunResult("synthetic", label, cfg, hash="abc", meta=meta, metrics=metrics, probes=probes,
                     summary={"done": True}, provenance={})


@pytest.fixture(scope="module")
def results() -> dict:
    # load_results order (= sorted by the swept value); L8 has 1000 steps to exercise aggregation.
    return {"L2": _run(2, 1000, label="L=2", paper_label="L=12", seed=2),
            "L4": _run(4, 40, label="L=4", paper_label="L=16", seed=3),
            "L8": _run(8, 1000, label="L=8", paper_label="L=32", seed=1)}


def _check_files(paths: dict, columns: set[str]) -> pd.DataFrame:
    for kind, p in paths.items():
        assert p.is_file() and p.stat().st_size > 0, f"{kind} file {p} missing or empty"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths["svg"].read_text()[:500]
    csv = pd.read_csv(paths["csv"])
    assert columns <= set(csv.columns), f"CSV columns {list(csv.columns)} lack {columns - set(csv.columns)}"
    assert not any(p.name.startswith(".") for p in paths["png"].parent.iterdir()), "temporary files left behind"
    return csv


def test_order_labels_and_config(results):
    assert plots.order_of(results) == ["L=2", "L=4", "L=8"]
    shuffled = {k: results[k] for k in ("L8", "L2", "L4")}
    assert plots.order_of(shuffled, "model.n_layers") == ["L=2", "L=4", "L=8"]
    assert plots.config_value(results["L4"], "model.group_size") == 1
    with pytest.raises(KeyError, match="model.n_layer"):
        plots.config_value(results["L4"], "model.n_layer")
    assert plots.density_label(0.125) == "ρ = 1/8" and plots.density_label(1.0) == "ρ = 1"


def test_downsample_bounds_points_and_keeps_mean():
    df = pd.DataFrame({"g": ["a"] * 1000 + ["b"] * 50, "step": list(range(1000)) + list(range(50)),
                       "y": [1.0] * 1000 + [2.0] * 50})
    out = plots.downsample(df, "step", ["g"], max_points=100)
    counts = out.groupby("g").size()
    assert counts["a"] == 100 and counts["b"] == 50
    assert np.allclose(out.loc[out.g == "a", "y"], 1.0)
    assert out.loc[out.g == "a", "step"].between(0, 999).all()
    assert abs(out.loc[out.g == "a", "step"].mean() - 499.5) < 1  # bins cover the whole range evenly
    with pytest.raises(ValueError, match="max_points"):
        plots.downsample(df, "step", ["g"], max_points=1)


def test_variance_chart_files(results, tmp_path):
    order = plots.order_of(results)
    df = plots.last_layer_variance_frame(results)
    assert df.groupby(["variant", "series"]).size().max() <= plots.MAX_POINTS
    assert set(df.series) == {plots.RESIDUAL, plots.POSTNORM}
    assert np.isfinite(df.variance).all()
    # L4 has 40 steps: left as is; L2/L8 have 1000: aggregated to MAX_POINTS.
    assert len(df[(df.variant == "L4") & (df.series == plots.RESIDUAL)]) == 40
    assert len(df[(df.variant == "L8") & (df.series == plots.RESIDUAL)]) == plots.MAX_POINTS
    chart = plots.variance_chart(df, order, sweep_title="depth L", title="Last-layer variance")
    paths = plots.save_chart(chart, "variance", "synthetic", root=tmp_path)
    csv = _check_files(paths, {"variant", "label", "step", "series", "variance"})
    assert len(csv) == len(df)
    # 6 significant digits of each plotted float, whole numbers (steps, token counts) in full
    assert np.allclose(csv.variance, df.variance, rtol=5e-6, atol=0) and (csv.step == df.step).all()
    written = [line.rsplit(",", 1)[1] for line in paths["csv"].read_text().splitlines()[1:]]
    assert all(len(v.split("e")[0].replace(".", "").lstrip("0")) <= 6 for v in written)
    assert paths["png"].parent == tmp_path / "figures" / "synthetic"


def test_per_layer_jacobian_and_heatmap(results, tmp_path):
    jac = plots.probe_layer_frame(results, "jacobian.jacobian_norm")
    assert len(jac) == 2 + 4 + 8 and jac.layer.min() == 1
    paper = {12: [0.014, 0.012], 32: [0.008, 0.006, 0.004]}
    both = plots.paper_jacobian_frame(paper, results)
    assert list(dict.fromkeys(both.source)) == ["ours", "paper"]
    assert set(both[both.source == "paper"].layer) == {2, 3, 4}  # blocks 1..L-2 -> 1-based layers 2..L-1
    assert set(both[both.source == "ours"].depth) == {"L=12", "L=16", "L=32"}
    ch = plots.per_layer_chart(both, ["L=12", "L=16", "L=32"], color="depth", facet="source", log_y=True,
                               y_title="||J − I||_F / d", title="Jacobian", sweep_title="depth")
    _check_files(plots.save_chart(ch, "jac", "synthetic", both, root=tmp_path), {"source", "depth", "layer", "value"})

    hm = plots.layer_variance_frame(results, max_steps=20)
    assert hm.groupby(["variant", "layer"]).size().max() <= 20
    assert pd.api.types.is_integer_dtype(hm.step)
    ch = plots.heatmap_chart(hm, x="layer", y="step", value="variance", facet="label", order=plots.order_of(results),
                             title="Per-layer variance", x_title="layer", y_title="step", value_title="variance")
    _check_files(plots.save_chart(ch, "heat", "synthetic", root=tmp_path), {"variant", "step", "layer", "variance"})


def test_compare_bars(tmp_path):
    cmp = pd.DataFrame({"variant": ["L2", "L4"], "ours": ["L=2", "L=16"], "paper": ["L=12", "L=16"],
                        "paper_usefulness": [1.0, 0.8125], "ours_usefulness": [0.5, None],
                        "paper_ppl": [15.6, 773.4], "ours_ppl": [300.0, 280.0]})
    long = plots.compare_long(cmp, ["usefulness", "ppl"], relative=["ppl"])
    assert list(long.columns) == ["variant", "setting", "metric", "source", "value", "shown"]
    assert set(long.setting) == {"L=2 ≙ L=12", "L=16"} and len(long) == 2 * 2 * 2
    assert long.value.isna().sum() == 1  # ours_usefulness None is kept as NaN (shown as a gap)
    ppl = long[long.metric == "ppl"].set_index(["source", "variant"]).shown
    assert ppl["ours", "L4"] == pytest.approx(280 / 300) and ppl["paper", "L4"] == pytest.approx(773.4 / 15.6)
    use = long[long.metric == "usefulness"]
    assert use.shown.equals(use.value)  # not relative: drawn as is
    with pytest.raises(ValueError, match="relative metrics"):
        plots.compare_long(cmp, ["ppl"], relative=["acc"])
    ch = plots.compare_bars_chart(long, title="Scores", x_title="depth", log_metrics=["ppl"], relative=["ppl"])
    spec = ch.to_dict()
    ratio = spec["hconcat"][1]
    assert ratio["title"] == "validation perplexity ÷ first setting"
    # ratios near 1 are dots on a linear axis (a log axis rounded to 0.1-10 hid 1-8 % gaps) with a line at 1;
    # the paper's 49x collapse would flatten them: it is pinned to the top edge with its value printed
    (rule, dots), note = ratio["layer"][0]["layer"], ratio["layer"][1]
    assert rule["mark"]["type"] == "rule" and dots["mark"]["type"] == "point" and note["mark"]["type"] == "text"
    lo, hi = dots["encoding"]["y"]["scale"]["domain"]
    assert lo < 280 / 300 and 1.0 < hi < 1.2 and dots["encoding"]["y"]["scale"]["clamp"] is True
    notes = spec["datasets"][note["data"]["name"]]
    assert [r["note"] for r in notes] == ["49.6 ↑"]
    near = plots.compare_bars_chart(long[long.variant == "L2"], title="S", x_title="d", relative=["ppl"]).to_dict()
    (_, dots), = [tuple(p["layer"]) for p in near["hconcat"] if p["title"].endswith("÷ first setting")]
    assert dots["encoding"]["y"]["scale"] == {"zero": False, "padding": 14}
    absolute = plots.compare_bars_chart(long, title="Scores", x_title="depth", log_metrics=["ppl"]).to_dict()
    assert absolute["hconcat"][1]["encoding"]["y"]["scale"]["type"] == "log"
    assert "y2" in absolute["hconcat"][1]["encoding"]
    zero = long.assign(shown=long["shown"].where(long.metric != "usefulness", 0.0))
    panel = plots.compare_bars_chart(zero, title="z", x_title="depth", relative=["ppl"]).to_dict()["hconcat"][0]
    assert [layer["mark"]["type"] for layer in panel["layer"]] == ["bar", "text"]  # a zero is labelled "0"
    _check_files(plots.save_chart(ch, "bars", "synthetic", long, root=tmp_path),
                 {"setting", "metric", "source", "value"})
    with pytest.raises(ValueError, match="scorecard.compare"):
        plots.compare_long(cmp.drop(columns="ours"), ["ppl"])
    with pytest.raises(ValueError, match="no values"):
        plots.compare_bars_chart(long.assign(shown=float("nan")), title="x", x_title="x")


def test_sparsity_frames_and_sweep_charts(tmp_path):
    res = {f"wd{wd:g}": _run(2, 5, label=f"λ={wd:g}", wd=wd) for wd in (0.0, 0.1, 1.0)}
    wd = plots.weight_density_frame(res, "optim.weight_decay")
    assert len(wd) == 3 * 2 and set(wd.tau) == {"τ = 0.1", "τ = 0.5"}
    assert wd[wd.tau == "τ = 0.1"].sort_values("x").density.is_monotonic_decreasing
    ch = plots.sweep_chart(wd, x="x", y="density", color="tau", rule="gaussian", title="Weight density",
                           x_title="λ", y_title="fraction")
    _check_files(plots.save_chart(ch, "density", "synthetic", root=tmp_path), {"x", "tau", "density", "gaussian"})

    res = {f"T{t}": _run(2, 5, label=f"T={t}", seq_len=t) for t in (32, 64, 128)}
    att = plots.attention_frame(res)
    assert len(att) == 3 * 2 and set(att.x) == {32, 64, 128} and att.reading.nunique() == 1
    for t, run in res.items():  # a second reading at each run's own context, as probe_run now writes
        sp = run.probes["sparsity"]
        sp["attention_train_T"] = {**sp["attention"], "support": [x / 2 for x in sp["attention"]["support"]]}
    att = plots.attention_frame(res)
    assert len(att) == 3 * 2 * 2 and att.reading.nunique() == 2
    sup = att[att.quantity.str.startswith("effective")].pivot(index="variant", columns="reading", values="value")
    own, probe = (plots.ATTENTION_READINGS[i][1] for i in (1, 0))
    assert np.allclose(2 * sup[own], sup[probe])
    ch = plots.sweep_chart(att, x="x", facet="quantity", color="reading", title="Attention", x_title="T",
                           y_title="mean")
    _check_files(plots.save_chart(ch, "attention", "synthetic", root=tmp_path), {"x", "reading", "quantity", "value"})

    res = {"G1": _run(2, 5, label="G=1", kv=4), "G4": _run(2, 5, label="G=4", kv=1)}
    cmp = pd.DataFrame({"variant": ["G1", "G4"], "ours_variance_end": [3.0, 2.0], "ours_usefulness": [0.5, 0.75]})
    dens = plots.density_frame(res, cmp, "kv")
    assert set(dens.quantity) == {"nominal KV density 1/G", "last-layer variance (end)", "usefulness"}
    assert dens[(dens.variant == "G4") & (dens.quantity.str.startswith("nominal"))].value.item() == 0.25
    ch = plots.sweep_chart(dens, x="label", facet="quantity", x_order=["G=1", "G=4"], title="GQA",
                           x_title="G", y_title="value")
    _check_files(plots.save_chart(ch, "gqa", "synthetic", root=tmp_path), {"variant", "label", "quantity", "value"})


def test_recipe_and_expert_load(tmp_path):
    cmp = pd.DataFrame({"variant": ["baseline", "+T128", "+T256"], "ours": ["baseline", "+T128", "+T256"],
                        "paper": ["baseline", "+T4096", "+T8192"], "kept": [True, True, False],
                        "paper_acc": [39.5, 40.0, 39.5], "ours_acc": [30.1, 31.0, None],
                        "paper_usefulness": [0.53, 0.59, 0.53], "ours_usefulness": [0.5, 0.6, 0.4]})
    df = plots.recipe_frame(cmp, {"acc": 40.1, "usefulness": 0.75}, {"acc": 29.0, "usefulness": 0.7})
    assert list(df.step)[:2] == ["L=16 reference"] * 2 and len(df) == 2 + 3 * 2
    assert "+T4096 (ours +T128)" in set(df.step) and df.acc.isna().sum() == 1
    ch = plots.recipe_chart(df, title="Recipe")
    _check_files(plots.save_chart(ch, "recipe", "synthetic", root=tmp_path),
                 {"step", "source", "acc", "usefulness", "kept"})
    with pytest.raises(ValueError, match="kept"):
        plots.recipe_chart(df.drop(columns="kept"), title="x")

    res = {"moe": _run(2, 5, label="MoE", experts=4), "dense": _run(2, 5, label="dense")}
    for source in ("probes", "metrics"):
        el = plots.expert_load_frame(res, source=source)
        assert set(el.variant) == {"moe"} and len(el) == 2 * 4
        assert np.allclose(el.groupby("layer").load.mean(), 1.0)  # normalised: 1 = uniform share
    ch = plots.expert_load_chart(el, title="Expert load")
    _check_files(plots.save_chart(ch, "experts", "synthetic", root=tmp_path), {"variant", "layer", "expert", "load"})
    with pytest.raises(ValueError, match="source"):
        plots.expert_load_frame(res, source="eval")


def test_theory_chart(tmp_path):
    rows = [{"density": r, "layer": l, "variance": 1 + r * l, "variance_pred": 1 + r * l * 1.01, "setting": s}
            for s in ("plain masks", "compensated") for r in (1.0, 0.5, 0.125) for l in range(1, 65)]
    df = plots.theory_frame(rows, "variance")
    assert set(df.kind) == {"simulated", "closed form"} and set(df.label) == {"ρ = 1", "ρ = 1/2", "ρ = 1/8"}
    assert list(dict.fromkeys(df.setting)) == ["plain masks", "compensated"]  # caller's order, not alphabetical
    ch = plots.theory_chart(df, y_title="variance", title="Variance vs depth", facet="setting")
    _check_files(plots.save_chart(ch, "theory", "synthetic", root=tmp_path),
                 {"density", "label", "layer", "kind", "value", "setting"})
    with pytest.raises(ValueError, match="jacobian_dist"):
        plots.theory_frame(rows, "jacobian_dist")


def test_probe_profile_and_scorecard_charts(results, tmp_path):
    probes = results["L4"].probes
    df = plots.probe_profile_frame(probes)
    assert {"output variance of h_ℓ", "||J − I||_F / d", "weight density ρ(τ=0.1)"} <= set(df.quantity)
    assert df.groupby("quantity").size().max() == 4
    ch = plots.probe_profile_chart(df, title="Probes")
    _check_files(plots.save_chart(ch, "probe", "synthetic", root=tmp_path), {"quantity", "layer", "value"})
    m = plots.matrix_frame(probes["causal"]["matrix"], row="skipped", col="layer")
    assert len(m) == 16 and m.skipped.min() == 1

    card = pd.DataFrame({"id": ["a.x", "a.y", "b.z"], "experiment": ["a", "a", "b"],
                         "claim": ["grows", "falls", "lowers"], "rule": ["r"] * 3,
                         "status": ["holds", "contradicted", "missing"], "effect": [0.5, -0.3, None],
                         "se": [0.1, 0.1, None], "noise": ["paired by seed, 2 seeds", "single runs", ""],
                         "N_f(h_L) after final norm": ["inconclusive: +0.01 ± 0.02", "", ""],
                         "ours": ["1, 2", "3", ""], "paper": ["x"] * 3,
                         "detail": ["slope: +0.5 ± 0.1 holds", "", "no ppl for G4"]})
    ch = plots.scorecard_chart(card, title="Scorecard")
    _check_files(plots.save_chart(ch, "scorecard", "synthetic", root=tmp_path), {"id", "status"})
    md = tables.claims_markdown(card, what="the claims", profile="smoke")
    assert md.startswith("**1 of 3** of the claims hold in our results at profile `smoke` (1 contradicted, "
                         "0 inconclusive, 1 missing")
    assert "✘ **contradicted**: falls" in md and "no ppl for G4" in md
    assert "+0.5 ± 0.1 (paired by seed, 2 seeds)" in md and "N_f(h_L) after final norm: inconclusive" in md
    with pytest.raises(ValueError, match="scorecard"):
        tables.claims_markdown(card.drop(columns="rule"))


def test_save_chart_rejects_bad_input(tmp_path):
    ch = alt.Chart(pd.DataFrame({"a": [1]})).mark_point().encode(x="a:Q")
    with pytest.raises(ValueError, match="figure name"):
        plots.save_chart(ch, "../escape", "synthetic", root=tmp_path)
    with pytest.raises(ValueError, match="profile"):
        plots.save_chart(ch, "ok", "a/b", root=tmp_path)
    with pytest.raises(ValueError, match="empty"):
        plots.save_chart(ch, "ok", "synthetic", pd.DataFrame(), root=tmp_path)
    with pytest.raises(TypeError, match="altair"):
        plots.save_chart({"not": "a chart"}, "ok", "synthetic", root=tmp_path)
    with pytest.raises(ValueError, match="log axis needs values > 0"):
        plots.line_chart(pd.DataFrame({"x": [1, 2], "y": [0.0, -1.0], "c": ["a", "a"]}), "x", "y", "c", title="t",
                         x_title="x", y_title="y", log_y=True)
    assert not (tmp_path / "figures").exists() or not any((tmp_path / "figures").rglob("*.png"))


def test_write_table(tmp_path):
    df = pd.DataFrame({"depth": [12, 16], "ppl": [15.634, float("nan")], "note": ["a|b", None], "pass": [True, False]})
    paths = tables.write_table(df, "scores", "synthetic", root=tmp_path, title="Scores")
    assert paths["md"] == tmp_path / "paper_results" / "synthetic" / "tables" / "scores.md"
    md = paths["md"].read_text()
    assert md.startswith("### Scores") and "| 12 | 15.63 | a\\|b | yes |" in md and "| 16 | – | – | no |" in md
    assert "---:" in md
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == ["depth", "ppl", "note", "pass"] and back.ppl[0] == pytest.approx(15.634)
    with pytest.raises(ValueError, match="empty"):
        tables.write_table(df.iloc[:0], "x", "synthetic", root=tmp_path)
    with pytest.raises(TypeError, match="DataFrame"):
        tables.write_table([1, 2], "x", "synthetic", root=tmp_path)


def test_results_note_and_cached_json(tmp_path, capsys):
    note = tables.results_note({"a": "cached", "b": "failed", "c": "trained"},
                               {"a": RunResult("depth", "a", {}, stale=True), "c": RunResult("depth", "c", {})},
                               "smoke", "depth")
    assert "cached: a" in note and "Not plotted (no results): b" in note and "Stale" in note and "a" in note
    with pytest.raises(RuntimeError, match="make reproduce PROFILE=smoke"):
        tables.results_note({"a": "missing"}, {}, "smoke", "depth")

    calls = []

    def compute():
        calls.append(1)
        return [{"x": len(calls)}]

    settings = {"depth": 4, "densities": (1.0, 0.5)}
    assert tables.cached_json("sim", "synthetic", settings, compute, root=tmp_path) == [{"x": 1}]
    assert tables.cached_json("sim", "synthetic", settings, compute, root=tmp_path) == [{"x": 1}]  # cached
    assert tables.cached_json("sim", "synthetic", {**settings, "depth": 8}, compute, root=tmp_path) == [{"x": 2}]
    assert tables.cached_json("sim", "synthetic", {**settings, "depth": 8}, compute, root=tmp_path,
                              force=True) == [{"x": 3}]
    blob = json.loads((tmp_path / "paper_results" / "synthetic" / "sim.json").read_text())
    assert blob["settings"]["depth"] == 8 and len(calls) == 3


def test_theory_verdict():
    def summ(scale):
        return {r: {"final_variance": 1 + scale * r * 10, "growth_slope": scale * r, "max_rel_err_variance": 0.05,
                    "deep_jacobian_dist": 0.01 * r} for r in (1.0, 0.5, 0.125)}
    text = tables.theory_verdict({"plain masks": summ(1.0), "compensated": {r: {**v, "final_variance": 11.0}
                                                                          for r, v in summ(1.0).items()}}, 64)
    assert "agrees with the claim" in text and "strictly decreasing" in text
    assert "ratio ρ=1 / ρ=0.125: 8" in text and "spread across densities: 0.0%" in text
    assert "not further from" in text
    flat = {r: {**v, "final_variance": 5.0} for r, v in summ(1.0).items()}
    assert "does not agree" in tables.theory_verdict({"plain masks": flat}, 64)
    with pytest.raises(ValueError, match="plain masks"):
        tables.theory_verdict({"other": flat}, 64)


def test_output_root_override(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEDEPTH_OUTPUT_ROOT", str(tmp_path / "env"))
    assert tables.table_dir("p") == (tmp_path / "env").resolve() / "paper_results" / "p" / "tables"
    try:
        plots.set_output_root(tmp_path / "explicit")
        assert plots.figure_dir("p") == (tmp_path / "explicit").resolve() / "figures" / "p"
    finally:
        plots.set_output_root(None)
    assert plots.figure_dir("p") == (tmp_path / "env").resolve() / "figures" / "p"


def test_side_by_side_keeps_order_and_pairs():
    cmp = pd.DataFrame({"variant": ["b", "a"], "ours": ["B", "A"], "paper": ["B", "A"],
                        "paper_ppl": [2.0, None], "ours_ppl": [1.0, 3.0]})
    long = plots.compare_long(cmp, ["ppl"]).assign(experiment="x")
    wide = tables.side_by_side(long, ["experiment", "variant", "setting", "metric"])
    assert list(wide.variant) == ["b", "a"] and list(wide.columns)[-2:] == ["paper", "ours"]
    assert wide.ours.tolist() == [1.0, 3.0] and wide.paper.isna().tolist() == [False, True]
    with pytest.raises(ValueError, match="side_by_side"):
        tables.side_by_side(long.drop(columns="source"), ["variant"])


def test_saved_figures_name_their_profile(tmp_path):
    df = pd.DataFrame({"layer": [1, 2, 3], "value": [1.0, 2.0, 3.0], "label": ["a"] * 3})
    ch = plots.line_chart(df, "layer", "value", "label", title="T", subtitle="sub", x_title="x", y_title="y")
    assert plots.with_profile(ch, "smoke").to_dict()["title"]["subtitle"] == ["sub", "profile: smoke"]
    bare = plots.line_chart(df, "layer", "value", "label", title="T", x_title="x", y_title="y")
    assert plots.with_profile(bare, "cpu").to_dict()["title"] == {"text": "T", "subtitle": ["profile: cpu"]}
    assert ch.to_dict()["title"]["subtitle"] == "sub"  # the chart passed in is unchanged
    svg = plots.save_chart(ch, "named", "smoke", df, root=tmp_path)["svg"].read_text()
    assert "profile: smoke" in svg


def test_heatmap_steps_on_a_round_grid():
    steps = plots._snap(pd.Series([5, 44, 81, 118, 140, 290, 435, 1485]), 40)
    assert list(steps) == [0, 50, 100, 100, 150, 300, 450, 1500]  # width 50 for 1485 steps in 40 bins


def test_jacobian_chart_keeps_block_one_off_the_axis():
    rows = [{"source": src, "depth": "L=4", "layer": layer, "value": v, "ours": ""}
            for src, vals in (("ours", [0.7, 0.01, 0.008, 0.006]), ("paper", [0.012, 0.009]))
            for layer, v in zip(range(1 if src == "ours" else 2, 9), vals)]
    spec = plots.jacobian_chart(pd.DataFrame(rows), ["L=4"], title="J").to_dict()
    enc = spec["spec"]["layer"][0]["encoding"] if "layer" in spec["spec"] else spec["spec"]["encoding"]
    lo, hi = enc["y"]["scale"]["domain"]
    assert hi == pytest.approx(0.012 * 1.25) and lo == pytest.approx(0.006 / 1.25)
    assert enc["x"]["scale"]["domain"] == [1, 4]  # one x range for both panels
    assert "off the axis (ours block 1): 0.7" in str(spec["title"]["subtitle"])


def test_recipe_frame_error_bars_reference_tokens_and_labels():
    cmp = pd.DataFrame({"variant": ["base", "+wd1"], "ours": ["baseline", "+wd1"], "paper": ["baseline", "+wd1.0"],
                        "kept": [True, False], "paper_acc": [39.5, 38.5], "ours_acc": [33.0, 34.0],
                        "paper_usefulness": [0.5, 0.5], "ours_usefulness": [0.0, 0.0]})
    df = plots.recipe_frame(cmp, {"acc": 40.1, "usefulness": 0.75}, {"acc": 35.0, "usefulness": 0.1, "acc_se": 0.7},
                            acc_se={"base": 0.6}, reference_tokens=98_304_000)
    assert list(dict.fromkeys(df.step)) == ["L=16 reference (98.3M tokens)", "baseline", "+wd1.0"]
    ours = df[df.source == "ours"].set_index("step").acc_se
    assert ours["baseline"] == 0.6 and ours["L=16 reference (98.3M tokens)"] == 0.7 and pd.isna(ours["+wd1.0"])
    spec = plots.recipe_chart(df, title="R").to_dict()
    assert any(lay.get("mark", {}).get("type") == "errorbar" for lay in spec["layer"][0]["layer"])
    assert plots.token_count(52_428_800) == "52.4M" and plots.token_count(None) == "?"
