"""Claims scorecard on hand-made results: paper-like results hold, reversed ones are contradicted, gaps
within the seed noise are inconclusive, absent data is "missing"; paired and unpaired seeds, single runs
taking a reference spread, both variance readings and the usefulness loss ratio."""
from __future__ import annotations

import copy
import math
from dataclasses import replace
import statistics

import pytest

from sparsedepth.paper.spec import experiments as ex
from sparsedepth.paper.spec import reported as paper
from sparsedepth.paper.analysis import frame
from sparsedepth.paper.analysis import scorecard as sc
from sparsedepth.paper.pipeline.run_result import RunResult

PROFILE = "smoke"
# A small seed spread for every metric (as if measured on the depth sweep): single runs use it.
REF = sc.NoiseReference({"depth": {m: sc.Spread(1e-3, 1e-3, "test spread") for m in sc.SCALARS}})


def _result(exp: str, name: str, meta: dict, transform=lambda m, x: x) -> RunResult:
    """A load_results-style entry carrying the paper's numbers for its setting (``transform`` may distort them)."""
    row = paper.rows(exp)[meta["paper_key"]]
    key = meta["paper_key"]
    t = lambda m: None if row.get(m) is None else transform(m, row[m])  # noqa: E731
    jac = paper.PAPER["depth"]["jacobian"].get(key) if exp == "depth" else None
    var_end = t("variance_end") if row.get("variance_end") is not None else 1.0
    metrics = [{"step": 1, "loss": 5.0, "layer_var": [0.1, 1.0]},
               {"step": 2, "loss": 4.0, "layer_var": [0.2, var_end]}]
    probes = {"usefulness": {"score": t("usefulness")}, "causal": {"score": t("causal")},
              "permutation": {"score": t("permutation")}}
    if jac:
        probes["jacobian"] = {"jacobian_norm": [0.5] + [transform("jacobian", v) for v in jac] + [0.5]}
    acc = t("acc")
    ev = {"perplexity": {"ppl": t("ppl") or 10.0}, "mean_acc": None if acc is None else acc / 100}
    return RunResult(exp, name, {}, meta=meta, metrics=metrics, probes=probes, eval=ev, summary={"done": True},
                     provenance={})


def synthetic(transform=lambda m, x: x) -> dict[str, dict[str, RunResult]]:
    out = {}
    for exp in ex.EXPERIMENTS:
        metas = ex.variant_meta(PROFILE, exp)
        out[exp] = {name: _result(exp, name, m, transform) for name, m in metas.items()}
    return out


def reverse(metric: str, x: float) -> float:
    """A decreasing map of every metric: each comparison and rank correlation flips."""
    if metric in ("usefulness", "causal", "permutation"):
        return 1.0 - x
    if metric == "acc":
        return 100.0 - x
    return 1.0 / (1.0 + x)


def by_id(checks) -> dict[str, sc.Check]:
    return {c.id: c for c in checks}


def test_the_paper_holds_its_own_claims():
    checks = sc.paper_checks()
    assert len(checks) == len(sc.CLAIMS) >= 20 and len({c.id for c in checks}) == len(checks)
    assert {c.status for c in checks} == {"holds"}, [(c.id, c.detail) for c in checks if c.status != "holds"]
    assert all("exact" in c.noise for c in checks)


def test_each_claim_prints_its_own_rule():
    rules = {c.id: c.rule for c in sc.CLAIMS}
    assert "slope" in rules["depth.variance"] and "> 0" in rules["depth.variance"]
    assert "h_L" in rules["depth.variance"] and "N_f(h_L)" in rules["depth.variance"]
    assert "λ 0.1" in rules["weight_decay.ppl"] and "< 0" in rules["weight_decay.ppl"]
    assert "tolerance" in rules["gqa.ppl"] and "loss ratio" in rules["moe.usefulness"]
    assert all(f"{sc.noise.Z:g} s.e." in r for r in rules.values())


def test_paper_like_results_hold_and_show_both_sides():
    checks = by_id(sc.checks(PROFILE, synthetic(), ref=REF))
    failing = {k: (c.status, c.detail) for k, c in checks.items() if c.status != "holds"}
    assert not failing, failing
    c = checks["depth.usefulness"]
    assert "L=2: 1" in c.ours and "L=12: 1" in c.paper and c.effect > 2 * c.se
    assert "λ=0.1: 115" in checks["weight_decay.variance"].ours
    assert checks["weight_decay.variance"].effect == pytest.approx(-(math.log(115) - math.log(320)))
    assert "test spread" in checks["weight_decay.variance"].noise


