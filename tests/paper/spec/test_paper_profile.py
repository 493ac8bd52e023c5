"""The ``paper`` profile: the paper's configurations at their own scale (paper-spec 2.5-2.7 and 3)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparsedepth.config import config_hash
from sparsedepth.paper.spec import experiments as ex

REPO = Path(__file__).resolve().parents[3]


def cfg(experiment: str, variant: str):
    return ex.resolve("paper", experiment, variant)


def billions(c, kind: str = "total") -> float:
    return c.model.param_counts()[kind] / 1e9


def test_parameter_counts_are_the_papers():
    # paper-spec 2.2 and 2.7: computed from the official code's shapes
    for L, total in ((12, 1.011), (16, 1.280), (24, 1.817), (32, 2.354)):
        assert billions(cfg("depth", f"L{L}")) == pytest.approx(total, abs=0.002)
    assert billions(cfg("gqa", "G4")) == pytest.approx(1.179, abs=0.002)
    assert billions(cfg("gqa", "G16")) == pytest.approx(1.154, abs=0.002)
    big, small = cfg("moe", "moe-large"), cfg("moe", "moe-small")
    assert (billions(big), billions(big, "active")) == pytest.approx((6.92, 1.28), abs=0.01)  # "7B/1B"
    assert (billions(small), billions(small, "active")) == pytest.approx((1.98, 0.40), abs=0.01)  # "2B/400M"
    assert billions(cfg("moe", "dense-small")) == pytest.approx(0.398, abs=0.002)
    assert billions(cfg("recipe", "baseline")) == pytest.approx(1.237, abs=0.002)  # the "1.2B" L=32 baseline


def test_schedule_and_tokens_follow_the_train_script():
    every = [c for e in ex.EXPERIMENTS for c in ex.variants("paper", e).values()]
    assert {c.steps * c.tokens_per_step for c in every} == {ex.scale("paper").run_tokens}
    assert abs(ex.scale("paper").run_tokens - 5e9) < 1e6
    assert {(c.optim.lr, c.optim.warmup_steps, c.optim.alpha_f) for c in every} == {(4e-4, 1000, 0.1)}
    assert {c.data.tokenizer for c in every} == {"gpt-neox"} and {c.model.vocab_size for c in every} == {50304}
    steps = {(e, v): cfg(e, v).steps for e, v in [("depth", "L16"), ("weight_decay", "wd0.1"), ("gqa", "G4"),
                                                  ("moe", "moe-large"), ("seqlen", "T8192"), ("seqlen", "T256")]}
    assert steps == {("depth", "L16"): 19072, ("weight_decay", "wd0.1"): 9536, ("gqa", "G4"): 4768,
                     ("moe", "moe-large"): 4768, ("seqlen", "T8192"): 2384, ("seqlen", "T256"): 76288}
    assert cfg("weight_decay", "wd0").batch_size == 512 and cfg("depth", "L12").batch_size == 256
    assert {c.seq_len for c in ex.variants("paper", "gqa").values()} == {4096}
    # micro-batches of 16k tokens per GPU whatever the context
    assert {c.micro_batch_size * c.seq_len for c in every} == {16384}


def test_runs_the_paper_shares_are_trained_once():
    # identical perplexity 14.52 in the length, GQA and MoE tables: one run
    assert cfg("seqlen", "T4096") == cfg("gqa", "G1") == cfg("moe", "dense-large")
    assert cfg("seqlen", "T1024") == cfg("depth", "L16")
    assert config_hash(cfg("weight_decay", "wd0.1")) != config_hash(cfg("depth", "L16"))  # 512 x 1024, ~9.5k steps
    assert len(ex.unique_runs("paper")) == 27


def test_only_the_64_expert_models_are_sharded():
    sharded = {(e, v) for e in ex.EXPERIMENTS for v, c in ex.variants("paper", e).items() if c.parallel == "fsdp"}
    assert sharded == {("moe", "moe-large"), ("recipe", "+MoE")}
    recipe_moe = cfg("recipe", "+MoE").model
    assert (recipe_moe.n_experts, recipe_moe.top_k, recipe_moe.expert_hidden, recipe_moe.n_kv_heads) == (64, 8, 1120, 8)


def test_the_note_names_the_choices():
    note = ex.profile_note("paper", "seqlen")
    assert "256 sequences per step at every T" in note and "T=256 x 256 sequences: 76288 steps" in note
    assert "T=1024 x 512 sequences: 9536 steps" in ex.profile_note("paper", "weight_decay")


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_committed_results_keep_their_config_hashes(profile):
    """Adding a profile must not move any cached run: every committed result's hash is its variant's today."""
    folders = sorted((REPO / "paper_results" / profile).glob("*/*/config.json"))
    if not folders:
        pytest.skip(f"no committed {profile} results in this checkout")
    for path in folders:
        rec = json.loads(path.read_text())
        assert config_hash(ex.resolve(profile, rec["experiment"], rec["variant"])) == rec["hash"], path
