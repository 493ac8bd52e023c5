"""Sharded data parallel (FSDP2) on CPU with gloo: two processes train a mixture-of-experts model as one process
does with the same global batch, their sharded checkpoint resumes on one process with the same next losses,
the per-layer telemetry is the same, and ``load_run`` reads the sharded checkpoint into a whole model.
Activation checkpointing changes neither the results nor the config hash; a run without checkpoints writes none."""
from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch
import torch.multiprocessing as mp

from conftest import train_on_two_ranks
from sparsedepth.config import (ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, config_hash,
                                hashed_fields, to_dict)
from sparsedepth.train import load_run, read_metrics, train

pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")

TELEMETRY = ("layer_var", "attn_var", "ffn_var", "ffn_norm", "layer_grad_norm", "layer_param_norm", "expert_load",
             "final_gain")



@pytest.fixture
def tiny(tmp_path) -> TrainConfig:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(120)] + "the of and a to in is was".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(40, 160))) for _ in range(40)]
    (tmp_path / "corpus.txt").write_text("\n<|endoftext|>\n".join(docs))
    data = DataConfig(corpus=str(tmp_path / "corpus.txt"), vocab_size=300, cache_dir=str(tmp_path / "cache"))
    # validation at steps 3 (two ranks) and 6 (one) over 3 windows of one: the two ranks evaluate 2 and 1
    # windows, so the spare forward is exercised
    # an odd vocabulary: the embedding and head split unevenly over two ranks (FSDP pads the last shard)
    return TrainConfig(model=ModelConfig(vocab_size=509, d_model=32, n_layers=2, n_heads=2, max_seq_len=64,
                                         n_experts=4, top_k=2, expert_hidden=32),
                       optim=OptimConfig(lr=3e-3, warmup_steps=2), data=data, seq_len=32, batch_size=4,
                       micro_batch_size=1, steps=6, log_interval=1, telemetry_interval=2, eval_interval=3,
                       eval_batches=3,
                       device="cpu")


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(1, 7))
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5), ra["step"]
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4), ra["step"]
        assert rb["lr"] == ra["lr"]
        assert ("layer_var" in ra) == ("layer_var" in rb) and ("val_loss" in ra) == ("val_loss" in rb)
        if "val_loss" in ra:
            assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-5), ra["step"]
        if "layer_var" in ra:
            for key in TELEMETRY:
                got, want = torch.tensor(rb[key]), torch.tensor(ra[key])
                assert torch.allclose(got, want, rtol=1e-4, atol=1e-7), (ra["step"], key)


def test_fsdp_two_ranks_then_one_match_one_process(tmp_path, tiny):
    fsdp = dataclasses.replace(tiny, parallel="fsdp")
    assert config_hash(fsdp) != config_hash(tiny)  # FSDP computes in bf16 parameters on GPU: its own results
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # also what the forked ranks inherit
    try:
        single = train(tiny, tmp_path / "single", progress=False)  # plain: 4 micro-batches of 1
        run = tmp_path / "fsdp"
        train_on_two_ranks(fsdp, run, stop=3)  # 2 ranks x 2 micro-batches, sharded, stopped after step 3 ...
        ckpt = run / "checkpoints" / "step-00000003"
        assert (ckpt / "dcp").is_dir() and not (ckpt / "model.pt").exists()
        sharded = train(fsdp, run, progress=False)  # ... and resumed by one process
    finally:
        torch.set_num_threads(n)

    assert sharded["done"] and sharded["tokens"] == single["tokens"]
    assert json.loads((run / "provenance.json").read_text())["world_size"] == 1  # the last session's
    _same_rows(read_metrics(tmp_path / "single"), read_metrics(run))
    assert sharded["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    (m_single, _, _), (m_fsdp, cfg, _) = load_run(tmp_path / "single"), load_run(run)
    assert cfg.parallel == "fsdp"
    for (name, p), q in zip(m_single.named_parameters(), m_fsdp.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name


def test_activation_checkpointing_same_run(tmp_path, tiny):
    cfg = dataclasses.replace(tiny, steps=2, telemetry_interval=1, eval_batches=1)
    ac = dataclasses.replace(cfg, activation_checkpointing=True)
    assert config_hash(ac) == config_hash(cfg)
    train(cfg, tmp_path / "plain", progress=False)
    train(ac, tmp_path / "ac", progress=False, checkpoints=False)  # as bench times runs
    assert not (tmp_path / "ac" / "checkpoints").exists() and (tmp_path / "plain" / "checkpoints").is_dir()
    a, b = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "ac")
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-6)
        assert rb["layer_grad_norm"] == pytest.approx(ra["layer_grad_norm"], rel=1e-6)


def test_parallel_is_hashed_only_when_sharded_and_whole_forward_compile_is_refused():
    plain = hashed_fields(to_dict(TrainConfig()))
    # the hash of every config written before these fields existed is unchanged
    assert "parallel" not in plain and "activation_checkpointing" not in plain
    assert hashed_fields(to_dict(TrainConfig(parallel="fsdp")))["parallel"] == "fsdp"
    with pytest.raises(ConfigError, match="parallel: must be one of"):
        TrainConfig(parallel="zero3")
    with pytest.raises(ConfigError, match="compile: compile='model'.*use compile: blocks"):
        TrainConfig(parallel="fsdp", compile="model")