def test_reversed_results_are_contradicted():
    checks = by_id(sc.checks(PROFILE, synthetic(reverse), ref=REF))
    # GQA's PPL claim has a 1 % tolerance and the paper's differences are 0.3 %: reversing them still holds
    assert checks.pop("gqa.ppl").status == "holds"
    # 1 / (1 + x) barely bends a curve of x ≈ 0.01: the per-layer slopes turn but stay within the spread
    assert checks.pop("depth.jacobian_index").effect < 0
    assert {c.status for c in checks.values()} == {"contradicted"}, {k: c.status for k, c in checks.items()}
    assert checks["depth.usefulness"].effect < 0
    res = synthetic()
    res["gqa"]["G4"].eval["perplexity"]["ppl"] *= 1.05
    assert by_id(sc.checks(PROFILE, res, ref=REF))["gqa.ppl"].status == "contradicted"


def test_gaps_within_the_reference_spread_are_inconclusive():
    wide = sc.NoiseReference({"depth": {m: sc.Spread(10.0, 10.0, "wide") for m in sc.SCALARS}})
    assert {c.status for c in sc.checks(PROFILE, synthetic(), ref=wide)} == {"inconclusive"}
    # no spread measured anywhere (a profile without seeds): single runs decide nothing, and say so
    checks = by_id(sc.checks(PROFILE, synthetic()))
    assert {c.status for c in checks.values()} == {"inconclusive"}
    assert "no seed spread" in checks["moe.ppl"].noise and checks["moe.ppl"].se is None


def test_one_broken_claim_is_contradicted_alone():
    res = synthetic()
    res["gqa"]["G2"].metrics[-1]["layer_var"][-1] = 1e6  # G=2 (paper G=4) now has the highest variance
    checks = by_id(sc.checks(PROFILE, res, ref=REF))
    assert checks["gqa.variance"].status == "contradicted" and "G=2 vs G=1" in checks["gqa.variance"].detail
    assert sum(c.status == "contradicted" for c in checks.values()) == 1


def test_missing_data_is_missing_not_a_crash():
    res = synthetic()
    del res["moe"]  # an experiment never ran
    res["depth"]["L4"] = replace(res["depth"]["L4"], probes=None)  # probes absent
    res["recipe"]["+G2"] = replace(res["recipe"]["+G2"], eval={"mean_acc": "n/a"})  # malformed value
    res["seqlen"]["T32"] = replace(res["seqlen"]["T32"], metrics=[{"step": 1, "layer_var": "garbage"}])
    res["weight_decay"]["wd0"] = RunResult("weight_decay", "wd0", {}, meta=res["weight_decay"]["wd0"].meta)
    checks = by_id(sc.checks(PROFILE, res, ref=REF))
    assert all(checks[f"moe.{m}"].status == "missing" for m in ("variance", "ppl", "usefulness"))
    assert checks["depth.usefulness"].status == "missing" and "L4" in checks["depth.usefulness"].detail
    assert checks["depth.variance"].status == "holds"  # variance comes from training metrics
    assert checks["recipe.kept"].status == "missing" and "+G2" in checks["recipe.kept"].detail
    assert checks["seqlen.variance"].status == "missing" and "T32" in checks["seqlen.variance"].detail
    assert checks["weight_decay.variance"].status == "missing"
    assert checks["gqa.ppl"].status == "holds"
    empty = sc.scorecard(PROFILE, results={}, ref=REF)
    assert sc.counts(empty) == {"holds": 0, "contradicted": 0, "inconclusive": 0, "missing": len(sc.CLAIMS)}
    # a gpu rung that runs only the depth sweep is judged on the depth claims alone
    wide = sc.scorecard("gpu-wide", results={}, ref=REF)
    assert list(wide["id"]) == [c.id for c in sc.CLAIMS if c.experiment == "depth"]
    # gpu-long's weight decay sweep has no λ=3: the collapse claim could never be evaluated there, so it is left
    # out, while the claims whose settings it defines stay (missing until their runs exist)
    long = sc.scorecard("gpu-long", results={}, ref=REF)
    assert "weight_decay.collapse" not in set(long["id"]) and "weight_decay.variance" in set(long["id"])
    assert list(long["id"]) == [c.id for c in sc.CLAIMS if c.experiment in ("depth", "weight_decay")
                                and c.id != "weight_decay.collapse"]
    assert sc.counts(long)["missing"] == len(long)
    assert "weight_decay.collapse" in set(sc.scorecard(PROFILE, results={}, ref=REF)["id"])  # defined at PROFILE


def _useful(n_layers: int, n_useful: int, mean_ratio: float | None = None) -> dict:
    """A usefulness probe result with the first ``n_useful`` of ``n_layers`` layers useful."""
    useful = [i < n_useful for i in range(n_layers)]
    out = {"useful": useful, "score": sum(useful) / n_layers}
    if mean_ratio is not None:
        out.update(mean_ratio=mean_ratio, paper_compat={"mean_ratio": 2 * mean_ratio - 1})
    return out


