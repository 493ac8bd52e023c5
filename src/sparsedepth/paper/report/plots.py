"""Altair chart builders shared by the notebooks, and ``save_chart`` (PNG + SVG + CSV, atomically).

Two kinds of functions:

* ``*_frame(...)`` turn ``results.load_results(profile, experiment)`` (variant -> ``RunResult``) or a
  probes.json dict into tidy DataFrames. Every frame has a ``variant`` column (the run's name) and a
  ``label`` column (its display label from the variant metadata, e.g. ``L=12``); per-step data is
  aggregated here (``downsample``: at most ``MAX_POINTS`` points per curve, bin means over equal-width step
  bins) so a chart never carries the raw log.
* ``*_chart(df, ...)`` draw a tidy frame. Colour scales follow the swept value (``order``: the labels in the
  experiment's order, which is sorted by the swept value), axis titles carry units, and variance axes are
  logarithmic where the paper's are.

Several variants with one label are seeds of one setting (the gpu sweeps): the curve frames average them
(``seed_mean``, through ``frame.average_seeds`` as the tables do: the mean plus ``<value>_min`` /
``<value>_max`` and ``seeds`` columns), and the charts draw the mean with a min–max band or error bars.
With one seed per label frames and charts are unchanged.

``save_chart(chart, name, profile, data)`` names the profile under the title and writes
``figures/<profile>/<name>.{png,svg,csv}`` under the output
root (see ``tables.output_root``); the CSV is the chart's data, so every figure can be re-plotted
or checked without re-running anything.
"""
from __future__ import annotations

import io
import math
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from sparsedepth.atomic import atomic_write_bytes, atomic_write_text
from sparsedepth.paper.analysis.frame import average_seeds
from sparsedepth.paper.pipeline.run_result import RunResult, lookup
from sparsedepth.paper.report.png import recompress
from sparsedepth.paper.report.tables import check_name, format_value, output_root, set_output_root

__all__ = [
    "MAX_POINTS", "OURS", "PAPER", "use_theme", "save_chart", "figure_dir", "set_output_root",
    "config_value", "label_of", "order_of", "density_label", "downsample", "seed_mean",
    "telemetry_frame", "last_layer_variance_frame", "layer_variance_frame", "probe_layer_frame",
    "paper_jacobian_frame", "compare_long", "weight_density_frame", "attention_frame", "density_frame",
    "expert_load_frame", "recipe_frame", "theory_frame", "probe_profile_frame", "matrix_frame",
    "line_chart", "variance_chart", "per_layer_chart", "heatmap_chart", "compare_bars_chart", "sweep_chart",
    "recipe_chart", "expert_load_chart", "theory_chart", "scorecard_chart", "probe_profile_chart",
    "with_profile", "jacobian_chart", "token_count",
]

MAX_POINTS = 300  # per curve, after aggregation
RATIO_AXIS = 10.0  # a "÷ first setting" panel's axis spans ratios up to 10; larger ones sit at its top edge
OURS, PAPER = "ours", "paper"
SOURCE_COLORS = {OURS: "#d95f02", PAPER: "#7f7f7f"}
STATUS_COLORS = {"holds": "#1b9e77", "contradicted": "#d62728", "inconclusive": "#e6ab02", "missing": "#bbbbbb"}
# Ordered sweeps: plasma runs dark blue, purple, pink, orange, so neighbours (λ = 0, 0.01, 0.1) differ in hue,
# not only in lightness as on viridis; its pale yellow end is dropped.
_SEQ = {"name": "plasma", "extent": [0.0, 0.82]}
# Dash patterns by series for curves that can coincide (variance after the final norm): both stay visible.
DASHES = [[1, 0], [7, 3], [2, 2], [9, 3, 2, 3], [4, 4], [12, 2]]
# A five-pointed star (unit size) for usefulness markers: Vega has no built-in star symbol.
STAR = ("M0,-1L0.224,-0.309L0.951,-0.309L0.363,0.118L0.588,0.809L0,0.382L-0.588,0.809L-0.363,0.118"
        "L-0.951,-0.309L-0.224,-0.309Z")
RESIDUAL, POSTNORM = "residual stream h_L (layer_var[-1])", "after final norm (final_var, official log)"
LAYER_TITLE = "layer ℓ (output of block ℓ, 1-based)"
METRIC_TITLES = {"ppl": "validation perplexity", "usefulness": "usefulness (fraction of useful layers)",
                 "causal": "causal score", "permutation": "permutation score",
                 "variance_end": "last-layer variance, raw h_L (end)",
                 "variance_peak": "last-layer variance, raw h_L (peak)",
                 "postnorm_end": "last-layer variance after final norm, N_f(h_L) (end)",
                 "postnorm_peak": "last-layer variance after final norm, N_f(h_L) (peak)",
                 "loss_ratio": "mean per-layer loss ratio (usefulness probe)",
                 "jacobian_mean": "mean ||J − I||_F / d", "acc": "average accuracy (%)"}


# ----------------------------------------------------------------------------------------------- theme
def _theme() -> dict:
    return {
        "config": {
            "view": {"continuousWidth": 360, "continuousHeight": 230, "stroke": "#dddddd"},
            "font": "DejaVu Sans, Helvetica, Arial, sans-serif",
            "title": {"fontSize": 14, "fontWeight": "bold", "anchor": "start", "subtitleFontSize": 11,
                      "subtitleColor": "#555555", "offset": 8},
            "axis": {"labelFontSize": 11, "titleFontSize": 12, "gridColor": "#eeeeee", "titleFontWeight": "normal",
                     "labelOverlap": True},
            "legend": {"labelFontSize": 11, "titleFontSize": 11, "symbolSize": 80, "labelLimit": 260},
            "header": {"labelFontSize": 12, "titleFontSize": 12},
            "line": {"strokeWidth": 2},
            "point": {"size": 40, "filled": True},
            "background": "white",
        }
    }


def use_theme() -> None:
    """Register and enable the package's chart theme (idempotent)."""
    if "sparsedepth" not in alt.theme.names():
        alt.theme.register("sparsedepth", enable=False)(_theme)
    alt.theme.enable("sparsedepth")


use_theme()
# Charts display as SVG rendered in the kernel (vl-convert), not as HTML that loads vega from a CDN: they
# show offline in JupyterLab, in the HTML reports (sparsedepth.paper.report.html) and on code hosts.
alt.renderers.enable("svg")


