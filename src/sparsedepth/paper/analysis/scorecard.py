"""The paper's qualitative claims, checked against our results; and paper-vs-ours tables.

Each claim is one :class:`Claim` object: its text, the settings it compares, the statistic, the paper's
direction, the rule (``Claim.rule``, written from those) and :meth:`Claim.evaluate`. Evaluating gives a
:class:`Check` with a verdict: ``holds``, ``contradicted``, ``inconclusive`` or ``missing`` (a needed result
or metric is absent; never an exception). The verdict rule is the one noise model of
:mod:`sparsedepth.paper.analysis.noise` for every statistic: the effect in the paper's direction must exceed two standard
errors (holds) or its opposite must (contradicted). Effects of positive quantities (perplexity, variance,
||J - I||) are differences of natural logs (0.05 ≈ 5 %); scores and accuracy are plain differences.

Standard errors come from the seeds of each setting (paired by seed index: same initialisation and data
order). A setting with a single run takes the measured seed spread of the nearest experiment with seeds
(:class:`NoiseReference`: the experiment itself, then the depth sweep, then the others; then the
committed ``seed_spread/<experiment>.csv`` losses of ``scripts/seed_spread.py`` for perplexity; for the cpu
profile, last, the gpu profile's spread), and the ``noise`` column names where it came from. Accuracy adds
each task's binomial error. The paper's own numbers are taken as exact (:func:`paper_checks`): all its claims
hold on them, which is what "reproduced" means here.

Readings. Every variance claim is judged on two readings of "last-layer variance", each in its own column:
the raw residual stream ``h_L`` (``layer_var[-1]``, paper-spec 1.1; the headline) and ``N_f(h_L)``, the
output of the final norm with its gain (``final_var``), which the official code logged as the last layer's
variance and the paper's figures show. They do not rise and fall together. In the committed gpu and cpu
results ``N_f(h_L)`` stays within about 1.1-1.8 (a normalised tensor: it mostly follows the final norm's
gain) and goes the other way from ``h_L`` on three sweeps: with depth ``h_L`` grows 3.5-7x while
``N_f(h_L)`` falls a few per cent; with longer context ``h_L`` grows while ``N_f(h_L)`` falls; with more
weight decay ``h_L`` falls (to 2 % of its λ=0 value at λ=3) while ``N_f(h_L)`` rises. Every usefulness
claim is judged on the thresholded fraction of useful layers (the paper's number) and on the mean
per-layer loss ratio of the fixed and of the ``paper_compat`` probe, which carry the signal when no layer
crosses 1.1; the headline is the fixed probe's ratio where present (the paper reports only the fraction).

With scale. Where a sweep's runs were probed along training (``trajectory.json``), each claim is evaluated
again at every probe point the runs share, on the readings of that point (:meth:`RunResult.at_point`: the
probes' variance, not the telemetry's), and the column "moves toward the paper with scale" says whether its
headline effect in the paper's direction grows with training tokens (*yes*), falls (*no*) or stays within its
noise (*flat*), by the rule of :func:`sparsedepth.paper.analysis.trend.toward_paper`; "—" where the sweep has
no trajectories. ``scale trend`` gives the change, its error and where the trend would reach the paper's own
effect on the same reading (an extrapolation).
"""
from __future__ import annotations

import csv
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from ..pipeline.run_result import RunResult
from ..spec import experiments as ex
from ..spec import reported as paper
from . import noise, trend
from .frame import SCALARS, average_seeds, curve_stats, jacobian_curve, tidy

STATUSES = noise.VERDICTS
PPL_TOLERANCE = 0.01  # "equal or better PPL" allows 1 % (GQA removes K/V parameters)
# Positive quantities compared on a log scale (effects are relative); the others as plain differences.
LOG_METRICS = ("ppl", "variance_end", "variance_peak", "postnorm_end", "postnorm_peak", "jacobian_mean")
# Readings that get a column of their own in the scorecard, named plainly.
READINGS = {
    "variance_end": "h_L raw residual stream",
    "postnorm_end": "N_f(h_L) after final norm",
    "usefulness": "useful-layer fraction (ratio > 1.1)",
    "loss_ratio": "mean loss ratio (fixed probe)",
    "loss_ratio_compat": "mean loss ratio (paper_compat probe)",
}
# A profile whose own seeds measure no spread of a metric borrows it from this profile's results.
# The gpu rungs run one seed each: their single runs take the gpu profile's seed spread.
BORROW_NOISE_FROM = {"cpu": "gpu", "gpu-long": "gpu", "gpu-wide": "gpu"}


@dataclass
class Check:
    """One claim evaluated: the headline verdict with its effect (in the paper's direction; > 0 agrees) and
    standard error, how the error was obtained, every reading's verdict, and the numbers compared."""
    id: str
    experiment: str
    claim: str
    rule: str
    status: str = noise.MISSING
    effect: float | None = None
    se: float | None = None
    noise: str = ""
    readings: dict[str, str] = field(default_factory=dict)
    ours: str = ""
    paper: str = ""
    detail: str = ""
    scale: str = trend.NOT_AVAILABLE  # moves toward the paper with scale: yes / no / flat / —
    scale_detail: str = ""
    applies: bool = True  # False where the profile defines no run of a setting the claim compares


