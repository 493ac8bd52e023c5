"""'Moves toward the paper with scale' from hand-made trajectories: the rule (yes / no / flat / not available),
a run read at one probe point, and the scorecard's column on a depth sweep probed along training."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from sparsedepth.paper.analysis import frame
from sparsedepth.paper.analysis import scorecard as sc
from sparsedepth.paper.analysis import trend
from sparsedepth.paper.pipeline.run_result import RunResult
from sparsedepth.paper.spec import experiments as ex

from test_scorecard import PROFILE, REF, synthetic  # the same folder (pytest puts it on the path)

TOKENS = [1e6, 10 ** 6.5, 1e7, 10 ** 7.5]


def test_rule_yes_no_flat_and_not_available():
    up = [0.1, 0.2, 0.3, 0.4]  # +0.2 per decade, exactly on a line
    verdict, t = trend.toward_paper(TOKENS, up, effect_se=0.01, target=0.6)
    assert verdict == trend.YES and t["change"] == pytest.approx(0.3) and t["slope_se"] == pytest.approx(0, abs=1e-12)
    assert t["crossing_tokens"] == pytest.approx(10 ** 8.5)  # 0.1 + 0.2 per decade x 2.5 decades from 1e6
    assert trend.toward_paper(TOKENS, up[::-1], effect_se=0.01)[0] == trend.NO
    # the same change inside the seed noise of one effect: flat
    assert trend.toward_paper(TOKENS, up, effect_se=0.2)[0] == trend.FLAT
    # scatter about the line counts too: a zig-zag with a small net slope is flat even without a seed spread
    assert trend.toward_paper(TOKENS, [0.1, 0.5, 0.1, 0.5])[0] == trend.FLAT
    assert trend.toward_paper(TOKENS[:2], up[:2], effect_se=0.01)[0] == trend.NOT_AVAILABLE
    # where the trend meets a target, in words: a token count, never (moving away or flat), or beyond 1e30
    assert trend.reach_words(t) == "reaches 0.6 at 316M tokens"
    assert trend.reach_words(trend.trend(TOKENS, up[::-1], 0.6), "the paper's") == \
        "never reaches the paper's (moves away or is flat)"
    assert trend.reach_words(trend.trend(TOKENS, up, 1e6)) == "reaches 1e+06 only beyond 1e30 tokens"
    assert trend.crossing(trend.trend(TOKENS, up)) == trend.NOT_AVAILABLE
    # a target the points already went by (at 10M, inside 1M-32M): said so, not "reaches"
    gone = trend.trend(TOKENS, up, 0.3)
    assert gone["passed"] and gone["crossing_tokens"] == pytest.approx(1e7) and trend.crossing(gone) == "10M, passed"
    assert trend.reach_words(gone) == "passed 0.3 at 10M tokens, inside the points, and moves on beyond it"
    assert not t["passed"]
    verdict, t = trend.toward_paper(TOKENS, up)  # on a line and no seed spread: the noise is unknown
    assert verdict == trend.NOT_AVAILABLE and "no seed spread" in t["why"]
    # a constant statistic (a score whose every layer reads the same 1/32): slope 0 exactly, no crossing
    flat = trend.trend(TOKENS, [1 / 32] * 4, target=0.5)
    assert flat["slope_per_decade"] == 0 and flat["crossing_tokens"] is None and flat["intercept"] == 1 / 32


def test_a_statistic_that_peaked_inside_the_points_is_marked_turned():
    tokens = [10 ** (6 + k / 2) for k in range(8)]
    rise_then_fall = [12, 16, 22, 32, 47, 59, 52, 39]  # the shape of gpu-long's h_L variance: up overall, down last
    t = trend.trend(tokens, rise_then_fall, 400)
    assert t["slope_per_decade"] > 0 and t["turned"]
    assert trend.reach_words(t).endswith("; but its last 3 points turn the other way")
    rising = trend.trend(tokens, sorted(rise_then_fall), 400)
    assert not rising["turned"] and "turn" not in trend.reach_words(rising)
    # five points at least (three in the tail and two before it), else the tail is most of the line
    assert not trend.trend(tokens[:4], rise_then_fall[3:7])["turned"]
    assert not trend.trend(tokens, [1, 2, 3, 4, 5, 6, 6, 6])["turned"]  # a flat tail turns nothing


def _point(step: int, tokens: float, i: int, t: int, L: int) -> dict:
    """Setting i (0 = shallowest) at point t: causal falls with depth more steeply with tokens (toward the
    paper), permutation falls with depth by the same amount throughout (flat), ||J - I|| falls with depth less
    and less (away), variance grows with depth more and more."""
    jac = math.exp(-0.1 * (3 - t) * i)
    return {"step": step, "tokens": tokens, "val_loss": 5.0 - 0.1 * t,
            "variance": {"last_layer_var": 2.0 ** (i * (t + 1)), "final_norm_var": 1.0,
                         "layer_var": [1.0] * (L - 1) + [2.0 ** (i * (t + 1))], "max_abs": [3.0] * L},
            "causal": {"score": 0.5 - 0.02 * (t + 1) * i, "per_layer": [0.1] * L},
            "permutation": {"score": 0.9 - 0.1 * i, "stderr": 0.01, "n_pairs": 3},
            "jacobian": {"mean": jac, "per_layer": [jac] * L}}


def _probed(results: dict[str, RunResult]) -> dict[str, RunResult]:
    out = {}
    for i, (name, r) in enumerate(results.items()):
        L = ex.resolve(PROFILE, "depth", name).model.n_layers
        points = [_point(int(t_ / 1e5), t_, i, t, L) for t, t_ in enumerate(TOKENS)]
        out[name] = replace(r, trajectory={"points": points})
    return out


def test_a_run_read_at_one_probe_point():
    r = RunResult("depth", "L4", {}, metrics=[{"step": 1, "layer_var": [1.0, 99.0]}],
                  probes={"usefulness": {"threshold": 1.1}})
    p = {"step": 3, "tokens": 3000, "val_loss": 2.0, "variance": {"layer_var": [1.0, 7.0], "final_norm_var": 1.5},
         "usefulness": {"score": 0.5, "loss_ratio": [1.0, 1.3], "r2": [1, 1],
                        "paper_compat": {"score": 1.0, "loss_ratio": [1.2, 1.4]}}}
    at = r.at_point(p)
    got = frame.readings(at)
    assert got["variance_end"] == 7.0 and got["postnorm_end"] == 1.5  # the point's probes, not the telemetry
    assert got["ppl"] == pytest.approx(math.exp(2.0)) and got["useful_layers"] == 1
    assert got["loss_ratio"] == pytest.approx(1.15) and got["loss_ratio_compat"] == pytest.approx(1.3)
    assert at.tokens() == 3000 and at.trajectory is None and r.points() == []


def test_scorecard_column_from_trajectories():
    res = synthetic()
    res["depth"] = _probed(res["depth"])
    checks = {c.id: c for c in sc.checks(PROFILE, res, ref=REF)}
    assert checks["depth.causal"].scale == trend.YES, checks["depth.causal"].scale_detail
    assert checks["depth.permutation"].scale == trend.FLAT, checks["depth.permutation"].scale_detail
    assert checks["depth.jacobian_depth"].scale == trend.NO, checks["depth.jacobian_depth"].scale_detail
    assert checks["depth.variance"].scale == trend.YES
    detail = checks["depth.causal"].scale_detail
    assert detail.startswith("causal score: effect") and "over 4 points (1M–31.6M tokens)" in detail
    assert "the paper's +0.0335" in detail and "extrapolation" in detail  # the paper's slope of causal over depth
    # no usefulness was probed along training: not available, and why
    assert checks["depth.usefulness"].scale == trend.NOT_AVAILABLE
    assert "not evaluated at the last probe point" in checks["depth.usefulness"].scale_detail
    # sweeps without trajectories
    assert checks["weight_decay.ppl"].scale == trend.NOT_AVAILABLE
    assert "probed along training" in checks["weight_decay.ppl"].scale_detail
    card = sc.scorecard(PROFILE, res, ref=REF)
    assert sc.SCALE in card.columns and "scale trend" in card.columns
    assert card.set_index("id").loc["depth.causal", sc.SCALE] == "yes"


def test_a_claim_weakening_from_beyond_the_paper_says_so():
    res = synthetic()
    res["depth"] = _probed(res["depth"])
    for i, r in enumerate(res["depth"].values()):
        for t, p in enumerate(r.trajectory["points"]):  # causal falls with depth less and less, 0.1 -> 0.04
            p["causal"]["score"] = 0.5 - 0.02 * (5 - t) * i
    checks = {c.id: c for c in sc.checks(PROFILE, res, ref=REF)}
    causal, jac = checks["depth.causal"], checks["depth.jacobian_depth"]
    assert causal.scale == trend.NO and "above the paper's, so the claim weakens toward" in causal.scale_detail
    # ||J - I|| also weakens, but to below the paper's effect (0.3 -> 0): plain "no"
    assert jac.scale == trend.NO and "above the paper's" not in jac.scale_detail


def test_points_are_matched_by_step_across_runs():
    res = _probed(synthetic()["depth"])
    first = next(iter(res))
    res[first] = replace(res[first], trajectory={"points": res[first].points()[1:]})  # lacks the first point
    along = sc.rows_along_training(PROFILE, "depth", res)
    assert [t for t, _ in along] == TOKENS[1:]
    assert all(r["present"] for _, rows in along for r in rows)


def test_token_counts_take_the_unit_of_their_rounded_value():
    assert trend.fmt_tokens(999_999_999.99) == "1B"  # not "1e+03M"
    assert trend.fmt_tokens(301_465_600) == "301M" and trend.fmt_tokens(8.549e19) == "8.5e+19"
    assert trend.fmt_tokens(None) == "never" and trend.fmt_tokens(math.inf) == f"beyond 1e{trend.FAR}"
