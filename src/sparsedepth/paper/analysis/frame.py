"""The one tidy frame of our readings, and the one place where seeds are averaged.

:func:`readings` turns a :class:`RunResult` into the scalar numbers the paper's claims and tables use;
:func:`tidy` stacks them into one row per experiment × variant × seed × metric, which the scorecard, the
paper-vs-ours tables (through it) and the figures read. :func:`average_seeds` averages the variants of one
setting (its seeds) in any such long frame: the scorecard's rows, the per-layer Jacobian and every figure
that draws a seed mean go through it.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import pandas as pd

from ..pipeline.run_result import RunResult, number
from . import noise

COLUMNS = ["experiment", "variant", "label", "setting", "seed", "metric", "value"]
# The scalar readings of one run (``readings``), in the order the scorecard lists them.
SCALARS = ("variance_end", "variance_peak", "postnorm_end", "postnorm_peak", "ppl", "usefulness", "useful_layers",
           "loss_ratio", "loss_ratio_compat", "causal", "permutation", "jacobian_mean", "jacobian_slope", "acc",
           "acc_se")


def _end_and_peak(series: list[Any], fallback: Any) -> tuple[float | None, float | None]:
    vals = [v for v in (number(x) for x in series) if v is not None]
    if vals:
        return vals[-1], max(vals)
    v = number(fallback)
    return v, v


def last_layer_variance(run: RunResult) -> tuple[float | None, float | None]:
    """(end, peak) over training of the raw residual stream h_L (``layer_var[-1]``); probes as a fallback."""
    return _end_and_peak([v for _, v in run.last_layer_var_series()], run.probed_last_layer_var())


def postnorm_variance(run: RunResult) -> tuple[float | None, float | None]:
    """(end, peak) over training of N_f(h_L), the final norm's output (the official log's last-layer
    variance); the probes' reading as a fallback."""
    return _end_and_peak([v for _, v in run.postnorm_var_series()], run.probed_postnorm_var())


def inner_layers(values: list[float]) -> list[float]:
    """Layers 1 ... L-2, as the paper's Jacobian figure shows; all layers when L < 5 (nothing would be left)."""
    return list(values[1:-1]) if len(values) >= 5 else list(values)


def curve_stats(curve: list[float] | None) -> dict[str, float | None]:
    """Mean of a per-layer ||J - I|| curve and the least-squares slope of its log against the layer index."""
    ok = bool(curve) and all(v > 0 for v in curve)
    return {"jacobian_mean": sum(curve) / len(curve) if curve else None,
            "jacobian_slope": noise.slope([math.log(v) for v in curve]) if ok and len(curve) >= 3 else None}


def acc_standard_error(run: RunResult) -> float | None:
    """Binomial standard error (percentage points) of the unweighted task mean of zero-shot accuracy
    (:func:`noise.binomial_se`); None without per-task counts (older results, the paper's rows)."""
    pairs = run.task_accuracies()
    if pairs is None or any(p is None or not n or n <= 0 or not 0 <= p <= 1 for p, n in pairs):
        return None
    return 100 * noise.binomial_se(pairs)


def jacobian_curve(run: RunResult) -> list[float] | None:
    """The per-layer ||J - I||_F / d of the inner layers (:func:`inner_layers`); None when absent or
    when a layer has no number."""
    jac = run.jacobian()
    return inner_layers(jac) if jac and None not in jac else None


def readings(run: RunResult) -> dict[str, Any]:
    """The numbers the claims and tables use (``SCALARS``, None where absent) and the inner-layer Jacobian
    curve (``jacobian``). Accuracy is in points."""
    end, peak = last_layer_variance(run)
    post_end, post_peak = postnorm_variance(run)
    acc = run.mean_acc()
    jac = jacobian_curve(run)
    return {"variance_end": end, "variance_peak": peak, "postnorm_end": post_end, "postnorm_peak": post_peak,
            "ppl": run.perplexity(), "usefulness": run.usefulness_fraction(), "useful_layers": run.useful_layers(),
            "loss_ratio": run.loss_ratio(), "loss_ratio_compat": run.loss_ratio_compat(),
            "causal": run.causal(), "permutation": run.permutation(), "jacobian": jac, **curve_stats(jac),
            "acc": None if acc is None else 100 * acc if acc <= 1 else acc, "acc_se": acc_standard_error(run)}


def tidy(results: Iterable[RunResult]) -> pd.DataFrame:
    """One row per experiment × variant × seed × metric (``COLUMNS``) of the scalar readings the runs have
    (absent readings have no row); ``setting`` is the paper setting a variant reproduces, shared by its
    seeds."""
    rows = [{"experiment": r.experiment, "variant": r.variant, "label": r.label, "setting": r.setting,
             "seed": r.seed, "metric": m, "value": v}
            for r in results for m, v in readings(r).items() if m in SCALARS and v is not None]
    return pd.DataFrame(rows, columns=COLUMNS)


def average_seeds(df: pd.DataFrame, value: str, keys: Sequence[str]) -> pd.DataFrame:
    """The seeds of each setting averaged: the rows sharing ``keys`` become one row with the mean ``value``,
    its range across seeds ``<value>_min`` / ``<value>_max`` and ``seeds`` (how many variants had a value);
    ``variant`` keeps the first (seed-0) variant's name. Rows keep the order in which their keys first
    appear. The mean is pandas' (a compensated sum), for tables and figures alike."""
    out = df.groupby(list(keys), sort=False, dropna=False).agg(
        variant=("variant", "first"), mean=(value, "mean"), lo=(value, "min"), hi=(value, "max"),
        seeds=("variant", "nunique")).reset_index()
    return out.rename(columns={"mean": value, "lo": f"{value}_min", "hi": f"{value}_max"})
