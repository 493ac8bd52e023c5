# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (sparsedepth)
#     language: python
#     name: sparsedepth
# ---

# %% [markdown]
# # 7. Summary: the paper's numbers beside ours, and which claims hold
#
# Every table of the paper with our values beside it, and the scorecard of the paper's qualitative
# claims checked on our results with one rule (`sparsedepth.paper.analysis.scorecard`, `sparsedepth.paper.analysis.noise`): each
# claim's effect (a difference of seed means, paired by seed, or the slope over a sweep) *holds* when
# it exceeds two standard errors in the paper's direction, is *contradicted* when it exceeds them the
# other way, and is *inconclusive* otherwise. Errors come from the seeds of each setting; a setting
# with one run takes the measured seed spread of the nearest experiment with seeds (the `noise`
# column names it); accuracy adds each task's binomial error. Variance claims are judged on the raw
# residual stream h_L and on N_f(h_L) after the final norm (what the official code logged), usefulness
# claims on the useful-layer fraction and on the mean per-layer loss ratio. On the paper's own
# numbers, taken as exact, every claim holds: absolute values depend on scale, trends should not.

# %% tags=["parameters"]
profile = "cpu"  # smoke (CI, seconds) | cpu (laptop, about an hour for everything) | gpu (paper-lite, one H200)
force = False  # retrain even when results with the same config are already there
device = "auto"  # auto | cpu | cuda
train = True  # False: only plot the results already under paper_results/<profile>/ (make figures)

# %%
import pandas as pd
from IPython.display import Markdown, display

from sparsedepth.paper.analysis import scorecard
from sparsedepth.paper.pipeline import results
from sparsedepth.paper.report import plots, results_page, tables
from sparsedepth.paper.spec import experiments

all_res, all_status = {}, {}
ran = experiments.profile_experiments(profile)  # a gpu rung runs one or two sweeps
for exp in experiments.EXPERIMENTS:  # cached runs return at once; missing ones train (train=True)
    all_status[exp] = results.run_experiment(profile, exp, force=force, train=train, device=device,
                                             raise_on_error=False)
    all_res[exp] = results.load_results(profile, exp)
display(Markdown("\n".join(tables.results_note(all_status[e], all_res[e], profile, e) if all_res[e] else
                            f"**No results for `{profile}/{e}`: its claims show as missing.**\n" for e in ran)
                 + "".join(f"\n`{profile}` does not run `{e}`: its claims are left out of this scorecard.\n"
                           for e in experiments.EXPERIMENTS if e not in ran)))

# %% [markdown]
# ## Paper versus ours, every table

# %%
long = []
for exp in ran:
    cmp = scorecard.compare(profile, exp, all_res[exp])
    display(Markdown(f"### {exp}\n\n" + tables.to_markdown(cmp)))
    long.append(plots.compare_long(cmp, scorecard.TABLE_METRICS[exp]).assign(experiment=exp))
long = pd.concat(long, ignore_index=True)
wide = tables.side_by_side(long, ["experiment", "variant", "setting", "metric"])
tables.write_table(wide, "paper_vs_ours", profile, title="The paper's numbers beside ours")

# %% [markdown]
# ## Claims scorecard

# %%
card = scorecard.scorecard(profile, all_res)
tables.write_table(card, "scorecard", profile, title=f"Claims scorecard ({profile})")
n = scorecard.counts(card)
paper_ok = sum(c.status == "holds" for c in scorecard.paper_checks() if c.id in set(card["id"]))  # this profile's claims
chart = plots.scorecard_chart(card, title=f"Claims scorecard at profile {profile}",
                              subtitle=f"{n['holds']} hold, {n['contradicted']} contradicted, "
                                       f"{n['inconclusive']} inconclusive, {n['missing']} missing; "
                                       f"on the paper's own numbers {paper_ok} of {len(card)} hold")
plots.save_chart(chart, "scorecard", profile, card)
chart

# %%
page = results_page.write_results(profile)  # every paper figure and table beside ours, from these tables
display(Markdown(f"Results page: `{page}`. On the paper's own numbers {paper_ok} of {len(card)} claims hold.\n\n"
                 + tables.claims_markdown(card, what="the paper's claims", profile=profile)))
for exp, st in all_status.items():
    results.raise_for_failures(st, f"{profile}/{exp}")
