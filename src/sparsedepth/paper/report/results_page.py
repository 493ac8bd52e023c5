"""The results page: ``paper_results/<profile>/RESULTS.md``, every figure and table of the paper beside ours.

Written from the committed tables (``tables/paper_vs_ours.csv``, ``tables/scorecard.csv``, and
``tables/theory_summary.md``), figures (``figures/<profile>/*.png``) and the results' records (which of them
earlier code made), so it needs no training and no GPU:
the summary notebook calls :func:`write_results` after writing those tables, and
``python -m sparsedepth.paper.report.results_page --profile gpu`` rewrites it alone. It also writes the paper-vs-ours
table split per experiment (``tables/paper_vs_ours_<experiment>.{md,csv}``, each with its column
definitions and units), and the README's results block (:func:`readme_block`), so no result number is typed
by hand.

Sections follow the paper (paper-spec section 3, then the theory of section 4): for each, what the paper
shows (its numbers, ``sparsedepth.paper``), our figures (relative links that render on a code host), our
numbers beside the paper's, and the verdict of every claim with its effect and standard error.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..spec import experiments as ex
from ..spec import reported as paper
from ...atomic import atomic_write_text
from ..analysis.scorecard import READINGS, SCALE, STATUSES
from ..analysis.trend import FLAT, NO, YES
from ..pipeline.results import experiments_with_results, stale_results
from .rungs import RUNGS
from .tables import check_name, format_value, output_root, table_dir, to_markdown, write_table

__all__ = ["SECTIONS", "COLUMNS", "UNITS", "write_results", "results_markdown", "experiment_tables",
           "readme_block", "update_readme", "README_BEGIN", "README_END"]

# What each column of a paper_vs_ours table means (the header block above every per-experiment table).
COLUMNS = {
    "variant": "our run's name (a folder under paper_results/<profile>/<experiment>/)",
    "setting": "the swept value of our run; where our scale differs, the paper's row it stands for",
    "metric": "what is measured (defined in the list of units below)",
    "paper": "the paper's number for that setting (tables exact; figure values read off its plots, approximate); "
             "– where the paper reports none",
    "ours": "our number (the mean over seeds where several ran)",
    "ours_min": "smallest value over our seeds (equal to ours for a single run)",
    "ours_max": "largest value over our seeds",
}
UNITS = {
    "ppl": "validation perplexity, exp of the mean token cross-entropy in nats (no unit; lower is better)",
    "usefulness": "fraction of layers whose linear replacement raises the loss by more than 10 % (0 to 1)",
    "loss_ratio": "mean over layers of the loss with that layer linearly replaced ÷ the model's loss (no unit)",
    "causal": "causal score: mean relative change of later layers' residual updates when one layer is skipped "
              "(no unit)",
    "permutation": "permutation score: mean over layer pairs of |loss change| ÷ loss when the two layers swap "
                   "(no unit; higher = layers more specialised)",
    "variance_peak": "largest last-layer variance of the raw residual stream h_L during training (activation units²)",
    "variance_end": "last-layer variance of the raw residual stream h_L at the end of training (activation units²)",
    "postnorm_peak": "largest variance of N_f(h_L), the final norm's output, during training (activation units²); "
                     "the paper's column is its logged last-layer variance",
    "postnorm_end": "variance of N_f(h_L) at the end of training (activation units²)",
    "jacobian_mean": "mean over layers of ||J − I||_F / d, the block Jacobian's distance from the identity (no unit)",
    "acc": "mean zero-shot accuracy over the downstream sets (% of questions)",
}


@dataclass(frozen=True)
class Section:
    """One figure or table of the paper: where it is in the paper, its experiment, the metrics it shows,
    our figures for it and the claims that judge it (scorecard ids)."""
    title: str
    paper_source: str
    experiment: str
    metrics: tuple[str, ...]
    figures: tuple[str, ...]
    claims: tuple[str, ...]


SECTIONS = (
    Section("Depth: last-layer variance during training", "§3.1, final_layer_variance.png", "depth",
            ("variance_peak", "variance_end", "postnorm_peak", "postnorm_end"),
            ("depth_last_layer_variance", "depth_layer_variance"), ("depth.variance",)),
    Section("Depth: ||J − I|| per layer", "§3.1, jacobian_depth_comparison.png", "depth", ("jacobian_mean",),
            ("depth_jacobian",), ("depth.jacobian_index", "depth.jacobian_depth")),
    Section("Depth: layer effectiveness scores", "§3.1, scores_comparison.png", "depth",
            ("usefulness", "loss_ratio", "causal", "permutation", "ppl"), ("depth_scores", "depth_usefulness_readings"),
            ("depth.usefulness", "depth.permutation", "depth.causal")),
    Section("Weight decay", "§3.2, table and WD.png", "weight_decay",
            ("ppl", "usefulness", "loss_ratio", "variance_peak", "variance_end", "postnorm_peak", "postnorm_end"),
            ("weight_decay_scores", "weight_decay_last_layer_variance", "weight_decay_weight_density",
             "weight_decay_usefulness_readings"),
            ("weight_decay.",)),
    Section("Sequence length", "§3.3, table and Length.png", "seqlen",
            ("ppl", "usefulness", "loss_ratio", "variance_peak", "variance_end", "postnorm_peak", "postnorm_end"),
            ("seqlen_scores", "seqlen_last_layer_variance", "seqlen_attention", "seqlen_usefulness_readings"),
            ("seqlen.",)),
    Section("Grouped-query attention", "§3.4, table and GQA.png", "gqa",
            ("ppl", "usefulness", "loss_ratio", "variance_peak", "variance_end", "postnorm_peak", "postnorm_end"),
            ("gqa_scores", "gqa_last_layer_variance", "gqa_density"), ("gqa.",)),
    Section("Mixture of experts", "§3.5, table, MoE-400M.png and MoE-1B.png", "moe",
            ("ppl", "usefulness", "loss_ratio", "variance_peak", "variance_end", "postnorm_peak", "postnorm_end"),
            ("moe_scores", "moe_last_layer_variance", "moe_density", "moe_expert_load"), ("moe.",)),
    Section("Recipe ablation at L=32", "§3.6, leading.png", "recipe", ("acc", "usefulness", "loss_ratio", "ppl"),
            ("recipe_ablation", "recipe_last_layer_variance"), ("recipe.",)),
)
PAPER_KEY_PREFIX = {"depth": "L=", "weight_decay": "λ=", "seqlen": "T=", "gqa": "G="}  # how a paper key reads
EXPERIMENT_TITLES = {"depth": "Depth", "weight_decay": "Weight decay", "seqlen": "Sequence length",
                     "gqa": "Grouped-query attention", "moe": "Mixture of experts", "recipe": "Recipe ablation"}
README_BEGIN = "<!-- results: generated by sparsedepth.paper.report.results_page; do not edit by hand -->"
README_END = "<!-- /results -->"
PROFILES = ("gpu", "cpu")  # the profiles whose results are committed, in the order the README shows them


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else output_root()


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}; write it with `make figures PROFILE=<profile>` "
                                f"(the summary notebook) first")
    return pd.read_csv(path)


def _paper_table(section: Section) -> pd.DataFrame | None:
    """The paper's own rows for this section's metrics, keyed by the paper's swept value."""
    rows = []
    for key, row in paper.rows(section.experiment).items():
        vals = {m: row.get(m) for m in section.metrics if row.get(m) is not None}
        if vals:
            name = row.get("label") or f"{PAPER_KEY_PREFIX.get(section.experiment, '')}{format_value(key)}"
            rows.append({"paper setting": name, **vals})
    if section.experiment == "depth" and "jacobian_mean" in section.metrics:
        rows = [{"paper setting": f"L={L}", "jacobian_mean": sum(c) / len(c)}
                for L, c in paper.PAPER["depth"]["jacobian"].items()]
    if section.experiment == "recipe":
        ref = paper.PAPER["recipe"]["reference"]
        rows.append({"paper setting": ref["label"], **{m: ref[m] for m in section.metrics if m in ref}})
    return pd.DataFrame(rows) if rows else None


