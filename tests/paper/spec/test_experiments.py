"""Experiment definitions: every experiment at every profile, the paper's structure, the list command."""
from __future__ import annotations

import dataclasses
import json

import pytest

from sparsedepth.paper.spec import experiments as ex
from sparsedepth.paper.spec import reported as paper
from sparsedepth.cli import main
from sparsedepth.config import ConfigError, config_hash, from_dict, to_dict

CASES = [(p, e) for p in ex.PROFILES for e in ex.EXPERIMENTS if e in ex.scale(p).experiments]
FULL = [p for p in ex.PROFILES if set(ex.EXPERIMENTS) <= set(ex.scale(p).experiments)]  # the rungs run only some sweeps


@pytest.mark.parametrize("profile,experiment", CASES)
def test_every_experiment_has_valid_variants(profile, experiment):
    vs = ex.variants(profile, experiment)
    metas = ex.variant_meta(profile, experiment)
    assert len(vs) >= 3 and list(vs) == list(metas)
    for name, cfg in vs.items():
        assert config_hash(from_dict(to_dict(cfg))) == config_hash(cfg)  # round-trips through JSON
        assert cfg.model.vocab_size >= cfg.data.vocab_size or cfg.data.tokenizer != "bpe"
        assert cfg.batch_size % cfg.micro_batch_size == 0
        assert cfg.seq_len <= cfg.model.max_seq_len
        assert cfg.optim.warmup_steps < cfg.steps
        meta = metas[name]
        assert meta["paper_key"] in paper.rows(experiment), f"{name} maps to no paper row"
        assert ex.resolve(profile, experiment, name) == cfg
    assert ex.profile_note(profile, experiment).startswith(profile)
    # every paper row is covered once per seed
    seeds = len(ex.scale(profile).seeds_for(experiment))
    keys = [str(m["paper_key"]) for m in metas.values()]
    rows = [k for k in paper.rows(experiment) if experiment != "weight_decay" or k in ex.scale(profile).weight_decays]
    assert sorted(keys) == sorted(map(str, rows * seeds))


def seed0(vs: dict) -> dict:
    """The seed-0 sweep of a variants dict (a profile may repeat every sweep at further seeds)."""
    return {n: c for n, c in vs.items() if c.seed == 0}


@pytest.mark.parametrize("profile", FULL)
def test_swept_values_follow_the_paper_order(profile):
    for seed in ex.scale(profile).seeds_for("depth"):  # each seed's sweep in the paper's order
        depth = [c for c in ex.variants(profile, "depth").values() if c.seed == seed]
        assert [c.model.n_layers for c in depth] == sorted(c.model.n_layers for c in depth)
        assert len({c.model.n_layers for c in depth}) == len(depth) == 4
    wd = seed0(ex.variants(profile, "weight_decay"))
    assert [c.optim.weight_decay for c in wd.values()] == [0.0, 0.01, 0.1, 1.0, 3.0]
    gqa = seed0(ex.variants(profile, "gqa"))
    groups = [c.model.group_size for c in gqa.values()]
    assert groups[0] == 1 and groups == sorted(groups) and len(set(groups)) == 3
    assert groups[-1] == next(iter(gqa.values())).model.n_heads  # the last one is MQA, as the paper's G=16


@pytest.mark.parametrize("profile", FULL)
def test_seqlen_variants_see_equal_tokens(profile):
    vs = seed0(ex.variants(profile, "seqlen"))
    ts = [c.seq_len for c in vs.values()]
    assert ts == sorted(ts) and len(set(ts)) == 6
    fixed_sequences = ex.scale(profile).batch_unit == "sequences"  # paper: 256 sequences, steps follow from T
    if fixed_sequences:
        assert len({c.batch_size for c in vs.values()}) == 1
    else:
        assert len({c.tokens_per_step for c in vs.values()}) == 1
    assert len({c.steps * c.tokens_per_step for c in vs.values()}) == 1
    # only the context (and the batch, or the steps, that keep tokens fixed) changes
    ref = to_dict(next(iter(vs.values())))
    for c in vs.values():
        d = to_dict(c)
        diff = {k for k in d if d[k] != ref[k]} | {f"model.{k}" for k in d["model"] if d["model"][k] != ref["model"][k]}
        assert diff <= {"seq_len", "batch_size", "micro_batch_size", "model", "model.max_seq_len"} | (
            {"steps"} if fixed_sequences else set())