def test_one_useful_layer_everywhere_is_inconclusive_on_the_fraction():
    res = synthetic()
    depths = {name: m["value"] for name, m in ex.variant_meta(PROFILE, "depth").items()}
    for name, r in res["depth"].items():  # only layer 0 useful: the score 1/L falls with L by arithmetic
        r.probes["usefulness"] = _useful(depths[name], 1)
    checks = by_id(sc.checks(PROFILE, res, ref=REF))
    c = checks["depth.usefulness"]
    assert c.status == "inconclusive" and "at most one useful layer" in c.detail and c.effect > 0
    assert checks["depth.causal"].status == "holds"  # other claims of the experiment are unaffected
    res["depth"]["L2"].probes["usefulness"] = _useful(depths["L2"], 2)  # one variant with two: decided again
    assert by_id(sc.checks(PROFILE, res, ref=REF))["depth.usefulness"].status == "holds"


def test_the_mean_loss_ratio_decides_when_no_layer_crosses_the_threshold():
    res = synthetic()
    ratios = {"wd0": 1.02, "wd0.01": 1.021, "wd0.1": 1.03, "wd1": 1.015, "wd3": 1.01}  # λ=0.1 clearly highest
    for name, r in res["weight_decay"].items():
        r.probes["usefulness"] = _useful(16, 0, ratios[name])
    c = by_id(sc.checks(PROFILE, res, ref=REF))["weight_decay.usefulness"]
    assert c.status == "holds" and c.effect == pytest.approx(1.03 - 1.021)  # the closest rival decides
    assert c.readings["mean loss ratio (fixed probe)"].startswith("holds")
    assert c.readings["mean loss ratio (paper_compat probe)"].startswith("holds")
    assert c.readings["useful-layer fraction (ratio > 1.1)"].startswith("inconclusive")  # all 0: a tie
    ratios["wd0.1"] = 1.005  # now the lowest: contradicted although the fraction is 0 everywhere
    for name, r in res["weight_decay"].items():
        r.probes["usefulness"] = _useful(16, 0, ratios[name])
    assert by_id(sc.checks(PROFILE, res, ref=REF))["weight_decay.usefulness"].status == "contradicted"


def test_both_variance_readings_are_judged_and_shown():
    res = synthetic()
    post = {"wd0": 1.5, "wd0.01": 1.55, "wd0.1": 1.7, "wd1": 1.8, "wd3": 1.9}  # N_f rises with λ as h_L falls
    for name, r in res["weight_decay"].items():
        for row in r.metrics:
            row["final_var"] = post[name]
    c = by_id(sc.checks(PROFILE, res, ref=REF))["weight_decay.variance"]
    assert c.status == "holds"  # the headline: raw residual stream h_L, 115 against 320
    assert c.readings["h_L raw residual stream"].startswith("holds")
    assert c.readings["N_f(h_L) after final norm"].startswith("contradicted")
    assert frame.postnorm_variance(res["weight_decay"]["wd0"]) == (1.5, 1.5)
    assert frame.postnorm_variance(RunResult("x", "v", {}, probes={"variance": {"final_norm_var": 2.0}})) == (2.0, 2.0)
    df = sc.scorecard(PROFILE, res, ref=REF)
    assert {"h_L raw residual stream", "N_f(h_L) after final norm", "effect", "se", "noise"} <= set(df.columns)
    cmp = sc.compare(PROFILE, "weight_decay", res["weight_decay"])
    assert list(cmp["ours_postnorm_end"]) == list(post.values())
    assert list(cmp["paper_postnorm_end"]) == list(cmp["paper_variance_end"])  # the paper's one figure


def _seeded_weight_decay(ppl_of, seeds_of=lambda name: (0, 1, 2)) -> dict:
    """gpu weight-decay results (three seeds per λ) with only perplexity set: ``ppl_of(name, seed)``."""
    out = {}
    for name, meta in ex.variant_meta("gpu", "weight_decay").items():
        base = name.split("-seed")[0]
        if meta["seed"] in seeds_of(base):
            out[name] = RunResult("weight_decay", name, {}, meta=meta, probes={},
                                  eval={"perplexity": {"ppl": ppl_of(base, meta["seed"])}})
    return out


def test_paired_seeds_resolve_what_unpaired_ones_cannot():
    offset = {0: 100.0, 1: 115.0, 2: 130.0}  # each seed's data order moves every λ alike
    jitter = {0: 1.0, 1: 1.002, 2: 0.999}
    factor = {"wd0": 1.0, "wd0.01": 1.01, "wd0.1": 0.97, "wd1": 1.02, "wd3": 1.3}
    ppl = lambda name, s: offset[s] * factor[name] * (jitter[s] if name == "wd0.1" else 1.0)  # noqa: E731
    c = by_id(sc.checks("gpu", {"weight_decay": _seeded_weight_decay(ppl)}, ref=REF))["weight_decay.ppl"]
    assert c.status == "holds" and "paired by seed, 3 seeds" in c.noise
    # the same settings, but the others ran seed 0 alone: one common seed, nothing to pair, and the seed
    # offsets (15 %) in λ=0.1's own spread swamp the 3 % effect
    split = _seeded_weight_decay(ppl, lambda name: (0, 1, 2) if name == "wd0.1" else (0,))
    c = by_id(sc.checks("gpu", {"weight_decay": split}, ref=REF))["weight_decay.ppl"]
    assert c.status == "inconclusive" and "unpaired" in c.noise