# ------------------------------------------------------------------------------------------------ save
def figure_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/figures/<profile>``."""
    check_name(profile, "profile")
    return (Path(root).expanduser() if root is not None else output_root()) / "figures" / profile


def _chart_data(chart: alt.TopLevelMixin) -> pd.DataFrame | None:
    """The first DataFrame attached to a chart or any of its sub-charts."""
    stack: list[Any] = [chart]
    while stack:
        c = stack.pop(0)
        d = getattr(c, "data", None)
        if isinstance(d, pd.DataFrame):
            return d
        for attr in ("layer", "hconcat", "vconcat", "concat"):
            sub = getattr(c, attr, None)
            if isinstance(sub, list):
                stack.extend(sub)
        spec = getattr(c, "spec", None)
        if spec is not None and not isinstance(spec, (dict, str)):
            stack.append(spec)
    return None


def with_profile(chart: alt.TopLevelMixin, profile: str) -> alt.TopLevelMixin:
    """The chart with "profile: <profile>" as the last subtitle line, so a smoke or cpu figure never passes
    for a gpu one (a copy; the chart passed in is unchanged)."""
    title = chart.title
    if isinstance(title, alt.TitleParams):
        text, sub = title.text, title.subtitle
    else:
        text, sub = ("" if title is alt.Undefined else title), alt.Undefined
    lines = [] if sub is alt.Undefined else [sub] if isinstance(sub, str) else list(sub)
    return chart.properties(title=alt.TitleParams(text, subtitle=[*lines, f"profile: {profile}"]))


def save_chart(chart: alt.TopLevelMixin, name: str, profile: str, data: pd.DataFrame | None = None, *,
               root: str | os.PathLike | None = None, scale: float = 1.5) -> dict[str, Path]:
    """Write ``figures/<profile>/<name>.png`` (vl-convert, ``scale``x), ``.svg`` and ``.csv`` (``data``, or the
    chart's own DataFrame when ``data`` is None), the profile named under the title (``with_profile``). Each
    file is written atomically; returns the paths."""
    check_name(name, "figure name")
    if not isinstance(chart, alt.TopLevelMixin):
        raise TypeError(f"save_chart({name!r}): expected an altair chart, got {type(chart).__name__}")
    if data is None:
        data = _chart_data(chart)
    if data is None or not isinstance(data, pd.DataFrame):
        raise ValueError(f"save_chart({name!r}): pass the plotted DataFrame as data= (the chart holds none)")
    if data.empty:
        raise ValueError(f"save_chart({name!r}): the chart's data is empty; check the results that were loaded")
    out = figure_dir(profile, root)
    chart = with_profile(chart, profile)
    png, svg = io.BytesIO(), io.StringIO()
    chart.save(png, format="png", scale_factor=scale)
    chart.save(svg, format="svg")
    paths = {"png": out / f"{name}.png", "svg": out / f"{name}.svg", "csv": out / f"{name}.csv"}
    atomic_write_bytes(paths["png"], recompress(png.getvalue()))
    atomic_write_text(paths["svg"], svg.getvalue())
    atomic_write_text(paths["csv"], data.to_csv(index=False, float_format=_csv_float))
    return paths


def _csv_float(v: float) -> str:
    """A plotted float in a figure's CSV: 6 significant digits (what a reader can take off a plot, and a third of
    the bytes of full precision), whole numbers such as token counts in full."""
    return repr(float(v)) if not math.isfinite(v) or float(v).is_integer() else f"{v:.6g}"


# --------------------------------------------------------------------------------- results helpers
def config_value(run: RunResult, key: str) -> Any:
    """A dotted config key of one variant, e.g. ``"model.n_layers"`` (:meth:`RunResult.config_value`)."""
    return run.config_value(key)


def label_of(results: Mapping[str, RunResult], variant: str) -> str:
    """The display label of a variant (its metadata ``label``; the variant name when there is none)."""
    return results[variant].label if variant in results else variant


def order_of(results: Mapping[str, RunResult], key: str | None = None) -> list[str]:
    """Labels in the experiment's order (``load_results`` keeps the paper's order, sorted by the swept value),
    or sorted by the config value ``key`` when given; each label once (seeds of a setting share one)."""
    names = list(results)
    if key is not None:
        names = sorted(names, key=lambda n: (config_value(results[n], key), names.index(n)))
    return list(dict.fromkeys(label_of(results, n) for n in names))


def density_label(rho: float) -> str:
    """1 -> "ρ = 1", 0.125 -> "ρ = 1/8"."""
    f = Fraction(float(rho)).limit_denominator(1024)
    return f"ρ = {f.numerator}" if f.denominator == 1 else f"ρ = {f.numerator}/{f.denominator}"


def downsample(df: pd.DataFrame, x: str, by: Sequence[str] = (), max_points: int = MAX_POINTS) -> pd.DataFrame:
    """At most ``max_points`` rows per group: rows are binned into equal-width bins of ``x`` and every numeric
    column is averaged within a bin (the bin's x is the mean x of its rows). Groups that fit are unchanged."""
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if df.empty:
        return df.copy()
    by = list(by)
    parts = []
    groups = df.groupby(by, sort=False, dropna=False) if by else [((), df)]
    for key, g in groups:
        if len(g) <= max_points:
            parts.append(g)
            continue
        xs = g[x].to_numpy(dtype=float)
        edges = np.linspace(xs.min(), xs.max(), max_points + 1)
        b = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, max_points - 1)
        num = [c for c in g.columns if c not in by and pd.api.types.is_numeric_dtype(g[c])]
        agg = g[num].groupby(b).mean()
        other = [c for c in g.columns if c not in by and c not in num]
        if other:
            agg = agg.join(g[other].groupby(b).first())
        key = key if isinstance(key, tuple) else (key,)
        for k, v in zip(by, key):
            agg[k] = v
        parts.append(agg[list(g.columns)])
    return pd.concat(parts, ignore_index=True)


def seed_mean(df: pd.DataFrame, value: str, keys: Sequence[str], *, label: str = "label") -> pd.DataFrame:
    """Average the seeds of each setting for a figure (:func:`frame.average_seeds`): the rows of the variants
    sharing ``keys`` (which include the ``label`` column, e.g. label, step) become one row with the mean
    ``value``, ``<value>_min`` / ``<value>_max`` and ``seeds``. Returned unchanged when no ``label`` has two
    variants, so single-seed figures and their CSVs stay exactly as they were."""
    if df.empty or df.groupby(label)["variant"].nunique().max() <= 1:
        return df
    keys = list(keys)
    if label not in keys:
        raise ValueError(f"seed_mean: keys {keys} must include the label column {label!r}")
    out = average_seeds(df, value, keys)
    return out[list(df.columns) + [f"{value}_min", f"{value}_max", "seeds"]]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ------------------------------------------------------------------------------- results -> frames
def telemetry_frame(results: Mapping[str, RunResult], key: str = "layer_var", *,
                    max_steps: int | None = MAX_POINTS) -> pd.DataFrame:
    """Per-layer telemetry ``key`` (a list [L] per telemetry step) as rows (variant, label, step, layer, value);
    layer is 1-based (layer ℓ = output of block ℓ-1). Steps are downsampled to ``max_steps`` per layer."""
    rows = []
    for v, run in results.items():
        for step, vals in run.telemetry(key):
            if isinstance(vals, list):
                rows += [{"variant": v, "label": run.label, "step": step, "layer": i + 1, "value": float(x)}
                         for i, x in enumerate(vals) if _finite(x)]
    df = pd.DataFrame(rows, columns=["variant", "label", "step", "layer", "value"])
    return downsample(df, "step", ["variant", "label", "layer"], max_steps) if max_steps else df


