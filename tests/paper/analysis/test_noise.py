"""The noise model: effects over seeds, their standard errors (paired, unpaired, single runs) and the verdict."""
from __future__ import annotations

import math
import statistics

import pytest

from sparsedepth.paper.analysis import noise


def test_paired_difference_is_the_mean_and_error_of_per_seed_differences():
    a = {0: 10.0, 1: 20.0, 2: 30.0}  # large seed effects, shared by both settings
    b = {0: 9.5, 1: 19.6, 2: 29.4}
    est = noise.difference(a, b)
    d = [0.5, 0.4, 0.6]
    assert est.value == pytest.approx(0.5)
    assert est.se == pytest.approx(statistics.stdev(d) / math.sqrt(3))
    assert "paired" in est.how
    assert noise.verdict(est, +1) == noise.HOLDS and noise.verdict(est, -1) == noise.CONTRADICTED


def test_unpaired_difference_adds_both_means_errors():
    a = {0: 10.0, 1: 20.0, 2: 30.0}
    b = {3: 9.5, 4: 19.6}  # no common seed: the seed effects stay in the error
    est = noise.difference(a, b)
    assert est.value == pytest.approx(20.0 - 14.55)
    assert est.se == pytest.approx(math.sqrt(statistics.variance(a.values()) / 3 + statistics.variance(b.values()) / 2))
    assert "unpaired" in est.how and noise.verdict(est, +1) == noise.INCONCLUSIVE


def test_single_runs_take_the_reference_spread():
    a, b = {0: 1.0}, {0: 0.8}
    assert noise.difference(a, b, sd=0.1, sd_diff=0.05).se == pytest.approx(0.05)  # paired reference
    assert noise.difference(a, b, sd=0.1).se == pytest.approx(math.sqrt(2) * 0.1)  # no paired one: two runs' error
    unknown = noise.difference(a, b)
    assert unknown.se is None and noise.verdict(unknown, +1) == noise.INCONCLUSIVE
    assert "reference" in noise.difference(a, b, sd=0.1).how
    # three seeds against one: the single run's variance comes from the reference, the others' from themselves
    est = noise.difference({0: 1.0, 1: 1.2, 2: 1.4}, {0: 0.5}, sd=0.3)
    assert est.value == pytest.approx(0.7)
    assert est.se == pytest.approx(math.sqrt(0.04 / 3 + 0.09)) and "unpaired, 3 vs 1" in est.how


def test_verdict_needs_two_standard_errors_either_way():
    assert noise.verdict(noise.Estimate(0.21, 0.1, ""), +1) == noise.HOLDS
    assert noise.verdict(noise.Estimate(0.19, 0.1, ""), +1) == noise.INCONCLUSIVE
    assert noise.verdict(noise.Estimate(-0.21, 0.1, ""), +1) == noise.CONTRADICTED
    assert noise.verdict(noise.Estimate(-0.21, 0.1, ""), -1) == noise.HOLDS
    # a tolerance on the paper's side: 0.05 worse counts as within 0.3
    assert noise.verdict(noise.Estimate(0.05, 0.1, ""), -1, margin=0.3) == noise.HOLDS
    assert noise.verdict(noise.Estimate(0.0, 0.0, ""), +1) == noise.INCONCLUSIVE  # a tie decides nothing
    assert noise.verdict(None, +1) == noise.MISSING


def test_trend_pairs_seeds_when_every_setting_has_them():
    # each seed's sweep rises by 1 per setting from its own offset
    series = [{0: 0.0 + i, 1: 5.0 + i * 1.2, 2: -3.0 + i * 0.8} for i in range(4)]
    est = noise.trend(series)
    assert est.value == pytest.approx(1.0) and "paired" in est.how
    assert est.se == pytest.approx(statistics.stdev([1.0, 1.2, 0.8]) / math.sqrt(3))
    assert noise.slope([1, 3, 5]) == pytest.approx(2.0)
    assert sum(noise.slope_weights(5)) == pytest.approx(0.0)


def test_trend_of_single_runs_propagates_the_reference_spread():
    series = [{0: 0.0}, {0: 1.0}, {0: 2.0}, {0: 3.0}]
    est = noise.trend(series, sd=0.5)
    assert est.value == pytest.approx(1.0)
    assert est.se == pytest.approx(0.5 / math.sqrt(5))  # sd / sqrt(sum (i - 1.5)^2) = 0.5 / sqrt(5)
    assert noise.trend(series).se is None
    with pytest.raises(ValueError, match="two settings"):
        noise.trend([{0: 1.0}])


