"""Trajectories (``RUN_DIR/trajectory.json``) as a tidy frame and one chart per statistic against training tokens.

``trajectory_frame({setting: trajectory})`` gives one row per (setting, point, statistic) with columns
``setting, step, tokens, statistic, value, basis``; several trajectories of one setting (seeds) simply add rows.
:func:`sparsedepth.paper.analysis.trend.trend` fits ``value ≈ a + b·log10(tokens)`` by least squares and says at
which token count that line reaches a target ("never" when the slope is zero or points away from it).
``trajectory_chart`` draws one statistic: a line per setting on a log token axis, the trend dashed and labelled
as an extrapolation with its crossing, and the target: one value for every setting (usefulness's 1.1
threshold) drawn as a rule, or the paper's value per setting drawn as a diamond at the paper's token count.
A straight line in log tokens is the simplest trend that a handful of points can support; it says where the
measured direction leads, not where the statistic will be.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from ..analysis.frame import inner_layers
from ..analysis.trend import MIN_POINTS, crossing, fmt_tokens, reach_words, trend
from ..pipeline.run_result import RunResult, along_series, lookup
from ..spec import experiments as ex
from ..spec import reported as paper

__all__ = ["STATISTICS", "trajectory_frame", "trend", "trend_frame", "trajectory_chart", "sweep_frame", "sweep_targets",
           "sweep_figure", "trend_table"]


def _at(*path: str) -> Callable[[dict], float | None]:
    return lambda point: lookup(point, ".".join(path))


def _mean_of(*path: str) -> Callable[[dict], float | None]:
    def read(point: dict):
        xs = _at(*path)(point)
        xs = [x for x in xs or [] if x is not None]
        return sum(xs) / len(xs) if xs else None
    return read


def _max_of(*path: str) -> Callable[[dict], float | None]:
    def read(point: dict):
        xs = [x for x in _at(*path)(point) or [] if x is not None]
        return max(xs) if xs else None
    return read


def _inner_mean(point: dict) -> float | None:
    """Mean ||J − I|| over the inner layers (as the paper's figure and the scorecard's jacobian_mean)."""
    xs = _at("jacobian", "per_layer")(point)
    xs = inner_layers(xs) if xs and None not in xs else []
    return sum(xs) / len(xs) if xs else None


# statistic -> (axis title, reader of one trajectory point)
STATISTICS: dict[str, tuple[str, Callable[[dict], float | None]]] = {
    "val_loss": ("validation loss", _at("val_loss")),
    "last_layer_var": ("last-layer variance, residual stream (layer_var[-1])", _at("variance", "last_layer_var")),
    "final_norm_var": ("last-layer variance after the final norm", _at("variance", "final_norm_var")),
    "max_abs": ("largest activation |h| (max over layers)", _max_of("variance", "max_abs")),
    "usefulness": ("usefulness score (linear replacement)", _at("usefulness", "score")),
    "usefulness_paper_compat": ("usefulness score (official, transposed)", _at("usefulness", "paper_compat", "score")),
    "usefulness_skip": ("usefulness score (layer removed)", _at("usefulness", "skip", "score")),
    "loss_ratio": ("mean loss ratio (linear replacement)", _mean_of("usefulness", "loss_ratio")),
    "loss_ratio_paper_compat": ("mean loss ratio (official, transposed)",
                                _mean_of("usefulness", "paper_compat", "loss_ratio")),
    "loss_ratio_skip": ("mean loss ratio (layer removed)", _mean_of("usefulness", "skip", "loss_ratio")),
    "r2": ("mean R² of the linear fit", _mean_of("usefulness", "r2")),
    "jacobian": ("mean ‖J − I‖_F / d, layers 1 … L−2", lambda point: _inner_mean(point)),
    "causal": ("causal score", _at("causal", "score")),
    "permutation": ("permutation score", _at("permutation", "score")),
    "angular_distance": ("mean angular distance of a block (n = 1)", _at("angular_distance", "mean_n1")),
    "block_influence": ("mean block influence", _at("block_influence", "mean")),
}


def _load(traj) -> dict:
    if isinstance(traj, (str, Path)):
        path = Path(traj)
        path = path / "trajectory.json" if path.is_dir() else path
        return json.loads(path.read_text())
    return traj


def trajectory_frame(trajectories: Mapping[str, object]) -> pd.DataFrame:
    """Tidy rows ``setting, step, tokens, statistic, value, basis`` from ``{setting: trajectory}`` where a
    trajectory is a dict, a trajectory.json path, a run directory, or a list of those (seeds of one setting).
    ``basis`` "along": the points on one footing (:func:`along_series`), what trends are fitted to; "final": the
    final probes where they used fuller settings than the points before them (drawn, not fitted). Statistics a
    point does not hold (a cheaper probe subset along the way) are left out, not filled."""
    rows = []
    for setting, value in trajectories.items():
        for traj in value if isinstance(value, (list, tuple)) else [value]:
            doc = _load(traj)
            series = along_series(doc)
            last = max(doc["points"], key=lambda p: p["step"], default=None)
            extra = [last] if last is not None and last.get("final") and not any(p is last for p in series) else []
            for basis, points in (("along", series), ("final", extra)):
                for point in points:
                    for stat, (_, read) in STATISTICS.items():
                        v = read(point)
                        if v is not None and math.isfinite(v):
                            rows.append({"setting": setting, "step": point["step"], "tokens": point["tokens"],
                                         "statistic": stat, "value": float(v), "basis": basis})
    return pd.DataFrame(rows, columns=["setting", "step", "tokens", "statistic", "value", "basis"])


def _seed_means(frame: pd.DataFrame, statistic: str, basis: str = "along") -> pd.DataFrame:
    """``setting, tokens, value`` of one statistic on one basis, seeds averaged, in the frame's order."""
    d = frame[(frame.statistic == statistic) & (frame.basis == basis)]
    return d.groupby(["setting", "tokens"], as_index=False, sort=False)["value"].mean()


