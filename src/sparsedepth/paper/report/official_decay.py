"""Our weight decay beside the official one: is the paper's collapse of the logged last-layer variance at
λ = 1 and 3 the final norm's gain shrinking, or the residual stream?

Our optimiser decays matrices only; the official one decays every parameter, the RMSNorm gains and the
embedding included (paper-spec 2.5; the check ``weight_decay_official`` trains the sweep that way). The official
code logged the last layer's variance after the final norm, N_f(h_L) = g ⊙ h_L / rms(h_L) (``final_var``).
Its per-token variance over the d features is at most max_i g_i², whatever h_L does, so a decayed gain alone
can drive it to zero. Each run gives, at the end of training (its last telemetry row):

- ``h_L``: the raw residual stream's variance (``layer_var[-1]``), what the paper's argument is about;
- ``N_f(h_L)``: the official log's reading (``final_var``);
- ``mean |g|``: the final RMSNorm's mean absolute gain (``final_gain``; absent from runs trained before the
  trainer logged it);
- ``N_f / mean|g|²``: the logged variance per unit of squared gain: about constant across λ when the gain
  alone moves the logged reading.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from ..analysis.frame import average_seeds, last_layer_variance, postnorm_variance
from ..pipeline.results import load_results
from ..pipeline.run_result import RunResult
from ..spec import reported as paper
from ..spec.experiments import PAPER_WEIGHT_DECAYS
from . import plots, tables

OURS_EXPERIMENT, OFFICIAL_EXPERIMENT = "weight_decay", "weight_decay_official"
DECAYS = {OURS_EXPERIMENT: "ours: matrices only", OFFICIAL_EXPERIMENT: "official: gains and embedding too"}
QUANTITIES = {"residual": "h_L raw residual stream (layer_var[-1])",
              "postnorm": "N_f(h_L) after final norm (final_var, official log)",
              "gain": "final norm mean |g| (final_gain)",
              "per_gain": "N_f(h_L) / mean|g|²"}
SHORT = {"residual": "h_L", "postnorm": "N_f(h_L)", "gain": "mean |g|", "per_gain": "N_f / mean|g|²"}
NAME = "weight_decay_official_decay"  # figure and table name


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else math.nan


def run_rows(results: Mapping[str, Mapping[str, RunResult] | None]) -> pd.DataFrame:
    """One row per run with results: ``decay`` (its label in ``DECAYS``), ``variant``, ``seed``, ``lam`` (λ) and
    the four quantities (NaN where a run does not have one). ``results``: {experiment: load_results(...)},
    an experiment with no results (None or empty) adds no rows."""
    rows = []
    for experiment, label in DECAYS.items():
        for name, res in (results.get(experiment) or {}).items():
            residual, postnorm, gain = (_num(last_layer_variance(res)[0]), _num(postnorm_variance(res)[0]),
                                        _num(res.final_gain()))
            rows.append({"decay": label, "variant": name, "seed": res.seed, "lam": float(res.meta["value"]),
                         "residual": residual, "postnorm": postnorm, "gain": gain,
                         "per_gain": postnorm / gain ** 2 if gain > 0 else math.nan})
    return pd.DataFrame(rows, columns=["decay", "variant", "seed", "lam", *QUANTITIES])


def setting_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (decay, λ): each quantity averaged over seeds by the one seed average (``frame.average_seeds``, NaN
    where no seed has it) and ``seeds``, the runs counted."""
    keys = ["decay", "lam"]
    out = average_seeds(runs, "residual", keys)[[*keys, "seeds"]]
    for q in QUANTITIES:
        out[q] = average_seeds(runs, q, keys)[q].to_numpy()
    return out[[*keys, *QUANTITIES, "seeds"]]


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The short table: one row per λ, each quantity under both decays side by side, how many of our runs
    each of our means averages, the paper's logged last-layer variance (its figure's end value, the official
    log) last. Missing values stay NaN."""
    means = setting_means(runs)
    lams = list(PAPER_WEIGHT_DECAYS)
    out = pd.DataFrame({"λ": lams})
    for q in QUANTITIES:
        for experiment, label in DECAYS.items():
            col = f"{SHORT[q]}, {'ours' if experiment == OURS_EXPERIMENT else 'official'}"
            by_lam = means[means.decay == label].set_index("lam")[q]
            out[col] = [float(by_lam.get(lam, math.nan)) for lam in lams]
    # how many runs each of our means rests on: the gain only from runs trained after the trainer logged it
    ours = runs[runs.decay == DECAYS[OURS_EXPERIMENT]]
    for col, q in (("runs, ours", "residual"), ("runs with mean |g|, ours", "gain")):
        counts = ours[ours[q].notna()].groupby("lam").size()
        out[col] = [int(counts.get(lam, 0)) for lam in lams]
    reported = paper.rows(OURS_EXPERIMENT)
    out["paper's logged variance (end)"] = [_num((reported.get(lam) or {}).get("variance_end")) for lam in lams]
    return out


def long_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The setting means as tidy rows (decay, λ label, quantity, value) for :func:`figure`; NaN dropped."""
    means = setting_means(runs)
    long = means.melt(id_vars=["decay", "lam", "seeds"], value_vars=list(QUANTITIES), var_name="q",
                      value_name="value").dropna(subset=["value"])
    long["quantity"] = long["q"].map(QUANTITIES)
    long["λ"] = long["lam"].map(lambda v: f"{v:g}")
    return long.drop(columns="q").reset_index(drop=True)


