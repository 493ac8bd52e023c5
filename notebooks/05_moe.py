# ---
# jupyter:
#   kernelspec:
#     display_name: Python (sparsedepth)
#     language: python
#     name: sparsedepth
# ---

# %% [markdown]
# # 5. Explicit sparsity 2: mixture of experts
#
# **Claim (paper §3.5).** A mixture of experts activates k of E expert FFNs per token (density
# k/E = 1/8 in both of the paper's MoEs). Against dense models of equal active size, MoE lowers
# last-layer variance several-fold (end ≈15 vs ≈103 at 400M active, ≈73 vs ≈220 at 1B), lowers
# perplexity (15.89 vs 17.56; 13.82 vs 14.52) and raises usefulness to 0.94.
#
# **What we measure.** Two dense/MoE pairs with equal active parameters (the small MoE with a shared
# expert, as the paper's 400M one); last-layer variance during training; perplexity and usefulness; the
# nominal expert density k/E; and the expert load on held-out data (share of routed assignments per
# expert, 1 = uniform) which shows whether the sparsity is real or collapsed onto a few experts.

# %% tags=["parameters"]
profile = "cpu"  # smoke (CI, seconds) | cpu (laptop, about an hour for everything) | gpu (paper-lite, one H200)
force = False  # retrain even when results with the same config are already there
device = "auto"  # auto | cpu | cuda
train = True  # False: only plot the results already under paper_results/<profile>/ (make figures)

# %%
from IPython.display import display

from sparsedepth.paper.report import notebook, plots

EXP = "moe"
statuses, res, order = notebook.open_sweep(EXP, profile, force=force, train=train, device=device)

# %% [markdown]
# ## Last-layer variance during training
#
# Paper: MoE-400M.png, MoE-1B.png.

# %%
notebook.variance_figure(EXP, profile, res, order, sweep_title="model", log_y=True, sequential="paired",
                         paper_figure="MoE-400M.png, MoE-1B.png")

# %% [markdown]
# ## Perplexity, usefulness and final variance, ours beside the paper's

# %%
cmp, chart = notebook.compare_figure(EXP, profile, res, title="Mixture of experts",
                                     x_title="model (ours ≙ paper)",
                                     metrics=["ppl", "usefulness", "variance_end"], relative=[],
                                     log_metrics=["ppl", "variance_end"])
chart

# %% [markdown]
# ## The sparsity that should explain it: expert density and load

# %%
df = plots.density_frame(res, cmp, "experts")
chart = plots.sweep_chart(df, x="label", facet="quantity", x_order=order, x_title="model",
                          y_title="", title="Expert density beside variance and usefulness")
plots.save_chart(chart, f"{EXP}_density", profile, df)
display(chart)
load = plots.expert_load_frame(res)
if len(load) and load["load"].notna().any():
    chart = plots.expert_load_chart(load, title="Expert load on held-out windows",
                                    subtitle="share of top-k assignments × E (1 = uniform); one panel per MoE")
    plots.save_chart(chart, f"{EXP}_expert_load", profile, load)
    display(chart)
else:
    print("no MoE results yet: the expert-load figure needs at least one trained MoE variant")

# %% [markdown]
# ## Does our result agree with the paper's?

# %%
notebook.close_claims(EXP, profile, res, statuses, title="Mixture of experts")  # fails after plotting if a variant failed