def _target_of(target, setting: str) -> float | None:
    return target.get(setting) if isinstance(target, Mapping) else target


def trend_frame(frame: pd.DataFrame, statistic: str,
                target: float | Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per setting: the trend of ``statistic`` (means over seeds at each token count) and where it
    reaches ``target`` (one value, or {setting: value}: the paper's per setting; ``reaches`` in words), fitted
    to the points on one footing (basis "along")."""
    d = _seed_means(frame, statistic)
    rows = []
    for setting, g in d.groupby("setting", sort=False):
        if g.tokens.nunique() < 2:
            continue
        goal = _target_of(target, setting)
        t = trend(g.tokens, g.value, goal)
        rows.append({"setting": setting, "statistic": statistic, **t, "reaches": crossing(t),
                     "label": f"{setting}: extrapolation, {reach_words(t)}" if goal is not None
                     else f"{setting}: extrapolation"})
    return pd.DataFrame(rows)


def trajectory_chart(frame: pd.DataFrame, statistic: str, *, target: float | Mapping[str, float] | None = None,
                     target_label: str | None = None, target_tokens: float | None = None,
                     order: list[str] | None = None, log_y: bool = False):
    """One statistic against training tokens (log x): measured lines per setting, each with its dashed
    least-squares trend in log tokens drawn out to the target crossing (at least 2x, at most 1000x the last
    point; 10x when it never crosses; at least to ``target_tokens``), labelled as an extrapolation. A single
    ``target`` is a grey rule; a per-setting one ({setting: value}, the paper's) a diamond in the setting's
    colour at ``target_tokens`` (the paper's training tokens)."""
    import altair as alt

    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose from {', '.join(STATISTICS)}")
    d, final = _seed_means(frame, statistic), _seed_means(frame, statistic, "final")
    if d.empty:
        raise ValueError(f"no trajectory point holds {statistic!r}; probe it along training (TrainConfig.probe)")
    per_setting = isinstance(target, Mapping)
    if per_setting and target_tokens is None:
        raise ValueError("a target per setting is drawn at the paper's token count: pass target_tokens")
    order = order or list(dict.fromkeys(d.setting))
    trends = trend_frame(frame, statistic, target)
    lines = []
    for t in trends.itertuples():
        last = d[d.setting == t.setting].tokens.max()
        end = last * 10 if t.crossing_tokens is None else min(max(t.crossing_tokens, last * 2), last * 1000)
        end = max(end, target_tokens or 0)
        xs = np.geomspace(d[d.setting == t.setting].tokens.min(), end, 20)
        lines += [{"setting": t.setting, "tokens": x, "value": t.intercept + t.slope_per_decade * math.log10(x),
                   "label": t.label} for x in xs]
    if log_y:  # a trend below zero has no place on a log axis
        lines = [r for r in lines if r["value"] > 0]
    colour = alt.Color("setting:N", sort=order, title="setting")
    x = alt.X("tokens:Q", scale=alt.Scale(type="log"), title="training tokens (log)", axis=alt.Axis(format="~s"))
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    title = STATISTICS[statistic][0]
    measured = alt.Chart(d).mark_line(point=True).encode(x=x, y=alt.Y("value:Q", title=title, scale=y_scale,
                                                                       axis=alt.Axis(format=".4~g")),
                                                          color=colour, tooltip=["setting", "tokens", "value"])
    layers = [measured]
    if not final.empty:
        layers.append(alt.Chart(final.assign(label="final probes (full settings), not fitted")).mark_point(
            shape="square", size=60, filled=False).encode(x=x, y=alt.Y("value:Q", scale=y_scale), color=colour,
                                                          tooltip=["setting", "tokens", "value", "label"]))
    if lines:
        layers.append(alt.Chart(pd.DataFrame(lines)).mark_line(strokeDash=[6, 4], opacity=0.7, clip=True).encode(
            x=x, y=alt.Y("value:Q", scale=y_scale), color=colour, detail="label:N", tooltip=["label"]))
    if per_setting:
        marks = pd.DataFrame([{"setting": s, "tokens": target_tokens, "value": v,
                               "label": f"{target_label or 'paper'}: {s} {v:.3g}"}
                              for s, v in target.items() if v is not None and (v > 0 or not log_y)])
        if not marks.empty:
            layers.append(alt.Chart(marks).mark_point(shape="diamond", size=90, filled=True).encode(
                x=x, y=alt.Y("value:Q", scale=y_scale), color=colour, tooltip=["label"]))
    elif target is not None:
        layers.append(alt.Chart(pd.DataFrame({"value": [target], "label": [target_label or f"target {target:g}"]}))
                      .mark_rule(color="grey", strokeDash=[2, 2]).encode(y="value:Q", tooltip=["label"]))
    subtitle = ["dashed: least-squares trend in log tokens, an extrapolation"]
    if not final.empty:
        subtitle.append("open squares: the final probes on fuller settings than the points (not fitted)")
    if per_setting:
        subtitle.append(f"diamonds: {target_label or 'the paper'} at {fmt_tokens(target_tokens)} tokens")
    subtitle += [t.label for t in trends.itertuples()] if target is not None else []
    return alt.layer(*layers).properties(title=alt.TitleParams(title, subtitle=subtitle), width=360, height=220)


# ------------------------------------------------------------------------------------------- one sweep

# The paper's reading (``reported.rows`` key) each statistic is set beside; the paper's last-layer variance (the
# official log, N_f(h_L)) stands for both of ours, as in the scorecard. Loss ratios go to the useful threshold.
PAPER_READING = {"last_layer_var": "variance_end", "final_norm_var": "variance_end", "usefulness": "usefulness",
                 "usefulness_paper_compat": "usefulness", "causal": "causal", "permutation": "permutation",
                 "jacobian": "jacobian"}
THRESHOLD_STATISTICS = ("loss_ratio", "loss_ratio_paper_compat", "loss_ratio_skip")
PAPER_TOKENS = ex.SCALES["paper"].run_tokens  # every paper run's training tokens (about 5B)
LOG_Y = ("last_layer_var", "final_norm_var", "max_abs")


def sweep_frame(res: Mapping[str, RunResult]) -> pd.DataFrame:
    """:func:`trajectory_frame` of a sweep's results that were probed along training, one setting per label
    (seeds of a setting averaged); empty when none was."""
    by_label: dict[str, list] = {}
    for r in res.values():
        if r.trajectory:
            by_label.setdefault(r.label, []).append(r.trajectory)
    return trajectory_frame(by_label)


def _paper_value(experiment: str, key, reading: str) -> float | None:
    if reading == "jacobian":
        curve = paper.PAPER[experiment].get("jacobian", {}).get(key)
        xs = inner_layers(curve) if curve else []
        return sum(xs) / len(xs) if xs else None
    return paper.value(experiment, key, reading) if key in paper.rows(experiment) else None


def sweep_targets(experiment: str, res: Mapping[str, RunResult]) -> dict[str, float | dict[str, float]]:
    """statistic -> what its trend is extrapolated to: the paper's value per setting ({label: value}, where
    the paper reports the reading) or the useful threshold for every setting (the loss ratios; the threshold
    the runs' probes used)."""
    from ...probes.usefulness import THRESHOLD

    thresholds = {r.probe("usefulness.threshold") for r in res.values()} - {None}
    threshold = thresholds.pop() if len(thresholds) == 1 else THRESHOLD
    out: dict[str, float | dict[str, float]] = {s: threshold for s in THRESHOLD_STATISTICS}
    if experiment not in paper.PAPER:
        return out
    for stat, reading in PAPER_READING.items():
        values = {r.label: _paper_value(experiment, r.setting, reading) for r in res.values()}
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            out[stat] = values
    return out


def sweep_figure(experiment: str, res: Mapping[str, RunResult], order: list[str] | None = None):
    """(every statistic of the sweep's trajectories against training tokens, one panel each, as one chart;
    the tidy frame it draws; the targets) — None for the chart when no run of the sweep was probed along
    training."""
    import altair as alt

    frame = sweep_frame(res)
    targets = sweep_targets(experiment, res)
    if frame.empty:
        return None, frame, targets
    panels = []
    for stat in [s for s in STATISTICS if s in set(frame.statistic)]:
        goal = targets.get(stat)
        per_setting = isinstance(goal, Mapping)
        panels.append(trajectory_chart(frame, stat, target=goal, order=order, log_y=stat in LOG_Y,
                                       target_tokens=PAPER_TOKENS if per_setting else None,
                                       target_label="the paper" if per_setting else
                                       (f"useful threshold {goal:g}" if goal is not None else None)))
    return alt.concat(*panels, columns=3), frame, targets


TAIL = f"last {MIN_POINTS} points"


def trend_table(frame: pd.DataFrame, targets: Mapping[str, float | Mapping[str, float]]) -> pd.DataFrame:
    """One row per statistic and setting: first and last measured value (seed means), the trend per decade of
    tokens, the target and the token count at which the trend reaches it ("never": it moves away or is flat;
    "—": no target), whether the last three points slope the other way ("turn back": the line misleads beyond
    them), all on the points' one footing; ``final probes``: the final probes' value where they used
    fuller settings (how far the footings differ at the same weights)."""
    rows = []
    for stat in [s for s in STATISTICS if s in set(frame.statistic)]:
        d = _seed_means(frame, stat)
        full = _seed_means(frame, stat, "final").groupby("setting")["value"].last()
        trends = trend_frame(frame, stat, targets.get(stat)).set_index("setting") if len(d) else pd.DataFrame()
        for setting, g in d.groupby("setting", sort=False):
            if setting not in trends.index:
                continue
            t = trends.loc[setting]
            goal = _target_of(targets.get(stat), setting)
            rows.append({"statistic": stat, "setting": setting, "first": g.value.iloc[0], "last": g.value.iloc[-1],
                         "final probes": full.get(setting, np.nan),
                         "tokens": f"{fmt_tokens(g.tokens.min())}–{fmt_tokens(g.tokens.max())}",
                         "per decade": t.slope_per_decade, "target": goal,
                         "reaches it at": t.reaches, TAIL: "turn back" if t.turned else ""})
    return pd.DataFrame(rows, columns=["statistic", "setting", "first", "last", "final probes", "tokens", "per decade",
                                       "target", "reaches it at", TAIL])