@pytest.mark.parametrize("profile", FULL)
def test_recipe_is_cumulative_in_paper_order(profile):
    all_metas = ex.variant_meta(profile, "recipe")
    # a later seed repeats the recipe with its own parents (the same seed's kept steps)
    for name, m in all_metas.items():
        if m.get("parent"):
            assert all_metas[m["parent"]]["seed"] == m["seed"], name
    metas = {k: m for k, m in all_metas.items() if m["seed"] == 0}
    vs = {k: v for k, v in ex.variants(profile, "recipe").items() if k in metas}
    assert [m["paper_key"] for m in metas.values()] == list(paper.rows("recipe"))
    assert [m["kept"] for m in metas.values()] == [True, True, False, True, False, False, True, True]
    assert [m["order"] for m in metas.values()] == list(range(8))
    c = list(vs.values())
    base, t4, t8, wd3, wd6, wd10, g2, moe = c
    s = ex.scale(profile)
    assert base.model.n_layers == s.deep_depth and all(x.model.n_layers == s.deep_depth for x in c)
    deepest = ex.variants(profile, "depth")[f"L{s.depths[-1]}"]
    if s.recipe_model is not None:  # paper: the 32-layer MoE ablation's own width
        assert (base.model.d_model, base.model.n_heads, base.model.ffn_hidden) == s.recipe_model
        assert dataclasses.replace(base, model=deepest.model) == deepest
    elif s.recipe_steps in (None, s.depth_steps):
        assert base == deepest  # the depth sweep's deepest run, trained once
    else:  # gpu: fewer steps so the T=8192 step fits one 10-minute command
        assert dataclasses.replace(base, steps=deepest.steps, optim=deepest.optim) == deepest
    assert t4.seq_len == 4 * base.seq_len and t8.seq_len == 8 * base.seq_len
    # rejected steps are not carried forward; kept ones are
    assert wd3.seq_len == t4.seq_len and wd3.optim.weight_decay == 0.3
    assert wd6.optim.weight_decay == 0.6 and wd10.optim.weight_decay == 1.0 and wd6.seq_len == t4.seq_len
    assert g2.optim.weight_decay == 0.3 and g2.model.group_size == 2 and not g2.model.is_moe
    assert moe.model.is_moe and moe.model.group_size == 2 and moe.optim.weight_decay == 0.3
    assert moe.model.top_k / moe.model.n_experts == pytest.approx(1 / 8)
    assert abs(moe.model.param_counts()["active"] / g2.model.param_counts()["active"] - 1) < 0.03
    assert len({x.steps * x.tokens_per_step for x in c}) == 1
    assert metas["+wd0.6"]["parent"] == "+wd0.3" and metas["+G2"]["parent"] == "+wd0.3"
    assert metas[f"+T{t8.seq_len}"]["parent"] == f"+T{t4.seq_len}"