def test_single_runs_borrow_the_spread_of_the_nearest_seeded_experiment(tmp_path):
    res = {e: {} for e in ex.EXPERIMENTS}  # every experiment given: nothing is read from disk
    jitter = {0: 1.0, 1: 1.01, 2: 0.995}  # λ=0.1 moves with each seed a little on its own
    res["weight_decay"] = _seeded_weight_decay(
        lambda name, s: 100.0 * (1 + 0.05 * s) * (0.9 * jitter[s] if name == "wd0.1" else 1))
    gqa = ex.variant_meta("gpu", "gqa")
    res["gqa"] = {name: RunResult("gqa", name, {}, meta=gqa[name], probes={}, eval={"perplexity": {"ppl": p}})
                  for name, p in (("G1", 100.0), ("G4", 100.5), ("G8", 99.0))}
    checks = by_id(sc.checks("gpu", res, root=tmp_path))
    c = checks["gqa.ppl"]
    assert "gpu/weight_decay seeds" in c.noise and "single runs" in c.noise
    wd = sc.our_rows("gpu", "weight_decay", res["weight_decay"])
    spread = sc.measured_spread(wd, "ppl", "here")
    assert spread.sd_diff > 1e-3 and c.se == pytest.approx(spread.sd_diff)
    assert spread.sd == pytest.approx(statistics.stdev([math.log(1.0), math.log(1.05), math.log(1.1)]), rel=0.2)


def test_perplexity_spread_from_a_committed_seed_spread_csv(tmp_path):
    folder = tmp_path / "paper_results" / PROFILE / "seed_spread"
    folder.mkdir(parents=True)
    (folder / "gqa.csv").write_text("variant,seed,val_loss,steps,run\n"
                                    "G1,0,5.0,10,a\nG1,1,5.2,10,b\nG2,0,5.01,10,c\nG2,1,5.19,10,d\n")
    ref = sc.noise_reference(PROFILE, lambda e: sc.our_rows(PROFILE, e, {}), root=tmp_path)
    s = ref.lookup("gqa", "ppl")
    assert "seed_spread/gqa.csv" in s.source and s.sd == pytest.approx(statistics.stdev([5.0, 5.2]), rel=0.1)
    assert ref.lookup("moe", "ppl") is s and ref.lookup("gqa", "variance_end") is None
    (folder / "gqa.csv").write_text("variant,seed\nG1,x\n")
    with pytest.raises(ValueError, match="val_loss"):
        sc.noise_reference(PROFILE, lambda e: sc.our_rows(PROFILE, e, {}), root=tmp_path)


def test_variance_end_and_peak_and_probe_fallback():
    r = RunResult("x", "v", {}, metrics=[{"layer_var": [1, 5]}, {"loss": 1.0}, {"layer_var": [1, 9]},
                                         {"layer_var": [1, 7]}])
    assert frame.last_layer_variance(r) == (7.0, 9.0)
    probed = RunResult("x", "v", {}, probes={"variance": {"layer_var": [1.0, 3.0]}})
    assert frame.last_layer_variance(probed) == (3.0, 3.0)
    assert frame.last_layer_variance(RunResult("x", "v", {})) == (None, None)
    assert frame.inner_layers([1, 2, 3, 4, 5]) == [2, 3, 4] and frame.inner_layers([1, 2, 3]) == [1, 2, 3]
    st = frame.curve_stats([4.0, 2.0, 1.0])
    assert st["jacobian_mean"] == pytest.approx(7 / 3) and st["jacobian_slope"] == pytest.approx(-math.log(2))


def test_compare_tables_line_up_paper_and_ours():
    res = synthetic()
    df = sc.compare(PROFILE, "depth", res["depth"])
    assert list(df["variant"]) == ["L2", "L3", "L4", "L6"] and list(df["paper"]) == ["L=12", "L=16", "L=24", "L=32"]
    assert list(df["paper_usefulness"]) == list(df["ours_usefulness"])
    assert {"paper_variance_end", "ours_variance_end", "ours_postnorm_end", "paper_jacobian_mean",
            "ours_causal", "ours_loss_ratio"} <= set(df.columns)
    rec = sc.compare(PROFILE, "recipe", res["recipe"])
    assert list(rec["kept"]) == [True, True, False, True, False, False, True, True]
    assert rec["ours_acc"].iloc[-1] == pytest.approx(44.1) and rec["paper_acc"].iloc[0] == 39.5
    moe = sc.compare(PROFILE, "moe", {})  # nothing ran: paper numbers, empty ours
    assert moe["ours_ppl"].isna().all() and moe["paper_ppl"].tolist() == [17.56, 15.89, 14.52, 13.82]
    for exp in ex.EXPERIMENTS:  # one row per paper setting: the gpu sweeps' seeds share one
        assert len(sc.compare("gpu", exp, {})) == len(paper.rows(exp))


