"""Trajectories (``RUN_DIR/trajectory.json``) as a tidy frame and one chart per statistic against training tokens.

``trajectory_frame({setting: trajectory})`` gives one row per (setting, point, statistic) with columns
``setting, step, tokens, statistic, value``; several trajectories of one setting (seeds) simply add rows.
``trend(tokens, values, target)`` fits ``value ≈ a + b·log10(tokens)`` by least squares and says at which token
count that line reaches ``target`` — ``None`` ("never") when the slope is zero or points away from the
target. ``trajectory_chart`` draws one statistic: a line per setting on a log token axis, the trend dashed and
labelled as an extrapolation with its crossing, the target as a rule. A straight line in log tokens is the
simplest trend that a handful of points can support; it says where the measured direction leads, not where
the statistic will be.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from ..pipeline.run_result import lookup

__all__ = ["STATISTICS", "trajectory_frame", "trend", "trend_frame", "trajectory_chart", "save_trajectory_charts"]


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
    "jacobian": ("mean ‖J − I‖_F / d", _at("jacobian", "mean")),
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
    """Tidy rows ``setting, step, tokens, statistic, value`` from ``{setting: trajectory}`` where a trajectory is
    a dict, a trajectory.json path, a run directory, or a list of those (seeds of one setting). Statistics a
    point does not hold (a cheaper probe subset along the way) are left out, not filled."""
    rows = []
    for setting, value in trajectories.items():
        for traj in value if isinstance(value, (list, tuple)) else [value]:
            for point in _load(traj)["points"]:
                for stat, (_, read) in STATISTICS.items():
                    v = read(point)
                    if v is not None and math.isfinite(v):
                        rows.append({"setting": setting, "step": point["step"], "tokens": point["tokens"],
                                     "statistic": stat, "value": float(v)})
    return pd.DataFrame(rows, columns=["setting", "step", "tokens", "statistic", "value"])


def trend(tokens, values, target: float | None = None) -> dict:
    """Least squares ``value = intercept + slope·log10(tokens)``; with ``target``, ``crossing_tokens`` is where
    the line reaches it (inside the measured range when it already has) or None ("never": the line is flat, or
    it was at the target before the first point and moves away from it)."""
    x, y = np.log10(np.asarray(tokens, dtype=float)), np.asarray(values, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"a trend needs at least two distinct token counts, got {list(tokens)}")
    slope, intercept = np.polyfit(x, y, 1)
    out = {"slope_per_decade": float(slope), "intercept": float(intercept), "n_points": int(len(x)),
           "target": target, "crossing_tokens": None}
    if target is not None and slope != 0:
        x_cross = (target - intercept) / slope
        if x_cross >= x.min():  # before the first point: the line only moves away from the target
            out["crossing_tokens"] = float(10 ** x_cross)
    return out


def _fmt_tokens(n: float | None) -> str:
    if n is None:
        return "never"
    if n >= 1e15:
        return f"{n:.2g}"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def trend_frame(frame: pd.DataFrame, statistic: str, target: float | None = None) -> pd.DataFrame:
    """One row per setting: the trend of ``statistic`` (means over seeds at each token count) and its crossing."""
    d = frame[frame.statistic == statistic].groupby(["setting", "tokens"], as_index=False)["value"].mean()
    rows = []
    for setting, g in d.groupby("setting", sort=False):
        if g.tokens.nunique() < 2:
            continue
        t = trend(g.tokens, g.value, target)
        rows.append({"setting": setting, "statistic": statistic, **t,
                     "label": f"{setting}: extrapolation, reaches {target:g} at {_fmt_tokens(t['crossing_tokens'])}"
                     if target is not None else f"{setting}: extrapolation"})
    return pd.DataFrame(rows)


def trajectory_chart(frame: pd.DataFrame, statistic: str, *, target: float | None = None,
                     target_label: str | None = None, order: list[str] | None = None, log_y: bool = False):
    """One statistic against training tokens (log x): measured lines per setting, each with its dashed
    least-squares trend in log tokens drawn out to the target crossing (at least 2x, at most 1000x the last
    point; 10x when it never crosses), labelled as an extrapolation; ``target`` as a grey rule."""
    import altair as alt

    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose from {', '.join(STATISTICS)}")
    d = frame[frame.statistic == statistic].groupby(["setting", "tokens"], as_index=False, sort=False)["value"].mean()
    if d.empty:
        raise ValueError(f"no trajectory point holds {statistic!r}; probe it along training (TrainConfig.probe)")
    order = order or list(dict.fromkeys(d.setting))
    trends = trend_frame(frame, statistic, target)
    lines = []
    for t in trends.itertuples():
        last = d[d.setting == t.setting].tokens.max()
        end = last * 10 if t.crossing_tokens is None else min(max(t.crossing_tokens, last * 2), last * 1000)
        xs = np.geomspace(d[d.setting == t.setting].tokens.min(), end, 20)
        lines += [{"setting": t.setting, "tokens": x, "value": t.intercept + t.slope_per_decade * math.log10(x),
                   "label": t.label} for x in xs]
    colour = alt.Color("setting:N", sort=order, title="setting")
    x = alt.X("tokens:Q", scale=alt.Scale(type="log"), title="training tokens (log)")
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    title = STATISTICS[statistic][0]
    measured = alt.Chart(d).mark_line(point=True).encode(x=x, y=alt.Y("value:Q", title=title, scale=y_scale),
                                                          color=colour, tooltip=["setting", "tokens", "value"])
    layers = [measured]
    if lines:
        layers.append(alt.Chart(pd.DataFrame(lines)).mark_line(strokeDash=[6, 4], opacity=0.7).encode(
            x=x, y=alt.Y("value:Q", scale=y_scale), color=colour, detail="label:N", tooltip=["label"]))
    if target is not None:
        layers.append(alt.Chart(pd.DataFrame({"value": [target], "label": [target_label or f"target {target:g}"]}))
                      .mark_rule(color="grey", strokeDash=[2, 2]).encode(y="value:Q", tooltip=["label"]))
    subtitle = ["dashed: least-squares trend in log tokens, an extrapolation"]
    subtitle += [t.label for t in trends.itertuples()] if target is not None else []
    return alt.layer(*layers).properties(title=alt.TitleParams(title, subtitle=subtitle), width=420, height=260)


def save_trajectory_charts(frame: pd.DataFrame, out_dir, targets: Mapping[str, float] | None = None,
                           statistics=None) -> list[Path]:
    """``out_dir/trajectory_<statistic>.png`` (and ``.csv``: the points drawn) for every statistic in the frame,
    each written atomically; ``targets``: statistic -> value to extrapolate to (the paper's, or 1.1)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = dict(targets or {})
    written = []
    for stat in statistics or [s for s in STATISTICS if s in set(frame.statistic)]:
        chart = trajectory_chart(frame, stat, target=targets.get(stat))
        for ext, write in (("png", lambda p: chart.save(str(p))),
                           ("csv", lambda p: frame[frame.statistic == stat].to_csv(p, index=False))):
            path = out_dir / f"trajectory_{stat}.{ext}"
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".{ext}", dir=out_dir)
            os.close(fd)
            try:
                write(tmp)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            written.append(path)
    return written