@pytest.mark.parametrize("profile", FULL)
def test_moe_pairs_have_equal_active_parameters(profile):
    vs, metas = seed0(ex.variants(profile, "moe")), ex.variant_meta(profile, "moe")
    assert list(vs) == list(ex.MOE_VARIANTS)
    for size in ("small", "large"):
        dense, moe = vs[f"dense-{size}"].model, vs[f"moe-{size}"].model
        assert not dense.is_moe and moe.is_moe
        assert (dense.d_model, dense.n_layers, dense.n_heads) == (moe.d_model, moe.n_layers, moe.n_heads)
        ratio = moe.param_counts()["active"] / dense.param_counts()["active"]
        assert abs(ratio - 1) < 0.03, (size, ratio)
        assert moe.param_counts()["total"] > 2 * dense.param_counts()["total"]
        assert moe.top_k / moe.n_experts == pytest.approx(1 / 8)
        assert metas[f"moe-{size}"]["pair"] == f"dense-{size}"
    assert vs["moe-small"].model.shared_expert_hidden > 0 and vs["moe-large"].model.shared_expert_hidden == 0
    assert vs["dense-small"].model.d_model < vs["dense-large"].model.d_model


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_shared_runs_are_deduplicated(profile):
    runs = ex.unique_runs(profile)
    total = sum(len(ex.variants(profile, e)) for e in ex.EXPERIMENTS)
    assert total == 30 and len(runs) == 25
    gpu = ex.scale("gpu")
    # seeds 1 and 2 repeat 15 distinct component runs each (wd0.1 = T1024 = G1 = dense-large at every seed), the
    # depth sweep's second seed its 4 depths and the recipe's its 8 steps; runs of different seeds share nothing
    assert [len(gpu.seeds_for(e)) for e in ex.EXPERIMENTS] == [2, 3, 3, 3, 3, 2]
    assert len(ex.unique_runs("gpu")) == 27 + 4 + 2 * 15 + 8
    s = ex.scale(profile)
    base = ex.variants(profile, "depth")[f"L{s.base_depth}"]
    for exp, name in [("weight_decay", "wd0.1"), ("seqlen", f"T{s.seq_len}"), ("gqa", "G1"), ("moe", "dense-large")]:
        assert ex.resolve(profile, exp, name) == base, (exp, name)


def test_gpu_profile_is_paper_lite():
    s = ex.scale("gpu")
    assert (s.d_model, s.n_heads, s.depths) == (512, 8, (12, 16, 24, 32))
    depth = ex.variants("gpu", "depth")
    for c in depth.values():
        assert c.data.tokenizer == "gpt-neox" and c.model.vocab_size == 50304 and c.compile
        assert c.data.corpus == ".data/wiki-en-2019.00.txt.xz" and c.telemetry_interval == 10
        assert 90e6 <= c.steps * c.tokens_per_step <= 110e6
    for e in ("weight_decay", "seqlen", "gqa", "moe"):
        assert all(c.steps * c.tokens_per_step >= 50e6 for c in ex.variants("gpu", e).values())
    assert ex.variants("gpu", "gqa")["G8"].model.n_kv_heads == 1
    assert ex.probe_settings("gpu")["seq_len"] == 512 and s.needs_cuda and not s.keep_checkpoints


def test_gpu_depth_sweep_has_a_second_seed():
    s = ex.scale("gpu")
    assert s.seeds_for("depth") == (0, 1)
    assert all(ex.scale(p).seeds_for(e) == (0,) for p in ("smoke", "cpu") for e in ex.EXPERIMENTS)
    vs, metas = ex.variants("gpu", "depth"), ex.variant_meta("gpu", "depth")
    assert list(vs) == [f"L{L}" for L in s.depths] + [f"L{L}-seed1" for L in s.depths]  # seed 0 first
    assert [m["order"] for m in metas.values()] == list(range(len(vs)))
    for L in s.depths:
        a, b = f"L{L}", f"L{L}-seed1"
        assert vs[a].seed == 0 and vs[b].seed == 1
        assert dataclasses.replace(vs[b], seed=0) == vs[a]  # the seed is the only difference
        assert config_hash(vs[a]) != config_hash(vs[b])
        assert metas[a]["seed"] == 0 and metas[b]["seed"] == 1
        same = ("label", "value", "paper_key", "paper_label", "param")
        assert {k: metas[a][k] for k in same} == {k: metas[b][k] for k in same}
    # the recipe baseline (gpu: its own step count) is not a depth run of either seed
    assert config_hash(ex.variants("gpu", "recipe")["baseline"]) not in {config_hash(c) for c in vs.values()}
    assert "seeds 0, 1" in ex.profile_note("gpu", "depth") and "seeds" not in ex.profile_note("cpu", "depth")
    rows = [r for r in ex.variant_rows("gpu", "depth") if r["L"] == s.depths[-1]]
    assert [r["variant"] for r in rows] == [f"L{s.depths[-1]}", f"L{s.depths[-1]}-seed1"]
    assert rows[0]["paper"] == rows[1]["paper"] and rows[0]["hash"] != rows[1]["hash"]


