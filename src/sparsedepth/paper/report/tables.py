"""Tables of the paper's numbers and ours: write a DataFrame as Markdown and CSV, atomically.

Files go to ``<root>/paper_results/<profile>/tables/<name>.{md,csv}``. ``root`` defaults to the output root
(``set_output_root``, else the ``SPARSEDEPTH_OUTPUT_ROOT`` environment variable, else the checkout that holds
the package, else the current folder: the rule of ``sparsedepth.paper.pipeline.results``), so notebooks
executed from ``notebooks/`` still write into the repo.
The Markdown is rendered here (no ``tabulate`` dependency); the CSV keeps full precision.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from sparsedepth.atomic import atomic_write_text
from sparsedepth.paper.analysis.scorecard import READINGS, SCALE
from sparsedepth.paper.analysis.trend import FLAT, NO, YES
from sparsedepth.paper.analysis.scorecard import counts as status_counts
from sparsedepth.paper.pipeline.run_result import RunResult

__all__ = ["write_table", "to_markdown", "format_value", "output_root", "set_output_root", "table_dir",
           "check_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ROOT: Path | None = None


def check_name(value: str, what: str) -> str:
    """A file-name component: letters, digits, ``_ . -``; anything else (slashes, spaces) is an error."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{what} must be a simple name of letters, digits, '_', '.' or '-' "
                         f"(for example 'depth_scores'), got {value!r}")
    return value


def set_output_root(root: str | os.PathLike | None) -> Path | None:
    """Send figures and tables of this process under ``root`` (None: back to the default)."""
    global _ROOT
    _ROOT = None if root is None else Path(root).expanduser().resolve()
    return _ROOT


def output_root() -> Path:
    """Folder under which ``figures/`` and ``paper_results/`` live: ``set_output_root``, else the rule of
    ``sparsedepth.paper.pipeline.results.output_root`` ($SPARSEDEPTH_OUTPUT_ROOT, else the checkout, else the
    current folder), so figures, tables and run results always land in the same tree."""
    if _ROOT is not None:
        return _ROOT
    from sparsedepth.paper.pipeline.results import output_root as results_root

    return results_root()


def table_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/paper_results/<profile>/tables``."""
    check_name(profile, "profile")
    base = Path(root).expanduser() if root is not None else output_root()
    return base / "paper_results" / profile / "tables"


def format_value(v: Any, digits: int = 4) -> str:
    """Readable cell text: ``digits`` significant digits for floats, an en dash for missing values."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.{digits}g}"
    try:
        if pd.isna(v):
            return "–"
    except (TypeError, ValueError):
        pass
    if hasattr(v, "item"):  # numpy scalar
        return format_value(v.item(), digits)
    return str(v)


def to_markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    cols = [str(c) for c in df.columns]
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(format_value(v, digits)) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, name: str, profile: str, *, root: str | os.PathLike | None = None,
                title: str | None = None, digits: int = 4, notes: str | None = None) -> dict[str, Path]:
    """Write ``df`` to ``paper_results/<profile>/tables/<name>.md`` and ``.csv``; returns both paths.

    ``title`` (optional) becomes a Markdown heading above the table, ``notes`` (optional Markdown, e.g. the
    column definitions and units) a block between the heading and the table; the CSV holds the data alone.
    """
    check_name(name, "table name")
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"write_table({name!r}): expected a pandas DataFrame, got {type(df).__name__}")
    if df.empty:
        raise ValueError(f"write_table({name!r}): the table is empty; nothing to write (check the results loaded)")
    out = table_dir(profile, root)
    md = (f"### {title}\n\n" if title else "") + (f"{notes.strip()}\n\n" if notes else "") + to_markdown(df, digits)
    paths = {"md": out / f"{name}.md", "csv": out / f"{name}.csv"}
    atomic_write_text(paths["md"], md)
    atomic_write_text(paths["csv"], df.to_csv(index=False))
    return paths


# ------------------------------------------------------------------------------------ text for notebooks
_MARK = {"holds": "✔ **holds**", "contradicted": "✘ **contradicted**", "inconclusive": "? **inconclusive**",
         "missing": "– **missing**"}


def _clip(text: Any, n: int = 220) -> str:
    s = format_value(text) if not isinstance(text, str) else text
    return s if len(s) <= n else s[: n - 1] + "…"


