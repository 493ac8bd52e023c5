"""What every experiment notebook opens and closes with, so a notebook holds only its own figures.

``open_sweep`` brings an experiment's results up to date and shows the setup; ``close_claims`` writes and
shows the section's claims and then fails the notebook if a variant failed (after everything was plotted).
``trajectory_figure``, ``rungs_table`` and ``usefulness_section`` show how a sweep moves with training tokens,
the gpu rungs side by side and what the usefulness score measures; each says in one line when its data is
not there (no run probed along training, fewer than two rungs with results) and shows nothing else.
"""
from __future__ import annotations

import pandas as pd
from IPython.display import Markdown, display

from ..analysis import scorecard
from ..pipeline import results
from ..spec import experiments
from . import plots, rungs, tables, trajectories, usefulness_readings


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


def trajectory_figure(experiment: str, profile: str, res: dict, order: list):
    """Every statistic of the sweep's trajectories against training tokens (``<experiment>_trajectories``) and
    the table of each trend and its crossing (``<experiment>_trajectory_trends``); one line instead where no
    run of the sweep was probed along training. Returns the chart or None."""
    chart, frame, targets = trajectories.sweep_figure(experiment, res, order)
    if chart is None:
        display(Markdown(f"_No run of `{profile}/{experiment}` was probed along training (no trajectory.json): "
                         f"no trajectory figures at this profile._"))
        return None
    # sixteen panels: at the default 1.5x the PNG took 0.6 MB of a repository kept under 40 MiB (the SVG beside
    # it keeps every detail)
    plots.save_chart(chart, f"{experiment}_trajectories", profile, frame, scale=1.0)
    table = trajectories.trend_table(frame, targets)
    tables.write_table(table, f"{experiment}_trajectory_trends", profile,
                       title=f"{experiment}: each statistic's trend in log tokens and where it reaches its target")
    display(Markdown(tables.to_markdown(table, 3)))
    return chart


def rungs_table(experiment: str, profile: str, res: dict) -> None:
    """The gpu rungs side by side, one table per claim of the sweep (``<experiment>_rungs``), this profile's
    scorecard computed now and the other rungs' read from their committed scorecards; one line instead at a
    profile that is not a rung or while fewer than two rungs have results."""
    if profile not in rungs.RUNGS:
        display(Markdown(f"_The rungs table sets the gpu rungs ({', '.join(rungs.RUNGS)}) side by side; "
                         f"`{profile}` is not one of them._"))
        return
    cards = rungs.load_scorecards()
    if res:
        cards[profile] = scorecard.scorecard(profile, {experiment: res})
    cards = {p: cards[p] for p in rungs.RUNGS if p in cards  # rungs with a verdict on this sweep
             and (cards[p][cards[p].experiment == experiment].status != scorecard.noise.MISSING).any()}
    if len(cards) < 2:
        display(Markdown(f"_Only {', '.join(cards) or 'no rung'} has results of `{experiment}` yet: the rungs table "
                         f"waits for a second rung._"))
        return
    tabs = {cid: t for cid, t in rungs.rung_tables(cards).items() if t.attrs["experiment"] == experiment}
    flat = pd.concat([t.assign(id=cid, claim=t.attrs["claim"], paper=t.attrs.get("paper")) for cid, t in tabs.items()],
                     ignore_index=True)[["id", "claim", "paper", *rungs.COLUMNS]]
    tables.write_table(flat, f"{experiment}_rungs", profile,
                       title=f"{experiment}: the gpu rungs side by side per claim")
    display(Markdown(rungs.rungs_markdown(tabs)))


def usefulness_section(experiment: str, profile: str, res: dict, order: list) -> None:
    """What the usefulness score measures (:mod:`usefulness_readings`): the findings written from the numbers,
    per-layer loss ratios of the three replacements beside the largest activation
    (``<experiment>_usefulness_readings``), and the excesses along training
    (``<experiment>_usefulness_along_training``) where runs were probed so; at a gpu rung, every rung with
    results."""
    by_rung = rungs.rung_results(experiment, profile, res)
    # every rung's settings in the sweep's order: the rung with the most settings first sets it
    orders = sorted((plots.order_of(r) for r in by_rung.values()), key=len, reverse=True)
    order = list(dict.fromkeys([*(s for o in orders for s in o), *order]))
    layers = usefulness_readings.layer_frame(by_rung)
    if layers.empty:
        display(Markdown(f"_No usefulness readings per layer in `{profile}/{experiment}`._"))
        return
    excess = usefulness_readings.in_order(usefulness_readings.excess_frame(layers), order)
    tables.write_table(excess, f"{experiment}_usefulness_readings", profile,
                       title=f"{experiment}: the usefulness score's excess over 1, split (means over layers)")
    display(Markdown("**What the numbers say** (written from them):\n\n" + usefulness_readings.findings(excess)))
    chart = usefulness_readings.layer_chart(layers, order)
    plots.save_chart(chart, f"{experiment}_usefulness_readings", profile, layers[layers["final"]])  # what it draws
    display(chart)
    along = usefulness_readings.excess_chart(excess, order)
    if along is None:
        display(Markdown("_No run here was probed along training: the excesses against tokens are not drawn._"))
        return
    plots.save_chart(along, f"{experiment}_usefulness_along_training", profile, excess)
    display(along)
