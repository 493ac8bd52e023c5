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


def variance_figure(experiment: str, profile: str, res: dict, order: list, *, sweep_title: str, log_y: bool,
                    paper_figure: str, sequential: bool | str = True):
    """The last-layer variance of every variant during training, saved as ``<experiment>_last_layer_variance``;
    ``paper_figure`` names the paper's figure of the same quantity. Returns the chart."""
    df = plots.last_layer_variance_frame(res)
    chart = plots.variance_chart(df, order, sweep_title=sweep_title, log_y=log_y, sequential=sequential,
                                 title=f"Last-layer output variance during training ({'log' if log_y else 'linear'} y)",
                                 subtitle="left: raw residual stream h_L; right: after the final RMSNorm, the "
                                          f"tensor the official code logged ({paper_figure})")
    plots.save_chart(chart, f"{experiment}_last_layer_variance", profile, df)
    return chart


def compare_figure(experiment: str, profile: str, res: dict, *, title: str, metrics: list[str], x_title: str,
                   relative: list[str], log_metrics: list[str]):
    """The paper's values beside ours, as the table ``<experiment>_compare`` (written and shown) and the bars
    ``<experiment>_scores``; ``relative`` metrics are shown divided by the first setting. Returns (the table,
    the chart)."""
    cmp = scorecard.compare(profile, experiment, res)
    tables.write_table(cmp, f"{experiment}_compare", profile, title=f"{title}: paper vs ours")
    long = plots.compare_long(cmp, metrics, relative=relative)
    how = ("panels marked ÷ first setting compare trends (dots; dashed line at 1)" if relative
           else "compare the trends (log axes)")
    chart = plots.compare_bars_chart(long, title=f"{title}: ours beside the paper", x_title=x_title,
                                     relative=relative, log_metrics=log_metrics,
                                     subtitle=f"absolute values depend on scale (width, tokens, tokenizer): {how}")
    plots.save_chart(chart, f"{experiment}_scores", profile, long)
    display(Markdown(tables.to_markdown(cmp)))
    return cmp, chart