def last_layer_variance_frame(results: Mapping[str, RunResult], *, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Last-layer variance vs step, both definitions: ``layer_var[-1]`` (raw residual stream h_L, what the
    paper's argument is about) and ``final_var`` (after the final RMSNorm with its gain, what the official
    code logged as "last layer"; paper-spec 1.1). Rows (variant, label, step, series, variance); seeds of
    one label are averaged (``seed_mean``)."""
    rows = []
    for v, run in results.items():
        for series, points in ((RESIDUAL, run.last_layer_var_series()), (POSTNORM, run.postnorm_var_series())):
            rows += [{"variant": v, "label": run.label, "step": step, "series": series, "variance": float(x)}
                     for step, x in points if _finite(x)]
    df = pd.DataFrame(rows, columns=["variant", "label", "step", "series", "variance"])
    # Seeds of one setting log the same steps, so their downsampled bins line up step for step.
    return seed_mean(downsample(df, "step", ["variant", "label", "series"], max_points), "variance",
                     ["label", "series", "step"])


def layer_variance_frame(results: Mapping[str, RunResult], *, max_steps: int = 40) -> pd.DataFrame:
    """Per-layer output variance over training for a heatmap: (variant, label, step, layer, variance), steps
    aggregated into at most ``max_steps`` bins per layer; seeds of one label averaged (``seed_mean``)."""
    df = telemetry_frame(results, "layer_var", max_steps=max_steps)
    df["step"] = _snap(df["step"], max_steps)  # bin centres on a round grid: regular ordinal labels
    return seed_mean(df.rename(columns={"value": "variance"}), "variance", ["label", "step", "layer"])


def _snap(steps: pd.Series, bins: int) -> pd.Series:
    """Steps rounded to multiples of a round width (1, 2 or 5 x 10^k) near (largest step) / ``bins``, so an
    ordinal axis reads 0, 50, 100 … instead of 140, 290, 435."""
    top = float(steps.max()) if len(steps) else 0.0
    raw = max(top / max(bins, 1), 1.0)
    mag = 10 ** math.floor(math.log10(raw))
    width = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return (np.round(steps / width) * width).astype(int)


def probe_layer_frame(results: Mapping[str, RunResult], path: str, *,
                      value_name: str = "value") -> pd.DataFrame:
    """A per-layer probe list (e.g. ``"jacobian.jacobian_norm"``) as rows (variant, label, layer, value);
    layer is 1-based (block index + 1). Variants without that probe are left out."""
    rows = []
    for v in results:
        vals = results[v].probe(path)
        if isinstance(vals, list):
            rows += [{"variant": v, "label": label_of(results, v), "layer": i + 1, value_name: float(x)}
                     for i, x in enumerate(vals) if _finite(x)]
    return pd.DataFrame(rows, columns=["variant", "label", "layer", value_name])


def paper_jacobian_frame(paper_curves: Mapping[Any, Sequence[float]], results: Mapping[str, RunResult] | None = None,
                         ) -> pd.DataFrame:
    """The paper's ||J − I||_F / d curves (``PAPER["depth"]["jacobian"]``: depth -> values for blocks 1 … L−2)
    beside ours: rows (source, depth, layer, value). Ours come from ``results`` (probes jacobian_norm), keyed
    by the paper depth each variant stands for (its ``meta.paper_label``), so colours pair up across panels;
    seeds of one depth are averaged (``seed_mean``; the paper's rows have no range)."""
    results = results or {}
    stands = {run.label: run.paper_label for run in results.values()}
    ours = seed_mean(probe_layer_frame(results, "jacobian.jacobian_norm"), "value", ["label", "layer"])
    extra = [c for c in ours.columns if c not in ("variant", "label", "layer", "value")]
    rows = [{"source": OURS, "depth": stands[r["label"]], "layer": r["layer"], "value": r["value"],
             "ours": r["label"], **{c: r[c] for c in extra}} for r in ours.to_dict("records")]  # ours first: left
    for depth, vals in paper_curves.items():
        rows += [{"source": PAPER, "depth": f"L={depth}", "layer": i + 2, "value": float(x), "ours": ""}
                 for i, x in enumerate(vals) if _finite(x)]  # block b = i+1 -> 1-based layer b+1
    df = pd.DataFrame(rows, columns=["source", "depth", "layer", "value", "ours", *extra])
    if "seeds" in df.columns:  # the paper's rows have no seed count: keep the column integer, not float
        df["seeds"] = df["seeds"].astype("Int64")
    return df


def compare_long(compare_df: pd.DataFrame, metrics: Sequence[str], relative: Sequence[str] = ()) -> pd.DataFrame:
    """``scorecard.compare`` (one row per variant, ``paper_<m>`` / ``ours_<m>`` columns) -> rows (variant,
    setting, metric, source, value, shown). ``setting`` is the paper's label, with ours beside it where the
    profile scales the value ("L=3 ≙ L=16"). ``shown`` is what the bar chart draws: the value, or for the
    ``relative`` metrics value ÷ the same source's value at the first setting with a non-zero value, so that
    trends compare across scales (our PPL of a tiny model is 270, the paper's 15; variance 0.08 vs 300).
    Where ``compare_df`` has our range across seeds (``ours_<m>_min`` / ``ours_<m>_max``), the rows gain
    ``value_min`` / ``value_max`` and ``shown_min`` / ``shown_max`` (scaled as ``shown``; NaN for the paper)."""
    need = {"variant", "ours", "paper"}
    if not need <= set(compare_df.columns):
        raise ValueError(f"expected scorecard.compare output with columns {sorted(need)}, "
                         f"got {list(compare_df.columns)}")
    unknown = [m for m in relative if m not in metrics]
    if unknown:
        raise ValueError(f"relative metrics {unknown} are not among the metrics {list(metrics)}")
    spread = any(f"ours_{m}_min" in compare_df.columns for m in metrics)
    num = lambda v: float(v) if _finite(v) else float("nan")  # noqa: E731
    rows = []
    for r in compare_df.to_dict("records"):
        setting = r["paper"] if str(r["ours"]) == str(r["paper"]) else f"{r['ours']} ≙ {r['paper']}"
        for m in metrics:
            for src in (OURS, PAPER):
                row = {"variant": r["variant"], "setting": setting, "metric": m, "source": src,
                       "value": num(r.get(f"{src}_{m}"))}
                if spread:
                    row["value_min"], row["value_max"] = (num(r.get(f"{src}_{m}_{b}")) for b in ("min", "max"))
                rows.append(row)
    cols = ["variant", "setting", "metric", "source", "value"] + (["value_min", "value_max"] if spread else [])
    df = pd.DataFrame(rows, columns=cols)
    df["shown"] = df["value"]
    if spread:
        df["shown_min"], df["shown_max"] = df["value_min"], df["value_max"]
    for (m, src), g in df[df.metric.isin(list(relative))].groupby(["metric", "source"], sort=False):
        base = next((v for v in g["value"] if math.isfinite(v) and v != 0), None)
        for col in ("shown", "shown_min", "shown_max") if spread else ("shown",):
            df.loc[g.index, col] = g[col.replace("shown", "value")] / base if base else float("nan")
    return df


def weight_density_frame(results: Mapping[str, RunResult], x_key: str | None = None) -> pd.DataFrame:
    """Weight density ρ(τ) = fraction of |W_ij| > τ·std(W), mean over layers, per variant and τ (probes
    ``sparsity.weight_density.per_layer``): rows (variant, label, x, tau, density, gaussian)."""
    rows = []
    for v, run in results.items():
        wd = run.probe("sparsity.weight_density") or {}
        ref = wd.get("gaussian_reference", {})
        for tau, vals in (wd.get("per_layer") or {}).items():
            vals = [float(x) for x in vals if _finite(x)]
            if vals:
                rows.append({"variant": v, "label": label_of(results, v),
                             "x": config_value(run, x_key) if x_key else label_of(results, v),
                             "tau": f"τ = {tau}", "density": float(np.mean(vals)),
                             "gaussian": float(ref[tau]) if _finite(ref.get(tau)) else float("nan")})
    return pd.DataFrame(rows, columns=["variant", "label", "x", "tau", "density", "gaussian"])


# The two readings of attention sparsity in probes.json: every model on probe windows of one length, and each
# model at its own training context (results probed before that reading existed have only the first).
ATTENTION_READINGS = (("sparsity.attention", "probe windows (one length for all)"),
                      ("sparsity.attention_train_T", "each model's own context T"))


def attention_frame(results: Mapping[str, RunResult], x_key: str = "seq_len") -> pd.DataFrame:
    """Attention entropy (nats) and effective support exp(H)/(t+1), mean over layers, for each reading of
    ``ATTENTION_READINGS`` a run has: rows (variant, label, x, reading, quantity, value)."""
    rows = []
    for v, run in results.items():
        for path, reading in ATTENTION_READINGS:
            att = run.probe(path) or {}
            for key, name in (("entropy", "attention entropy H (nats)"),
                              ("support", "effective support exp(H)/(t+1)")):
                vals = [float(x) for x in att.get(key) or [] if _finite(x)]
                if vals:
                    rows.append({"variant": v, "label": label_of(results, v), "x": config_value(run, x_key),
                                 "reading": reading, "quantity": name, "value": float(np.mean(vals))})
    return pd.DataFrame(rows, columns=["variant", "label", "x", "reading", "quantity", "value"])


def density_frame(results: Mapping[str, RunResult], compare_df: pd.DataFrame | None = None,
                  density: str = "kv") -> pd.DataFrame:
    """The explicit sparsity of each variant beside what it should explain: nominal density (probes
    ``sparsity.nominal_density[density]``: "kv" = 1/G, "experts" = k/E), last-layer variance at the end of
    training and usefulness (from ``scorecard.compare``). Rows (variant, label, quantity, value)."""
    names = {"kv": "nominal KV density 1/G", "experts": "nominal expert density k/E"}
    rows = []
    ours = {r["variant"]: r for r in compare_df.to_dict("records")} if compare_df is not None else {}
    for v, run in results.items():
        lab = label_of(results, v)
        nd = run.probe(f"sparsity.nominal_density.{density}")
        if _finite(nd):
            rows.append({"variant": v, "label": lab, "quantity": names.get(density, density), "value": float(nd)})
        for m, name in (("ours_variance_end", "last-layer variance (end)"), ("ours_usefulness", "usefulness")):
            val = ours.get(v, {}).get(m)
            if _finite(val):
                rows.append({"variant": v, "label": lab, "quantity": name, "value": float(val)})
    return pd.DataFrame(rows, columns=["variant", "label", "quantity", "value"])


def expert_load_frame(results: Mapping[str, RunResult], *, source: str = "probes") -> pd.DataFrame:
    """Expert load per (variant, layer, expert), normalised so that 1 = a uniform share (f_e · E). ``source``:
    "probes" (held-out windows, ``sparsity.expert.load``) or "metrics" (last training telemetry step).
    Dense variants are left out."""
    if source not in ("probes", "metrics"):
        raise ValueError(f"source must be 'probes' or 'metrics', got {source!r}")
    rows = []
    for v, run in results.items():
        if source == "probes":
            loads = run.probe("sparsity.expert.load")
        else:
            logged = [x for _, x in run.telemetry("expert_load") if isinstance(x, list)]
            loads = logged[-1] if logged else None
        if not isinstance(loads, list):
            continue
        for li, layer in enumerate(loads):
            arr = np.asarray(layer, dtype=float)
            tot = arr.sum()
            if arr.size == 0 or not tot > 0:
                continue
            rows += [{"variant": v, "label": label_of(results, v), "layer": li + 1, "expert": e,
                      "load": float(x / tot * arr.size)} for e, x in enumerate(arr)]
    return pd.DataFrame(rows, columns=["variant", "label", "layer", "expert", "load"])


def token_count(n: float | None) -> str:
    """52428800 -> "52M" (training tokens, for labels); "?" when unknown."""
    if n is None or not _finite(n):
        return "?"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def _same_label(a: Any, b: Any) -> bool:
    """Labels equal up to how their numbers are written ("+wd1" and "+wd1.0")."""
    norm = lambda v: re.sub(r"\d+(?:\.\d+)?", lambda m: f"{float(m.group()):g}", str(v))  # noqa: E731
    return norm(a) == norm(b)


def recipe_frame(compare_df: pd.DataFrame, reference: Mapping | None = None,
                 ours_reference: Mapping | None = None, *, acc_se: Mapping[str, float | None] | None = None,
                 reference_tokens: float | None = None) -> pd.DataFrame:
    """``scorecard.compare(profile, "recipe")`` -> rows (step, source, acc, acc_se, usefulness, kept) for
    ``recipe_chart``. ``reference`` = the paper's L=16 reference ({"acc", "usefulness"}); ``ours_reference``
    = ours ({"acc" (%), "usefulness", optional "acc_se"}), both drawn first; ``reference_tokens`` (our
    reference's training tokens) goes into its label, since it trained on another budget than the recipe.
    ``acc_se`` = {our variant: standard error of its accuracy in points} (``frame.acc_standard_error``)."""
    rows = []
    ref_label = "L=16 reference" + (f" ({token_count(reference_tokens)} tokens)" if reference_tokens else "")
    acc_se = acc_se or {}
    if reference:
        rows.append({"step": ref_label, "source": PAPER, "acc": reference.get("acc"),
                     "usefulness": reference.get("usefulness"), "kept": True})
        if ours_reference:
            rows.append({"step": ref_label, "source": OURS, "acc": ours_reference.get("acc"),
                         "acc_se": ours_reference.get("acc_se"), "usefulness": ours_reference.get("usefulness"),
                         "kept": True})
    for r in compare_df.to_dict("records"):
        step = r["paper"] if _same_label(r["ours"], r["paper"]) else f"{r['paper']} (ours {r['ours']})"
        for src in (PAPER, OURS):
            rows.append({"step": step, "source": src, "acc": r.get(f"{src}_acc"),
                         "acc_se": acc_se.get(r.get("variant")) if src == OURS else None,
                         "usefulness": r.get(f"{src}_usefulness"), "kept": bool(r.get("kept"))})
    df = pd.DataFrame(rows, columns=["step", "source", "acc", "acc_se", "usefulness", "kept"])
    for c in ("acc", "acc_se", "usefulness"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def theory_frame(rows: Iterable[Mapping], quantity: str = "variance") -> pd.DataFrame:
    """``theory.simulate`` rows -> long frame (density, label, layer, kind, value) with the simulated
    ``quantity`` and its closed-form prediction ``<quantity>_pred`` as two kinds; extra columns of the
    rows (e.g. a "setting" added by the caller) are kept."""
    df = pd.DataFrame(list(rows))
    need = {"density", "layer", quantity, f"{quantity}_pred"}
    if not need <= set(df.columns):
        raise ValueError(f"theory rows need columns {sorted(need)}, got {sorted(df.columns)}")
    keep = [c for c in df.columns if c not in need and not pd.api.types.is_numeric_dtype(df[c])]  # e.g. setting
    sim = df[["density", "layer", quantity, *keep]].rename(columns={quantity: "value"}).assign(kind="simulated")
    pred = df[["density", "layer", f"{quantity}_pred", *keep]].rename(columns={f"{quantity}_pred": "value"})
    out = pd.concat([sim, pred.assign(kind="closed form")], ignore_index=True)
    out.insert(1, "label", out["density"].map(density_label))
    for c in keep:  # keep the caller's order of settings (facet order), not the alphabetical one
        out[c] = pd.Categorical(out[c], categories=list(dict.fromkeys(df[c])), ordered=True)
    out = out.sort_values([*keep, "density", "kind", "layer"], ascending=[True] * len(keep) + [False, True, True],
                          ignore_index=True)
    for c in keep:
        out[c] = out[c].astype(str)
    return out


PROBE_CURVES = {  # probes.json path -> (panel title, log y)
    "variance.layer_var": ("output variance of h_ℓ", True),
    "jacobian.jacobian_norm": ("||J − I||_F / d", True),
    "usefulness.loss_ratio": ("loss ratio when linearised (useful > 1.1)", False),
    "causal.per_layer": ("causal effect of skipping ℓ on later layers", False),
    "block_influence": ("block influence 1 − cos(h_(ℓ−1), h_ℓ)", False),
    "logit_lens.loss": ("logit-lens loss at ℓ (nats)", False),
    "sparsity.attention.support": ("attention effective support exp(H)/(t+1)", False),
}


def probe_profile_frame(probes: Mapping) -> pd.DataFrame:
    """One probes.json dict -> rows (quantity, layer, value) of every per-layer curve in ``PROBE_CURVES``
    that is present (layer 1-based)."""
    rows = []
    for path, (name, _) in PROBE_CURVES.items():
        vals = lookup(probes, path)
        if isinstance(vals, list):
            rows += [{"quantity": name, "layer": i + 1, "value": float(x)} for i, x in enumerate(vals) if _finite(x)]
    for tau, vals in (lookup(probes, "sparsity.weight_density.per_layer") or {}).items():
        rows += [{"quantity": f"weight density ρ(τ={tau})", "layer": i + 1, "value": float(x)}
                 for i, x in enumerate(vals) if _finite(x)]
    return pd.DataFrame(rows, columns=["quantity", "layer", "value"])


def matrix_frame(matrix: Sequence[Sequence[float]], row: str = "row", col: str = "col") -> pd.DataFrame:
    """A square matrix (list of lists) -> rows (row, col, value), 1-based indices."""
    rows = [{row: i + 1, col: j + 1, "value": float(x)} for i, r in enumerate(matrix) for j, x in enumerate(r)
            if _finite(x)]
    return pd.DataFrame(rows, columns=[row, col, "value"])


# ------------------------------------------------------------------------------------------- charts
def _color(field: str, order: Sequence[str] | None, title: str, sequential: bool | str = True) -> alt.Color:
    """Colour by ``field`` in ``order``: a sequential scale for sweeps (True), the default categories (False),
    or a named Vega scheme (e.g. "paired" for dense/MoE pairs)."""
    if order is None:
        return alt.Color(f"{field}:N", title=title)
    order = list(order)
    if isinstance(sequential, str):
        scale = alt.Scale(domain=order, scheme=sequential)
    else:
        scale = alt.Scale(domain=order, scheme=_SEQ) if sequential else alt.Scale(domain=order)
    return alt.Color(f"{field}:N", sort=order, scale=scale, title=title)


def _source_color(title: str = "") -> alt.Color:
    return alt.Color("source:N", title=title or None,
                     scale=alt.Scale(domain=list(SOURCE_COLORS), range=list(SOURCE_COLORS.values())))


def _title(title: str, subtitle: str | None = None) -> alt.TitleParams:
    return alt.TitleParams(title, subtitle=subtitle) if subtitle else alt.TitleParams(title)


def _plottable(df: pd.DataFrame, col: str, log: bool, what: str) -> pd.DataFrame:
    """Log axes cannot show values <= 0 (or NaN): drop them explicitly rather than let Vega fail silently;
    no plottable value at all is an error naming the chart."""
    vals = pd.to_numeric(df[col], errors="coerce")
    keep = np.isfinite(vals) & ((vals > 0) if log else True)
    if not keep.any():
        raise ValueError(f"{what}: no plottable values in column {col!r}"
                         + (" (a log axis needs values > 0)" if log else "") + "; check the results that were loaded")
    return df[keep]


def _band(df: pd.DataFrame, y: str) -> tuple[str, str] | None:
    """The (min, max) columns ``seed_mean`` adds for ``y``, when the frame has them."""
    lo, hi = f"{y}_min", f"{y}_max"
    return (lo, hi) if lo in df.columns and hi in df.columns else None


def _tooltip(df: pd.DataFrame, n: int = 7) -> list:
    return [alt.Tooltip(c, format=".4g") if pd.api.types.is_float_dtype(df[c]) else alt.Tooltip(c)
            for c in df.columns[:n]]


def line_chart(df: pd.DataFrame, x: str, y: str, color: str, *, title: str, x_title: str, y_title: str,
               order: Sequence[str] | None = None, color_title: str = "", log_x: bool = False,
               log_y: bool = False, points: bool = False, dash: str | None = None, facet: str | None = None,
               columns: int | None = None, subtitle: str | None = None, independent: str | None = None,
               sequential: bool | str = True, band: tuple[str, str] | None = None, width: int = 360,
               height: int = 230, dash_by_color: bool = False, y_domain: Sequence[float] | None = None,
               x_domain: Sequence[float] | None = None) -> alt.TopLevelMixin:
    """The workhorse: one line per ``color`` value with an ordered colour scale, optional dashed ``dash``
    series and ``facet`` panels (``independent`` = "x", "y" or "xy": per-panel scales). ``band`` = (low,
    high) columns adds a translucent band of each line's colour between them (e.g. the range across seeds);
    rows where they are NaN get none. ``dash_by_color`` gives each series its own dash pattern as well
    (curves that coincide stay visible); ``y_domain`` / ``x_domain`` fix the axes (points outside are clipped)."""
    data = _plottable(df, y, log_y, f"line chart {title!r}")
    if band and log_y:  # a log axis cannot draw a bound <= 0: narrow the band to the line there instead
        data = data.assign(**{band[0]: data[band[0]].where(data[band[0]] > 0, data[y])})
    # nice=False: a log axis rounded out to whole decades squeezes a curve that spans 1 to 1.6 into a line
    y_scale = alt.Scale(type="log", nice=False) if log_y else alt.Scale(zero=False)
    x_scale = alt.Scale(type="log") if log_x else alt.Scale(zero=False)
    if y_domain is not None:
        y_scale.domain = list(y_domain)
    if x_domain is not None:
        x_scale.domain = list(x_domain)
    enc = dict(
        x=alt.X(f"{x}:Q", title=x_title, scale=x_scale,
                axis=alt.Axis(tickMinStep=1, format="d") if x == "layer" else alt.Axis()),
        y=alt.Y(f"{y}:Q", title=y_title, scale=y_scale),
        color=_color(color, order, color_title or color, sequential=sequential),
        tooltip=_tooltip(data),
    )
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title=dash)
    elif dash_by_color and order is not None:  # same field, title and order as the colour: one merged legend
        enc["strokeDash"] = alt.StrokeDash(f"{color}:N", sort=list(order), title=color_title or color,
                                           scale=alt.Scale(domain=list(order),
                                                           range=[DASHES[i % len(DASHES)] for i in range(len(order))]))
    if band and not points:  # a layered legend draws filled swatches: keep the plain chart's line symbols
        enc["color"] = enc["color"].copy()
        enc["color"].legend = alt.Legend(symbolType="stroke")
    chart = alt.Chart(data).mark_line(point=bool(points), clip=True).encode(**enc)
    if band:
        area = alt.Chart(data).mark_area(opacity=0.2, clip=True).encode(
            x=enc["x"], y=alt.Y(f"{band[0]}:Q", title=y_title, scale=y_scale, stack=None),
            y2=alt.Y2(f"{band[1]}:Q"), color=enc["color"], **({"detail": alt.Detail(f"{dash}:N")} if dash else {}))
        # Lines first, so the merged legend shows their symbols; both layers draw the same frame, which
        # Altair lifts to the layer, as facet() needs.
        chart = alt.layer(chart, area)
    chart = chart.properties(width=width, height=height)
    if facet:
        chart = chart.facet(alt.Facet(f"{facet}:N", title=None, sort=list(dict.fromkeys(data[facet]))),
                            columns=columns or 2)
        if independent:
            chart = chart.resolve_scale(**{a: "independent" for a in independent})
    return chart.properties(title=_title(title, subtitle))


def variance_chart(df: pd.DataFrame, order: Sequence[str], *, sweep_title: str, title: str,
                   subtitle: str | None = None, log_y: bool = True, sequential: bool | str = True) -> alt.TopLevelMixin:
    """Last-layer variance vs training step (``last_layer_variance_frame``), one line per variant; one panel
    per definition (raw residual stream, post-final-norm as the official code logged it). Several seeds per
    label: the line is their mean and a band their min–max range."""
    return line_chart(df, "step", "variance", "label", order=order, color_title=sweep_title, title=title,
                      subtitle=subtitle, x_title="training step",
                      y_title="last-layer variance (mean over tokens of Var_d)", log_y=log_y, facet="series",
                      columns=2, independent="y", sequential=sequential, band=_band(df, "variance"),
                      points=bool(len(df)) and df.groupby(["label", "series"]).size().max() <= 40,
                      dash_by_color=True)


def per_layer_chart(df: pd.DataFrame, order: Sequence[str] | None, *, y: str = "value", color: str = "label",
                    y_title: str, title: str, sweep_title: str, subtitle: str | None = None, log_y: bool = False,
                    facet: str | None = None) -> alt.TopLevelMixin:
    """A per-layer probe (rows label, layer, value) against the layer index, one line per variant; a band
    where the frame has the range across seeds (``<y>_min`` / ``<y>_max``, see ``seed_mean``)."""
    return line_chart(df, "layer", y, color, order=order, color_title=sweep_title, title=title, subtitle=subtitle,
                      x_title=LAYER_TITLE, y_title=y_title, log_y=log_y, points=True, facet=facet,
                      independent="x" if facet else None, band=_band(df, y))


def jacobian_chart(df: pd.DataFrame, order: Sequence[str], *, title: str, sweep_title: str = "depth (paper's L)",
                   y_title: str = "||J − I||_F / d") -> alt.TopLevelMixin:
    """``paper_jacobian_frame`` as two panels (ours, the paper) on one x range and a log y axis fitted to
    blocks 2 onwards: our block 1 sits one to two orders of magnitude above the rest (the paper's figure
    leaves it out) and would squeeze every other block into a sliver; the subtitle gives the values it leaves
    off the axis."""
    inner = df[(df["layer"] > 1) & (df["value"] > 0)]["value"]
    if inner.empty:
        inner = df[df["value"] > 0]["value"]
    lo, hi = float(inner.min()) / 1.25, float(inner.max()) * 1.25
    off = df[(df["value"] > hi) | (df["value"] < lo)]
    note = "log y; lower = closer to an identity map"
    if not off.empty:
        where = ", ".join(f"{s} block {int(l)}" for s, l in off[["source", "layer"]].drop_duplicates()
                          .groupby("source")["layer"].min().items())
        note += (f"; off the axis ({where}): {format_value(float(off['value'].min()), 2)} to "
                 f"{format_value(float(off['value'].max()), 2)}")
    return line_chart(df, "layer", "value", "depth", order=order, color_title=sweep_title, title=title,
                      subtitle=note, x_title=LAYER_TITLE, y_title=y_title, log_y=True, points=True, facet="source",
                      band=_band(df, "value"), y_domain=(lo, hi), x_domain=(1, int(df["layer"].max())))


def heatmap_chart(df: pd.DataFrame, *, x: str, y: str, value: str, title: str, x_title: str, y_title: str,
                  value_title: str, facet: str | None = None, order: Sequence[str] | None = None,
                  log_color: bool = True, subtitle: str | None = None, columns: int = 2, scheme: str = "viridis",
                  width: int = 260, height: int = 200) -> alt.TopLevelMixin:
    """A rect heatmap of ``value`` over (``x``, ``y``), optionally one panel per ``facet`` value (shared
    colour scale, so panels compare)."""
    data = _plottable(df, value, log_color, f"heatmap {title!r}")
    chart = alt.Chart(data).mark_rect().encode(
        x=alt.X(f"{x}:O", title=x_title, axis=alt.Axis(labelAngle=0, labelOverlap=True)),
        y=alt.Y(f"{y}:O", title=y_title, sort="descending" if y == "step" else "ascending",
                axis=alt.Axis(labelOverlap=True)),
        color=alt.Color(f"{value}:Q", title=value_title,
                        scale=alt.Scale(type="log" if log_color else "linear", scheme=scheme)),
        tooltip=_tooltip(data),
    ).properties(width=width, height=height)
    if facet:
        chart = chart.facet(alt.Facet(f"{facet}:N", title=None,
                                      sort=list(order) if order else list(dict.fromkeys(data[facet]))),
                            columns=columns).resolve_scale(x="independent", y="independent")
    return chart.properties(title=_title(title, subtitle))


def compare_bars_chart(df: pd.DataFrame, *, title: str, x_title: str, subtitle: str | None = None,
                       metric_titles: Mapping[str, str] | None = None, log_metrics: Sequence[str] = (),
                       relative: Sequence[str] = (), width: int = 200, height: int = 200) -> alt.TopLevelMixin:
    """Ours beside the paper (``compare_long``): one panel per metric, grouped bars per setting with
    ``source`` in {"ours", "paper"} side by side, drawing column ``shown``. ``relative`` metrics (as passed to
    ``compare_long``) are titled "÷ first setting" and drawn as dots on a linear axis with a dashed line at 1;
    ``log_metrics`` (the others) get a log y axis when every value is positive (bars then start at a power of
    ten below the smallest value); a value of 0 is labelled "0". Where the frame has our range
    across seeds (``shown_min`` / ``shown_max``, see ``compare_long``), black error bars mark it."""
    y_col = "shown" if "shown" in df.columns else "value"
    lo, hi = f"{y_col}_min", f"{y_col}_max"
    data = df[np.isfinite(pd.to_numeric(df[y_col], errors="coerce"))]
    if data.empty:
        raise ValueError(f"bar chart {title!r}: no values to compare (every metric missing for ours and the paper)")
    order = list(dict.fromkeys(df["setting"]))
    panels = []
    for m in dict.fromkeys(df["metric"]):
        d = data[data.metric == m]
        if d.empty:
            continue
        name = {**METRIC_TITLES, **(metric_titles or {})}.get(m, m) + (" ÷ first setting" if m in relative else "")
        log = m in log_metrics and bool((d[y_col] > 0).all())
        enc = dict(
            x=alt.X("setting:N", title=x_title, sort=order,
                    axis=alt.Axis(labelAngle=-35, labelLimit=260, labelOverlap=False)),
            xOffset=alt.XOffset("source:N", sort=list(SOURCE_COLORS)),
            y=alt.Y(f"{y_col}:Q", title=name, scale=alt.Scale(type="log") if log else alt.Undefined),
            color=_source_color(),
            tooltip=_tooltip(d),
        )
        if m in relative:  # ratios near 1: dots on a linear axis, so a 1-8 % gap is visible; dashed line at 1
            enc["y"] = alt.Y(f"{y_col}:Q", title=name, scale=alt.Scale(zero=False, padding=14))
            far = d[y_col] > RATIO_AXIS  # ratios fall to 0 on a linear axis; only a blow-up is pinned
            if far.any() and not far.all():  # an outlier (the paper's λ=3 collapse, 49x) would flatten the rest:
                near = d.loc[~far, y_col]     # pin it to the axis edge and print its value there
                lo, hi = min(float(near.min()), 1.0), max(float(near.max()), 1.0)
                pad = 0.1 * (hi - lo) or 0.05
                enc["y"] = alt.Y(f"{y_col}:Q", title=name, scale=alt.Scale(domain=[lo - pad, hi + pad], clamp=True))
            one = alt.Chart(pd.DataFrame({y_col: [1.0]})).mark_rule(strokeDash=[4, 3], color="#555555").encode(
                y=enc["y"])
            panel = alt.layer(one, alt.Chart(d).mark_point(filled=True, size=110, opacity=1).encode(**enc))
            if far.any() and not far.all():
                out = d[far].assign(note=[f"{format_value(float(v), 3)} ↑" for v in d.loc[far, y_col]])
                panel = alt.layer(panel, alt.Chart(out).mark_text(dx=-4, align="right", fontSize=11).encode(
                    x=enc["x"], xOffset=enc["xOffset"], y=enc["y"], text="note:N", color=_source_color()))
        else:
            if log:  # a log axis has no zero: start the bars at a power of ten below the smallest value
                enc["y2"] = alt.datum(10 ** math.floor(math.log10(float(d[y_col].min()))))
            panel = alt.Chart(d).mark_bar().encode(**enc)
            zeros = d[d[y_col] == 0]
            if not zeros.empty and not log:  # a zero draws no bar: label it, so it does not read as missing
                panel = alt.layer(panel, alt.Chart(zeros).mark_text(dy=-8, fontSize=12, fontWeight="bold").encode(
                    x=enc["x"], xOffset=enc["xOffset"], y=alt.Y(f"{y_col}:Q", title=name), text=alt.value("0"),
                    color=_source_color()))
        if lo in d.columns and hi in d.columns:
            ranged = d[np.isfinite(d[lo]) & np.isfinite(d[hi])]
            if not ranged.empty:
                panel = alt.layer(panel, alt.Chart(ranged).mark_rule(color="black", strokeWidth=1.5).encode(
                    x=enc["x"], xOffset=enc["xOffset"], y=alt.Y(f"{lo}:Q", title=name), y2=alt.Y2(f"{hi}:Q"),
                    tooltip=_tooltip(ranged, n=len(ranged.columns))))
        panels.append(panel.properties(width=max(width, 46 * len(order)), height=height, title=name))
    return alt.hconcat(*panels).properties(title=_title(title, subtitle))


def sweep_chart(df: pd.DataFrame, *, x: str, y: str = "value", color: str | None = None, title: str,
                x_title: str, y_title: str, order: Sequence[str] | None = None, color_title: str = "",
                x_order: Sequence[Any] | None = None, log_y: bool = False, facet: str | None = None,
                subtitle: str | None = None, columns: int = 3, sequential: bool = False, rule: str | None = None,
                width: int = 240, height: int = 200) -> alt.TopLevelMixin:
    """A measured quantity against the swept setting (ordinal x, so λ = 0 and T on a doubling grid both read
    well), lines + points; optional colour series, facet panels (independent y) and a dashed reference
    line per colour from column ``rule`` (e.g. the Gaussian reference density)."""
    data = _plottable(df, y, log_y, f"sweep chart {title!r}")
    enc = dict(
        x=alt.X(f"{x}:O", title=x_title, sort=list(x_order) if x_order is not None else "ascending",
                axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(type="log") if log_y else alt.Scale(zero=False)),
        tooltip=_tooltip(data),
    )
    if color:
        enc["color"] = _color(color, order, color_title or color, sequential=sequential)
    base = alt.Chart(data)
    chart = base.mark_line(point=True).encode(**enc)
    if rule:
        ref = base.mark_rule(strokeDash=[4, 3], opacity=0.6).encode(
            y=alt.Y(f"mean({rule}):Q"), **({"color": enc["color"]} if color else {}))
        chart = alt.layer(chart, ref)
    chart = chart.properties(width=width, height=height)
    if facet:
        chart = chart.facet(alt.Facet(f"{facet}:N", title=None, sort=list(dict.fromkeys(data[facet]))),
                            columns=columns).resolve_scale(y="independent")
    return chart.properties(title=_title(title, subtitle))


def recipe_chart(df: pd.DataFrame, *, title: str, subtitle: str | None = None, order: Sequence[str] | None = None,
                 width: int = 560, height: int = 260) -> alt.TopLevelMixin:
    """The 32-layer recipe ablation (``recipe_frame``): bars of average downstream accuracy (%) per step,
    ours beside the paper, with ±1 standard error where ``acc_se`` is known; gold stars mark usefulness
    (right axis); rejected options are faded."""
    need = {"step", "source", "acc", "usefulness", "kept"}
    if not need <= set(df.columns):
        raise ValueError(f"recipe chart needs columns {sorted(need)}, got {sorted(df.columns)}")
    _plottable(df, "acc", False, f"recipe chart {title!r}")
    order = list(order) if order is not None else list(dict.fromkeys(df["step"]))
    x = alt.X("step:N", sort=order, title=None, axis=alt.Axis(labelAngle=-35, labelLimit=220, labelOverlap=False))
    xo = alt.XOffset("source:N", sort=list(SOURCE_COLORS))
    fade = alt.Scale(domain=[True, False], range=[1.0, 0.35])
    base = alt.Chart(df).encode(x=x, xOffset=xo)
    bars = base.mark_bar().encode(
        y=alt.Y("acc:Q", title="average downstream accuracy (%)", scale=alt.Scale(zero=False)),
        color=_source_color(),
        opacity=alt.Opacity("kept:N", scale=fade,
                            legend=alt.Legend(title="option", labelExpr="datum.value ? 'kept' : 'rejected'")),
        tooltip=_tooltip(df),
    ).transform_filter("isValid(datum.acc)")
    if "acc_se" in df.columns and df["acc_se"].notna().any():  # ±1 standard error where it is known
        bars = alt.layer(bars, base.mark_errorbar(ticks=True, color="black").encode(
            y=alt.Y("acc_lo:Q", title="average downstream accuracy (%)", scale=alt.Scale(zero=False)),
            y2=alt.Y2("acc_hi:Q")).transform_filter("isValid(datum.acc_se)").transform_calculate(
            acc_lo="datum.acc - datum.acc_se", acc_hi="datum.acc + datum.acc_se"))
    # Gold stars with a black outline stay visible on both bar colours.
    stars = base.mark_point(shape=STAR, size=160, filled=True, fill="#ffd92f", stroke="black",
                            strokeWidth=0.8).encode(
        y=alt.Y("usefulness:Q", title="usefulness ★ (fraction of useful layers)", scale=alt.Scale(domain=[0, 1])),
        opacity=alt.Opacity("kept:N", scale=alt.Scale(domain=[True, False], range=[1.0, 0.45]), legend=None),
        tooltip=_tooltip(df),
    ).transform_filter("isValid(datum.usefulness)")
    return alt.layer(bars, stars).resolve_scale(y="independent").properties(
        width=width, height=height, title=_title(title, subtitle))


def expert_load_chart(df: pd.DataFrame, *, title: str, subtitle: str | None = None,
                      order: Sequence[str] | None = None) -> alt.TopLevelMixin:
    """Expert load per (layer, expert), 1 = uniform share; one panel per MoE variant."""
    return heatmap_chart(df, x="expert", y="layer", value="load", title=title, subtitle=subtitle,
                         x_title="expert", y_title="layer ℓ", value_title="load ÷ uniform share",
                         facet="label", order=order, log_color=False, scheme="purpleorange")


def theory_chart(df: pd.DataFrame, *, y_title: str, title: str, subtitle: str | None = None,
                 log_y: bool = True, facet: str | None = None) -> alt.TopLevelMixin:
    """Simulated curves (solid) with the closed form overlaid (dashed), one colour per density
    (``theory_frame``); ``facet`` e.g. a "setting" column for plain vs 1/√ρ-compensated."""
    labels = list(dict.fromkeys(df.sort_values("density", ascending=False)["label"]))
    data = _plottable(df, "value", log_y, f"theory chart {title!r}")
    chart = alt.Chart(data).mark_line().encode(
        x=alt.X("layer:Q", title="depth ℓ (blocks)", scale=alt.Scale(zero=False),
                axis=alt.Axis(format="d", tickMinStep=1)),
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(type="log") if log_y else alt.Scale(zero=False)),
        color=_color("label", labels, "mask density"),
        strokeDash=alt.StrokeDash("kind:N", title=None, sort=["simulated", "closed form"],
                                  scale=alt.Scale(domain=["simulated", "closed form"], range=[[1, 0], [5, 3]])),
        tooltip=_tooltip(data),
    ).properties(width=340, height=230)
    if facet:
        chart = chart.facet(alt.Facet(f"{facet}:N", title=None, sort=list(dict.fromkeys(data[facet]))),
                            columns=2)
    return chart.properties(title=_title(title, subtitle))


def scorecard_chart(df: pd.DataFrame, *, title: str, subtitle: str | None = None) -> alt.TopLevelMixin:
    """The claims scorecard (``scorecard.scorecard``): one row per claim, grouped by experiment, coloured by
    status (holds / contradicted / inconclusive / missing)."""
    need = {"experiment", "claim", "status"}
    if not need <= set(df.columns) or df.empty:
        raise ValueError(f"scorecard chart needs a non-empty frame with columns {sorted(need)}")
    data = df.assign(row=df["experiment"] + ": " + df["claim"])
    return alt.Chart(data).mark_rect(stroke="white").encode(
        y=alt.Y("row:N", title=None, sort=list(data["row"]), axis=alt.Axis(labelLimit=420)),
        x=alt.X("status:N", title=None, sort=list(STATUS_COLORS), scale=alt.Scale(domain=list(STATUS_COLORS)),
                axis=alt.Axis(labelAngle=0, labelOverlap=False, orient="top")),  # every column, even an empty one
        color=alt.Color("status:N", scale=alt.Scale(domain=list(STATUS_COLORS), range=list(STATUS_COLORS.values())),
                        title="status"),
        tooltip=[c for c in ("id", "claim", "rule", "status", "effect", "se", "noise", "ours", "paper", "detail")
                 if c in data.columns],
    ).properties(width=300, height=alt.Step(16), title=_title(title, subtitle))


def probe_profile_chart(df: pd.DataFrame, *, title: str, subtitle: str | None = None, columns: int = 3,
                        width: int = 230, height: int = 160) -> alt.TopLevelMixin:
    """Every per-layer curve of one probed model (``probe_profile_frame``), one small panel each, log y
    where the quantity spans orders of magnitude (variance, ||J − I||)."""
    logs = {name for name, log in PROBE_CURVES.values() if log}
    panels = []
    for q in dict.fromkeys(df["quantity"]):
        d = _plottable(df[df.quantity == q], "value", q in logs, f"panel {q!r}")
        c = SOURCE_COLORS[OURS]
        panels.append(alt.Chart(d).mark_line(point=alt.OverlayMarkDef(color=c), color=c).encode(
            x=alt.X("layer:Q", title="layer ℓ", scale=alt.Scale(zero=False),
                    axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(type="log") if q in logs else alt.Scale(zero=False)),
            tooltip=_tooltip(d),
        ).properties(width=width, height=height, title=alt.TitleParams(q, fontSize=12)))
    if not panels:
        raise ValueError(f"probe profile {title!r}: no per-layer probe results to draw")
    rows = [alt.hconcat(*panels[i:i + columns]) for i in range(0, len(panels), columns)]
    return alt.vconcat(*rows).properties(title=_title(title, subtitle))