# ------------------------------------------------------------------------------------------- rows


def _rows(long: pd.DataFrame, curves: dict[Any, list[list[float]]], settings: list[tuple[Any, int, dict]],
          ) -> list[dict]:
    """One row per setting ``(key, runs, head)`` from the tidy frame ``long`` of its runs' readings
    (:func:`frame.tidy` columns) and their Jacobian curves: each scalar's seed mean
    (:func:`frame.average_seeds`), ``by_seed[m] = {seed: value}``, ``spread[m] = (min, max, n)``; the
    per-layer Jacobian is the layer-wise seed mean (None when the curves differ in length: then they are not
    seeds of one depth)."""
    stats = {(r["setting"], r["metric"]): r
             for r in average_seeds(long, "value", ["setting", "metric"]).to_dict("records")}
    by_seed: dict[tuple, dict] = {}
    for key, metric, seed, value in zip(long["setting"], long["metric"], long["seed"], long["value"]):
        by_seed.setdefault((key, metric), {})[seed] = value
    rows = []
    for key, runs, head in settings:
        row = {**head, "present": bool(runs), "seeds": runs, "by_seed": {}, "spread": {}}
        for m in SCALARS:
            vals = by_seed.get((key, m), {})
            st = stats.get((key, m))
            row["by_seed"][m] = vals
            row[m] = st["value"] if st else None
            row["spread"][m] = (st["value_min"], st["value_max"], len(vals)) if st else (None, None, 0)
        row["jacobian"] = _mean_curve(curves.get(key, []))
        rows.append(row)
    return rows


def _mean_curve(curves: list[list[float]]) -> list[float] | None:
    """The layer-wise seed mean of per-layer curves of one length; None without any or when lengths differ."""
    if not curves or len({len(c) for c in curves}) != 1:
        return None
    layers = pd.DataFrame([{"variant": i, "layer": j, "value": v} for i, c in enumerate(curves)
                           for j, v in enumerate(c)])
    return [float(v) for v in average_seeds(layers, "value", ["layer"])["value"]]


def our_rows(profile: str, experiment: str, results: dict[str, RunResult] | None) -> list[dict]:
    """One row per paper setting (``paper_key``), in the experiment's order (settings without results are
    rows with ``present`` False): name (the setting's first variant), label, key (paper value), x (ours),
    kept, seeds (how many of its variants have results) and the metrics of :func:`_rows`. Seeds of a setting
    are its variants sharing a ``paper_key`` (``<name>-seed<s>``)."""
    metas = ex.variant_meta(profile, experiment)
    results = results or {}
    runs = [results[n] for n in metas if n in results]
    names: dict[Any, list[str]] = {}
    for name, meta in metas.items():
        names.setdefault(meta["paper_key"], []).append(name)
    curves: dict[Any, list[list[float]]] = {}
    for r in runs:
        curve = jacobian_curve(r)
        if curve:
            curves.setdefault(r.setting, []).append(curve)
    settings = [(key, sum(n in results for n in ns),
                 dict(name=ns[0], label=metas[ns[0]]["label"], key=key, x=metas[ns[0]]["value"],
                      kept=metas[ns[0]].get("kept"), variants=len(ns))) for key, ns in names.items()]
    return _rows(tidy(runs), curves, settings)


def setting_row(profile: str, experiment: str, results: dict[str, RunResult] | None, key: Any) -> dict | None:
    """Our row (:func:`our_rows`: seed means where several seeds ran) of the paper setting ``key``; None
    when no variant of it has results."""
    return next((r for r in our_rows(profile, experiment, results) if r["key"] == key and r["present"]), None)


def _paper_label(experiment: str, key: Any) -> str:
    prefix = {"depth": "L=", "weight_decay": "λ=", "seqlen": "T=", "gqa": "G="}.get(experiment, "")
    return f"{prefix}{key:g}" if isinstance(key, (int, float)) else f"{prefix}{key}"


def paper_rows(experiment: str) -> list[dict]:
    """The paper's rows in the shape of :func:`our_rows`, as one run each. The paper's last-layer variance
    (read off its figures, the official code's log) stands for both readings."""
    jac = paper.PAPER[experiment].get("jacobian", {})
    values, settings, curves = [], [], {}
    for key, r in paper.rows(experiment).items():
        m = {k: r.get(k) for k in SCALARS}
        m.update(postnorm_end=r.get("variance_end"), postnorm_peak=r.get("variance_peak"),
                 **curve_stats(jac.get(key)))
        values += [{"variant": str(key), "setting": key, "seed": 0, "metric": k, "value": v}
                   for k, v in m.items() if v is not None]
        if jac.get(key):
            curves[key] = [jac[key]]
        settings.append((key, 1, dict(name=str(key), label=r.get("label") or _paper_label(experiment, key), key=key,
                                      x=key, kept=r.get("kept"), variants=1)))
    return _rows(pd.DataFrame(values, columns=["variant", "setting", "seed", "metric", "value"]), curves, settings)