def test_level_and_errors_of_accuracy():
    assert noise.level({0: 1.0, 1: 3.0}).se == pytest.approx(1.0)
    assert noise.level({0: 1.0}, sd=0.2).se == pytest.approx(0.2)
    assert noise.binomial_se([(0.3, 100), (0.3, 100)]) == pytest.approx(math.sqrt(2 * 0.0021) / 2)
    assert noise.item_error([0.3, 0.4]) == pytest.approx(math.sqrt((0.09 + 0.16) / 2))
    assert noise.item_error([]) is None
    with pytest.raises(ValueError, match="accuracy"):
        noise.binomial_se([(1.5, 10)])
    est = noise.Estimate(1.0, 0.3, "x").plus_error(0.4, "binomial")
    assert est.se == pytest.approx(0.5) and est.how == "x + binomial"
    assert noise.Estimate(1.0, None, "x").plus_error(0.4, "b").se == pytest.approx(0.4)


def test_pooled_sd():
    sd, dof = noise.pooled_sd([[1.0, 3.0], [10.0, 12.0, 14.0], [7.0]])
    assert dof == 3 and sd == pytest.approx(math.sqrt((2 + 8) / 3))
    assert noise.pooled_sd([[1.0]]) == (None, 0)


def test_boundaries_two_seeds_pair_and_two_settings_make_a_trend():
    est = noise.difference({0: 3.0, 1: 5.0}, {0: 1.0, 1: 2.0})  # exactly two common seeds: paired
    assert est.value == pytest.approx(2.5) and est.se == pytest.approx(0.5) and est.how == "paired by seed, 2 seeds"
    tr = noise.trend([{0: 1.0, 1: 2.0}, {0: 2.0, 1: 4.0}])  # two settings, two seeds: slopes 1 and 2
    assert tr.value == pytest.approx(1.5) and tr.se == pytest.approx(0.5) and tr.how == "paired by seed, 2 seeds"
    assert noise.slope_weights(2) == [-1.0, 1.0]
    with pytest.raises(ValueError, match="a slope needs at least two settings, got 1"):
        noise.slope_weights(1)


def test_single_run_against_seeds_on_either_side():
    # the single run (either side) takes the reference sd; the seeded side its own spread (variance 0.04)
    for a, b, value in (({0: 0.5}, {0: 1.0, 1: 1.2, 2: 1.4}, -0.7), ({0: 1.0, 1: 1.2, 2: 1.4}, {0: 0.5}, 0.7)):
        est = noise.difference(a, b, sd=0.3)
        assert est.value == pytest.approx(value) and est.se == pytest.approx(math.sqrt(0.04 / 3 + 0.09))
        assert est.how == (f"unpaired, {len(a)} vs {len(b)} seed{'s' if len(b) > 1 else ''} "
                           "(a single run's error from the reference spread)")
        assert noise.difference(a, b).se is None  # no reference: unknown, not a crash
    assert noise.difference({0: 1.0, 1: 2.0}, {2: 0.0, 3: 1.0}).how == "unpaired, 2 vs 2 seeds"
    assert noise.difference({0: 1.0}, {0: 0.5}).how == "single runs, same seed: s.e. from the reference spread"


def test_how_each_estimate_was_made_is_stated():
    assert noise.trend([{0: 0.0}, {0: 1.0}], sd=0.1).how == "single runs: s.e. from the reference spread"
    assert noise.trend([{0: 0.0}, {1: 1.0, 2: 3.0}], sd=0.1).how == \
        "unpaired, 1-2 seeds per setting (a single run's error from the reference spread)"
    assert noise.trend([{0: 0.0, 1: 1.0}, {2: 1.0, 3: 3.0}]).how == "unpaired, 2 seeds per setting"
    assert noise.level({0: 1.0, 1: 2.0}).how == "2 seeds"
    assert noise.level({0: 1.0}, sd=0.1).how == "single run: s.e. from the reference spread"


def test_directed_effect_has_no_default_tolerance():
    assert noise.directed(noise.Estimate(0.3, 0.1, ""), -1) == pytest.approx(-0.3)
    assert noise.directed(noise.Estimate(0.3, 0.1, ""), +1, margin=0.2) == pytest.approx(0.5)


@pytest.mark.parametrize("call, message", [
    (lambda: noise.difference({}, {0: 1.0}), "difference: each setting needs at least one seed's value"),
    (lambda: noise.difference({0: 1.0}, {}), "difference: each setting needs at least one seed's value"),
    (lambda: noise.trend([{0: 1.0}, {}]), "trend: every setting needs at least one seed's value"),
    (lambda: noise.level({}), "level: the setting needs at least one seed's value"),
    (lambda: noise.binomial_se([]), "binomial_se: no tasks"),
    (lambda: noise.binomial_se([(0.5, 0)]),
     "binomial_se: accuracy must lie in [0, 1] and items be positive, got (0.5, 0)"),
])
def test_empty_or_bad_input_messages(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_binomial_error_at_the_edges():
    # p = 0 and p = 1 have no binomial error; one item is a valid task
    assert noise.binomial_se([(0.0, 10), (1.0, 10)]) == 0.0
    assert noise.binomial_se([(0.5, 1)]) == pytest.approx(0.5)