def claims_markdown(df: pd.DataFrame, *, what: str = "these claims", profile: str | None = None) -> str:
    """The claims of a scorecard frame (``scorecard.scorecard``) as Markdown: a one-line tally, then one
    bullet per claim with its effect ± standard error, every reading's verdict, our numbers, the paper's, the
    rule that decided it and, where the sweep was probed along training, whether it moves toward the paper with
    scale (long cells are clipped)."""
    need = {"claim", "status", "effect", "se", "noise", "ours", "paper", "rule", "detail"}
    if not need <= set(df.columns):
        raise ValueError(f"expected a scorecard frame with columns {sorted(need)}, got {list(df.columns)}")
    n = len(df)
    counts = status_counts(df)
    where = f" at profile `{profile}`" if profile else ""
    lines = [f"**{counts['holds']} of {n}** of {what} hold in our results{where} ({counts['contradicted']} "
             f"contradicted, {counts['inconclusive']} inconclusive, {counts['missing']} missing a result)."]
    if n == 0:
        lines = [f"No claims to check for {what}."]
    readings = [c for c in READINGS.values() if c in df.columns]
    for r in df.to_dict("records"):
        effect = "" if pd.isna(r["effect"]) else (f" Effect in the paper's direction {r['effect']:+.3g} ± "
                                                  f"{format_value(r['se'], 2)} ({r['noise']}).")
        also = "; ".join(f"{c}: {r[c]}" for c in readings if isinstance(r.get(c), str) and r[c])
        lines.append(f"- {_MARK.get(r['status'], r['status'])}: {r['claim']} (rule: {r['rule']}).{effect}"
                     + (f" Readings: {also}." if also else "")
                     + f" Ours: {_clip(r['ours']) or '–'}. Paper: {_clip(r['paper']) or '–'}."
                     + (f" {_clip(r['detail'])}." if r.get("detail") else "")
                     + (f" Moves toward the paper with scale: **{r[SCALE]}** ({_clip(r.get('scale trend'))})."
                        if r.get(SCALE) in (YES, NO, FLAT) else ""))
    return "\n".join(lines) + "\n"


def cached_json(name: str, profile: str, settings: dict, compute, *, force: bool = False,
                root: str | os.PathLike | None = None) -> Any:
    """``compute()``'s JSON-ready result, cached in ``paper_results/<profile>/<name>.json`` with the
    ``settings`` that produced it: reused when the settings match (and not ``force``), recomputed otherwise.
    For results that take minutes but are not training runs (the theory simulation)."""
    import json

    from sparsedepth.atomic import atomic_write_json

    check_name(name, "cache name")
    check_name(profile, "profile")
    path = (Path(root).expanduser() if root is not None else output_root()) / "paper_results" / profile / f"{name}.json"
    settings = json.loads(json.dumps(settings))  # normalise tuples and numbers as JSON would
    if path.is_file() and not force:
        try:
            blob = json.loads(path.read_text())
        except ValueError:
            blob = None
        if isinstance(blob, dict) and blob.get("settings") == settings:
            print(f"{name}: using the cached result in {path} (force=True recomputes)")
            return blob["result"]
        print(f"{name}: cached result in {path} has other settings; recomputing")
    result = compute()
    atomic_write_json(path, {"settings": settings, "result": result}, indent=None)  # committed: no whitespace
    return result


def results_note(statuses: dict[str, str], loaded: dict[str, RunResult], profile: str, experiment: str) -> str:
    """Markdown on what ``run_experiment`` did and what ``load_results`` found; raises with the fix when
    nothing at all can be plotted, and names every variant that is missing, failed or stale (never silent)."""
    if not loaded:
        raise RuntimeError(
            f"no results for {profile}/{experiment} under {output_root() / 'paper_results' / profile / experiment} "
            f"(run statuses: {statuses or 'none'}). Train them with `make reproduce PROFILE={profile}` or run this "
            f"notebook with train=True; `make figures` only plots results that already exist.")
    counts: dict[str, list[str]] = {}
    for v, s in statuses.items():
        counts.setdefault(s, []).append(v)
    parts = [f"{s}: {', '.join(vs)}" for s, vs in counts.items()]
    lines = [f"Runs of `{profile}/{experiment}`: " + ("; ".join(parts) if parts else "none") + "."]
    absent = [v for v in statuses if v not in loaded]
    stale = [v for v, r in loaded.items() if r.stale]
    if absent:
        lines.append(f"**Not plotted (no results): {', '.join(absent)}.**")
    if stale:
        lines.append(f"**Stale (config or results version changed since they ran), plotted anyway: "
                     f"{', '.join(stale)}.**")
    return "\n\n".join(lines) + "\n"


