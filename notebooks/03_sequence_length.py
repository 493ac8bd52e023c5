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
# # 3. Implicit sparsity 2: sequence length
#
# **Claim (paper §3.3).** With a longer context each query spreads its attention over more keys, so
# the attended fraction of the context shrinks (an implicit sparsity) and the attention output's variance
# falls. On the L = 16 dense model, last-layer variance falls monotonically with T (≈2.8e4 at T = 256
# to ≈70 at T = 8192) and usefulness rises to 0.81 at T = 2048-4096.
#
# **What we measure.** The L=16-equivalent model at T from 256 to 8192 scaled by the profile, with equal
# tokens per step; last-layer variance during training; perplexity (each at its own T, as the paper) and
# usefulness; and the attention's own sparsity: entropy H = −Σ a log a per query and effective support
# exp(H)/(t+1) (1 = uniform over the visible keys), averaged over layers, heads and queries. It is
# read twice: on windows of the probe length, the same for every model (gpu: 512 tokens), which shows
# how training at context T changes attention at one fixed context; and on windows of each model's own
# T, which is what the paper's mechanism is about (results probed before this second reading existed
# show only the first).

# %% tags=["parameters"]
profile = "cpu"  # smoke (CI, seconds) | cpu (laptop, about an hour for everything) | gpu (paper-lite, one H200)
force = False  # retrain even when results with the same config are already there
device = "auto"  # auto | cpu | cuda
train = True  # False: only plot the results already under paper_results/<profile>/ (make figures)

# %%
from sparsedepth.paper.report import notebook, plots

EXP = "seqlen"
statuses, res, order = notebook.open_sweep(EXP, profile, force=force, train=train, device=device)

# %% [markdown]
# ## Last-layer variance during training
#
# Paper: Length.png, log y.

# %%
notebook.variance_figure(EXP, profile, res, order, sweep_title="context length T", log_y=True,
                         paper_figure="Length.png, log y")

# %% [markdown]
# ## Perplexity, usefulness and final variance, ours beside the paper's

# %%
cmp, chart = notebook.compare_figure(EXP, profile, res, title="Sequence length",
                                     x_title="T (ours ≙ paper)",
                                     metrics=["ppl", "usefulness", "variance_end"], relative=["ppl", "variance_end"],
                                     log_metrics=["ppl"])
chart

# %% [markdown]
# ## The sparsity that should explain it: attention entropy and effective support versus T

# %%
df = plots.attention_frame(res, "seq_len")
chart = plots.sweep_chart(df, x="x", facet="quantity", color="reading", color_title="read on",
                          order=[r for _, r in plots.ATTENTION_READINGS],
                          title="Attention spread versus context length",
                          x_title="training context length T (tokens)",
                          y_title="mean over layers, heads, queries",
                          subtitle="support < 1: attention concentrates on a fraction of the visible keys")
plots.save_chart(chart, f"{EXP}_attention", profile, df)
chart

# %% [markdown]
# ## What the usefulness score measures across context length T
#
# The readings of notebook 1's section of that name, here across context length T: per layer, the loss ratio of
# the block replaced by the correct linear fit (**linear**: its excess over 1 is what a linear map cannot
# reproduce, the block's nonlinearity), by the official code's transposed fit (**official**: its excess over the
# correct one is the transposition's) and by nothing at all (**removed**: the block skipped), beside the largest
# activation of each layer's output. **What to look at:** whether the official line sits above *removed* (then the
# official score charges a layer more than deleting its block costs: it measures the wrong-way-round map, not the
# block) and whether its gap to the correct fit moves with context length T the way the official usefulness does
# in the table above. Results probed before plain removal and the largest activation were added show only the two
# fits; the findings are computed from the runs that have all three.

# %%
notebook.usefulness_section(EXP, profile, res, order)

# %% [markdown]
# ## Does our result agree with the paper's?

# %%
notebook.close_claims(EXP, profile, res, statuses, title="Sequence length")  # fails after plotting if a variant failed