def test_single_seed_profiles_keep_their_depth_configs():
    """smoke and cpu results are cached by config hash: one seed, names L{L}, every config at seed 0."""
    for profile in ("smoke", "cpu"):
        vs, metas = ex.variants(profile, "depth"), ex.variant_meta(profile, "depth")
        assert list(vs) == [f"L{L}" for L in ex.scale(profile).depths]
        assert all(c.seed == 0 for c in vs.values()) and all(m["seed"] == 0 for m in metas.values())
        for L, cfg in zip(ex.scale(profile).depths, vs.values()):
            assert cfg == ex.base(profile, n_layers=L, steps=ex.scale(profile).depth_steps)


def test_seeds_must_start_with_zero(monkeypatch):
    for bad in ((1, 2), (0, 0), ()):
        monkeypatch.setitem(ex.SCALES, "smoke", dataclasses.replace(ex.scale("smoke"), seeds={"gqa": bad}))
        with pytest.raises(ConfigError, match="seeds of 'gqa' must be distinct and start with 0"):
            ex.variants("smoke", "gqa")


@pytest.mark.parametrize("experiment", ["weight_decay", "seqlen", "gqa", "moe"])
def test_gpu_component_sweeps_have_three_seeds(experiment):
    vs, metas = ex.variants("gpu", experiment), ex.variant_meta("gpu", experiment)
    names = [n for n in vs if "-seed" not in n]
    assert list(vs) == names + [f"{n}-seed1" for n in names] + [f"{n}-seed2" for n in names]
    for n in names:
        for s in (1, 2):
            other = f"{n}-seed{s}"
            assert vs[other].seed == s and metas[other]["seed"] == s
            assert dataclasses.replace(vs[other], seed=0) == vs[n]
            assert metas[other]["paper_key"] == metas[n]["paper_key"] and metas[other]["label"] == metas[n]["label"]
    assert "seeds 0, 1, 2" in ex.profile_note("gpu", experiment)


def test_recipe_seeds_follow_their_own_parents(monkeypatch):
    monkeypatch.setitem(ex.SCALES, "smoke", dataclasses.replace(ex.scale("smoke"), seeds={"recipe": (0, 1)}))
    metas = ex.variant_meta("smoke", "recipe")
    assert metas["+T256-seed1"]["parent"] == "baseline-seed1" and metas["+T256"]["parent"] == "baseline"
    assert metas["baseline-seed1"]["parent"] is None


def test_small_profiles_shrink_everything():
    smoke, cpu, gpu = (ex.scale(p) for p in ("smoke", "cpu", "gpu"))
    for a, b in ((smoke, cpu), (cpu, gpu)):
        assert a.d_model < b.d_model and a.seq_len < b.seq_len and a.depths < b.depths
        assert a.depth_steps * a.tokens_per_step < b.depth_steps * b.tokens_per_step
    assert smoke.vocab_size == 512 and smoke.max_docs == 300
    assert ex.eval_settings("cpu")["limit"] == 50 and smoke.threads == 1


def test_resolve_names_the_valid_choices():
    with pytest.raises(ConfigError, match="valid: L2, L3, L4, L6"):
        ex.resolve("smoke", "depth", "L16")
    with pytest.raises(ConfigError, match="choose one of depth, weight_decay"):
        ex.variants("smoke", "depths")
    with pytest.raises(ConfigError, match="choose one of smoke, cpu, gpu"):
        ex.variants("laptop", "depth")