def theory_verdict(summaries: dict[str, dict], depth: int) -> str:
    """Markdown verdict of the variance-propagation simulation: ``summaries`` = {setting: theory.summarize
    (rows)} with a "plain masks" and (optionally) a compensated setting."""
    plain = summaries.get("plain masks")
    if not plain:
        raise ValueError(f"theory_verdict needs a 'plain masks' summary, got settings {list(summaries)}")
    dens = sorted(plain, key=float, reverse=True)
    fin = [plain[r]["final_variance"] for r in dens]
    slope = [plain[r]["growth_slope"] for r in dens]
    lab = lambda r: format_value(float(r))  # noqa: E731
    mono = all(a > b for a, b in zip(fin, fin[1:]))
    lines = [
        f"- **Variance growth vs density ({'agrees' if mono else 'does not agree'} with the claim).** "
        f"Variance after {depth} blocks: " + ", ".join(f"ρ={lab(r)}: {format_value(v)}" for r, v in zip(dens, fin))
        + f"; {'strictly decreasing' if mono else 'not monotone'} as ρ falls. Fitted growth slope per block: "
        + ", ".join(f"ρ={lab(r)}: {format_value(s)}" for r, s in zip(dens, slope))
        + f" (ratio ρ=1 / ρ={lab(dens[-1])}: {format_value(slope[0] / slope[-1]) if slope[-1] else '∞'}).",
        "- **Closed form.** Largest relative error of the predicted variance over all layers: "
        + ", ".join(f"ρ={lab(r)}: {plain[r]['max_rel_err_variance']:.1%}" for r in dens) + ".",
    ]
    comp = next((v for k, v in summaries.items() if k != "plain masks"), None)
    if comp:
        cf = [comp[r]["final_variance"] for r in sorted(comp, key=float, reverse=True)]
        spread = max(cf) / min(cf) - 1 if min(cf) > 0 else float("inf")
        plain_spread = max(fin) / min(fin) - 1 if min(fin) > 0 else float("inf")
        why = ("so the effect is the mask's variance reduction" if spread < 0.25 * plain_spread else
               "so the compensation does not remove the difference: more than the variance reduction is at work")
        lines.append(f"- **1/√ρ-compensated control.** Final variance spread across densities: {spread:.1%} "
                     f"(plain masks: {plain_spread:.0%}), {why}.")
    jac = [plain[r]["deep_jacobian_dist"] for r in dens]
    further = jac[-1] > jac[0]
    why = "" if further else (" (the mask shrinks the sublayer Jacobian by more than the smaller stream variance "
                              "enlarges the normalisation's derivative)")
    lines.append("- **Jacobians.** Mean ||J − I||_F/d over the deepest quarter: "
                 + ", ".join(f"ρ={lab(r)}: {format_value(j)}" for r, j in zip(dens, jac))
                 + f"; sparser stacks are {'further from' if further else 'not further from'} the identity at "
                 f"random init{why}.")
    return "\n".join(lines) + "\n"


def side_by_side(long: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A long paper-vs-ours frame (``plots.compare_long`` rows: ``keys`` …, source, value) as one row per key
    with ``paper`` and ``ours`` columns, in the order the rows came (pivot_table would sort, and with
    dropna=False form every combination of the keys). Where the frame has our range across seeds
    (``value_min`` / ``value_max``), ``ours`` is the seed mean and ``ours_min`` / ``ours_max`` follow it."""
    need = set(keys) | {"source", "value"}
    if not need <= set(long.columns):
        raise ValueError(f"side_by_side needs columns {sorted(need)}, got {list(long.columns)}")
    out = long[keys].drop_duplicates().reset_index(drop=True)
    index = pd.MultiIndex.from_frame(out[keys])
    columns = [("paper", "paper", "value"), ("ours", "ours", "value")]
    if {"value_min", "value_max"} <= set(long.columns):
        columns += [("ours", "ours_min", "value_min"), ("ours", "ours_max", "value_max")]
    for src, name, col in columns:
        part = long[long["source"] == src].drop_duplicates(keys).set_index(keys)[col]
        out[name] = part.reindex(index).to_numpy()
    return out
