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
# # 6. A recipe for deep models: sparsity at L = 32
#
# **Claim (paper §3.6, the headline figure).** Adding the sparsity mechanisms one at a time to a 32-layer
# dense model (≈1.2 B parameters) raises average downstream accuracy from 39.5 to 44.1 (+4.6 points) and
# usefulness from ≈0.53 to 0.75, matching the L = 16 model's usefulness. Kept steps: T = 4096, λ = 0.3,
# G = 2, MoE (64 experts, top-8); rejected (faded): T = 8192, λ = 0.6, λ = 1.0.
#
# **What we measure.** The same cumulative ablation at the profile's deep depth (each step starts from
# the last kept state), evaluated zero-shot on the shipped multiple-choice sets (unweighted mean accuracy;
# the paper's task list is not known, paper-spec §3.7) and probed for usefulness.

# %% tags=["parameters"]
profile = "cpu"  # smoke (CI, seconds) | cpu (laptop, about an hour for everything) | gpu (paper-lite, one H200)
force = False  # retrain even when results with the same config are already there
device = "auto"  # auto | cpu | cuda
train = True  # False: only plot the results already under paper_results/<profile>/ (make figures)

# %%
from IPython.display import Markdown, display

from sparsedepth.paper.analysis import scorecard
from sparsedepth.paper.pipeline import results
from sparsedepth.paper.report import notebook, plots, tables
from sparsedepth.paper.spec.reported import PAPER

EXP = "recipe"
statuses, res, order = notebook.open_sweep(EXP, profile, force=force, train=train, device=device)

# %% [markdown]
# ## The ablation: accuracy bars, usefulness stars

# %%
cmp = scorecard.compare(profile, EXP, res)
tables.write_table(cmp, f"{EXP}_compare", profile, title="Recipe ablation: paper vs ours")
depth_res = results.load_results(profile, "depth")  # our L=16-equivalent reference, if trained
ref = scorecard.setting_row(profile, "depth", depth_res, 16)  # seed mean where several seeds ran
tokens = lambda rs: next((r.tokens() for r in rs.values() if r.summary), None)
ref_run = {v: r for v, r in depth_res.items() if ref and v.split("-seed")[0] == ref["name"]}
se = {r["name"]: r["acc_se"] for r in scorecard.our_rows(profile, EXP, res)}
df = plots.recipe_frame(cmp, PAPER["recipe"]["reference"], ref, acc_se=se, reference_tokens=tokens(ref_run))
chart = plots.recipe_chart(df, title="Sparsity recipe at the deep depth: ours beside the paper",
                           subtitle=["bars: mean zero-shot accuracy (error bars: ±1 binomial standard "
                                     "error); stars: usefulness; faded: rejected options",
                                     f"each recipe step trains {plots.token_count(tokens(res))} tokens; "
                                     "our L=16 reference is a depth-sweep run (its tokens in its label)"])
plots.save_chart(chart, f"{EXP}_ablation", profile, df)
display(Markdown(tables.to_markdown(cmp)))
chart

# %% [markdown]
# ## Last-layer variance of each recipe step

# %%
notebook.variance_figure(EXP, profile, res, order, sweep_title="recipe step", log_y=True, sequential=False,
                         paper_figure="not shown in the paper")

# %% [markdown]
# ## Does our result agree with the paper's?

# %%
notebook.close_claims(EXP, profile, res, statuses, title="Recipe")  # fails after plotting if a variant failed