# ------------------------------------------------------------------------------------- noise reference


def transform(metric: str, value: float) -> float:
    """The scale on which ``metric`` is compared: natural log for positive quantities, else as is."""
    if metric not in LOG_METRICS:
        return value
    if value <= 0:
        raise ValueError(f"{metric} = {value:g} is not positive, so it has no relative effect")
    return math.log(value)


@dataclass(frozen=True)
class Spread:
    """The seed spread of one metric on its comparison scale: one run's standard deviation, a paired
    difference's (None: not measured) and where it was measured."""
    sd: float | None
    sd_diff: float | None
    source: str


def measured_spread(rows: list[dict], metric: str, where: str) -> Spread | None:
    """The spread of ``metric`` over the seeds of ``rows`` (one experiment): the within-setting deviation
    pooled over settings with two or more seeds, and the deviation of per-seed differences pooled over every
    pair of settings sharing two or more seeds; None without any setting of two seeds."""
    vals = [{s: transform(metric, v) for s, v in r["by_seed"].get(metric, {}).items()} for r in rows]
    sd, dof = noise.pooled_sd([list(v.values()) for v in vals])
    if not sd:  # no setting with two seeds, or a metric that never moved (a count): it cannot size an error
        return None
    diffs = []
    for i, a in enumerate(vals):
        for b in vals[i + 1:]:
            common = sorted(set(a) & set(b))
            if len(common) >= 2:
                diffs.append([a[s] - b[s] for s in common])
    sd_diff, _ = noise.pooled_sd(diffs)
    return Spread(sd, sd_diff or None, f"{where} seeds ({dof} d.o.f.)")


