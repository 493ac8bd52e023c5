"""Claims scorecard on synthetic results: paper-like results pass, reversed ones fail, gaps are "missing"."""
from __future__ import annotations

import copy

import pytest

from sparsedepth.paper.spec import experiments as ex
from sparsedepth.paper.spec import reported as paper
from sparsedepth.paper.analysis import scorecard as sc

PROFILE = "smoke"


def _result(exp: str, key, transform=lambda m, x: x) -> dict:
    """A load_results-style entry carrying the paper's numbers for ``key`` (``transform`` may distort them)."""
    row = paper.rows(exp)[key]
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
    return {"metrics": metrics, "probes": probes, "eval": ev, "summary": {"done": True}, "provenance": {}}


def synthetic(transform=lambda m, x: x) -> dict[str, dict[str, dict]]:
    out = {}
    for exp in ex.EXPERIMENTS:
        metas = ex.variant_meta(PROFILE, exp)
        out[exp] = {name: _result(exp, m["paper_key"], transform) for name, m in metas.items()}
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


def test_the_paper_passes_its_own_claims():
    checks = sc.paper_checks()
    assert len(checks) == len(sc.CLAIMS) >= 20
    assert {c.status for c in checks} == {"pass"}, [(c.id, c.detail) for c in checks if c.status != "pass"]


def test_paper_like_results_pass_and_show_both_sides():
    checks = by_id(sc.checks(PROFILE, synthetic()))
    failing = {k: c.detail for k, c in checks.items() if c.status != "pass"}
    assert not failing, failing
    c = checks["depth.usefulness"]
    assert "L=2: 1" in c.ours and "L=12: 1" in c.paper and "-1.00" in c.detail
    assert "λ=0.1: 115" in checks["weight_decay.variance"].ours
    assert checks["weight_decay.variance"].detail == "λ=0.1 115 < λ=0 320"


def test_reversed_results_fail():
    checks = by_id(sc.checks(PROFILE, synthetic(reverse)))
    # GQA's PPL claim has a 1 % tolerance and the paper's differences are 0.3 %: reversing them still passes
    assert checks.pop("gqa.ppl").status == "pass"
    assert {c.status for c in checks.values()} == {"fail"}, {k: c.status for k, c in checks.items()}
    assert "NOT >" in checks["recipe.kept"].detail and "+1.00" in checks["depth.usefulness"].detail
    res = synthetic()
    res["gqa"]["G4"]["eval"]["perplexity"]["ppl"] *= 1.05
    assert by_id(sc.checks(PROFILE, res))["gqa.ppl"].status == "fail"


def test_one_broken_claim_fails_alone():
    res = synthetic()
    res["gqa"]["G2"]["metrics"][-1]["layer_var"][-1] = 1e6  # G=2 (paper G=4) now has the highest variance
    checks = by_id(sc.checks(PROFILE, res))
    assert checks["gqa.variance"].status == "fail" and "NOT <" in checks["gqa.variance"].detail
    assert sum(c.status == "fail" for c in checks.values()) == 1


def test_missing_data_is_missing_not_a_crash():
    res = synthetic()
    del res["moe"]  # an experiment never ran
    res["depth"]["L4"]["probes"] = None  # probes absent
    res["recipe"]["+G2"]["eval"] = {"mean_acc": "n/a"}  # malformed value
    res["seqlen"]["T32"]["metrics"] = [{"step": 1, "layer_var": "garbage"}]
    res["weight_decay"]["wd0"] = {"metrics": None}
    checks = by_id(sc.checks(PROFILE, res))
    assert all(checks[f"moe.{m}"].status == "missing" for m in ("variance", "ppl", "usefulness"))
    assert checks["depth.usefulness"].status == "missing" and "L4" in checks["depth.usefulness"].detail
    assert checks["depth.variance"].status == "pass"  # variance comes from training metrics
    assert checks["recipe.kept"].status == "missing" and "+G2" in checks["recipe.kept"].detail
    assert checks["seqlen.variance"].status == "missing" and "T32" in checks["seqlen.variance"].detail
    assert checks["weight_decay.variance"].status == "missing"
    assert checks["gqa.ppl"].status == "pass"
    empty = sc.scorecard(PROFILE, results={})
    assert sc.counts(empty) == {"pass": 0, "fail": 0, "inconclusive": 0, "missing": len(sc.CLAIMS)}


def test_flat_metric_fails_a_trend():
    res = synthetic()
    for r in res["depth"].values():
        r["probes"]["permutation"]["score"] = 0.5
    c = by_id(sc.checks(PROFILE, res))["depth.permutation"]
    assert c.status == "fail" and "does not change" in c.detail


def _useful(n_layers: int, n_useful: int) -> dict:
    """A usefulness probe result with the first ``n_useful`` of ``n_layers`` layers useful."""
    useful = [i < n_useful for i in range(n_layers)]
    return {"useful": useful, "score": sum(useful) / n_layers}


def test_one_useful_layer_everywhere_is_inconclusive_not_a_pass():
    res = synthetic()
    depths = {name: m["value"] for name, m in ex.variant_meta(PROFILE, "depth").items()}
    for name, r in res["depth"].items():  # only layer 0 useful: the score 1/L falls with L by arithmetic
        r["probes"]["usefulness"] = _useful(depths[name], 1)
    checks = by_id(sc.checks(PROFILE, res))
    c = checks["depth.usefulness"]
    assert c.status == "inconclusive" and "at most one useful layer" in c.detail and "-1.00" in c.detail
    assert checks["depth.causal"].status == "pass"  # other claims of the experiment are unaffected
    assert sc.counts(sc.scorecard(PROFILE, res))["inconclusive"] == 1
    res["depth"]["L2"]["probes"]["usefulness"] = _useful(depths["L2"], 2)  # one variant with two: decided again
    assert by_id(sc.checks(PROFILE, res))["depth.usefulness"].status == "pass"


