# ---
# jupyter:
#   kernelspec:
#     display_name: Python (sparsedepth)
#     language: python
#     name: sparsedepth
# ---

# %% [markdown]
# # 4. Explicit sparsity 1: grouped-query attention
#
# **Claim (paper §3.4).** Sharing keys and values across a group of G query heads is an explicit
# sparsity of the K/V parameters (density 1/G). On the L = 16 model with 16 heads, G = 4 and G = 16
# lower last-layer variance (end ≈122 and ≈102 against ≈220 for MHA) and raise usefulness from 0.81
# to 0.87 at equal or better perplexity.
#
# **What we measure.** The L=16-equivalent model with group sizes scaled to the profile's head count;
# last-layer variance during training; perplexity and usefulness; and the nominal K/V density 1/G beside
# the end-of-training variance and usefulness.

# %% tags=["parameters"]
profile = "cpu"  # smoke (CI, seconds) | cpu (laptop, about an hour for everything) | gpu (paper-lite, one H200)
force = False  # retrain even when results with the same config are already there
device = "auto"  # auto | cpu | cuda
train = True  # False: only plot the results already under paper_results/<profile>/ (make figures)

# %%
from sparsedepth.paper.report import notebook, plots

EXP = "gqa"
statuses, res, order = notebook.open_sweep(EXP, profile, force=force, train=train, device=device)

# %% [markdown]
# ## Last-layer variance during training
#
# Paper: GQA.png.

# %%
notebook.variance_figure(EXP, profile, res, order, sweep_title="group size G", log_y=True,
                         paper_figure="GQA.png")

# %% [markdown]
# ## Perplexity, usefulness and final variance, ours beside the paper's

# %%
cmp, chart = notebook.compare_figure(EXP, profile, res, title="Grouped-query attention",
                                     x_title="G (ours ≙ paper)",
                                     metrics=["ppl", "usefulness", "variance_end"], relative=["ppl", "variance_end"],
                                     log_metrics=["ppl"])
chart

# %% [markdown]
# ## The sparsity that should explain it: nominal K/V density 1/G

# %%
df = plots.density_frame(res, cmp, "kv")
chart = plots.sweep_chart(df, x="label", facet="quantity", x_order=order, x_title="group size G",
                          y_title="", title="K/V density beside variance and usefulness")
plots.save_chart(chart, f"{EXP}_density", profile, df)
chart

# %% [markdown]
# ## Does our result agree with the paper's?

# %%
notebook.close_claims(EXP, profile, res, statuses, title="Grouped-query attention")  # fails after plotting if a variant failed
