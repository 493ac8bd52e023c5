# ---
# jupyter:
#   kernelspec:
#     display_name: Python (sparsedepth)
#     language: python
#     name: sparsedepth
# ---

# %% [markdown]
# # 8. Probe a model of your own
#
# Runs the whole probe suite (variance, Jacobian, usefulness, causal, permutation, angular distance,
# block influence, logit lens, sparsity) on one model and draws the per-layer curves of the other
# notebooks. `checkpoint` is a run directory of ours (`runs/<profile>/<hash>/`, trained with
# `sparsedepth train`) or a local Hugging Face causal-LM folder (`save_pretrained` output with its
# tokenizer; nothing is downloaded). Leave it `None` to probe the deepest model of the `profile`'s depth
# sweep, trained here if it is not there yet.

# %% tags=["parameters"]
checkpoint = None  # a run directory or Hugging Face folder; None: the deepest run of the profile's depth sweep
profile = "smoke"  # which depth run to use when checkpoint is None; figures go to figures/<profile>/
name = None  # file-name tag of the figures (default: the folder name)
device = "auto"  # auto | cpu | cuda
n_windows = 8  # held-out windows to probe
seq_len = None  # tokens per window (None: the run's own; 256 for a Hugging Face model)

# %%
import os
import re
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from sparsedepth import probes
from sparsedepth.paper.pipeline import results
from sparsedepth.paper.report import plots, tables
from sparsedepth.paper.spec import experiments
from sparsedepth.train import train as train_run

os.chdir(results.output_root())  # run configs name their data cache relative to the output root
if checkpoint is None:  # the deepest model of the depth sweep (seed 0); train() returns at once if done
    variant = f"L{experiments.scale(profile).depths[-1]}"
    cfg = experiments.resolve(profile, "depth", variant)
    checkpoint = results.run_dir_for(profile, cfg)
    train_run(cfg, checkpoint, progress=False, device=None if device == "auto" else device)
ckpt = Path(checkpoint).expanduser().resolve()
tag = re.sub(r"[^A-Za-z0-9_.-]", "-", name or ckpt.name)
is_run = (ckpt / "summary.json").is_file()
display(Markdown(f"Probing **{ckpt}** ({'our run directory' if is_run else 'Hugging Face folder'})."))

# %%
if is_run:
    out = probes.probe_run(ckpt, n_windows=n_windows, seq_len=seq_len, device=device,
                           out="probes-notebook.json")
else:
    out = probes.probe_hf(ckpt, n_windows=n_windows, seq_len=seq_len or 256, device=device,
                          out=ckpt / "probes-notebook.json")
scores = pd.DataFrame([{
    "model": tag, "layers": out["meta"]["model"].get("n_layers"),
    "usefulness": out.get("usefulness", {}).get("score"),
    "useful_layers": sum(out.get("usefulness", {}).get("useful", [])),
    "causal": out.get("causal", {}).get("score"), "permutation": out.get("permutation", {}).get("score"),
    "mean_jacobian_norm": out.get("jacobian", {}).get("mean_jacobian_norm"),
    "base_loss": out.get("usefulness", {}).get("base_loss"), "tokens": out["meta"]["n_tokens"],
    "probe_seconds": out["timings"]["total"]}])
tables.write_table(scores, f"probe_{tag}_scores", profile, title=f"Probe scores of {tag}")
display(Markdown(tables.to_markdown(scores)))

# %%
df = plots.probe_profile_frame(out)
chart = plots.probe_profile_chart(df, title=f"Per-layer probes of {tag}",
                                  subtitle="layer ℓ = output of block ℓ (1-based); held-out windows")
plots.save_chart(chart, f"probe_{tag}_per_layer", profile, df)
chart

# %%
df = plots.matrix_frame(out["causal"]["matrix"], row="skipped", col="layer")
chart = plots.heatmap_chart(df, x="layer", y="skipped", value="value", log_color=False,
                            title=f"Causal effect matrix of {tag}",
                            subtitle="relative change of block l's update when block s is skipped",
                            x_title="affected block l", y_title="skipped block s", value_title="C[s, l]")
plots.save_chart(chart, f"probe_{tag}_causal", profile, df)
chart
