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
# # 1. The curse of depth in dense models
#
# **Claim (paper §3.1, building on Sun et al. 2025).** In Pre-LN transformers the variance of the
# residual stream grows with depth, so deep blocks change the stream little: their Jacobians approach
# the identity, and they can be skipped, swapped or replaced by a linear map at little cost. The paper
# trains dense models with L = 12, 16, 24, 32 and reports that last-layer variance grows with L, that
# ||J − I|| falls with layer index and with depth, and that all three layer-effectiveness scores fall
# with depth (usefulness: 12 of 12 layers useful at L = 12, 18 of 32 at L = 32).
#
# **What we measure.** During training, every block's output variance (mean over tokens of the variance
# across the hidden dimension). On the final checkpoint, on held-out windows: ||J − I||<sub>F</sub>/d per
# block; *usefulness* = fraction of blocks whose least-squares linear replacement raises the loss by more
# than 10 % (fixed: the official code applies the transposed fit, paper-spec §1.4); *causal* = relative
# change of later blocks' updates when one block is skipped, averaged; *permutation* = mean relative
# loss change when two blocks swap.
#
# **Seeds.** Where the profile trains several seeds per depth (gpu: 2, seed s > 0 runs as
# `L<L>-seed<s>`), every curve and bar below is the seed mean and the shaded band or black error bar
# the min–max range across seeds; the tables and claims use the means, with the range and the number
# of seeds beside them.

# %% tags=["parameters"]
profile = "cpu"  # smoke (CI, seconds) | cpu (laptop, about an hour for everything) | gpu (paper-lite, one H200)
force = False  # retrain even when results with the same config are already there
device = "auto"  # auto | cpu | cuda
train = True  # False: only plot the results already under paper_results/<profile>/ (make figures)

# %%
from sparsedepth.paper.report import notebook, plots
from sparsedepth.paper.spec.reported import PAPER

EXP = "depth"
statuses, res, order = notebook.open_sweep(EXP, profile, force=force, train=train, device=device)

# %% [markdown]
# ## Last-layer variance during training
#
# The paper's figure (log y) shows a dip, a peak after a few thousand steps and a decay, with deeper
# models higher throughout.

# %%
notebook.variance_figure(EXP, profile, res, order, sweep_title="depth L", log_y=True,
                         paper_figure="final_layer_variance.png")

# %% [markdown]
# ## ||J − I||<sub>F</sub>/d per layer
#
# Left: ours (every block); right: the paper's figure (blocks 1 … L−2, read off the published plot).
# Colours pair each of our depths with the paper depth it stands for.

# %%
df = plots.paper_jacobian_frame(PAPER["depth"]["jacobian"], res)
chart = plots.jacobian_chart(df, [f"L={d}" for d in PAPER["depth"]["jacobian"]],
                             title="Distance of each block's Jacobian from the identity")
plots.save_chart(chart, "depth_jacobian", profile, df)
chart

# %% [markdown]
# ## Layer-effectiveness scores, ours beside the paper's

# %%
cmp, chart = notebook.compare_figure(EXP, profile, res, title="Layer-effectiveness scores",
                                     x_title="depth (ours ≙ paper)",
                                     metrics=["usefulness", "causal", "permutation"], relative=["permutation"],
                                     log_metrics=[])
chart

# %% [markdown]
# ## Where the variance sits: every layer over training

# %%
df = plots.layer_variance_frame(res)
chart = plots.heatmap_chart(df, x="layer", y="step", value="variance", facet="label", order=order,
                            title="Per-layer output variance over training (log colour)",
                            x_title="layer ℓ", y_title="training step", value_title="variance")
plots.save_chart(chart, "depth_layer_variance", profile, df)
chart

# %% [markdown]
# ## Does our result agree with the paper's?

# %%
notebook.close_claims(EXP, profile, res, statuses, title="Depth")  # fails after plotting if a variant failed
