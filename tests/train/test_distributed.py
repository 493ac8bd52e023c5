"""Data parallel training: two gloo processes on CPU match one process with the same global batch, including a
stop on both ranks and a resume where every rank loads rank 0's checkpoint."""
from __future__ import annotations

import json
import random

import pytest
import torch
import torch.multiprocessing as mp

from conftest import train_on_two_ranks
from sparsedepth.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from sparsedepth.train import read_metrics, train

# fork: the children inherit the imported torch, so a launch takes about a second instead of ten
pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")



def test_two_ranks_match_one_process(tmp_path):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(120)] + "the of and a to in is was".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(40, 160))) for _ in range(40)]
    (tmp_path / "corpus.txt").write_text("\n<|endoftext|>\n".join(docs))
    data = DataConfig(corpus=str(tmp_path / "corpus.txt"), vocab_size=300, cache_dir=str(tmp_path / "cache"))
    cfg = TrainConfig(model=ModelConfig(vocab_size=512, d_model=32, n_layers=2, n_heads=2, max_seq_len=64),
                      optim=OptimConfig(lr=3e-3, warmup_steps=2), data=data, seq_len=32, batch_size=8,
                      micro_batch_size=2, steps=6, log_interval=1, telemetry_interval=2, eval_batches=3,
                      device="cpu")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # also what the forked ranks inherit
    try:
        single = train(cfg, tmp_path / "single", progress=False)  # 4 micro-batches of 2
        ddp_dir = tmp_path / "ddp"
        train_on_two_ranks(cfg, ddp_dir, stop=3)  # 2 ranks x 2 micro-batches of 2, stopped after step 3 ...
        assert json.loads((ddp_dir / "summary.json").read_text())["steps"] == 3
        train_on_two_ranks(cfg, ddp_dir)  # ... and resumed
    finally:
        torch.set_num_threads(n)

    summary = json.loads((ddp_dir / "summary.json").read_text())
    assert summary["done"] and summary["tokens"] == single["tokens"]
    assert json.loads((ddp_dir / "provenance.json").read_text())["world_size"] == 2
    a, b = read_metrics(tmp_path / "single"), read_metrics(ddp_dir)
    assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(1, 7))  # rank 0 alone writes
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)
        assert rb["lr"] == ra["lr"]
        if "layer_var" in ra:  # telemetry averaged over ranks as over micro-batches
            for key in ("layer_var", "attn_var", "ffn_norm", "layer_grad_norm", "layer_param_norm"):
                assert rb[key] == pytest.approx(ra[key], rel=1e-4), key
    assert summary["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