def test_scorecard_frame():
    df = sc.scorecard(PROFILE, results=copy.deepcopy(synthetic()), ref=REF)
    assert list(df.columns) == sc.COLUMNS
    assert len(df) == len(sc.CLAIMS) and sc.counts(df)["holds"] == len(sc.CLAIMS)
    assert set(df["experiment"]) == set(ex.EXPERIMENTS)
    assert (df["effect"] > 2 * df["se"]).all()


def test_ties_decide_nothing():
    res = synthetic()
    for exp in ("gqa", "moe", "weight_decay"):
        for r in res[exp].values():
            r.probes["usefulness"]["score"] = 0.0  # e.g. an undertrained model: every layer replaceable
    checks = by_id(sc.checks(PROFILE, res, ref=REF))
    for cid in ("gqa.usefulness", "moe.usefulness", "weight_decay.usefulness"):
        assert checks[cid].status == "inconclusive" and checks[cid].effect == 0
    assert "→" in checks["depth.jacobian_index"].ours  # per-layer curves shown as first → last layer


def _with_tasks(result: RunResult, acc: float, n: int) -> RunResult:
    """``result`` evaluated on two tasks of ``n`` items each, both at accuracy ``acc`` (a fraction)."""
    result.eval["mean_acc"] = acc
    result.eval["tasks"] = {t: {"acc": acc, "n": n} for t in ("a", "b")}
    return result


def test_accuracy_standard_error_of_the_task_mean():
    r = _with_tasks(synthetic()["recipe"]["baseline"], 0.3, 100)
    # two tasks, each sqrt(0.3 * 0.7 / 100) = 0.0458; their mean has sqrt(2) * 0.0458 / 2
    assert frame.acc_standard_error(r) == pytest.approx(100 * (0.21 / 100) ** 0.5 / 2 ** 0.5)
    r.eval["tasks"]["b"] = {"acc": 0.3}  # no count: no error rather than a wrong one
    assert frame.acc_standard_error(r) is None


def test_accuracy_adds_the_binomial_error():
    res = synthetic()
    for r in res["recipe"].values():  # the paper's accuracies on 1000 items per task: s.e. 1.1 pp per row
        _with_tasks(r, r.eval["mean_acc"], 1000)
    checks = by_id(sc.checks(PROFILE, res, ref=REF))
    assert checks["recipe.kept"].status == "inconclusive" and "binomial" in checks["recipe.kept"].noise
    assert checks["recipe.gain"].status == "holds"  # 44.1 vs 39.5: 4.6 pp, over twice the gap's 1.55 pp s.e.
    assert checks["recipe.gain"].se == pytest.approx(math.hypot(1e-3, 100 * math.sqrt(
        0.441 * 0.559 / 1000 / 2 + 0.395 * 0.605 / 1000 / 2)), rel=1e-3)
    for r in res["recipe"].values():  # a million items per task: every gap is resolved
        _with_tasks(r, r.eval["mean_acc"], 10 ** 6)
    assert {c.status for c in sc.checks(PROFILE, res, ref=REF) if c.id in ("recipe.kept", "recipe.rejected")} \
        == {"holds"}
    res["recipe"]["+MoE"].eval["mean_acc"] = 0.30  # clearly below its parent: contradicted despite noisy pairs
    for r in res["recipe"].values():
        _with_tasks(r, r.eval["mean_acc"], 1000)
    assert by_id(sc.checks(PROFILE, res, ref=REF))["recipe.kept"].status == "contradicted"


def test_measured_spread_pools_settings_and_paired_differences_by_hand():
    # causal (not a log metric): A {0: 1, 1: 3}, B {0: 2, 1: 6}, C {1: 5, 2: 7}; within-setting sums of
    # squares 2 + 8 + 2 over 3 d.o.f. -> sd 2; only A and B share two seeds: differences (-1, -3) -> sd_diff √2
    rows = [{"by_seed": {"causal": v}} for v in ({0: 1.0, 1: 3.0}, {0: 2.0, 1: 6.0}, {1: 5.0, 2: 7.0})]
    s = sc.measured_spread(rows, "causal", "here")
    assert s == sc.Spread(pytest.approx(2.0), pytest.approx(math.sqrt(2)), "here seeds (3 d.o.f.)")
    assert sc.measured_spread(rows[:1] + [{"by_seed": {}}], "causal", "x").sd_diff is None  # no pair
    assert sc.measured_spread([{"by_seed": {"causal": {0: 1.0}}}], "causal", "x") is None  # no two seeds


