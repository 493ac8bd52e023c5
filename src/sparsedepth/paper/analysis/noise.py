"""One noise model for every claim: an effect over seeds, its standard error, and the verdict rule.

A setting (one row of a paper table) is trained with one or more seeds; a seed sets the initialisation and
the data order, so two settings run with the same seed index share both. Values are given per seed as
``{seed: value}``. Every comparison reduces to an :class:`Estimate` (the effect and its standard error):

- :func:`difference` of two settings: paired by seed where both have at least two common seeds (the mean
  and standard error of the per-seed differences), unpaired otherwise (difference of the means, the
  errors of both means added in quadrature).
- :func:`trend` over an ordered sweep: the least-squares slope against the setting's position
  (0, 1, 2, ...); paired by seed (the mean and error of the per-seed slopes) where every setting shares at
  least two seeds, otherwise the slope of the setting means with the error propagated from each mean.
- :func:`level` of one setting against zero (a per-run statistic such as a slope along the layers).

Where a side has a single run its spread is unknown: the caller passes a reference standard deviation
``sd`` (one run's deviation, measured on the nearest experiment with seeds) and, for two single runs of
the same seed, ``sd_diff`` (the measured deviation of a paired difference); the estimate says so in
``how``. With neither, the standard error is None and no verdict can be reached.

:func:`verdict`: *holds* when the effect in the paper's direction exceeds ``Z`` = 2 standard errors,
*contradicted* when the opposite effect does, otherwise *inconclusive*. With two or three seeds the standard
error is itself uncertain (one or two degrees of freedom), so the rule is a screen at about the 95 % level
of a normal error, not an exact test.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

Z = 2.0  # standard errors an effect must exceed to decide
HOLDS, CONTRADICTED, INCONCLUSIVE, MISSING = "holds", "contradicted", "inconclusive", "missing"
VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE, MISSING)

Seeds = Mapping[int, float]  # one setting's value per seed index


@dataclass(frozen=True)
class Estimate:
    """An effect, its standard error (None: unknown) and how the error was obtained."""
    value: float
    se: float | None
    how: str

    def plus_error(self, extra: float | None, why: str) -> "Estimate":
        """The same effect with an independent error ``extra`` added in quadrature (e.g. binomial error)."""
        if extra is None:
            return self
        se = extra if self.se is None else math.hypot(self.se, extra)
        return Estimate(self.value, se, f"{self.how} + {why}")


def verdict(estimate: Estimate | None, direction: int, margin: float = 0.0, z: float = Z) -> str:
    """The verdict on ``estimate`` when the paper says its sign is ``direction`` (+1 or -1); ``margin``
    widens the paper's side by that much (a tolerance: "equal within 1 %"). Unknown error: inconclusive."""
    if estimate is None:
        return MISSING
    effect = directed(estimate, direction, margin)
    if estimate.se is None:
        return INCONCLUSIVE
    if effect > z * estimate.se:
        return HOLDS
    if -effect > z * estimate.se:
        return CONTRADICTED
    return INCONCLUSIVE


def directed(estimate: Estimate, direction: int, margin: float = 0.0) -> float:
    """The effect in the paper's direction (positive: as the paper says), tolerance included."""
    return direction * estimate.value + margin


