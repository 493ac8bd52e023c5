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
# ## How the statistics move with training tokens
#
# Where the runs were probed along training (the gpu rungs `gpu-long` and `gpu-wide`: 8 points spaced evenly in
# log tokens, the last one the final probes), every statistic against training tokens (log x), one line per
# setting. The points before the last use cheaper settings (fewer windows and permutation pairs), and so does the
# line's last point, a second reading of the final weights; the final probes themselves, on the full settings, are
# the open squares, drawn but not fitted: the gap between a line's end and its square is the settings' own effect
# at the same weights (large for the permutation score, which a few pairs with the first layer dominate). Dashed: each setting's least-squares trend in log tokens, an extrapolation, drawn past the last point;
# diamonds: the paper's value for that setting at its ~5B training tokens, where the paper reports the reading;
# loss ratios are extrapolated to the useful threshold 1.1 instead. **What to look at:** whether each dashed line
# heads toward its diamond, and whether the settings separate in the paper's order as tokens grow. The table
# below gives every trend per decade of tokens and the token count at which it would reach its target ("never"
# where it moves away or is flat; "passed" where the points already went by it and move on beyond), and "turn
# back" under "last 3 points" where those alone slope the other way: a statistic that peaked inside the range,
# where the line misleads beyond it. A line through a few points spanning one or two decades is where the measured
# direction leads, not a prediction; the paper's variance is the official log of N_f(h_L) at d = 2048, so its
# diamonds set a scale for the final-norm panel only.

# %%
notebook.trajectory_figure(EXP, profile, res, order)

# %% [markdown]
# ## The gpu rungs side by side
#
# At a gpu rung (`gpu`: d = 512 and 52-98M tokens; `gpu-long`: the same width and 301M tokens; `gpu-wide`:
# d = 1024 at gpu's tokens), one table per claim of this section with a row per rung that has results: its
# verdict, effect ± standard error, and whether the effect moves toward the paper with training tokens. **What to
# look at:** whether more tokens (gpu → gpu-long) or more width (gpu → gpu-wide) moves an effect toward the
# paper's sign, and whether the two axes agree.

# %%
notebook.rungs_table(EXP, profile, res)

# %% [markdown]
# ## What the usefulness score measures
#
# The paper's headline ("L = 32 wastes 14 layers") rests on usefulness: a layer is useful when replacing its
# block by a fitted linear map raises the loss by more than 10 %. The official code applies its least-squares
# fit transposed (paper-spec §1.4), so its loss ratio mixes two things: what no linear map can reproduce of the
# block (its nonlinearity) and the error of applying the fit the wrong way round. Per layer, three replacements
# side by side: **linear**, the correct fit (its excess over 1 is the nonlinearity's); **official**, the
# transposed fit (its excess over the correct one is the transposition's); **removed**, the block skipped (the
# identity: what a useless replacement costs); and below them the largest activation |h| of each layer's output,
# where massive activations would show. **What to look at:** whether the official line sits near the correct
# one (then the official score measures the blocks) or near removal (then it measures the transposition);
# whether the gap between them grows with training tokens or width; and whether it sits in the layers with the
# largest activations. The findings below are computed from the numbers shown, for this profile and, at a gpu
# rung, for every rung with results.

# %%
notebook.usefulness_section(EXP, profile, res, order)

# %% [markdown]
# ## Does our result agree with the paper's?

# %%
notebook.close_claims(EXP, profile, res, statuses, title="Depth")  # fails after plotting if a variant failed