def test_seed_spread_csv_pools_each_variant_by_hand(tmp_path):
    path = tmp_path / "gpu" / "seed_spread" / "gqa.csv"
    path.parent.mkdir(parents=True)
    path.write_text("variant,seed,val_loss\nG1,0,5.0\nG1,1,5.2\nG2,0,5.01\nG2,1,5.19\n")
    s = sc.seed_spread_csv(path)
    # within G1: ss 0.02, within G2: ss 0.0162 (1 d.o.f. each); paired differences (-0.01, 0.01): sd √2 / 100
    assert s.sd == pytest.approx(math.sqrt((0.02 + 0.0162) / 2)) and s.sd_diff == pytest.approx(math.sqrt(2) / 100)
    assert s.source == "gpu seed_spread/gqa.csv seeds (2 d.o.f.)"


def test_a_profile_borrows_the_other_profiles_spread(monkeypatch, tmp_path):
    """cpu has no seeds: every spread comes from gpu's results (loaded for every experiment, from the same
    root), measured as gpu measures it and labelled as borrowed; gpu itself borrows from no one."""
    from sparsedepth.paper.pipeline import results as results_mod

    jitter = {0: 1.0, 1: 1.01, 2: 0.995}
    gpu_wd = _seeded_weight_decay(lambda name, s: 100.0 * (1 + 0.05 * s) * (0.9 * jitter[s] if name == "wd0.1" else 1))
    calls = []

    def fake_load(profile, experiment, root=None, **_):
        calls.append((profile, experiment, root))
        return gpu_wd if (profile, experiment) == ("gpu", "weight_decay") else {}

    monkeypatch.setattr(results_mod, "load_results", fake_load)
    ref = sc.noise_reference("cpu", lambda e: sc.our_rows("cpu", e, {}), root=tmp_path)
    assert sorted(calls) == sorted(("gpu", e, tmp_path) for e in ex.EXPERIMENTS)
    want = sc.measured_spread(sc.our_rows("gpu", "weight_decay", gpu_wd), "ppl", "gpu/weight_decay")
    got = ref.lookup("gqa", "ppl")
    assert ref.spreads == {} and got == sc.Spread(want.sd, want.sd_diff,
                                                  f"{want.source}, borrowed: none measured at cpu")
    assert ref.lookup("gqa", "causal") is None
    calls.clear()
    own = sc.noise_reference("gpu", lambda e: sc.our_rows("gpu", e, gpu_wd if e == "weight_decay" else {}),
                             root=tmp_path)
    assert calls == [] and own.fallback is None and own.lookup("gqa", "ppl") == want
    assert sc.noise_reference("cpu", lambda e: sc.our_rows("cpu", e, {}), root=tmp_path, borrow=False).fallback is None
    assert sc.NoiseReference.exact_numbers().lookup("depth", "ppl") == sc.Spread(0.0, 0.0, "the paper's numbers, "
                                                                                            "taken as exact")


def test_numbers_are_printed_briefly():
    assert sc._fmt(None) == "—" and sc._fmt(0.1234567) == "0.1235" and sc._fmt(3) == "3" and sc._fmt([]) == "[]"
    assert sc._fmt([1.0, 0.5, 0.25]) == "1→0.25 (3 layers)"


def test_scorecard_rows_carry_each_checks_fields():
    res = copy.deepcopy(synthetic())
    df = sc.scorecard(PROFILE, results=res, ref=REF)
    want = sc.checks(PROFILE, copy.deepcopy(synthetic()), ref=REF)
    for (_, row), c in zip(df.iterrows(), want):
        assert (row["id"], row["experiment"], row["claim"], row["status"], row["noise"], row["rule"], row["ours"],
                row["paper"], row["detail"]) == (c.id, c.experiment, c.claim, c.status, c.noise, c.rule, c.ours,
                                                 c.paper, c.detail)
        assert row["effect"] == pytest.approx(c.effect) and row["se"] == pytest.approx(c.se)
        for col in sc.READINGS.values():  # a reading's cell, or blank where the claim has no such reading
            assert row[col] == c.readings.get(col, "")
    assert df.loc[df["id"] == "depth.variance", sc.READINGS["variance_end"]].item().startswith("holds: +")
    assert df.loc[df["id"] == "depth.permutation", sc.READINGS["variance_end"]].item() == ""


def test_checks_and_compare_load_what_they_are_not_given(monkeypatch, tmp_path):
    from sparsedepth.paper.pipeline import results as results_mod

    res = synthetic()
    calls = []

    def fake_load(profile, experiment, root=None, **_):
        calls.append((profile, experiment, root))
        return res[experiment]

    monkeypatch.setattr(results_mod, "load_results", fake_load)
    loaded = sc.checks(PROFILE, root=tmp_path, ref=REF)
    assert sorted(calls) == sorted((PROFILE, e, tmp_path) for e in ex.EXPERIMENTS)
    assert [c.status for c in loaded] == [c.status for c in sc.checks(PROFILE, synthetic(), ref=REF)]
    # one experiment given: the others are loaded only for the noise reference (smoke borrows from no one)
    calls.clear()
    sc.checks(PROFILE, {"depth": res["depth"]}, root=tmp_path)
    assert sorted(calls) == sorted((PROFILE, e, tmp_path) for e in ex.EXPERIMENTS if e != "depth")
    calls.clear()
    table = sc.compare(PROFILE, "depth", root=tmp_path)
    assert calls == [(PROFILE, "depth", tmp_path)] and table.equals(sc.compare(PROFILE, "depth", res["depth"]))