def _ours_table(long: pd.DataFrame, experiment: str, metrics: tuple[str, ...]) -> pd.DataFrame:
    part = long[(long["experiment"] == experiment) & long["metric"].isin(metrics)]
    cols = [c for c in ("setting", "metric", "paper", "ours", "ours_min", "ours_max") if c in part.columns]
    part = part[cols].copy()
    part["metric"] = pd.Categorical(part["metric"], categories=list(metrics), ordered=True)
    order = list(dict.fromkeys(part["setting"]))
    part["_s"] = part["setting"].map({s: i for i, s in enumerate(order)})
    return part.sort_values(["metric", "_s"]).drop(columns="_s").assign(metric=lambda d: d["metric"].astype(str))


def _verdicts(card: pd.DataFrame, prefixes: tuple[str, ...]) -> str:
    rows = card[card["id"].map(lambda i: any(i == p or (p.endswith(".") and i.startswith(p)) for p in prefixes))]
    if rows.empty:
        return "_No claim of the scorecard judges this figure._\n"
    readings = [c for c in READINGS.values() if c in card.columns]
    lines = []
    for r in rows.to_dict("records"):
        effect = ("effect –" if pd.isna(r["effect"]) else
                  f"effect {r['effect']:+.3g} ± {format_value(r['se'], 2)} (s.e.; {r['noise']})")
        also = "; ".join(f"{c}: {r[c]}" for c in readings if isinstance(r.get(c), str) and r[c])
        scale = r.get(SCALE)
        lines.append(f"- **{r['status']}** — {r['claim']} (`{r['id']}`): {effect}."
                     + (f" Readings: {also}." if also else "") + f" Rule: {r['rule']}."
                     + (f" Moves toward the paper with scale: **{scale}** ({r.get('scale trend')})."
                        if scale in (YES, NO, FLAT) else ""))
    return "\n".join(lines) + "\n"


