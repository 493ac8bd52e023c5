"""What every experiment notebook opens and closes with, so a notebook holds only its own figures.

``open_sweep`` brings an experiment's results up to date and shows the setup; ``close_claims`` writes and
shows the section's claims and then fails the notebook if a variant failed (after everything was plotted).
"""
from __future__ import annotations

from IPython.display import Markdown, display

from ..analysis import scorecard
from ..pipeline import results
from ..spec import experiments
from . import plots, tables


def open_sweep(experiment: str, profile: str, *, force: bool, train: bool, device: str) -> tuple[dict, dict, list]:
    """Train what is missing or stale (``train=False``: plot what exists), load the results and show the
    setup note; returns (statuses, results, display labels sorted by the swept value)."""
    statuses = results.run_experiment(profile, experiment, force=force, train=train, device=device,
                                      raise_on_error=False)
    res = results.load_results(profile, experiment)
    order = plots.order_of(res)
    display(Markdown(f"**Setup.** {experiments.profile_note(profile, experiment)}\n\n"
                     + tables.results_note(statuses, res, profile, experiment)))
    return statuses, res, order


def close_claims(experiment: str, profile: str, res: dict, statuses: dict, *, title: str) -> None:
    """Write ``<experiment>_claims`` and show it; then raise if a variant of the sweep failed."""
    card = scorecard.scorecard(profile, {experiment: res})
    card = card[card.experiment == experiment].reset_index(drop=True)
    tables.write_table(card, f"{experiment}_claims", profile, title=f"{title}: the paper's claims on our results")
    display(Markdown(tables.claims_markdown(card, what="the claims of this section", profile=profile)))
    results.raise_for_failures(statuses, f"{profile}/{experiment}")
