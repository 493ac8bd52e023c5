"""What the usefulness score measures: three replacements of a block, per layer, along training and across rungs.

The paper's usefulness replaces block l by a linear map fitted on its input and output and calls the layer useful
when the loss rises by more than 10 %. Three readings of each layer's loss ratio (replaced loss / base loss)
are set side by side, beside the largest activation of the layer's output:

- ``linear``: the correct least-squares replacement (``usefulness.loss_ratio``); what a linear map cannot
  reproduce of the block, its nonlinearity, is ``linear − 1``;
- ``official``: the official code's fit applied transposed (``usefulness.paper_compat.loss_ratio``); its excess
  over the correct fit, ``official − linear``, is what the transposition adds;
- ``removed``: the block replaced by the identity (``usefulness.skip.loss_ratio``), the ceiling a useless
  linear map would reach;
- ``max_abs``: the largest |h| of the layer's output (``variance.max_abs``, massive activations).

A run probed along training gives these at every probe point (:meth:`RunResult.at_point`); a run without
trajectories gives them once, from its final probes. :func:`layer_frame` stacks them for several rungs,
:func:`excess_frame` reduces them to per-run means, :func:`findings` writes the answer from the numbers.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from ..analysis import noise
from ..analysis.trend import fmt_tokens, trend
from ..pipeline.run_result import RunResult, number

READINGS = {"linear": "usefulness.loss_ratio", "official": "usefulness.paper_compat.loss_ratio",
            "removed": "usefulness.skip.loss_ratio", "max_abs": "variance.max_abs"}
RATIOS = ("linear", "official", "removed")
COLUMNS = ["rung", "d_model", "setting", "seed", "step", "tokens", "final", "layer", "reading", "value"]


def _states(run: RunResult) -> list[tuple[int | None, float | None, bool, RunResult]]:
    """(step, tokens, final, the run as read there): the probe points along training on one footing
    (``RunResult.points``; not final), then the final probes (final). Where every point used the final
    settings, the last point is the final probes and comes once, as those."""
    final = (number((run.summary or {}).get("steps")), number(run.tokens()), True, run)
    along = [p for p in run.points() if not p.get("final")]
    return [(p["step"], number(p["tokens"]), False, run.at_point(p)) for p in along] + [final]


def layer_frame(rungs: Mapping[str, Mapping[str, RunResult]]) -> pd.DataFrame:
    """One row per rung × run × probe point × layer × reading (``COLUMNS``) from ``{rung: {variant: result}}``;
    readings a run was not probed for are left out."""
    rows = []
    for rung, res in rungs.items():
        for r in res.values():
            d_model = (r.config.get("model") or {}).get("d_model")
            for step, tokens, final, at in _states(r):
                for reading, path in READINGS.items():
                    values = at.probe(path)
                    if not isinstance(values, list):
                        continue
                    rows += [{"rung": rung, "d_model": d_model, "setting": r.label, "seed": r.seed, "step": step,
                              "tokens": tokens, "final": final, "layer": i, "reading": reading, "value": v}
                             for i, v in enumerate(map(number, values)) if v is not None]
    return pd.DataFrame(rows, columns=COLUMNS)


def excess_frame(layers: pd.DataFrame) -> pd.DataFrame:
    """Per rung × setting × probe point (seeds averaged): the mean over layers of ``nonlinearity`` (linear − 1),
    ``transposition`` (official − linear) and ``removal`` (removed − 1); ``share`` = transposition / (official −
    1), the part of the official score's excess the transposition makes; the useful layers (ratio above the probes'
    threshold, 1.1) by the correct and the official fit; ``official_above_removal``, the fraction of layers where
    the official fit costs more than removing the block (then it measures its own error, not the block);
    ``max_abs`` (largest over layers) and ``corr_max_abs`` (correlation across
    layers of log max_abs with the transposition's excess)."""
    if layers.empty:
        return pd.DataFrame()
    threshold = _threshold()
    keys = ["rung", "d_model", "setting", "seed", "step", "tokens", "final"]
    wide = layers.pivot_table(index=keys + ["layer"], columns="reading", values="value").reset_index()
    for r in READINGS:
        if r not in wide:
            wide[r] = np.nan
    out = []
    for key, g in wide.groupby(keys, sort=False, dropna=False):
        lin, off, rem, mx = (g[c].to_numpy(float) for c in ("linear", "official", "removed", "max_abs"))
        trans = off - lin
        row = dict(zip(keys, key))
        row.update(layers=len(g), nonlinearity=np.nanmean(lin - 1) if np.isfinite(lin).any() else np.nan,
                   transposition=np.nanmean(trans) if np.isfinite(trans).any() else np.nan,
                   removal=np.nanmean(rem - 1) if np.isfinite(rem).any() else np.nan,
                   useful_linear=int((lin > threshold).sum()), useful_official=int((off > threshold).sum()),
                   official_above_removal=_share(off > rem, np.isfinite(off) & np.isfinite(rem)),
                   max_abs=np.nanmax(mx) if np.isfinite(mx).any() else np.nan, corr_max_abs=_corr(np.log(mx), trans))
        official = row["nonlinearity"] + row["transposition"]
        row["share"] = row["transposition"] / official if np.isfinite(official) and official > 0 else np.nan
        out.append(row)
    df = pd.DataFrame(out)
    cols = [c for c in df.columns if c not in keys + ["layers"]]
    return df.groupby(["rung", "d_model", "setting", "step", "tokens", "final"], sort=False, dropna=False)[cols] \
        .mean().reset_index()


def in_order(excess: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """``excess`` with each rung's settings in the sweep's ``order`` (rungs as they come; unknown settings last):
    the frame's own order is the string order of its pivot (T=1024 before T=256)."""
    if excess.empty:
        return excess
    rung = {r: i for i, r in enumerate(dict.fromkeys(excess["rung"]))}
    pos = {s: i for i, s in enumerate(order)}
    key = excess["rung"].map(rung) * (len(pos) + 1) + excess["setting"].map(lambda s: pos.get(s, len(pos)))
    return excess.assign(_key=key).sort_values(["_key", "step"], kind="stable").drop(columns="_key") \
        .reset_index(drop=True)


def _threshold() -> float:
    from ...probes.usefulness import THRESHOLD  # torch: only once a frame is built

    return THRESHOLD


def _share(hits: np.ndarray, ok: np.ndarray) -> float:
    """Fraction of ``hits`` among the ``ok`` entries (NaN when none is)."""
    return float(hits[ok].mean()) if ok.any() else np.nan


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return np.nan
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _direction(tokens, values) -> tuple[str, float] | None:
    """('grows' / 'falls' / 'flat', slope per decade) of a series in log tokens (flat: within 2 s.e. of the
    fit); None below three points."""
    ok = [(t, v) for t, v in zip(tokens, values) if t and math.isfinite(v)]
    if len({t for t, _ in ok}) < 3:
        return None
    t = trend([t for t, _ in ok], [v for _, v in ok])
    slope, se = t["slope_per_decade"], t["slope_se"] or 0.0
    return ("grows" if slope > noise.Z * se else "falls" if -slope > noise.Z * se else "flat"), slope


def findings(excess: pd.DataFrame) -> str:
    """The answer in words, from the numbers of :func:`excess_frame` (Markdown bullets)."""
    if excess.empty or excess["transposition"].isna().all():
        return ("- No run here has both the correct and the official usefulness readings per layer; probe with "
                "`paper_compat: true`.\n")
    final = excess[excess["final"]]
    lines = []
    for rung, g in final.groupby("rung", sort=False):
        parts = [f"{r.setting}: {r.nonlinearity:+.3g} nonlinearity, {r.transposition:+.3g} transposition "
                 f"({_pct(r.share)} of the official excess), useful layers {r.useful_linear:.3g} correct vs "
                 f"{r.useful_official:.3g} official" for r in g.itertuples()]
        share = g["share"].median()
        source = ("the transposition" if share > 0.5 else "the blocks' nonlinearity") if math.isfinite(share) else None
        where = f" (at {fmt_tokens(g.tokens.max())} tokens)" if g.tokens.notna().any() else ""
        lines.append(f"- **{rung}**{where}: " + "; ".join(parts) + "."
                     + (f" The official score's excess comes mostly from **{source}** (median share "
                        f"{_pct(share)})." if source else ""))
        if g["removal"].notna().any():
            rec = (g["nonlinearity"] / g["removal"]).median()
            lines.append(f"  Plain removal costs {g['removal'].median():+.3g} per layer (median); the correct linear "
                         f"map leaves {_pct(rec)} of that, the official one "
                         f"{_pct(((g['nonlinearity'] + g['transposition']) / g['removal']).median())}. The official "
                         f"fit costs more than removing the block in {_pct(g['official_above_removal'].median())} of "
                         f"the layers (median over settings).")
        else:
            lines.append("  Plain removal and the largest activation per layer were not probed in these results "
                         "(probes before `usefulness.skip` and `variance.max_abs`); probe them again to see them.")
        if g["corr_max_abs"].notna().any():
            lines.append(f"  Across layers, log of the largest activation and the transposition's excess correlate "
                         f"at r = {g['corr_max_abs'].median():+.2f} (median over settings).")
    lines += _along(excess) + _across_width(final)
    return "\n".join(lines) + "\n"


def _along(excess: pd.DataFrame) -> list[str]:
    out = []
    for rung, g in excess[~excess["final"]].groupby("rung", sort=False):
        if g["step"].nunique() < 3:
            continue
        moves: dict[str, dict[str, tuple[str, float]]] = {}
        for what in ("nonlinearity", "transposition"):
            for setting, s in g.groupby("setting", sort=False):
                d = _direction(s.tokens.tolist(), s[what].tolist())
                if d:
                    moves.setdefault(what, {})[setting] = d
        for what, ms in moves.items():
            counts = {w: sum(m[0] == w for m in ms.values()) for w in ("grows", "falls", "flat")}
            out.append(f"- Along training at **{rung}**, the {what} excess "
                       + ", ".join(f"{w} in {n} of {len(ms)} settings" for w, n in counts.items() if n)
                       + " (" + "; ".join(f"{s}: {slope:+.2g} per decade of tokens" for s, (_, slope) in ms.items())
                       + ").")
        both = set(moves.get("nonlinearity", {})) & set(moves.get("transposition", {}))
        if both:
            faster = sum(moves["transposition"][s][1] > moves["nonlinearity"][s][1] for s in both)
            out.append(f"  The official score's excess over the correct fit rises faster than the correct fit's own "
                       f"excess in {faster} of {len(both)} settings.")
    if not out:
        out.append("- No run here was probed along training (trajectory.json), so nothing is said of tokens.")
    return out


def _across_width(final: pd.DataFrame) -> list[str]:
    """The widest rung against the narrower ones trained as many tokens (gpu-wide against gpu)."""
    rows = final.dropna(subset=["d_model", "tokens"])
    if rows["d_model"].nunique() < 2:
        return []
    wide_d = rows["d_model"].max()
    wide = rows[rows.d_model == wide_d]
    narrow = rows[(rows.d_model < wide_d) & rows.tokens.isin(set(wide.tokens))]
    cols = ["nonlinearity", "transposition"]
    a, b = narrow.groupby("setting")[cols].mean(), wide.groupby("setting")[cols].mean()
    common = [s for s in b.index if s in a.index]
    if not common:
        return []
    r = (b.loc[common] / a.loc[common]).median()
    return [f"- From d = {narrow.d_model.max():g} to d = {wide_d:g} at the same tokens (settings "
            f"{', '.join(map(str, common))}), the nonlinearity excess changes by x{r['nonlinearity']:.2g} and the "
            f"transposition's by x{r['transposition']:.2g} (median ratio over settings)."]


def _pct(x: float) -> str:
    return f"{int(round(100 * x))} %" if x is not None and math.isfinite(x) else "–"  # int: no "-0 %"


def layer_chart(layers: pd.DataFrame, order: list[str] | None = None):
    """At each run's last point: loss ratio per layer of the three replacements (log y), one panel per setting
    and a row per rung, with the largest activation per layer in a second row of panels."""
    import altair as alt

    last = layers[layers["final"]]
    last = last.groupby(["rung", "setting", "layer", "reading"], as_index=False, sort=False)["value"].mean()
    ratios, acts = last[last.reading.isin(RATIOS)], last[last.reading == "max_abs"]
    sort = order or list(dict.fromkeys(last.setting))
    base = alt.Chart().mark_line(point=True).encode(  # the facet's data: each panel its own setting's layers
        x=alt.X("layer:O", title="layer ℓ", axis=alt.Axis(labelAngle=0, labelOverlap="parity")),
        y=alt.Y("value:Q", scale=alt.Scale(type="log", nice=False), title="loss ratio (replaced / base)"),
        color=alt.Color("reading:N", sort=list(RATIOS), title="block replaced by"),
        tooltip=["rung", "setting", "layer", "reading", "value"])
    rule = alt.Chart(pd.DataFrame({"value": [_threshold()]})).mark_rule(color="grey", strokeDash=[2, 2]) \
        .encode(y="value:Q")
    chart = alt.layer(base, rule, data=ratios).properties(width=180, height=150).facet(
        column=alt.Column("setting:N", sort=sort, title=None), row=alt.Row("rung:N", title=None)) \
        .resolve_scale(x="independent")  # each depth its own layers
    chart = chart.properties(title=alt.TitleParams(
        "What the usefulness score measures, per layer", subtitle=[
            "linear: correct least-squares replacement; official: the official code's fit, applied transposed; "
            "removed: the block skipped",
            f"dashed: the useful threshold {_threshold():g}; the last probe point of each run"]))
    if acts.empty:
        return chart
    act = alt.Chart(acts).mark_line(point=True, color="black").encode(
        x=alt.X("layer:O", title="layer ℓ", axis=alt.Axis(labelAngle=0, labelOverlap="parity")),
        y=alt.Y("value:Q", scale=alt.Scale(type="log", nice=False), title="largest |h|"),
        tooltip=["rung", "setting", "layer", "value"]).properties(width=180, height=100).facet(
        column=alt.Column("setting:N", sort=sort, title=None), row=alt.Row("rung:N", title=None)) \
        .resolve_scale(x="independent")
    return alt.vconcat(chart, act)


def excess_chart(excess: pd.DataFrame, order: list[str] | None = None):
    """Mean excess per layer of the nonlinearity and of the transposition against training tokens (log x): a
    line per setting through the probe points on one footing, the final probes (full settings) as open
    squares; one panel per rung; None without two probe points anywhere."""
    import altair as alt

    along = excess[~excess["final"]] if not excess.empty else excess
    if along.empty or along.groupby("rung")["step"].nunique().max() < 2:
        return None
    long = excess.melt(id_vars=["rung", "setting", "tokens", "final"], value_vars=["nonlinearity", "transposition"],
                       var_name="part", value_name="excess").dropna()
    long["probes"] = np.where(long["final"], "final probes (full settings)", "along training")
    x = alt.X("tokens:Q", scale=alt.Scale(type="log"), title="training tokens (log)")
    colour = alt.Color("setting:N", sort=order or list(dict.fromkeys(long.setting)))
    tooltip = ["rung", "setting", "tokens", "part", "probes", "excess"]
    line = alt.Chart().transform_filter("!datum.final").mark_line(point=True).encode(
        x=x, y=alt.Y("excess:Q", title="mean excess loss ratio per layer"), color=colour,
        strokeDash=alt.StrokeDash("part:N", title="excess from"), tooltip=tooltip)
    final = alt.Chart().transform_filter("datum.final").mark_point(shape="square", size=70, filled=False).encode(
        x=x, y="excess:Q", color=colour, tooltip=tooltip)
    return alt.layer(line, final, data=long).properties(width=260, height=200).facet(
        column=alt.Column("rung:N", title=None)).properties(title=alt.TitleParams(
            "The official score's excess over 1, split: the blocks' nonlinearity (linear − 1) and the transposition "
            "(official − linear)", subtitle=["means over layers; lines: the probe points along training, on the "
                                             "settings they share; open squares: the final probes (full settings)"]))
