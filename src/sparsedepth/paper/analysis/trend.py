"""How a statistic moves with training tokens: the least-squares trend in log tokens and the scale verdict.

:func:`trend` fits ``value = intercept + slope·log10(tokens)`` and says at which token count the line reaches a
target (``None``: never). A straight line in log tokens is the simplest trend a handful of probe points along
training can support; it says where the measured direction leads, not where the statistic will be.

:func:`toward_paper` is the one rule behind the scorecard's column "moves toward the paper with scale": given a
claim's effect in the paper's direction (positive: as the paper says) at points along training, the fitted
change over the tokens measured is compared with its noise, which adds in quadrature the fit's own error (from
the scatter of the points about the line) and the claim's standard error of one effect (its seed noise: a
change smaller than what another seed could give is no trend). *yes*: the effect grows by more than
``noise.Z`` of those errors (with more tokens the claim leans further the paper's way); *no*: it falls by more;
*flat*: within them; ``NOT_AVAILABLE`` where it cannot be told (fewer than three points, or no noise known).
"""
from __future__ import annotations

import math

import numpy as np

from . import noise

YES, NO, FLAT = "yes", "no", "flat"
NOT_AVAILABLE = "—"
MIN_POINTS = 3  # a line through two points has no scatter to measure its error by
FAR = 30  # log10 tokens beyond which a crossing is only "beyond 1e30"


def trend(tokens, values, target: float | None = None) -> dict:
    """Least squares ``value = intercept + slope·log10(tokens)``: ``slope_per_decade``, ``intercept``,
    ``slope_se`` (from the residuals, None below three points), ``n_points``, the decades spanned and, with
    ``target``, ``crossing_tokens``: where the line reaches it or None ("never": the line is flat, or it was at
    the target before the first point and moves away), ``passed``: the crossing lies inside the measured range,
    so the points have already gone by the target and move on past it, and ``turned``: the last ``MIN_POINTS``
    points alone slope the other way (a statistic that peaked inside the range: the line misleads beyond it)."""
    x, y = np.log10(np.asarray(tokens, dtype=float)), np.asarray(values, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"a trend needs at least two distinct token counts, got {list(tokens)}")
    # a constant statistic has slope 0 exactly (the fit's rounding would give it ±1e-18 and a "crossing")
    slope, intercept = (0.0, float(y[0])) if np.ptp(y) == 0 else np.polyfit(x, y, 1)
    se = None
    if len(x) >= MIN_POINTS:
        resid = y - (intercept + slope * x)
        se = float(math.sqrt(float(resid @ resid) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum())))
    out = {"slope_per_decade": float(slope), "intercept": float(intercept), "slope_se": se, "n_points": int(len(x)),
           "decades": float(np.ptp(x)), "target": target, "crossing_tokens": None, "passed": False,
           "turned": _turned(x, y, slope)}
    if target is not None and slope != 0:
        x_cross = (target - intercept) / slope
        if x_cross >= x.min():  # before the first point: the line only moves away from the target
            out["crossing_tokens"] = float(10 ** x_cross) if x_cross <= FAR else math.inf
            out["passed"] = bool(x_cross <= x.max())
    return out


def _turned(x: np.ndarray, y: np.ndarray, slope: float) -> bool:
    """Whether the last ``MIN_POINTS`` points (of at least two more) slope against the whole range's ``slope``."""
    if len(x) < MIN_POINTS + 2 or slope == 0:
        return False
    last = np.argsort(x)[-MIN_POINTS:]
    tail = 0.0 if np.ptp(y[last]) == 0 else float(np.polyfit(x[last], y[last], 1)[0])
    return tail * slope < 0


def toward_paper(tokens, effects, effect_se: float | None = None, target: float | None = None) -> tuple[str, dict]:
    """(verdict, the trend with ``change`` and ``change_se``) for a claim's effects in the paper's direction at
    ``tokens`` (see the module doc); ``target``: an effect to extrapolate to (the paper's own)."""
    if len(set(tokens)) < MIN_POINTS:
        return NOT_AVAILABLE, {"why": f"{len(set(tokens))} probe point(s) along training; a trend needs {MIN_POINTS}"}
    t = trend(tokens, effects, target)
    parts = [t["slope_se"] * t["decades"]] + ([effect_se] if effect_se is not None else [])
    t["change"], t["change_se"] = t["slope_per_decade"] * t["decades"], math.hypot(*parts)
    if effect_se is None and t["change_se"] <= 1e-9 * max(1.0, abs(t["change"])):  # exact line, rounding aside
        return NOT_AVAILABLE, {**t, "why": "the points lie on a line and no seed spread is known"}
    if t["change"] > noise.Z * t["change_se"]:
        return YES, t
    if -t["change"] > noise.Z * t["change_se"]:
        return NO, t
    return FLAT, t


def crossing(t: dict) -> str:
    """Where trend ``t`` reaches its target, short: a token count ("…, passed" when inside the points), "never"
    (the line is flat or moves away from the target: it was on the target's far side before the first point) or
    "—" (no target)."""
    if t["target"] is None:
        return NOT_AVAILABLE
    return fmt_tokens(t["crossing_tokens"]) + (", passed" if t["passed"] else "")


def reach_words(t: dict, what: str = "") -> str:
    """:func:`crossing` as a phrase about the target (``what`` names it, e.g. "the paper's +0.3")."""
    if t["target"] is None:
        return NOT_AVAILABLE
    where, goal = fmt_tokens(t["crossing_tokens"]), what or f"{t['target']:.3g}"
    if t["passed"]:
        words = f"passed {goal} at {where} tokens, inside the points, and moves on beyond it"
    elif where == "never":
        words = f"never reaches {goal} (moves away or is flat)"
    else:
        words = f"reaches {goal} " + (f"only {where} tokens" if where.startswith("beyond") else f"at {where} tokens")
    return words + (f"; but its last {MIN_POINTS} points turn the other way" if t["turned"] else "")


def fmt_tokens(n: float | None) -> str:
    """A token count in words: ``2.1B``, ``301M``; ``never`` for None."""
    if n is None:
        return "never"
    if n > 10 ** FAR:
        return f"beyond 1e{FAR}"
    r = float(f"{n:.3g}")  # the unit follows the rounded count: 999.9996M is 1B, not "1e+03M"
    if r >= 1e15:
        return f"{n:.2g}"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if r >= size:
            return f"{r / size:.3g}{unit}"
    return f"{r:.3g}"