def _older_results(profile: str, root: Path) -> list[str]:
    """A paragraph on the results shown here that the current code would make differently (an older probe
    code version, say), or none: a reader should know which numbers a rerun would remake."""
    stale = stale_results(profile, root)
    if not stale:
        return []
    parts = [f"{why}: " + ", ".join(f"{EXPERIMENT_TITLES.get(e, e).lower()} {n}" for e, n in per.items())
             for why, per in stale.items()]
    total = sum(n for per in stale.values() for n in per.values())
    return [f"**Older results among these.** {total} results on this page were made by earlier code or settings "
            f"and are shown as they are ({'; '.join(parts)}). A new probe code version adds or redefines readings "
            "(`sparsedepth.probes.CODE_VERSION`); a reading those results lack shows as –. "
            f"`sparsedepth run --profile {profile} all --list` names each result and why; rerunning it remakes "
            "them.\n"]


def _figure(name: str, profile: str, root: Path) -> str:
    png = root / "figures" / profile / f"{name}.png"
    if not png.is_file():
        return f"_Figure `{name}` not generated for this profile._\n"
    return f"![{name} ({profile})](../../figures/{profile}/{name}.png)\n"


def _effect(effect: float, se: float) -> str:
    """An effect and its standard error as the page's tables write them ("–" where there is none)."""
    return "–" if pd.isna(effect) else f"{effect:+.3g} ± {format_value(se, 2)}"


