# ---
# jupyter:
#   kernelspec:
#     display_name: Python (sparsedepth)
#     language: python
#     name: sparsedepth
# ---

# %% [markdown]
# # 2. Implicit sparsity 1: weight decay
#
# **Claim (paper §3.2).** Weight decay pushes weights towards zero, an implicit sparsity that slows
# variance growth. On the L = 16 dense model, λ = 0.1 gives the best perplexity (14.83) and the highest
# usefulness (0.81, against 0.75 without decay) and clearly lowers last-layer variance; λ = 3 collapses
# (PPL 773).
#
# **What we measure.** The same L=16-equivalent model for λ ∈ {0, 0.01, 0.1, 1, 3} (decoupled AdamW);
# last-layer variance during training; perplexity and usefulness at the end; and the sparsity that
# should explain it: *weight density* ρ(τ) = fraction of weights with |W<sub>ij</sub>| > τ·std(W),
# averaged over the block matrices (a Gaussian matrix gives 0.92 at τ = 0.1 and 0.62 at τ = 0.5, dashed).

# %% tags=["parameters"]
profile = "cpu"  # smoke (CI, seconds) | cpu (laptop, about an hour for everything) | gpu (paper-lite, one H200)
force = False  # retrain even when results with the same config are already there
device = "auto"  # auto | cpu | cuda
train = True  # False: only plot the results already under paper_results/<profile>/ (make figures)

# %%
from sparsedepth.paper.report import notebook, plots

EXP = "weight_decay"
statuses, res, order = notebook.open_sweep(EXP, profile, force=force, train=train, device=device)

# %% [markdown]
# ## Last-layer variance during training
#
# Paper: WD.png, linear y.

# %%
notebook.variance_figure(EXP, profile, res, order, sweep_title="weight decay λ", log_y=False,
                         paper_figure="WD.png, linear y")

# %% [markdown]
# ## Perplexity, usefulness and final variance, ours beside the paper's

# %%
cmp, chart = notebook.compare_figure(EXP, profile, res, title="Weight decay",
                                     x_title="weight decay λ (ours ≙ paper)",
                                     metrics=["ppl", "usefulness", "variance_end"], relative=["ppl", "variance_end"],
                                     log_metrics=["ppl"])
chart

# %% [markdown]
# ## The sparsity that should explain it: weight density versus λ

# %%
df = plots.weight_density_frame(res, "optim.weight_decay")
chart = plots.sweep_chart(df, x="x", y="density", color="tau", rule="gaussian", color_title="threshold",
                          title="Weight density versus weight decay", x_title="weight decay λ",
                          y_title="fraction of |W_ij| > τ·std(W)",
                          subtitle="mean over layers and matrices; dashed: Gaussian reference; lower = sparser")
plots.save_chart(chart, f"{EXP}_weight_density", profile, df)
chart

# %% [markdown]
# ## Does our result agree with the paper's?

# %%
notebook.close_claims(EXP, profile, res, statuses, title="Weight decay")  # fails after plotting if a variant failed