def sample_sd(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1); None for fewer than two values."""
    return statistics.stdev(values) if len(values) >= 2 else None


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float | None, int]:
    """(within-group standard deviation pooled over groups of at least two values, its degrees of freedom);
    (None, 0) when no group has two values."""
    ss, dof = 0.0, 0
    for g in groups:
        if len(g) >= 2:
            m = sum(g) / len(g)
            ss += sum((x - m) ** 2 for x in g)
            dof += len(g) - 1
    return (math.sqrt(ss / dof), dof) if dof else (None, 0)


def _mean_and_var(x: Seeds, sd: float | None) -> tuple[float, float | None]:
    """Mean over seeds and the variance of that mean: from the seeds' own spread when there are two or
    more, from the reference ``sd`` for a single run, None when neither is known."""
    vals = list(x.values())
    own = sample_sd(vals)
    per_run = own if own is not None else sd
    return sum(vals) / len(vals), None if per_run is None else per_run ** 2 / len(vals)


def _seed_note(n: int) -> str:
    return f"{n} seed" + ("s" if n != 1 else "")


def difference(a: Seeds, b: Seeds, sd: float | None = None, sd_diff: float | None = None) -> Estimate:
    """Effect ``a - b`` of two settings (see the module docstring for pairing and the single-run case)."""
    if not a or not b:
        raise ValueError("difference: each setting needs at least one seed's value")
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        d = [a[s] - b[s] for s in common]
        return Estimate(sum(d) / len(d), sample_sd(d) / math.sqrt(len(d)), f"paired by seed, {_seed_note(len(d))}")
    if len(a) == 1 and len(b) == 1 and common:
        s = common[0]
        ref = sd_diff if sd_diff is not None else None if sd is None else math.sqrt(2) * sd
        return Estimate(a[s] - b[s], ref, "single runs, same seed: s.e. from the reference spread")
    (ma, va), (mb, vb) = _mean_and_var(a, sd), _mean_and_var(b, sd)
    se = None if va is None or vb is None else math.sqrt(va + vb)
    single = " (a single run's error from the reference spread)" if min(len(a), len(b)) == 1 else ""
    return Estimate(ma - mb, se, f"unpaired, {len(a)} vs {_seed_note(len(b))}{single}")


def slope_weights(n: int) -> list[float]:
    """Least-squares weights w (slope = sum w_i y_i) for y at positions 0 ... n-1."""
    if n < 2:
        raise ValueError(f"a slope needs at least two settings, got {n}")
    mid = (n - 1) / 2
    sxx = sum((i - mid) ** 2 for i in range(n))
    return [(i - mid) / sxx for i in range(n)]


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against their positions 0 ... n-1."""
    return sum(w * y for w, y in zip(slope_weights(len(values)), values))


def trend(series: Sequence[Seeds], sd: float | None = None) -> Estimate:
    """Slope of a metric over an ordered sweep of settings (``series``: one ``{seed: value}`` each)."""
    if len(series) < 2:
        raise ValueError(f"a trend needs at least two settings, got {len(series)}")
    if any(not x for x in series):
        raise ValueError("trend: every setting needs at least one seed's value")
    common = sorted(set.intersection(*(set(x) for x in series)))
    if len(common) >= 2:
        per_seed = [slope([x[s] for x in series]) for s in common]
        return Estimate(sum(per_seed) / len(per_seed), sample_sd(per_seed) / math.sqrt(len(per_seed)),
                        f"paired by seed, {_seed_note(len(common))}")
    w = slope_weights(len(series))
    parts = [_mean_and_var(x, sd) for x in series]
    var = None if any(v is None for _, v in parts) else sum(wi ** 2 * v for wi, (_, v) in zip(w, parts))
    n = sorted({len(x) for x in series})
    single = " (a single run's error from the reference spread)" if 1 in n else ""
    how = "single runs: s.e. from the reference spread" if n == [1] else \
        f"unpaired, {'-'.join(map(str, n))} seeds per setting{single}"
    return Estimate(sum(wi * m for wi, (m, _) in zip(w, parts)), None if var is None else math.sqrt(var), how)


def level(x: Seeds, sd: float | None = None) -> Estimate:
    """One setting's mean over seeds as an effect against zero."""
    if not x:
        raise ValueError("level: the setting needs at least one seed's value")
    m, v = _mean_and_var(x, sd)
    how = f"{_seed_note(len(x))}" if len(x) >= 2 else "single run: s.e. from the reference spread"
    return Estimate(m, None if v is None else math.sqrt(v), how)


def binomial_se(tasks: Sequence[tuple[float, float]]) -> float:
    """Standard error of an unweighted mean of task accuracies, each task (accuracy p, items n) with its
    binomial error sqrt(p (1 - p) / n), tasks independent. In the units of p."""
    if not tasks:
        raise ValueError("binomial_se: no tasks")
    for p, n in tasks:
        if not 0 <= p <= 1 or n <= 0:
            raise ValueError(f"binomial_se: accuracy must lie in [0, 1] and items be positive, got ({p}, {n})")
    return math.sqrt(sum(p * (1 - p) / n for p, n in tasks)) / len(tasks)


def item_error(per_run: Sequence[float]) -> float | None:
    """Item-sampling error of a setting's mean accuracy over seeds: the root mean square of the runs'
    binomial errors. Not divided by the number of seeds: every seed answers the same items, so averaging
    seeds does not average this error away. None without values."""
    return math.sqrt(sum(e * e for e in per_run) / len(per_run)) if per_run else None