def seed_spread_csv(path: Path) -> Spread | None:
    """The perplexity spread (on the log scale: a validation loss) of a ``scripts/seed_spread.py`` CSV."""
    by_variant: dict[str, dict[int, float]] = {}
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            try:
                by_variant.setdefault(rec["variant"], {})[int(rec["seed"])] = float(rec["val_loss"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: expected columns variant, seed, val_loss with numbers ({e})") from None
    rows = [{"by_seed": {"loss": v}} for v in by_variant.values()]
    spread = measured_spread(rows, "loss", f"{path.parent.parent.name} seed_spread/{path.name}")
    return spread


class NoiseReference:
    """Where a single run's standard error comes from: ``spreads[experiment][metric]`` measured at one
    profile, looked up from the nearest experiment (itself, then depth, then the rest), then in a fallback
    reference (another profile's). ``exact()`` gives every metric zero spread: the paper's own numbers."""

    def __init__(self, spreads: dict[str, dict[str, Spread]], fallback: "NoiseReference | None" = None,
                 exact: bool = False):
        self.spreads, self.fallback, self.exact = spreads, fallback, exact

    @classmethod
    def exact_numbers(cls) -> "NoiseReference":
        return cls({}, exact=True)

    def lookup(self, experiment: str, metric: str) -> Spread | None:
        if self.exact:
            return Spread(0.0, 0.0, "the paper's numbers, taken as exact")
        order = dict.fromkeys([experiment, "depth", *ex.EXPERIMENTS])
        for e in order:
            s = self.spreads.get(e, {}).get(metric)
            if s is not None:
                return s
        return self.fallback.lookup(experiment, metric) if self.fallback else None


def noise_reference(profile: str, rows_of: Callable[[str], list[dict]], root: Any = None,
                    borrow: bool = True) -> NoiseReference:
    """The seed spreads measured at ``profile``: its settings with several seeds, and for perplexity its
    committed ``seed_spread/<experiment>.csv``; then (``borrow``) the profile of ``BORROW_NOISE_FROM``."""
    spreads: dict[str, dict[str, Spread]] = {}
    for e in ex.EXPERIMENTS:
        rows = rows_of(e)
        for m in SCALARS:
            try:
                s = measured_spread(rows, m, f"{profile}/{e}")
            except ValueError:  # a non-positive value of a log metric: no relative spread from it
                s = None
            if s is not None:
                spreads.setdefault(e, {})[m] = s
    from ..pipeline.results import output_root

    folder = output_root(root) / "paper_results" / profile / "seed_spread"
    for e in ex.EXPERIMENTS:
        path = folder / f"{e}.csv"
        if path.is_file() and "ppl" not in spreads.get(e, {}):
            s = seed_spread_csv(path)
            if s is not None:
                spreads.setdefault(e, {})["ppl"] = s
    other = BORROW_NOISE_FROM.get(profile) if borrow else None
    fallback = None
    if other:
        from ..pipeline.results import load_results

        loaded = {e: load_results(other, e, root=root) for e in ex.EXPERIMENTS}
        fallback = noise_reference(other, lambda e: our_rows(other, e, loaded[e]), root, borrow=False)
        fallback.spreads = {e: {m: Spread(s.sd, s.sd_diff, f"{s.source}, borrowed: none measured at {profile}")
                                for m, s in ms.items()} for e, ms in fallback.spreads.items()}
    return NoiseReference(spreads, fallback)


# ------------------------------------------------------------------------------------------------ claims


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):  # a per-layer curve: first and last layer
        return f"{v[0]:.3g}→{v[-1]:.3g} ({len(v)} layers)" if v else "[]"
    return str(v)


def _with_spread(r: dict, metric: str) -> str:
    """``_fmt`` of one row's metric, plus its range across seeds where the setting has several variants."""
    text = _fmt(r.get(metric))
    lo, hi, n = r.get("spread", {}).get(metric, (None, None, 0))
    if r.get("variants", 1) == 1 or not n:
        return text
    return text + (f" [{_fmt(lo)}–{_fmt(hi)}, n={n}]" if n > 1 else " [n=1]")


def _series(rows: list[dict], metric: str) -> str:
    return ", ".join(f"{r['label']}: {_with_spread(r, metric)}" for r in rows)


def _by_key(rows: list[dict]) -> dict[Any, dict]:
    return {r["key"]: r for r in rows}


class Missing(Exception):
    """A claim cannot be evaluated: a setting or a metric it needs is absent."""


class NotDefined(Missing):
    """The profile defines no run of a setting the claim compares (gpu-long has no λ=3), so no training could
    fill it in: the claim does not belong on that profile's scorecard."""


@dataclass(frozen=True)
class Reading:
    """One statistic's verdict on a claim."""
    metric: str
    status: str
    effect: float | None = None
    se: float | None = None
    noise: str = ""
    detail: str = ""

    def cell(self) -> str:
        if self.effect is None:
            return f"{self.status}: {self.detail}" if self.detail else self.status
        se = "?" if self.se is None else f"{self.se:.2g}"
        return f"{self.status}: {self.effect:+.3g} ± {se}"


STAT_WORDS = {"ppl": "ln perplexity", "variance_end": "ln variance of h_L (end of training)",
              "postnorm_end": "ln variance of N_f(h_L) (end of training)", "usefulness": "useful-layer fraction",
              "loss_ratio": "mean loss ratio (fixed probe)", "loss_ratio_compat": "mean loss ratio (paper_compat)",
              "causal": "causal score", "permutation": "permutation score", "acc": "mean accuracy (points)",
              "jacobian_mean": "ln mean ||J - I||", "jacobian_slope": "slope of ln ||J - I|| per layer"}


@dataclass(frozen=True)
class Claim(ABC):
    """A claim of the paper about one experiment: ``readings`` are the statistics it is judged on (the
    headline is the first with data), ``direction`` the sign of the effect the paper reports, ``margin`` a
    tolerance on the paper's side (on the comparison scale). Subclasses say which settings are compared
    (:meth:`comparisons`) and how (:meth:`estimate`)."""
    id: str
    experiment: str
    text: str
    readings: tuple[str, ...]
    direction: int
    margin: float = 0.0

    @abstractmethod
    def comparisons(self, rows: list[dict]) -> list[tuple[str, list[dict]]]:
        """(label, rows of the settings compared) for each comparison the claim makes."""

    @abstractmethod
    def estimate(self, series: list[dict[int, float]], spread: Spread | None) -> noise.Estimate:
        """The effect and its standard error from per-setting {seed: value} series."""

    @abstractmethod
    def statistic(self) -> str:
        """What the effect measures, for the rule's text."""

    @property
    def rule(self) -> str:
        word = "> 0" if self.direction > 0 else "< 0"
        tol = f" (tolerance {self.margin:.3g})" if self.margin else ""
        on = "; ".join(STAT_WORDS.get(m, m) for m in self.readings)
        return (f"{self.statistic()} {word}{tol} by more than {noise.Z:g} s.e., M = {on}; "
                f"holds if every comparison does, contradicted if any does")

    # evaluation
    def evaluate(self, rows: list[dict], ref: NoiseReference) -> Check:
        present = [r for r in rows if r.get("present")]
        readings = [self._reading(rows, m, ref) for m in self.readings]
        head = next((r for r in readings if r.status != noise.MISSING), readings[0])
        return Check(self.id, self.experiment, self.text, self.rule, head.status, head.effect, head.se,
                     head.noise, {READINGS[r.metric]: r.cell() for r in readings if r.metric in READINGS},
                     _series(present, self._shown(head.metric)), "", head.detail)

    def applies(self, rows: list[dict]) -> bool:
        """False when the profile defines no run of a setting the claim compares (``rows``: :func:`our_rows`,
        one per defined setting, with or without results)."""
        try:
            self.comparisons(rows)
        except NotDefined:
            return False
        except Missing:
            pass
        return True

    def scale_trend(self, along: list[tuple[float, list[dict]]], ref: NoiseReference) -> tuple[str, str]:
        """(moves toward the paper with scale, its detail) from our rows at points along training (``along``:
        (tokens, rows) in token order, :func:`rows_along_training`): the headline reading of the last point,
        its effect at every point where it can be evaluated, judged by :func:`trend.toward_paper` with the
        last point's standard error; the paper's own effect on that reading is the extrapolation's target."""
        if not along:
            return trend.NOT_AVAILABLE, "no runs of this sweep were probed along training"
        last = [self._reading(along[-1][1], m, ref) for m in self.readings]
        head = next((r for r in last if r.status != noise.MISSING), None)
        if head is None:
            return trend.NOT_AVAILABLE, f"not evaluated at the last probe point ({last[0].detail})"
        tokens, effects = [], []
        for t, rows in along:
            r = self._reading(rows, head.metric, ref)
            if r.effect is not None:
                tokens.append(t)
                effects.append(r.effect)
        target = self._reading(paper_rows(self.experiment), head.metric, NoiseReference.exact_numbers()).effect
        verdict, t = trend.toward_paper(tokens, effects, head.se, target)
        what = STAT_WORDS.get(head.metric, head.metric)
        if verdict == trend.NOT_AVAILABLE:
            return verdict, f"{what}: {t['why']}"
        theirs = None if target is None else f"the paper's {target:+.3g}"
        reach = ("the paper does not report this reading" if theirs is None else
                 f"the trend {trend.reach_words(t, theirs)} (an extrapolation)")
        if verdict == trend.NO and target is not None and min(effects) > target:
            # "no" says the claim weakens; here it weakens from beyond the paper's own effect, toward it
            reach += "; every point's effect is above the paper's, so the claim weakens toward the paper's size"
        span = f"{trend.fmt_tokens(min(tokens))}–{trend.fmt_tokens(max(tokens))}"
        return verdict, (f"{what}: effect {effects[0]:+.3g} → {effects[-1]:+.3g}, fitted change "
                         f"{t['change']:+.3g} ± {t['change_se']:.2g} over {len(tokens)} points ({span} tokens); "
                         f"{reach}")

    def _shown(self, metric: str) -> str:
        return "jacobian" if metric == "jacobian_slope" else metric

    def _reading(self, rows: list[dict], metric: str, ref: NoiseReference) -> Reading:
        try:
            comps = self.comparisons(rows)
            if not comps:
                raise Missing("no settings to compare")
            absent = sorted({r["name"] for _, rs in comps for r in rs if not r["by_seed"].get(metric)})
            if absent:
                raise Missing(f"no {metric} for {', '.join(absent)}")
            spread = ref.lookup(self.experiment, metric)
            out = []
            for label, rs in comps:
                series = [{s: transform(metric, v) for s, v in r["by_seed"][metric].items()} for r in rs]
                est = self.estimate(series, spread)
                if metric == "acc":  # every seed answers the same items: their binomial error stays
                    errs = [noise.item_error(list(r["by_seed"].get("acc_se", {}).values())) for r in rs]
                    if None not in errs:
                        est = est.plus_error(math.sqrt(sum(e * e for e in errs)), "binomial error")
                out.append((label, est, noise.verdict(est, self.direction, self.margin)))
        except (Missing, ValueError) as e:
            return Reading(metric, noise.MISSING, detail=str(e))
        statuses = [v for _, _, v in out]
        status = (noise.CONTRADICTED if noise.CONTRADICTED in statuses else
                  noise.HOLDS if all(v == noise.HOLDS for v in statuses) else noise.INCONCLUSIVE)
        # the deciding comparison: the least favourable to the paper
        label, est, _ = min(out, key=lambda o: (noise.directed(o[1], self.direction, self.margin)
                                                / (o[1].se or 1e-300)) if o[1].se is not None else math.inf)
        how = est.how + ("" if spread is None or "reference" not in est.how else f" ({spread.source})")
        if est.se is None and "reference" in est.how:
            how += " (no seed spread measured for this metric)"
        detail = "; ".join(f"{lab}: {noise.directed(e, self.direction, self.margin):+.3g} ± "
                           f"{'?' if e.se is None else f'{e.se:.2g}'} {v}" for lab, e, v in out)
        reading = Reading(metric, status, noise.directed(est, self.direction, self.margin), est.se, how, detail)
        if metric == "usefulness" and status != noise.INCONCLUSIVE and _degenerate_usefulness(rows):
            reading = Reading(metric, noise.INCONCLUSIVE, reading.effect, reading.se, how,
                              "at most one useful layer in every variant, so the fraction is only 1/L or 0 and "
                              f"its trend says nothing of depth use ({detail})")
        return reading


def _degenerate_usefulness(rows: list[dict]) -> bool:
    """True when no variant has more than one useful layer: at small scale replacing a layer by its linear fit
    rarely raises the loss past the threshold, and a fraction of 1/L then "falls with depth" by arithmetic
    alone. (Seed means may be fractional; the paper's rows carry no count and are never degenerate.)"""
    counts = [r.get("useful_layers") for r in rows if r.get("present")]
    return bool(counts) and all(c is not None and c <= 1 for c in counts)


@dataclass(frozen=True)
class Trend(Claim):
    """The metric grows (direction +1) or falls (-1) over the sweep's settings in their order; ``upto``
    keeps the settings whose paper value is at most that."""
    upto: float | None = None

    def comparisons(self, rows):
        kept = [r for r in rows if self.upto is None or float(r["key"]) <= self.upto]
        if len(kept) < 2:
            raise Missing("fewer than two settings")
        return [("slope", kept)]

    def estimate(self, series, spread):
        return noise.trend(series, None if spread is None else spread.sd)

    def statistic(self):
        only = f" (settings up to {self.upto:g})" if self.upto is not None else ""
        return f"slope of M over the sweep's settings in order{only}"


@dataclass(frozen=True)
class AtEvery(Claim):
    """A per-run statistic has the paper's sign at every setting."""

    def comparisons(self, rows):
        return [(r["label"], [r]) for r in rows]

    def estimate(self, series, spread):
        return noise.level(series[0], None if spread is None else spread.sd)

    def statistic(self):
        return "M at every setting"


@dataclass(frozen=True)
class Versus(Claim):
    """Setting A against setting B for every pair ``pairs(rows)`` gives; the effect is M(A) - M(B)."""
    pairs: Callable[[list[dict]], list[tuple[dict, dict]]] = lambda rows: []
    names: str = ""  # the pairs in words, for the rule

    def comparisons(self, rows):
        return [(f"{a['label']} vs {b['label']}", [a, b]) for a, b in self.pairs(rows)]

    def estimate(self, series, spread):
        a, b = series
        return noise.difference(a, b, *(None, None) if spread is None else (spread.sd, spread.sd_diff))

    def statistic(self):
        return f"M(A) - M(B) for {self.names}"


def _key(rows: list[dict], key: Any) -> dict:
    k = _by_key(rows)
    if key not in k:
        raise NotDefined(f"no setting with paper value {key!r}")
    return k[key]


def _wd_best_vs(keys: Sequence[Any] | None = None) -> Callable[[list[dict]], list[tuple[dict, dict]]]:
    def pairs(rows):
        best = _key(rows, 0.1)
        return [(best, r) for r in rows if r is not best and (keys is None or r["key"] in keys)]
    return pairs


def _gqa_pairs(rows):
    g1 = _key(rows, 1)
    return [(r, g1) for r in rows if r is not g1]


def _moe_pairs(rows):
    return [(_key(rows, f"moe-{s}"), _key(rows, f"dense-{s}")) for s in ("small", "large")]


def _recipe_parents(rows: list[dict]) -> list[tuple[dict, dict]]:
    """(step, parent) for every step after the baseline: the parent is the last kept step before it."""
    out, parent = [], None
    for r in rows:
        if parent is not None:
            out.append((r, parent))
        if r.get("kept"):
            parent = r
    return out


def _recipe_full(rows):
    kept = [r for r in rows if r.get("kept")]
    if len(kept) < 2:
        raise Missing("fewer than two kept recipe steps")
    return [(kept[-1], kept[0])]


VARIANCE = ("variance_end", "postnorm_end")
USEFULNESS = ("loss_ratio", "usefulness", "loss_ratio_compat")

CLAIMS: list[Claim] = [
    Trend("depth.variance", "depth", "last-layer variance grows with depth", VARIANCE, +1),
    Trend("depth.usefulness", "depth", "usefulness falls with depth", USEFULNESS, -1),
    Trend("depth.permutation", "depth", "permutation score falls with depth", ("permutation",), -1),
    Trend("depth.causal", "depth", "causal score falls with depth", ("causal",), -1),
    AtEvery("depth.jacobian_index", "depth", "||J - I|| falls with layer index", ("jacobian_slope",), -1),
    Trend("depth.jacobian_depth", "depth", "||J - I|| is lower for deeper models", ("jacobian_mean",), -1),
    Versus("weight_decay.variance", "weight_decay", "λ=0.1 lowers last-layer variance versus λ=0", VARIANCE, -1,
           pairs=_wd_best_vs([0.0]), names="A = λ 0.1, B = λ 0"),
    Versus("weight_decay.ppl", "weight_decay", "λ=0.1 gives the lowest perplexity of the sweep", ("ppl",), -1,
           pairs=_wd_best_vs(), names="A = λ 0.1, B = every other λ"),
    Versus("weight_decay.usefulness", "weight_decay", "λ=0.1 gives the highest usefulness of the sweep", USEFULNESS,
           +1, pairs=_wd_best_vs(), names="A = λ 0.1, B = every other λ"),
    Versus("weight_decay.collapse", "weight_decay", "λ=3 is worse than λ=0.1", ("ppl",), +1,
           pairs=lambda rows: [(_key(rows, 3.0), _key(rows, 0.1))], names="A = λ 3, B = λ 0.1"),
    Trend("seqlen.variance", "seqlen", "longer context lowers last-layer variance", VARIANCE, -1),
    Trend("seqlen.usefulness", "seqlen", "usefulness rises with context up to T=4096", USEFULNESS, +1, upto=4096),
    Versus("gqa.variance", "gqa", "G > 1 lowers last-layer variance", VARIANCE, -1, pairs=_gqa_pairs,
           names="A = each G > 1, B = G 1"),
    Versus("gqa.usefulness", "gqa", "G > 1 raises usefulness", USEFULNESS, +1, pairs=_gqa_pairs,
           names="A = each G > 1, B = G 1"),
    Versus("gqa.ppl", "gqa", "G > 1 keeps perplexity (within 1 %)", ("ppl",), -1, margin=math.log1p(PPL_TOLERANCE),
           pairs=_gqa_pairs, names="A = each G > 1, B = G 1"),
    Versus("moe.variance", "moe", "MoE lowers last-layer variance versus dense", VARIANCE, -1, pairs=_moe_pairs,
           names="A = MoE, B = dense of equal active size, both sizes"),
    Versus("moe.ppl", "moe", "MoE lowers perplexity versus dense (equal active parameters)", ("ppl",), -1,
           pairs=_moe_pairs, names="A = MoE, B = dense of equal active size, both sizes"),
    Versus("moe.usefulness", "moe", "MoE raises usefulness", USEFULNESS, +1, pairs=_moe_pairs,
           names="A = MoE, B = dense of equal active size, both sizes"),
    Versus("recipe.kept", "recipe", "each kept recipe step raises average accuracy", ("acc",), +1,
           pairs=lambda rows: [(s, p) for s, p in _recipe_parents(rows) if s.get("kept")],
           names="A = each kept step, B = the last kept step before it"),
    Versus("recipe.rejected", "recipe", "each rejected step does not", ("acc",), -1,
           pairs=lambda rows: [(s, p) for s, p in _recipe_parents(rows) if s.get("kept") is False],
           names="A = each rejected step, B = the last kept step before it"),
    Versus("recipe.gain", "recipe", "the full recipe beats the L=32 baseline", ("acc",), +1, pairs=_recipe_full,
           names="A = the last kept step (+MoE), B = the baseline"),
    Versus("recipe.usefulness", "recipe", "the full recipe raises usefulness", USEFULNESS, +1, pairs=_recipe_full,
           names="A = the last kept step (+MoE), B = the baseline"),
]


def run_checks(rows_of: Callable[[str], list[dict]], ref: NoiseReference) -> list[Check]:
    """Evaluate every claim on the rows ``rows_of(experiment)`` gives, errors from ``ref``."""
    cache: dict[str, list[dict]] = {}
    out = []
    for claim in CLAIMS:
        if claim.experiment not in cache:
            cache[claim.experiment] = rows_of(claim.experiment)
        out.append(claim.evaluate(cache[claim.experiment], ref))
    return out


def paper_checks() -> list[Check]:
    """The claims evaluated on the paper's own numbers, taken as exact (all hold)."""
    return run_checks(paper_rows, NoiseReference.exact_numbers())


def rows_along_training(profile: str, experiment: str, results: dict[str, RunResult] | None
                        ) -> list[tuple[float, list[dict]]]:
    """(tokens, :func:`our_rows` at that point) for every probe point that all of the sweep's runs probed
    along training share (by step), in token order; [] when none was probed so."""
    probed = {n: r for n, r in (results or {}).items() if r.points()}
    if not probed:
        return []
    steps = set.intersection(*({p["step"] for p in r.points()} for r in probed.values()))
    out = []
    for step in sorted(steps):
        at = {n: r.at_point(next(p for p in r.points() if p["step"] == step)) for n, r in probed.items()}
        out.append((float(next(iter(at.values())).summary["tokens"]), our_rows(profile, experiment, at)))
    return out


def checks(profile: str, results: dict[str, dict[str, RunResult]] | None = None, root: Any = None,
           ref: NoiseReference | None = None) -> list[Check]:
    """The claims on our results at ``profile`` (``results``: {experiment: load_results(...)}, loaded when
    None), each with the paper's numbers beside ours. ``ref``: where single runs take their errors
    (default :func:`noise_reference` of the profile, from every experiment's results: those not given are
    loaded, so one experiment's verdicts do not depend on which others were passed)."""
    from ..pipeline.results import load_results

    if results is None:
        results = {e: load_results(profile, e, root=root) for e in ex.EXPERIMENTS}
    rows = {e: our_rows(profile, e, results.get(e)) for e in ex.EXPERIMENTS}
    if ref is None:
        seen = {e: rows[e] if e in results else our_rows(profile, e, load_results(profile, e, root=root))
                for e in ex.EXPERIMENTS}
        ref = noise_reference(profile, seen.__getitem__, root)
    out = run_checks(rows.__getitem__, ref)
    theirs = {c.id: c for c in paper_checks()}
    along = {e: rows_along_training(profile, e, results.get(e)) for e in ex.EXPERIMENTS}
    for claim, c in zip(CLAIMS, out):
        c.paper = theirs[c.id].ours
        c.applies = claim.applies(rows[claim.experiment])
        c.scale, c.scale_detail = claim.scale_trend(along[claim.experiment], ref)
    return out


# --------------------------------------------------------------------------------------- data frames

SCALE = "moves toward the paper with scale"
COLUMNS = ["id", "experiment", "claim", "status", "effect", "se", "noise", SCALE, *READINGS.values(), "rule", "ours",
           "paper", "detail", "scale trend"]


def scorecard(profile: str, results: dict[str, dict[str, RunResult]] | None = None, root: Any = None,
              ref: NoiseReference | None = None):
    """The claims scorecard as a pandas DataFrame, one row per claim (``COLUMNS``): the headline verdict,
    its effect in the paper's direction and standard error, how the error was obtained, whether it moves
    toward the paper with training tokens (``SCALE``, detail in ``scale trend``), a column per
    reading (both variance readings, the usefulness fraction and both loss ratios; blank where the claim has
    no such reading), the rule, our numbers, the paper's and every comparison (``detail``). Only the claims of
    experiments the profile runs and of settings it defines: a gpu rung that runs one sweep, or a sweep without
    λ=3, has nothing to say about the others."""
    ran = ex.profile_experiments(profile)
    rows = [{"id": c.id, "experiment": c.experiment, "claim": c.claim, "status": c.status, "effect": c.effect,
             "se": c.se, "noise": c.noise, SCALE: c.scale,
             **{col: c.readings.get(col, "") for col in READINGS.values()},
             "rule": c.rule, "ours": c.ours, "paper": c.paper, "detail": c.detail, "scale trend": c.scale_detail}
            for c in checks(profile, results, root, ref) if c.experiment in ran and c.applies]
    return pd.DataFrame(rows, columns=COLUMNS)


def counts(df) -> dict[str, int]:
    """{"holds": n, "contradicted": n, "inconclusive": n, "missing": n} of a scorecard DataFrame."""
    return {s: int((df["status"] == s).sum()) for s in STATUSES}


TABLE_METRICS = {
    "depth": ["usefulness", "loss_ratio", "causal", "permutation", "variance_peak", "variance_end", "postnorm_peak",
              "postnorm_end", "jacobian_mean", "ppl"],
    "weight_decay": ["ppl", "usefulness", "loss_ratio", "variance_peak", "variance_end", "postnorm_peak",
                     "postnorm_end"],
    "seqlen": ["ppl", "usefulness", "loss_ratio", "variance_peak", "variance_end", "postnorm_peak", "postnorm_end"],
    "gqa": ["ppl", "usefulness", "loss_ratio", "variance_peak", "variance_end", "postnorm_peak", "postnorm_end"],
    "moe": ["ppl", "usefulness", "loss_ratio", "variance_peak", "variance_end", "postnorm_peak", "postnorm_end"],
    "recipe": ["acc", "usefulness", "loss_ratio", "ppl"],
}


def compare(profile: str, experiment: str, results: dict[str, RunResult] | None = None, root: Any = None):
    """Paper-vs-ours table of one experiment: a row per paper setting, ``paper_<metric>`` beside ``ours_<metric>``.

    ``variance_*`` is the raw residual stream h_L, ``postnorm_*`` the final norm's output N_f(h_L); the
    paper's figure values (the official code's log) stand in both. Where the profile runs several seeds of
    a setting (:func:`our_rows`), ``ours_<metric>`` is the seed mean, followed by ``ours_<metric>_min`` /
    ``ours_<metric>_max``, and a ``seeds`` column counts the seeds with results; ``variant`` names the seed-0
    run. Paper values marked approximate in :mod:`sparsedepth.paper` were read off figures. Absolute values
    are not comparable across scales (PPL depends on tokenizer and data, variance on width); the trends are.
    """
    if results is None:
        from ..pipeline.results import load_results

        results = load_results(profile, experiment, root=root)
    ours = our_rows(profile, experiment, results)
    theirs = _by_key(paper_rows(experiment))
    metas = ex.variant_meta(profile, experiment)
    seeded = any(r["variants"] > 1 for r in ours)  # decided by the definition, so columns do not depend on progress
    table = []
    for r in ours:
        p = theirs.get(r["key"], {})
        row = {"variant": r["name"], "ours": r["label"], "paper": metas[r["name"]]["paper_label"]}
        if seeded:
            row["seeds"] = r["seeds"]
        if experiment == "recipe":
            row["kept"] = r["kept"]
        for m in TABLE_METRICS[experiment]:
            row[f"paper_{m}"] = p.get(m)
            row[f"ours_{m}"] = r.get(m)
            if seeded:
                lo, hi, _ = r["spread"].get(m, (None, None, 0))
                row[f"ours_{m}_min"], row[f"ours_{m}_max"] = lo, hi
        table.append(row)
    return pd.DataFrame(table)