def test_compare_shows_the_seed_range_where_a_profile_runs_seeds():
    ppl = {"wd0": 20.0, "wd0.01": 19.0, "wd0.1": 18.0, "wd1": 19.5, "wd3": 30.0}
    res = _seeded_weight_decay(lambda name, s: ppl[name] + s, lambda name: (0, 1) if name == "wd0" else (0, 1, 2))
    df = sc.compare("gpu", "weight_decay", res).set_index("ours")
    assert df.loc["λ=0", "seeds"] == 2 and df.loc["λ=0.1", "seeds"] == 3
    assert (df.loc["λ=0", "ours_ppl_min"], df.loc["λ=0", "ours_ppl_max"]) == (20.0, 21.0)
    assert (df.loc["λ=0.1", "ours_ppl_min"], df.loc["λ=0.1", "ours_ppl_max"]) == (18.0, 20.0)
    assert df.loc["λ=0.1", "ours_ppl"] == pytest.approx(19.0)
    assert "seeds" not in sc.compare(PROFILE, "weight_decay", synthetic()["weight_decay"]).columns


def _hand_rows(*series: dict) -> list[dict]:
    """Rows of settings R, A, B, ... with only the causal score, {seed: value} each (and its seed mean)."""
    return [{"name": n, "label": n, "key": i, "present": True, "by_seed": {"causal": s},
             "causal": sum(s.values()) / len(s)} for i, (n, s) in enumerate(zip("RAB", series))]


def test_the_headline_is_the_comparison_least_favourable_to_the_paper():
    # A - R = (0.9, 1.0, 1.1): +1 ± 0.058 (17 s.e.); B - R = (2, 3, 4): +3 ± 0.58 (5.2 s.e.): B decides
    claim = sc.Versus("t.x", "gqa", "A and B beat R", ("causal",), +1,
                      pairs=lambda rows: [(rows[1], rows[0]), (rows[2], rows[0])], names="A, B vs R")
    rows = _hand_rows({0: 0.0, 1: 0.0, 2: 0.0}, {0: 0.9, 1: 1.0, 2: 1.1}, {0: 2.0, 1: 3.0, 2: 4.0})
    c = claim.evaluate(rows, sc.NoiseReference({}))
    assert c.status == "holds" and c.effect == pytest.approx(3.0) and c.se == pytest.approx(1 / math.sqrt(3))
    assert c.noise == "paired by seed, 3 seeds"
    assert c.detail == "A vs R: +1 ± 0.058 holds; B vs R: +3 ± 0.58 holds"
    assert c.rule == ("M(A) - M(B) for A, B vs R > 0 by more than 2 s.e., M = causal score; "
                      "holds if every comparison does, contradicted if any does")
    assert c.ours == "R: 0, A: 1, B: 3"
    rows[2]["by_seed"] = {}
    missing = claim.evaluate(rows, sc.NoiseReference({}))
    assert missing.status == "missing" and missing.detail == "no causal for B"


def test_single_runs_take_the_claims_own_experiment_spread_first():
    claim = sc.Versus("t.x", "gqa", "A beats R", ("causal",), +1, pairs=lambda rows: [(rows[1], rows[0])])
    rows = _hand_rows({0: 0.0}, {0: 1.0})
    spreads = {"depth": {"causal": sc.Spread(1.0, 1.0, "depth src")},
               "gqa": {"causal": sc.Spread(0.2, 0.1, "gqa src")}}
    c = claim.evaluate(rows, sc.NoiseReference(spreads))
    assert c.se == pytest.approx(0.1) and c.status == "holds"
    assert c.noise == "single runs, same seed: s.e. from the reference spread (gqa src)"
    # the nearest experiment: itself, then depth, then the others; then the fallback profile, looked up alike
    assert sc.NoiseReference({"depth": spreads["depth"], "moe": {"causal": sc.Spread(3, 3, "moe")}}).lookup(
        "gqa", "causal").source == "depth src"
    assert sc.NoiseReference({}, fallback=sc.NoiseReference(spreads)).lookup("gqa", "causal").source == "gqa src"
    bare = claim.evaluate(rows, sc.NoiseReference({}))
    assert bare.status == "inconclusive" and bare.se is None
    assert bare.noise == ("single runs, same seed: s.e. from the reference spread "
                          "(no seed spread measured for this metric)")