def _along_training(experiment: str, profile: str, root: Path) -> list[str]:
    """A sweep's statistics along training (where runs were probed so) and the gpu rungs side by side per claim
    (where the rungs table was written), so the page shows what otherwise needs the notebooks. Empty where the
    profile has neither."""
    tdir = table_dir(profile, root)
    trends = tdir / f"{experiment}_trajectory_trends.md"
    captions = {
        "trajectories": "Each statistic against training tokens, a line per setting, probed at points spaced in log "
                        "tokens; dashed, a least-squares trend in log tokens (an extrapolation)"
                        + (f"; each trend's slope and where it reaches the paper's value: `tables/{trends.name}`"
                           if trends.is_file() else "") + ".\n",
        "usefulness_along_training": "What the usefulness score measures, along training on every rung: the "
                                     "official score's excess loss ratio over 1, split into the blocks' "
                                     "nonlinearity (the correct linear replacement's excess) and the transposition "
                                     "(official minus linear), means over layers.\n"}
    figs = {n: text for n, text in captions.items()
            if (root / "figures" / profile / f"{experiment}_{n}.png").is_file()}
    rungs = tdir / f"{experiment}_rungs.csv"
    if not figs and not rungs.is_file():
        return []
    out = ["**Along training and across the gpu rungs**\n"]
    for name, text in figs.items():
        out += [text, _figure(f"{experiment}_{name}", profile, root)]
    if rungs.is_file():
        table = pd.read_csv(rungs)
        table["tokens"] = [f"{t / 1e6:.0f}M" for t in table["tokens"]]
        table["effect ± s.e."] = [_effect(e, se) for e, se in zip(table["effect"], table["se"])]
        out += [f"The rungs side by side per claim (`tables/{rungs.with_suffix('.md').name}` adds each rung's "
                "numbers and the paper's):\n",
                to_markdown(table[["claim", "rung", "d_model", "tokens", "status", "effect ± s.e.", "with scale"]])]
    return out


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def results_markdown(profile: str, root: str | os.PathLike | None = None) -> str:
    """The text of ``paper_results/<profile>/RESULTS.md`` from the committed tables and figures."""
    check_name(profile, "profile")
    base = _root(root)
    tdir = table_dir(profile, base)
    long = _read_csv(tdir / "paper_vs_ours.csv", "paper-vs-ours table")
    card = _read_csv(tdir / "scorecard.csv", "scorecard")
    n = {s: int((card["status"] == s).sum()) for s in STATUSES}
    ran = ex.profile_experiments(profile)
    # the paper's numbering on every page; a rung's page leaves out the sweeps it does not run
    shown = [(f"{i}. {s.title}", s) for i, s in enumerate(SECTIONS, 1) if s.experiment in ran]
    heads = [h for h, _ in shown]
    out = [f"# The paper beside our results: profile `{profile}`\n",
           "Generated by `sparsedepth.paper.report.results_page` from `tables/paper_vs_ours.csv`, `tables/scorecard.csv` and "
           f"`figures/{profile}/` (`make figures PROFILE={profile}` rewrites it); do not edit by hand.\n",
           f"**Scorecard: {n['holds']} of {len(card)} claims hold, {n['contradicted']} contradicted, "
           f"{n['inconclusive']} inconclusive, {n['missing']} missing a result.** A claim *holds* when its effect "
           "in the paper's direction exceeds two standard errors, is *contradicted* when it exceeds them the "
           "other way, and is *inconclusive* otherwise (`sparsedepth.noise`). Effects of perplexity, variance "
           "and ||J − I|| are differences of natural logs (0.05 ≈ 5 %); scores and accuracy are plain "
           "differences. Column definitions and units: `tables/paper_vs_ours_<experiment>.md`.\n",
           *([] if len(ran) == len(ex.EXPERIMENTS) else
             [f"`{profile}` runs only the {' and '.join(EXPERIMENT_TITLES[e].lower() for e in ran)} "
              f"sweep{'s' if len(ran) > 1 else ''} "
              f"(`sparsedepth list --profile {profile}`), so this page holds those sections and their claims; "
              "the others are on the gpu profile's page, `paper_results/gpu/RESULTS.md`.\n"]),
           *_older_results(profile, base),
           "In the paper's order:\n", *[f"- [{h}](#{_anchor(h)})" for h in heads],
           f"- [Theory: variance propagation with masked sublayers](#{_anchor('9. Theory')})",
           f"- [All claims](#{_anchor('10. All claims')})\n"]
    for head, s in shown:
        out += [f"## {head}\n", f"Paper: {s.paper_source}.\n", "**What the paper shows**\n"]
        ptab = _paper_table(s)
        out.append(to_markdown(ptab) if ptab is not None else "_The paper reports no number for this figure._\n")
        out += ["**Our figures**\n", *[_figure(f, profile, base) for f in s.figures], "**Our numbers beside the "
                f"paper's** (units: `tables/paper_vs_ours_{s.experiment}.md`)\n"]
        ours = _ours_table(long, s.experiment, s.metrics)
        out.append(to_markdown(ours) if not ours.empty else "_No results of ours for this figure._\n")
        out += ["**Verdict**\n", _verdicts(card, s.claims)]
        if s is [t for _, t in shown if t.experiment == s.experiment][-1]:  # after the sweep's last section
            out += _along_training(s.experiment, profile, base)
    out += ["## 9. Theory\n", "Paper: §4 (the density argument; the paper shows no figure with numbers). Our "
            "simulation of Bernoulli(ρ)-masked sublayers:\n"]
    if profile in RUNGS[1:]:  # a simulation of no trained run: the rung leaves it to the gpu profile
        out.append(f"_The simulation depends on no trained run; `{profile}` leaves it to the gpu profile: "
                   f"`paper_results/gpu/RESULTS.md`, section 9._\n")
    else:
        out += [_figure("theory_variance", profile, base), _figure("theory_jacobian", profile, base)]
    theory = tdir / "theory_summary.csv"
    if theory.is_file():
        out.append(to_markdown(pd.read_csv(theory)))
    out += ["## 10. All claims\n", _figure("scorecard", profile, base),
            "The full table, with our numbers and the paper's for every claim: `tables/scorecard.md`.\n"]
    return "\n".join(out)


