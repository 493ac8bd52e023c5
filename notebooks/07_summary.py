# %% [markdown]
# # 7. Summary: the paper's numbers beside ours, and which claims hold
#
# Every table of the paper with our values beside it, and the scorecard of the paper's qualitative
# claims checked on our results with fixed rules (Spearman ρ ≥ 0.8 for "grows with", strict
# inequalities for "lowers"; `sparsedepth.paper.analysis.scorecard`). The same rules pass on the paper's own numbers,
# which is what "reproduced" means here: absolute values depend on scale, trends should not. A claim
# is *inconclusive* where the comparison cannot decide: accuracy gaps under two standard errors (each
# task's binomial error), or a usefulness score with at most one useful layer anywhere.

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
from sparsedepth.paper.report import plots, tables
from sparsedepth.paper.spec import experiments

all_res, all_status = {}, {}
for exp in experiments.EXPERIMENTS:  # cached runs return at once; missing ones train (train=True)
    all_status[exp] = results.run_experiment(profile, exp, force=force, train=train, device=device,
                                             raise_on_error=False)
    all_res[exp] = results.load_results(profile, exp)
display(Markdown("\n".join(tables.results_note(all_status[e], all_res[e], profile, e) if all_res[e] else
                            f"**No results for `{profile}/{e}`: its claims show as missing.**\n"
                            for e in experiments.EXPERIMENTS)))

# %% [markdown]
# ## Paper versus ours, every table

# %%
long = []
for exp in experiments.EXPERIMENTS:
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
paper_ok = sum(c.status == "pass" for c in scorecard.paper_checks())
chart = plots.scorecard_chart(card, title=f"Claims scorecard at profile {profile}",
                              subtitle=f"{n['pass']} pass, {n['fail']} fail, {n['inconclusive']} inconclusive, "
                                       f"{n['missing']} missing; "
                                       f"the paper's own numbers pass {paper_ok} of {len(card)}")
plots.save_chart(chart, "scorecard", profile, card)
chart

# %%
display(Markdown(f"The same rules pass on the paper's own numbers for {paper_ok} of {len(card)} claims.\n\n"
                 + tables.claims_markdown(card, what="the paper's claims", profile=profile)))
for exp, st in all_status.items():
    results.raise_for_failures(st, f"{profile}/{exp}")