def test_reading_cells_and_row_text():
    assert sc.Reading("ppl", "missing", detail="no ppl for L2").cell() == "missing: no ppl for L2"
    assert sc.Reading("ppl", "missing").cell() == "missing"
    assert sc.Reading("ppl", "inconclusive", 0.1, None).cell() == "inconclusive: +0.1 ± ?"
    assert sc.Reading("ppl", "holds", 0.1234, 0.01234).cell() == "holds: +0.123 ± 0.012"
    r = {"ppl": 19.0, "variants": 3, "spread": {"ppl": (18.0, 20.0, 3)}}
    assert sc._with_spread(r, "ppl") == "19 [18–20, n=3]"
    assert sc._with_spread({**r, "spread": {"ppl": (19.0, 19.0, 1)}}, "ppl") == "19 [n=1]"
    assert sc._with_spread({**r, "spread": {"ppl": (18.5, 19.5, 2)}}, "ppl") == "19 [18.5–19.5, n=2]"
    assert sc._with_spread({**r, "variants": 1}, "ppl") == "19" and sc._with_spread({"ppl": 19.0}, "ppl") == "19"
    assert sc._with_spread({**r, "spread": {}}, "ppl") == "19"
    assert [sc._paper_label(e, k) for e, k in (("depth", 12), ("weight_decay", 0.1), ("seqlen", 4096),
                                               ("gqa", 2), ("moe", "moe-small"))] == \
        ["L=12", "λ=0.1", "T=4096", "G=2", "moe-small"]


def test_trend_settings_up_to_a_value_and_two_are_enough():
    claim = sc.Trend("t.x", "seqlen", "rises", ("causal",), +1, upto=4096)
    rows = [{"key": k} for k in (1024, 2048, 4096, 8192)]
    assert [r["key"] for _, rs in claim.comparisons(rows) for r in rs] == [1024, 2048, 4096]
    assert claim.comparisons(rows[1:]) == [("slope", rows[1:3])]  # two settings kept: enough
    with pytest.raises(sc.Missing, match="fewer than two settings"):
        claim.comparisons(rows[2:])  # only 4096 kept
    kept = [{"kept": True, "key": 0}, {"kept": False, "key": 1}, {"kept": True, "key": 2}]
    assert sc._recipe_full(kept) == [(kept[2], kept[0])]
    with pytest.raises(sc.Missing, match="fewer than two kept recipe steps"):
        sc._recipe_full(kept[:2])


def test_paper_and_our_rows_fields():
    for r in sc.paper_rows("depth"):
        assert (r["x"], r["variants"], r["seeds"], r["name"]) == (r["key"], 1, 1, str(r["key"]))
        assert r["postnorm_peak"] == r["variance_peak"] and r["postnorm_end"] == r["variance_end"]
        assert r["label"] == f"L={r['key']}" and r["by_seed"]["variance_end"] == {0: r["variance_end"]}
    ours = sc.our_rows(PROFILE, "depth", synthetic()["depth"])
    assert [r["x"] for r in ours] == [2, 3, 4, 6] and all(r["variants"] == 1 for r in ours)
    assert ours[0]["spread"]["acc"] == (None, None, 0) and ours[0]["acc"] is None  # depth reads no accuracy
    with pytest.raises(ValueError, match="ppl = 0 is not positive, so it has no relative effect"):
        sc.transform("ppl", 0.0)
    assert sc.transform("causal", -1.0) == -1.0 and sc.transform("ppl", math.e) == pytest.approx(1.0)


def test_setting_row_finds_one_setting_with_results():
    res = synthetic()["depth"]
    rows = sc.our_rows(PROFILE, "depth", res)
    assert sc.setting_row(PROFILE, "depth", res, 16) == next(r for r in rows if r["key"] == 16)
    assert sc.setting_row(PROFILE, "depth", {}, 16) is None  # no variant of it ran
    assert sc.setting_row(PROFILE, "depth", res, 99) is None


def test_a_tolerance_counts_in_the_deciding_comparison_and_its_detail():
    # direction -1, margin 0.5: A - R = -0.1 ± 0.05 (2 s.e. without the margin, 12 with it), B - R = -1.5 ± 0.5
    # (3 s.e. without, 4 with): the tolerance makes B the least favourable comparison
    ha, hb = 0.05 * math.sqrt(3), 0.5 * math.sqrt(3)  # three seeds x - h, x, x + h have s.e. h / √3
    rows = _hand_rows({0: 0.0, 1: 0.0, 2: 0.0}, {0: -0.1 - ha, 1: -0.1, 2: -0.1 + ha},
                      {0: -1.5 - hb, 1: -1.5, 2: -1.5 + hb})
    claim = sc.Versus("t.x", "gqa", "A and B keep R", ("causal",), -1, margin=0.5,
                      pairs=lambda rows: [(rows[1], rows[0]), (rows[2], rows[0])])
    c = claim.evaluate(rows, sc.NoiseReference({}))
    assert c.status == "holds" and c.effect == pytest.approx(2.0) and c.se == pytest.approx(0.5)
    assert c.detail == "A vs R: +0.6 ± 0.05 holds; B vs R: +2 ± 0.5 holds"
    assert "(tolerance 0.5)" in c.rule