def experiment_tables(profile: str, root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Split ``tables/paper_vs_ours.csv`` into one table per experiment, each headed by its column
    definitions and the units of its metrics; returns {experiment: markdown path}."""
    long = _read_csv(table_dir(profile, _root(root)) / "paper_vs_ours.csv", "paper-vs-ours table")
    written = {}
    for exp, part in long.groupby("experiment", sort=False):
        part = part.drop(columns="experiment").reset_index(drop=True)
        notes = "Columns:\n\n" + "\n".join(f"- `{c}`: {COLUMNS[c]}" for c in part.columns if c in COLUMNS)
        notes += "\n\nMetrics and units:\n\n" + "\n".join(
            f"- `{m}`: {UNITS.get(m, m)}" for m in dict.fromkeys(part["metric"]))
        title = f"{EXPERIMENT_TITLES.get(exp, exp)}: the paper's numbers beside ours ({profile})"
        written[exp] = write_table(part, f"paper_vs_ours_{exp}", profile, root=root, title=title, notes=notes)["md"]
    return written


def write_results(profile: str, root: str | os.PathLike | None = None) -> Path:
    """Write the per-experiment tables and ``paper_results/<profile>/RESULTS.md``; returns the page's path."""
    experiment_tables(profile, root)
    path = _root(root) / "paper_results" / profile / "RESULTS.md"
    atomic_write_text(path, results_markdown(profile, root))
    return path


# ------------------------------------------------------------------------------------------- README block
def readme_block(root: str | os.PathLike | None = None, profiles: tuple[str, ...] = PROFILES) -> str:
    """The README's results block: per profile, a link to its page and the scorecard's verdict per claim."""
    base = _root(root)
    lines = [README_BEGIN]
    for profile in profiles:
        card = _read_csv(table_dir(profile, base) / "scorecard.csv", "scorecard")
        n = {s: int((card["status"] == s).sum()) for s in STATUSES}
        lines += ["", f"**Profile `{profile}`** ([results page](paper_results/{profile}/RESULTS.md)): "
                      f"{n['holds']} of {len(card)} claims hold, {n['contradicted']} contradicted, "
                      f"{n['inconclusive']} inconclusive, {n['missing']} missing.", "",
                  "| claim | verdict | effect ± s.e. |", "|---|---|---:|"]
        for r in card.to_dict("records"):
            eff = _effect(r["effect"], r["se"])
            claim = r["claim"].replace("|", "\\|")  # ||J - I|| would split the table's cells
            lines.append(f"| {claim} | {r['status']} | {eff} |")
    return "\n".join(lines + ["", README_END])


def update_readme(readme: str | os.PathLike, root: str | os.PathLike | None = None) -> bool:
    """Replace the README's results block by :func:`readme_block`; returns whether the file changed."""
    path = Path(readme)
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{path} has no results block; put the lines {README_BEGIN!r} and {README_END!r} "
                         "where it belongs")
    head, rest = text.split(README_BEGIN, 1)
    new = head + readme_block(root) + rest.split(README_END, 1)[1]
    if new != text:
        atomic_write_text(path, new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sparsedepth.paper.report.results_page", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="append", help="profile(s) to write (default: gpu and cpu)")
    ap.add_argument("--readme", action="store_true", help="also rewrite the README's results block")
    args = ap.parse_args(argv)
    try:
        for profile in args.profile or PROFILES:
            if not experiments_with_results(profile):  # a gpu rung before its runs: nothing to write
                print(f"no results at profile {profile} yet (nothing has been run); no results page written")
                continue
            print(write_results(profile))
        if args.readme:
            readme = output_root() / "README.md"
            print(f"{readme}: {'updated' if update_readme(readme) else 'already up to date'}")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
