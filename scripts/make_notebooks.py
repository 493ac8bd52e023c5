"""Generate the notebooks in ``notebooks/`` from the text below (reproducible, reviewable as a diff).

    python scripts/make_notebooks.py            # (re)write notebooks/*.ipynb
    python scripts/make_notebooks.py --check    # exit 1 if a notebook differs from what this script writes
    python scripts/make_notebooks.py --out DIR  # write elsewhere

Every notebook reads like a short section of the paper: the claim and the setup, the figures, and a closing
cell that says in numbers whether our result agrees. Notebooks only orchestrate and plot; the work is in
``sparsedepth`` (results, probes, theory, plots, tables, scorecard). The ``parameters`` cell is what
papermill (``sparsedepth reproduce``) overrides. Notebooks are written without outputs and with fixed cell
ids, so the same script always writes the same bytes.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

PARAMS = '''\
profile = "cpu"  # smoke (CI, seconds) | cpu (laptop, about an hour for everything) | gpu (paper-lite, one H200)
force = False  # retrain even when results with the same config are already there
device = "auto"  # auto | cpu | cuda
train = True  # False: only plot the results already under paper_results/<profile>/ (make figures)'''

CLOSE_CLAIMS = '''\
card = scorecard.scorecard(profile, {{EXP: res}})
card = card[card.experiment == EXP].reset_index(drop=True)
tables.write_table(card, f"{{EXP}}_claims", profile, title="{title}: the paper's claims on our results")
display(Markdown(tables.claims_markdown(card, what="the claims of this section", profile=profile)))
results.raise_for_failures(statuses, f"{{profile}}/{{EXP}}")  # a failed variant fails the notebook, after plotting'''


def _src(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def _setup(exp: str, extra_imports: str = "") -> str:
    return _src(f'''
        from IPython.display import Markdown, display

        from sparsedepth import experiments, plots, results, scorecard, tables{extra_imports}
        from sparsedepth.paper import PAPER

        EXP = "{exp}"
        statuses = results.run_experiment(profile, EXP, force=force, train=train, device=device, raise_on_error=False)
        res = results.load_results(profile, EXP)
        order = plots.order_of(res)  # display labels, sorted by the swept value
        display(Markdown(f"**Setup.** {{experiments.profile_note(profile, EXP)}}\\n\\n"
                         + tables.results_note(statuses, res, profile, EXP)))
    ''')


def _variance_cell(exp: str, sweep: str, log_y: bool, paper_fig: str, sequential: bool | str = True) -> str:
    scale = "log" if log_y else "linear"
    seq = "" if sequential is True else f", sequential={sequential!r}"
    return _src(f'''
        df = plots.last_layer_variance_frame(res)
        chart = plots.variance_chart(df, order, sweep_title="{sweep}", log_y={log_y}{seq},
                                     title="Last-layer output variance during training ({scale} y)",
                                     subtitle="left: raw residual stream h_L; right: after the final RMSNorm, the "
                                              "tensor the official code logged ({paper_fig})")
        plots.save_chart(chart, f"{{EXP}}_last_layer_variance", profile, df)
        chart
    ''')


def _compare_cell(metrics: list[str], x_title: str, title: str, relative: list[str], log: list[str]) -> str:
    how = ("panels marked ÷ first setting compare trends (dots; dashed line at 1)" if relative
           else "compare the trends (log axes)")
    return _src(f'''
        cmp = scorecard.compare(profile, EXP, res)
        tables.write_table(cmp, f"{{EXP}}_compare", profile, title="{title}: paper vs ours")
        long = plots.compare_long(cmp, {metrics!r}, relative={relative!r})
        chart = plots.compare_bars_chart(long, title="{title}: ours beside the paper", x_title="{x_title}",
                                         relative={relative!r}, log_metrics={log!r},
                                         subtitle="absolute values depend on scale (width, tokens, tokenizer): "
                                                  "{how}")
        plots.save_chart(chart, f"{{EXP}}_scores", profile, long)
        display(Markdown(tables.to_markdown(cmp)))
        chart
    ''')


def _md(text: str) -> str:
    return _src(text)


# ------------------------------------------------------------------------------------------ notebooks
def theory() -> list[tuple[str, str]]:
    return [
        ("md", '''
            # 0. Theory: mask density and variance growth with depth

            **Claim (abstract, project page).** Sparsity reduces variance propagation in residual-depth
            architectures: the smaller the mask density ρ, the slower the output variance grows with depth (the
            analysis assumes weights independent of the mask).

            **How we test it.** The paper's formula was not available (paper-spec §4.2), so we test our
            reconstruction numerically (`sparsedepth.theory`): random Pre-LN stacks
            x<sub>ℓ+1</sub> = x<sub>ℓ</sub> + F<sub>ℓ</sub>(RMSNorm(x<sub>ℓ</sub>)) whose sublayers are ReLU MLPs
            F(z) = (M₂⊙W₂) relu((M₁⊙W₁) z) with Bernoulli(ρ) masks M independent of W, for
            ρ ∈ {1, 1/2, 1/4, 1/8}. Per-block variances add in expectation,
            σ²<sub>L</sub> = σ²<sub>0</sub> + Σ<sub>ℓ</sub> c<sub>ℓ</sub>, with c<sub>ℓ</sub> ∝ ρ² (two masked
            matrices in series): the dashed closed form. The control rescales the
            masked weights by 1/√ρ; if the effect is only the mask's variance reduction, every density then
            follows the dense curve. We also track how far each block's Jacobian is from the identity,
            ||J − I||<sub>F</sub>/d, the quantity the curse-of-depth argument is about.
        '''),
        ("params", PARAMS),
        ("code", '''
            import pandas as pd
            from IPython.display import Markdown, display

            from sparsedepth import plots, tables, theory

            DENSITIES = [1.0, 0.5, 0.25, 0.125]
            SIM = {"smoke": dict(depth=16, d_model=64, n_tokens=64, n_seeds=1),
                   "cpu": dict(depth=64, d_model=128, n_tokens=256, n_seeds=2),
                   "gpu": dict(depth=64, d_model=256, n_tokens=512, n_seeds=3)}[profile]
            SETTINGS = {"plain masks": False, "1/√ρ-compensated masks": True}
            display(Markdown(f"**Setup ({profile}).** ReLU-MLP sublayers, d = {SIM['d_model']}, d_ff = 4d, "
                             f"1/√fan-in init, {SIM['n_tokens']} tokens, {SIM['n_seeds']} seed(s), depth up to "
                             f"{SIM['depth']}; densities {DENSITIES}. (Not a training run: `train` has no effect.)"))
        '''),
        ("code", '''
            def simulate_all():
                return {name: theory.simulate(DENSITIES, compensate=comp, **SIM) for name, comp in SETTINGS.items()}

            sims = tables.cached_json("theory_simulation", profile, {"densities": DENSITIES, **SIM}, simulate_all,
                                      force=force)
            rows = [dict(r, setting=name) for name in SETTINGS for r in sims[name]]  # JSON sorts keys: keep ours
        '''),
        ("md", '''
            ## Variance versus depth

            Solid: simulation (mean over tokens of the per-token variance across the hidden dimension, the
            trainer's statistic); dashed: closed form. Log y.
        '''),
        ("code", '''
            df = plots.theory_frame(rows, "variance")
            chart = plots.theory_chart(df, y_title="output variance of x_ℓ", facet="setting",
                                       title="Residual-stream variance versus depth, by mask density",
                                       subtitle="left: Bernoulli(ρ) masks; right: masked weights scaled by 1/√ρ (control)")
            plots.save_chart(chart, "theory_variance", profile, df)
            chart
        '''),
        ("md", '''
            ## Distance of each block from the identity

            ||J<sub>ℓ</sub> − I||<sub>F</sub>/d of the block producing x<sub>ℓ</sub> (exact Jacobian of its residual
            branch). Dashed: the closed form, ||J<sub>ℓ</sub> − I||²<sub>F</sub>/d ≈ c<sub>ℓ</sub>/σ²<sub>ℓ</sub>, the
            variance a block injects relative to the stream it joins.
        '''),
        ("code", '''
            df = plots.theory_frame(rows, "jacobian_dist")
            chart = plots.theory_chart(df, y_title="||J − I||_F / d", facet="setting",
                                       title="Block Jacobian distance from the identity versus depth",
                                       subtitle="log y; solid: simulation, dashed: closed form")
            plots.save_chart(chart, "theory_jacobian", profile, df)
            chart
        '''),
        ("code", '''
            summaries = {name: theory.summarize([r for r in rows if r["setting"] == name]) for name in SETTINGS}
            table = pd.DataFrame([{"setting": name, "density": float(rho), **vals}
                                  for name, summ in summaries.items() for rho, vals in summ.items()])
            tables.write_table(table, "theory_summary", profile, title="Variance-propagation simulation, per density")
            display(Markdown(tables.to_markdown(table)))
        '''),
        ("md", '''
            ## Does the simulation agree with the claim?
        '''),
        ("code", '''
            display(Markdown(tables.theory_verdict(summaries, SIM["depth"])))
        '''),
    ]


def depth() -> list[tuple[str, str]]:
    return [
        ("md", '''
            # 1. The curse of depth in dense models

            **Claim (paper §3.1, building on Sun et al. 2025).** In Pre-LN transformers the variance of the
            residual stream grows with depth, so deep blocks change the stream little: their Jacobians approach
            the identity, and they can be skipped, swapped or replaced by a linear map at little cost. The paper
            trains dense models with L = 12, 16, 24, 32 and reports that last-layer variance grows with L, that
            ||J − I|| falls with layer index and with depth, and that all three layer-effectiveness scores fall
            with depth (usefulness: 12 of 12 layers useful at L = 12, 18 of 32 at L = 32).

            **What we measure.** During training, every block's output variance (mean over tokens of the variance
            across the hidden dimension). On the final checkpoint, on held-out windows: ||J − I||<sub>F</sub>/d per
            block; *usefulness* = fraction of blocks whose least-squares linear replacement raises the loss by more
            than 10 % (fixed: the official code applies the transposed fit, paper-spec §1.4); *causal* = relative
            change of later blocks' updates when one block is skipped, averaged; *permutation* = mean relative
            loss change when two blocks swap.

            **Seeds.** Where the profile trains several seeds per depth (gpu: 2, seed s > 0 runs as
            `L<L>-seed<s>`), every curve and bar below is the seed mean and the shaded band or black error bar
            the min–max range across seeds; the tables and claims use the means, with the range and the number
            of seeds beside them.
        '''),
        ("params", PARAMS),
        ("code", _setup("depth")),
        ("md", '''
            ## Last-layer variance during training

            The paper's figure (log y) shows a dip, a peak after a few thousand steps and a decay, with deeper
            models higher throughout.
        '''),
        ("code", _variance_cell("depth", "depth L", True, "final_layer_variance.png")),
        ("md", '''
            ## ||J − I||<sub>F</sub>/d per layer

            Left: ours (every block); right: the paper's figure (blocks 1 … L−2, read off the published plot).
            Colours pair each of our depths with the paper depth it stands for.
        '''),
        ("code", '''
            df = plots.paper_jacobian_frame(PAPER["depth"]["jacobian"], res)
            chart = plots.jacobian_chart(df, [f"L={d}" for d in PAPER["depth"]["jacobian"]],
                                         title="Distance of each block's Jacobian from the identity")
            plots.save_chart(chart, "depth_jacobian", profile, df)
            chart
        '''),
        ("md", '''
            ## Layer-effectiveness scores, ours beside the paper's
        '''),
        ("code", _compare_cell(["usefulness", "causal", "permutation"], "depth (ours ≙ paper)",
                               "Layer-effectiveness scores", ["permutation"], [])),
        ("md", '''
            ## Where the variance sits: every layer over training
        '''),
        ("code", '''
            df = plots.layer_variance_frame(res)
            chart = plots.heatmap_chart(df, x="layer", y="step", value="variance", facet="label", order=order,
                                        title="Per-layer output variance over training (log colour)",
                                        x_title="layer ℓ", y_title="training step", value_title="variance")
            plots.save_chart(chart, "depth_layer_variance", profile, df)
            chart
        '''),
        ("md", "## Does our result agree with the paper's?"),
        ("code", CLOSE_CLAIMS.format(title="Depth")),
    ]


SWEEPS = {
    "weight_decay": dict(
        number=2, title="Weight decay", sweep="weight decay λ", log_y=False, paper_fig="WD.png, linear y",
        claim='''
            # 2. Implicit sparsity 1: weight decay

            **Claim (paper §3.2).** Weight decay pushes weights towards zero, an implicit sparsity that slows
            variance growth. On the L = 16 dense model, λ = 0.1 gives the best perplexity (14.83) and the highest
            usefulness (0.81, against 0.75 without decay) and clearly lowers last-layer variance; λ = 3 collapses
            (PPL 773).

            **What we measure.** The same L=16-equivalent model for λ ∈ {0, 0.01, 0.1, 1, 3} (decoupled AdamW);
            last-layer variance during training; perplexity and usefulness at the end; and the sparsity that
            should explain it: *weight density* ρ(τ) = fraction of weights with |W<sub>ij</sub>| > τ·std(W),
            averaged over the block matrices (a Gaussian matrix gives 0.92 at τ = 0.1 and 0.62 at τ = 0.5, dashed).
        ''',
        explain_md="## The sparsity that should explain it: weight density versus λ",
        explain='''
            df = plots.weight_density_frame(res, "optim.weight_decay")
            chart = plots.sweep_chart(df, x="x", y="density", color="tau", rule="gaussian", color_title="threshold",
                                      title="Weight density versus weight decay", x_title="weight decay λ",
                                      y_title="fraction of |W_ij| > τ·std(W)",
                                      subtitle="mean over layers and matrices; dashed: Gaussian reference; lower = sparser")
            plots.save_chart(chart, f"{EXP}_weight_density", profile, df)
            chart
        ''',
        metrics=["ppl", "usefulness", "variance_end"], x_title="weight decay λ (ours ≙ paper)"),
    "seqlen": dict(
        number=3, title="Sequence length", sweep="context length T", log_y=True, paper_fig="Length.png, log y",
        claim='''
            # 3. Implicit sparsity 2: sequence length

            **Claim (paper §3.3).** With a longer context each query spreads its attention over more keys, so
            the attended fraction of the context shrinks (an implicit sparsity) and the attention output's variance
            falls. On the L = 16 dense model, last-layer variance falls monotonically with T (≈2.8e4 at T = 256
            to ≈70 at T = 8192) and usefulness rises to 0.81 at T = 2048-4096.

            **What we measure.** The L=16-equivalent model at T from 256 to 8192 scaled by the profile, with equal
            tokens per step; last-layer variance during training; perplexity (each at its own T, as the paper) and
            usefulness; and the attention's own sparsity: entropy H = −Σ a log a per query and effective support
            exp(H)/(t+1) (1 = uniform over the visible keys), averaged over layers, heads and queries. It is
            read twice: on windows of the probe length, the same for every model (gpu: 512 tokens), which shows
            how training at context T changes attention at one fixed context; and on windows of each model's own
            T, which is what the paper's mechanism is about (results probed before this second reading existed
            show only the first).
        ''',
        explain_md="## The sparsity that should explain it: attention entropy and effective support versus T",
        explain='''
            df = plots.attention_frame(res, "seq_len")
            chart = plots.sweep_chart(df, x="x", facet="quantity", color="reading", color_title="read on",
                                      order=[r for _, r in plots.ATTENTION_READINGS],
                                      title="Attention spread versus context length",
                                      x_title="training context length T (tokens)",
                                      y_title="mean over layers, heads, queries",
                                      subtitle="support < 1: attention concentrates on a fraction of the visible keys")
            plots.save_chart(chart, f"{EXP}_attention", profile, df)
            chart
        ''',
        metrics=["ppl", "usefulness", "variance_end"], x_title="T (ours ≙ paper)"),
    "gqa": dict(
        number=4, title="Grouped-query attention", sweep="group size G", log_y=True, paper_fig="GQA.png",
        claim='''
            # 4. Explicit sparsity 1: grouped-query attention

            **Claim (paper §3.4).** Sharing keys and values across a group of G query heads is an explicit
            sparsity of the K/V parameters (density 1/G). On the L = 16 model with 16 heads, G = 4 and G = 16
            lower last-layer variance (end ≈122 and ≈102 against ≈220 for MHA) and raise usefulness from 0.81
            to 0.87 at equal or better perplexity.

            **What we measure.** The L=16-equivalent model with group sizes scaled to the profile's head count;
            last-layer variance during training; perplexity and usefulness; and the nominal K/V density 1/G beside
            the end-of-training variance and usefulness.
        ''',
        explain_md="## The sparsity that should explain it: nominal K/V density 1/G",
        explain='''
            df = plots.density_frame(res, cmp, "kv")
            chart = plots.sweep_chart(df, x="label", facet="quantity", x_order=order, x_title="group size G",
                                      y_title="", title="K/V density beside variance and usefulness")
            plots.save_chart(chart, f"{EXP}_density", profile, df)
            chart
        ''',
        metrics=["ppl", "usefulness", "variance_end"], x_title="G (ours ≙ paper)"),
    "moe": dict(
        number=5, title="Mixture of experts", sweep="model", log_y=True, paper_fig="MoE-400M.png, MoE-1B.png",
        sequential="paired",  # light = dense, dark = its MoE, one hue per size
        relative=[], log=["ppl", "variance_end"],  # pairs compare within a size: absolute values on log axes
        claim='''
            # 5. Explicit sparsity 2: mixture of experts

            **Claim (paper §3.5).** A mixture of experts activates k of E expert FFNs per token (density
            k/E = 1/8 in both of the paper's MoEs). Against dense models of equal active size, MoE lowers
            last-layer variance several-fold (end ≈15 vs ≈103 at 400M active, ≈73 vs ≈220 at 1B), lowers
            perplexity (15.89 vs 17.56; 13.82 vs 14.52) and raises usefulness to 0.94.

            **What we measure.** Two dense/MoE pairs with equal active parameters (the small MoE with a shared
            expert, as the paper's 400M one); last-layer variance during training; perplexity and usefulness; the
            nominal expert density k/E; and the expert load on held-out data (share of routed assignments per
            expert, 1 = uniform) which shows whether the sparsity is real or collapsed onto a few experts.
        ''',
        explain_md="## The sparsity that should explain it: expert density and load",
        explain='''
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
        ''',
        metrics=["ppl", "usefulness", "variance_end"], x_title="model (ours ≙ paper)"),
}


def sweep(exp: str) -> list[tuple[str, str]]:
    s = SWEEPS[exp]
    return [
        ("md", s["claim"]),
        ("params", PARAMS),
        ("code", _setup(exp)),
        ("md", f"## Last-layer variance during training\n\nPaper: {s['paper_fig']}."),
        ("code", _variance_cell(exp, s["sweep"], s["log_y"], s["paper_fig"], s.get("sequential", True))),
        ("md", "## Perplexity, usefulness and final variance, ours beside the paper's"),
        ("code", _compare_cell(s["metrics"], s["x_title"], s["title"], s.get("relative", ["ppl", "variance_end"]),
                               s.get("log", ["ppl"]))),
        ("md", s["explain_md"]),
        ("code", s["explain"]),
        ("md", "## Does our result agree with the paper's?"),
        ("code", CLOSE_CLAIMS.format(title=s["title"])),
    ]


def recipe() -> list[tuple[str, str]]:
    return [
        ("md", '''
            # 6. A recipe for deep models: sparsity at L = 32

            **Claim (paper §3.6, the headline figure).** Adding the sparsity mechanisms one at a time to a 32-layer
            dense model (≈1.2 B parameters) raises average downstream accuracy from 39.5 to 44.1 (+4.6 points) and
            usefulness from ≈0.53 to 0.75, matching the L = 16 model's usefulness. Kept steps: T = 4096, λ = 0.3,
            G = 2, MoE (64 experts, top-8); rejected (faded): T = 8192, λ = 0.6, λ = 1.0.

            **What we measure.** The same cumulative ablation at the profile's deep depth (each step starts from
            the last kept state), evaluated zero-shot on the shipped multiple-choice sets (unweighted mean accuracy;
            the paper's task list is not known, paper-spec §3.7) and probed for usefulness.
        '''),
        ("params", PARAMS),
        ("code", _setup("recipe")),
        ("md", "## The ablation: accuracy bars, usefulness stars"),
        ("code", '''
            cmp = scorecard.compare(profile, EXP, res)
            tables.write_table(cmp, f"{EXP}_compare", profile, title="Recipe ablation: paper vs ours")
            depth_res = results.load_results(profile, "depth")  # our L=16-equivalent reference, if trained
            ref = scorecard.setting_row(profile, "depth", depth_res, 16)  # seed mean where several seeds ran
            tokens = lambda rs: next((r["summary"].get("tokens") for r in rs.values() if r.get("summary")), None)
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
        '''),
        ("md", "## Last-layer variance of each recipe step"),
        ("code", _variance_cell("recipe", "recipe step", True, "not shown in the paper", sequential=False)),
        ("md", "## Does our result agree with the paper's?"),
        ("code", CLOSE_CLAIMS.format(title="Recipe")),
    ]


def summary() -> list[tuple[str, str]]:
    return [
        ("md", '''
            # 7. Summary: the paper's numbers beside ours, and which claims hold

            Every table of the paper with our values beside it, and the scorecard of the paper's qualitative
            claims checked on our results with one rule (`sparsedepth.scorecard`, `sparsedepth.noise`): each
            claim's effect (a difference of seed means, paired by seed, or the slope over a sweep) *holds* when
            it exceeds two standard errors in the paper's direction, is *contradicted* when it exceeds them the
            other way, and is *inconclusive* otherwise. Errors come from the seeds of each setting; a setting
            with one run takes the measured seed spread of the nearest experiment with seeds (the `noise`
            column names it); accuracy adds each task's binomial error. Variance claims are judged on the raw
            residual stream h_L and on N_f(h_L) after the final norm (what the official code logged), usefulness
            claims on the useful-layer fraction and on the mean per-layer loss ratio. On the paper's own
            numbers, taken as exact, every claim holds: absolute values depend on scale, trends should not.
        '''),
        ("params", PARAMS),
        ("code", '''
            import pandas as pd
            from IPython.display import Markdown, display

            from sparsedepth import experiments, plots, results, results_page, scorecard, tables

            all_res, all_status = {}, {}
            for exp in experiments.EXPERIMENTS:  # cached runs return at once; missing ones train (train=True)
                all_status[exp] = results.run_experiment(profile, exp, force=force, train=train, device=device,
                                                         raise_on_error=False)
                all_res[exp] = results.load_results(profile, exp)
            display(Markdown("\\n".join(tables.results_note(all_status[e], all_res[e], profile, e) if all_res[e] else
                                        f"**No results for `{profile}/{e}`: its claims show as missing.**\\n"
                                        for e in experiments.EXPERIMENTS)))
        '''),
        ("md", "## Paper versus ours, every table"),
        ("code", '''
            long = []
            for exp in experiments.EXPERIMENTS:
                cmp = scorecard.compare(profile, exp, all_res[exp])
                display(Markdown(f"### {exp}\\n\\n" + tables.to_markdown(cmp)))
                long.append(plots.compare_long(cmp, scorecard.TABLE_METRICS[exp]).assign(experiment=exp))
            long = pd.concat(long, ignore_index=True)
            wide = tables.side_by_side(long, ["experiment", "variant", "setting", "metric"])
            tables.write_table(wide, "paper_vs_ours", profile, title="The paper's numbers beside ours")
        '''),
        ("md", "## Claims scorecard"),
        ("code", '''
            card = scorecard.scorecard(profile, all_res)
            tables.write_table(card, "scorecard", profile, title=f"Claims scorecard ({profile})")
            n = scorecard.counts(card)
            paper_ok = sum(c.status == "holds" for c in scorecard.paper_checks())
            chart = plots.scorecard_chart(card, title=f"Claims scorecard at profile {profile}",
                                          subtitle=f"{n['holds']} hold, {n['contradicted']} contradicted, "
                                                   f"{n['inconclusive']} inconclusive, "
                                                   f"{n['missing']} missing; "
                                                   f"on the paper's own numbers {paper_ok} of {len(card)} hold")
            plots.save_chart(chart, "scorecard", profile, card)
            chart
        '''),
        ("code", '''
            page = results_page.write_results(profile)  # every paper figure and table beside ours, from these tables
            display(Markdown(f"Results page: `{page}`. On the paper's own numbers {paper_ok} of {len(card)} claims hold.\\n\\n"
                             + tables.claims_markdown(card, what="the paper's claims", profile=profile)))
            for exp, st in all_status.items():
                results.raise_for_failures(st, f"{profile}/{exp}")
        '''),
    ]


def probe_a_model() -> list[tuple[str, str]]:
    return [
        ("md", '''
            # 8. Probe a model of your own

            Runs the whole probe suite (variance, Jacobian, usefulness, causal, permutation, angular distance,
            block influence, logit lens, sparsity) on one model and draws the per-layer curves of the other
            notebooks. `checkpoint` is a run directory of ours (`runs/<profile>/<hash>/`, trained with
            `sparsedepth train`) or a local Hugging Face causal-LM folder (`save_pretrained` output with its
            tokenizer; nothing is downloaded). Leave it `None` to probe the deepest model of the `profile`'s depth
            sweep, trained here if it is not there yet.
        '''),
        ("params", '''
            checkpoint = None  # a run directory or Hugging Face folder; None: the deepest run of the profile's depth sweep
            profile = "smoke"  # which depth run to use when checkpoint is None; figures go to figures/<profile>/
            name = None  # file-name tag of the figures (default: the folder name)
            device = "auto"  # auto | cpu | cuda
            n_windows = 8  # held-out windows to probe
            seq_len = None  # tokens per window (None: the run's own; 256 for a Hugging Face model)
        '''),
        ("code", '''
            import os
            import re
            from pathlib import Path

            import pandas as pd
            from IPython.display import Markdown, display

            from sparsedepth import experiments, plots, probes, results, tables
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
        '''),
        ("code", '''
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
        '''),
        ("code", '''
            df = plots.probe_profile_frame(out)
            chart = plots.probe_profile_chart(df, title=f"Per-layer probes of {tag}",
                                              subtitle="layer ℓ = output of block ℓ (1-based); held-out windows")
            plots.save_chart(chart, f"probe_{tag}_per_layer", profile, df)
            chart
        '''),
        ("code", '''
            df = plots.matrix_frame(out["causal"]["matrix"], row="skipped", col="layer")
            chart = plots.heatmap_chart(df, x="layer", y="skipped", value="value", log_color=False,
                                        title=f"Causal effect matrix of {tag}",
                                        subtitle="relative change of block l's update when block s is skipped",
                                        x_title="affected block l", y_title="skipped block s", value_title="C[s, l]")
            plots.save_chart(chart, f"probe_{tag}_causal", profile, df)
            chart
        '''),
    ]


NOTEBOOKS = {
    "00_theory": theory,
    "01_depth": depth,
    "02_weight_decay": lambda: sweep("weight_decay"),
    "03_sequence_length": lambda: sweep("seqlen"),
    "04_gqa": lambda: sweep("gqa"),
    "05_moe": lambda: sweep("moe"),
    "06_recipe": recipe,
    "07_summary": summary,
    "08_probe_a_model": probe_a_model,
}


def build(stem: str) -> nbformat.NotebookNode:
    """One notebook, without outputs, with deterministic cell ids."""
    cells = []
    for i, (kind, text) in enumerate(NOTEBOOKS[stem]()):
        src = _src(text)
        if kind == "md":
            cell = new_markdown_cell(src)
        else:
            cell = new_code_cell(src)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
        cell["id"] = f"{stem.replace('_', '-')}-{i:02d}"
        cells.append(cell)
    nb = new_notebook(cells=cells, metadata={  # the kernel `make setup` installs: JupyterLab opens the venv
        "kernelspec": {"name": "sparsedepth", "display_name": "Python (sparsedepth)", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(nb)
    return nb


def render(stem: str) -> str:
    return nbformat.writes(build(stem)) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "notebooks", help="folder to write (default: notebooks/)")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if any notebook differs")
    args = ap.parse_args(argv)
    stale = []
    for stem in NOTEBOOKS:
        path = args.out / f"{stem}.ipynb"
        text = render(stem)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: a reader never sees half a notebook
    if args.check and stale:
        print(f"notebooks out of date (run python scripts/make_notebooks.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {len(NOTEBOOKS)} notebooks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
