"""The gpu rungs side by side: one table per claim, a row per rung (tokens and width), from each rung's scorecard.

The rungs change one axis of the gpu profile each: ``gpu-long`` the training tokens, ``gpu-wide`` the width.
:func:`rung_tables` reads ``paper_results/<profile>/tables/scorecard.csv`` of every rung that has one (a rung
not run yet is left out, a claim a rung does not test reads "not run") and returns ``{claim id: table}``: per
rung its width, its tokens per run in that claim's experiment, the verdict, the effect with its standard error,
whether it moves toward the paper with training tokens (the scorecard's column, from the rung's trajectories)
and our values, beside the paper's value (the same for every rung). :func:`rungs_markdown` renders them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..analysis.scorecard import SCALE
from ..spec import experiments as ex

RUNGS = ("gpu", "gpu-long", "gpu-wide")
COLUMNS = ["rung", "d_model", "tokens", "status", "effect", "se", "with scale", "ours"]
NOT_RUN = "not run"


def scorecard_path(profile: str, root: str | os.PathLike | None = None) -> Path:
    from ..pipeline.results import output_root

    return output_root(root) / "paper_results" / profile / "tables" / "scorecard.csv"


def load_scorecards(profiles: tuple[str, ...] = RUNGS,
                    root: str | os.PathLike | None = None) -> dict[str, pd.DataFrame]:
    """{profile: its scorecard} for the rungs that have one, in the order given."""
    out = {}
    for profile in profiles:
        path = scorecard_path(profile, root)
        if path.is_file():
            card = pd.read_csv(path)
            missing = {"id", "experiment", "claim", "status"} - set(card.columns)
            if missing:
                raise ValueError(f"{path} lacks the column(s) {sorted(missing)}; regenerate it with "
                                 f"`make figures PROFILE={profile}`")
            out[profile] = card
    return out


def _tokens(profile: str, experiment: str) -> int | None:
    """Tokens per run of ``experiment``'s first variant at ``profile`` (None where the rung does not run it)."""
    cfgs = list(ex.variants(profile, experiment).values()) if experiment in ex.EXPERIMENTS else []
    return cfgs[0].steps * cfgs[0].tokens_per_step if cfgs else None


def rung_tables(cards: dict[str, pd.DataFrame] | None = None, root: str | os.PathLike | None = None
                ) -> dict[str, pd.DataFrame]:
    """{claim id: one row per rung} for every claim of any rung's scorecard, in the order they first appear.
    ``cards`` ({profile: scorecard}, default :func:`load_scorecards`) may name profiles outside ``RUNGS``.
    Each table's ``attrs`` hold the claim's text, experiment and the paper's value."""
    cards = load_scorecards(root=root) if cards is None else cards
    claims: dict[str, dict] = {}
    for card in cards.values():
        for row in card.to_dict("records"):
            claims.setdefault(row["id"], {"claim": row["claim"], "experiment": row["experiment"],
                                          "paper": row.get("paper")})
    tables = {}
    for cid, info in claims.items():
        rows = []
        for profile, card in cards.items():
            scale = ex.scale(profile)
            hit = card[card["id"] == cid]
            row = {"rung": profile, "d_model": scale.d_model, "tokens": _tokens(profile, info["experiment"])}
            if hit.empty:
                row.update(status=NOT_RUN, effect=None, se=None, ours=None)
            else:
                r = hit.iloc[0]
                row.update(status=r["status"], effect=r.get("effect"), se=r.get("se"), ours=r.get("ours"),
                           **{"with scale": r.get(SCALE)})
            rows.append(row)
        table = pd.DataFrame(rows, columns=COLUMNS)
        table.attrs.update(id=cid, **info)
        tables[cid] = table
    return tables


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if isinstance(v, (int, float)) and abs(v) >= 1e6:  # token counts
        return f"{v / 1e6:.0f}M"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def rungs_markdown(tables: dict[str, pd.DataFrame]) -> str:
    """One markdown section per claim: its text, the paper's value, and the rungs' rows."""
    parts = []
    for cid, t in tables.items():
        head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
        body = "\n".join("| " + " | ".join(_cell(v) for v in row) + " |"
                         for row in t[COLUMNS].astype(object).itertuples(index=False))
        paper = t.attrs.get("paper")
        parts.append(f"### {cid}: {t.attrs['claim']}\n\n" + (f"Paper: {paper}\n\n" if _cell(paper) else "")
                     + f"{head}\n{body}\n")
    return "\n".join(parts)


def rung_results(experiment: str, profile: str, res: dict) -> dict[str, dict]:
    """{rung: its results of ``experiment``}: the profile's own ``res`` alone, or, where the profile is one of
    the gpu rungs, every rung that has results, in ``RUNGS`` order."""
    if profile not in RUNGS:
        return {profile: res}
    from ..pipeline.results import load_results

    out = {p: res if p == profile else load_results(p, experiment) for p in RUNGS}
    return {p: r for p, r in out.items() if r}