def test_list_command(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "seqlen:" in out and "T16, T32, T64" in out and "distinct runs" in out
    assert main(["list", "--profile", "smoke", "--experiment", "moe"]) == 0
    out = capsys.readouterr().out
    assert "== moe ==" in out and "moe-small" in out and "active" in out and "flops_per_token" in out
    assert config_hash(ex.resolve("smoke", "moe", "moe-small")) in out
    assert "== depth ==" not in out
    assert main(["list", "--profile", "cpu", "--json", "--experiment", "gqa"]) == 0
    blob = json.loads(capsys.readouterr().out)
    assert blob["cpu"]["gqa"]["G4"]["config"]["model"]["n_kv_heads"] == 1


def test_variant_rows_count_parameters_and_flops():
    rows = {r["variant"]: r for r in ex.variant_rows("cpu", "depth")}
    assert rows["L8"]["params"] > rows["L3"]["params"]
    assert rows["L8"]["train_flops"] == pytest.approx(rows["L8"]["flops_per_token"] * rows["L8"]["tokens"])


def test_paper_numbers_are_consistent():
    for L, row in paper.rows("depth").items():
        assert row["usefulness"] == pytest.approx(row["useful_layers"] / L, abs=1e-3)
        assert len(paper.PAPER["depth"]["jacobian"][L]) == L - 2  # layers 1 ... L-2
    assert paper.value("recipe", "+MoE", "acc") - paper.value("recipe", "baseline", "acc") == pytest.approx(4.6)
    assert paper.value("gqa", 16, "ppl") == 14.47 and paper.value("moe", "moe-large", "ppl") == 13.82
    with pytest.raises(KeyError, match="known: depth"):
        paper.rows("nope")


def test_perplexity_sees_equal_tokens_at_every_context():
    for name, cfg in ex.variants("gpu", "seqlen").items():
        kw = ex.eval_settings("gpu", cfg)
        assert kw["ppl_windows"] * cfg.seq_len == 65536 and "ppl_tokens" not in kw
    assert "ppl_windows" not in ex.eval_settings("gpu")


def test_a_plan_resolves_a_profile_once():
    plan = ex.plan("smoke")
    assert ex.plan(plan) is plan and plan.scale is ex.scale("smoke")
    assert plan.variants("depth") == ex.variants("smoke", "depth")
    assert plan.meta("gqa") == ex.variant_meta("smoke", "gqa")
    assert plan.resolve("depth", "L3") == ex.resolve("smoke", "depth", "L3")
    assert plan.probe_settings() == ex.probe_settings("smoke")
    cfg = plan.resolve("seqlen", list(plan.variants("seqlen"))[-1])
    assert plan.eval_settings(cfg) == ex.eval_settings("smoke", cfg)
    with pytest.raises(ConfigError, match="unknown variant 'L99'.*valid: L2"):
        plan.resolve("depth", "L99")
    with pytest.raises(ConfigError, match="unknown profile 'tiny'"):
        ex.plan("tiny")


@pytest.mark.parametrize("profile", [p for p in ex.PROFILES if "weight_decay_official" in ex.scale(p).experiments])
def test_official_decay_check_repeats_the_weight_decay_sweep(profile):
    """weight_decay_official: weight_decay's seed-0 configs with the official decay (gains and embedding too),
    outside the paper's experiments, so `all`, the claims and every existing run stay as they were."""
    assert "weight_decay_official" in ex.CHECKS and "weight_decay_official" not in ex.EXPERIMENTS
    ours = seed0(ex.variants(profile, "weight_decay"))
    official = ex.variants(profile, "weight_decay_official")
    assert list(official) == list(ours)  # same names, one seed
    for name, cfg in official.items():
        wd = cfg.optim.weight_decay
        assert cfg.optim.paper_compat_decay == (wd > 0) and not ours[name].optim.paper_compat_decay
        # only the decay groups differ; at λ=0 neither decays anything, so it is the same run
        assert dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, paper_compat_decay=False)) == ours[name]
        assert (config_hash(cfg) == config_hash(ours[name])) == (wd == 0)
    meta = ex.variant_meta(profile, "weight_decay_official")
    assert [m["paper_key"] for m in meta.values()] == list(ex.scale(profile).weight_decays)
    assert all(m["decay"] == "official" for m in meta.values())
    assert "official" in ex.profile_note(profile, "weight_decay_official")
    # no existing experiment contains it: its hashes (λ > 0) are new
    existing = {config_hash(c) for e in ex.EXPERIMENTS for c in ex.variants(profile, e).values()}
    assert {config_hash(c) for c in official.values()} & existing == {config_hash(official["wd0"])}