def test_variance_end_and_peak_and_probe_fallback():
    r = {"metrics": [{"layer_var": [1, 5]}, {"loss": 1.0}, {"layer_var": [1, 9]}, {"layer_var": [1, 7]}]}
    assert sc.last_layer_variance(r) == (7.0, 9.0)
    assert sc.last_layer_variance({"metrics": [], "probes": {"variance": {"layer_var": [1.0, 3.0]}}}) == (3.0, 3.0)
    assert sc.last_layer_variance({}) == (None, None)
    assert sc.inner_layers([1, 2, 3, 4, 5]) == [2, 3, 4] and sc.inner_layers([1, 2, 3]) == [1, 2, 3]


def test_spearman():
    assert sc.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert sc.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert sc.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # one adjacent swap: still passes
    assert sc.spearman([1, 2, 3], [5, 5, 5]) is None and sc.spearman([1], [2]) is None


def test_compare_tables_line_up_paper_and_ours():
    res = synthetic()
    df = sc.compare(PROFILE, "depth", res["depth"])
    assert list(df["variant"]) == ["L2", "L3", "L4", "L6"] and list(df["paper"]) == ["L=12", "L=16", "L=24", "L=32"]
    assert list(df["paper_usefulness"]) == list(df["ours_usefulness"])
    assert {"paper_variance_end", "ours_variance_end", "paper_jacobian_mean", "ours_causal"} <= set(df.columns)
    rec = sc.compare(PROFILE, "recipe", res["recipe"])
    assert list(rec["kept"]) == [True, True, False, True, False, False, True, True]
    assert rec["ours_acc"].iloc[-1] == pytest.approx(44.1) and rec["paper_acc"].iloc[0] == 39.5
    moe = sc.compare(PROFILE, "moe", {})  # nothing ran: paper numbers, empty ours
    assert moe["ours_ppl"].isna().all() and moe["paper_ppl"].tolist() == [17.56, 15.89, 14.52, 13.82]
    for exp in ex.EXPERIMENTS:  # one row per paper setting: the gpu depth sweep's seeds share one
        assert len(sc.compare("gpu", exp, {})) == len(paper.rows(exp))


def test_scorecard_frame():
    df = sc.scorecard(PROFILE, results=copy.deepcopy(synthetic()))
    assert list(df.columns) == ["id", "experiment", "claim", "rule", "status", "ours", "paper", "detail"]
    assert len(df) == len(sc.CLAIMS) and sc.counts(df)["pass"] == len(sc.CLAIMS)
    assert set(df["experiment"]) == set(ex.EXPERIMENTS)


def test_ties_fail_strict_claims():
    res = synthetic()
    for exp in ("gqa", "moe", "weight_decay"):
        for r in res[exp].values():
            r["probes"]["usefulness"]["score"] = 0.0  # e.g. an undertrained model: every layer replaceable
    checks = by_id(sc.checks(PROFILE, res))
    for cid in ("gqa.usefulness", "moe.usefulness", "weight_decay.usefulness"):
        assert checks[cid].status == "fail" and "NOT >" in checks[cid].detail
    assert "→" in checks["depth.jacobian_index"].ours  # per-layer curves shown as first → last layer


def _with_tasks(result: dict, acc: float, n: int) -> dict:
    """``result`` evaluated on two tasks of ``n`` items each, both at accuracy ``acc`` (a fraction)."""
    result["eval"]["mean_acc"] = acc
    result["eval"]["tasks"] = {t: {"acc": acc, "n": n} for t in ("a", "b")}
    return result


def test_accuracy_standard_error_of_the_task_mean():
    r = _with_tasks(synthetic()["recipe"]["baseline"], 0.3, 100)
    # two tasks, each sqrt(0.3 * 0.7 / 100) = 0.0458; their mean has sqrt(2) * 0.0458 / 2
    assert sc.acc_standard_error(r) == pytest.approx(100 * (0.21 / 100) ** 0.5 / 2 ** 0.5)
    r["eval"]["tasks"]["b"] = {"acc": 0.3}  # no count: no error rather than a wrong one
    assert sc.acc_standard_error(r) is None


def test_accuracy_gaps_within_noise_decide_nothing():
    res = synthetic()
    for r in res["recipe"].values():  # the paper's accuracies on 1000 items per task: s.e. 1.1 pp per row
        _with_tasks(r, r["eval"]["mean_acc"], 1000)
    checks = by_id(sc.checks(PROFILE, res))
    assert checks["recipe.kept"].status == "inconclusive" and "within noise" in checks["recipe.kept"].detail
    assert checks["recipe.gain"].status == "pass"  # 44.1 vs 39.5: 4.6 pp, over twice the gap's 1.55 pp s.e.
    for r in res["recipe"].values():  # a million items per task: every gap is resolved
        _with_tasks(r, r["eval"]["mean_acc"], 10 ** 6)
    assert {c.status for c in sc.checks(PROFILE, res) if c.id.startswith("recipe.") and "acc" in c.rule} == {"pass"}
    res["recipe"]["+MoE"]["eval"]["mean_acc"] = 0.30  # clearly below its parent: fails despite noisy pairs
    for r in res["recipe"].values():
        _with_tasks(r, r["eval"]["mean_acc"], 1000)
    assert by_id(sc.checks(PROFILE, res))["recipe.kept"].status == "fail"
