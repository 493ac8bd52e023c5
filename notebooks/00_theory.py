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
# # 0. Theory: mask density and variance growth with depth
#
# **Claim (abstract, project page).** Sparsity reduces variance propagation in residual-depth
# architectures: the smaller the mask density ρ, the slower the output variance grows with depth (the
# analysis assumes weights independent of the mask).
#
# **How we test it.** The paper's formula was not available (paper-spec §4.2), so we test our
# reconstruction numerically (`sparsedepth.theory`): random Pre-LN stacks
# x<sub>ℓ+1</sub> = x<sub>ℓ</sub> + F<sub>ℓ</sub>(RMSNorm(x<sub>ℓ</sub>)) whose sublayers are ReLU MLPs
# F(z) = (M₂⊙W₂) relu((M₁⊙W₁) z) with Bernoulli(ρ) masks M independent of W, for
# ρ ∈ {1, 1/2, 1/4, 1/8}. Per-block variances add in expectation,
# σ²<sub>L</sub> = σ²<sub>0</sub> + Σ<sub>ℓ</sub> c<sub>ℓ</sub>, with c<sub>ℓ</sub> ∝ ρ² (two masked
# matrices in series): the dashed closed form. The control rescales the
# masked weights by 1/√ρ; if the effect is only the mask's variance reduction, every density then
# follows the dense curve. We also track how far each block's Jacobian is from the identity,
# ||J − I||<sub>F</sub>/d, the quantity the curse-of-depth argument is about.

# %% tags=["parameters"]
profile = "cpu"  # smoke (CI, seconds) | cpu (laptop, about an hour for everything) | gpu (paper-lite, one H200)
force = False  # retrain even when results with the same config are already there
device = "auto"  # auto | cpu | cuda
train = True  # False: only plot the results already under paper_results/<profile>/ (make figures)

# %%
import pandas as pd
from IPython.display import Markdown, display

from sparsedepth import theory
from sparsedepth.paper.report import plots, tables

DENSITIES = [1.0, 0.5, 0.25, 0.125]
SIM = {"smoke": dict(depth=16, d_model=64, n_tokens=64, n_seeds=1),
       "cpu": dict(depth=64, d_model=128, n_tokens=256, n_seeds=2),
       "gpu": dict(depth=64, d_model=256, n_tokens=512, n_seeds=3),
       "paper": dict(depth=64, d_model=256, n_tokens=512, n_seeds=3)}[profile]  # a simulation: gpu's is enough
SETTINGS = {"plain masks": False, "1/√ρ-compensated masks": True}
display(Markdown(f"**Setup ({profile}).** ReLU-MLP sublayers, d = {SIM['d_model']}, d_ff = 4d, "
                 f"1/√fan-in init, {SIM['n_tokens']} tokens, {SIM['n_seeds']} seed(s), depth up to "
                 f"{SIM['depth']}; densities {DENSITIES}. (Not a training run: `train` has no effect.)"))


# %%
def simulate_all():
    return {name: theory.simulate(DENSITIES, compensate=comp, **SIM) for name, comp in SETTINGS.items()}

sims = tables.cached_json("theory_simulation", profile, {"densities": DENSITIES, **SIM}, simulate_all,
                          force=force)
rows = [dict(r, setting=name) for name in SETTINGS for r in sims[name]]  # JSON sorts keys: keep ours

# %% [markdown]
# ## Variance versus depth
#
# Solid: simulation (mean over tokens of the per-token variance across the hidden dimension, the
# trainer's statistic); dashed: closed form. Log y.

# %%
df = plots.theory_frame(rows, "variance")
chart = plots.theory_chart(df, y_title="output variance of x_ℓ", facet="setting",
                           title="Residual-stream variance versus depth, by mask density",
                           subtitle="left: Bernoulli(ρ) masks; right: masked weights scaled by 1/√ρ (control)")
plots.save_chart(chart, "theory_variance", profile, df)
chart

# %% [markdown]
# ## Distance of each block from the identity
#
# ||J<sub>ℓ</sub> − I||<sub>F</sub>/d of the block producing x<sub>ℓ</sub> (exact Jacobian of its residual
# branch). Dashed: the closed form, ||J<sub>ℓ</sub> − I||²<sub>F</sub>/d ≈ c<sub>ℓ</sub>/σ²<sub>ℓ</sub>, the
# variance a block injects relative to the stream it joins.

# %%
df = plots.theory_frame(rows, "jacobian_dist")
chart = plots.theory_chart(df, y_title="||J − I||_F / d", facet="setting",
                           title="Block Jacobian distance from the identity versus depth",
                           subtitle="log y; solid: simulation, dashed: closed form")
plots.save_chart(chart, "theory_jacobian", profile, df)
chart

# %%
summaries = {name: theory.summarize([r for r in rows if r["setting"] == name]) for name in SETTINGS}
table = pd.DataFrame([{"setting": name, "density": float(rho), **vals}
                      for name, summ in summaries.items() for rho, vals in summ.items()])
tables.write_table(table, "theory_summary", profile, title="Variance-propagation simulation, per density")
display(Markdown(tables.to_markdown(table)))

# %% [markdown]
# ## Does the simulation agree with the claim?

# %%
display(Markdown(tables.theory_verdict(summaries, SIM["depth"])))