def figure(runs: pd.DataFrame):
    """Four panels against λ (log y, one line per decay): both variance readings, the final norm's mean gain
    and the logged variance per unit of squared gain. Returns (chart, plotted frame)."""
    long = long_frame(runs)
    if long.empty:
        raise ValueError("no weight-decay run has any of the quantities to plot; train the sweep first")
    lams = [f"{v:g}" for v in sorted(runs.lam.unique())]
    chart = plots.sweep_chart(long, x="λ", y="value", color="decay", facet="quantity", columns=2, log_y=True,
                              order=[d for d in DECAYS.values() if d in set(long.decay)], x_order=lams,
                              title="Last-layer variance on both readings, and the final norm's gain",
                              subtitle="end of training; ours: mean over the seeds with results; a panel "
                                       "without a decay's line: not recorded for those runs",
                              x_title="weight decay λ", y_title="value (log)", color_title="weight decay of")
    return chart, long


def missing_note(profile: str, runs: pd.DataFrame) -> str:
    """What is not there yet, in one Markdown paragraph ("" when both decays have every quantity)."""
    notes = []
    if not (runs.decay == DECAYS[OFFICIAL_EXPERIMENT]).any():
        notes.append(f"The official-decay sweep is **not trained yet at this profile**: `sparsedepth run --profile "
                     f"{profile} {OFFICIAL_EXPERIMENT}` trains it (seed 0; λ = 0 is weight_decay's wd0 run).")
    if not (runs.decay == DECAYS[OURS_EXPERIMENT]).any():
        notes.append("Our weight-decay sweep has no results at this profile.")
    no_gain = sorted({d for d, g in zip(runs.decay, runs.gain) if math.isnan(g)})
    if no_gain:
        notes.append("Final-norm gain not recorded for some runs of " + "; ".join(no_gain) + " (trained before "
                     "the trainer logged `final_gain`): their gain and N_f / mean|g|² cells are blank.")
    return " ".join(notes)


def section(profile: str, ours: Mapping[str, RunResult] | None = None, *, root: Any = None, save: bool = True):
    """The notebook's cell: load both sweeps (``ours``: weight_decay's results when already loaded), write
    the table and figure ``weight_decay_official_decay`` (``save``), and return (table, chart or None when
    nothing can be plotted, note). Never raises for missing results: the note says what is missing."""
    results = {OURS_EXPERIMENT: ours if ours is not None else load_results(profile, OURS_EXPERIMENT, root=root),
               OFFICIAL_EXPERIMENT: load_results(profile, OFFICIAL_EXPERIMENT, root=root)}
    runs = run_rows(results)
    note = missing_note(profile, runs)
    table = summary_table(runs)
    if runs.empty:
        return table, None, note
    chart, long = figure(runs)
    if save:
        tables.write_table(table, NAME, profile, root=root, title="Weight decay, ours and official: last-layer "
                           "variance on both readings and the final norm's gain (end of training)",
                           notes=TABLE_NOTES)
        plots.save_chart(chart, NAME, profile, long, root=root)
    return table, chart, note


TABLE_NOTES = ("h_L: variance of the raw residual stream (layer_var[-1]); N_f(h_L): after the final RMSNorm "
               "with its gain (final_var, what the official code logged); mean |g|: the final norm's mean "
               "absolute gain; N_f / mean|g|²: the logged variance per unit of squared gain. ours: matrices "
               "decayed (mean over the seeds with results; the runs columns count them, the gain only from runs "
               "trained after the trainer logged it); official: norm gains and embedding decayed too (seed 0). "
               "The paper's column is its figure's end value (the official log, d = 2048). – : no result.")
