"""H200 GPU-hours estimates: which measurement each rests on, and paper-scale records replacing them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sparsedepth.cli import main
from sparsedepth.config import to_dict
from sparsedepth.paper.pipeline import gpu_hours as G
from sparsedepth.paper.pipeline import results as R
from sparsedepth.paper.spec import experiments as ex

BENCH = Path(__file__).resolve().parents[3] / "paper_results" / "bench" / G.DEVICE
D512 = ("depth-gpu-2026-11-30.json", "gqa_moe-gpu-2026-11-30.json")


@pytest.fixture
def bench_dir(tmp_path) -> Path:
    """The committed d=512 round in a folder of its own (paper-scale records get added by tests)."""
    if not all((BENCH / f).is_file() for f in D512):
        pytest.skip("committed bench records not in this checkout")
    out = tmp_path / "paper_results" / "bench" / G.DEVICE
    out.mkdir(parents=True)
    for f in D512:
        shutil.copy(BENCH / f, out / f)
    return out


def _record(cfg, tokens_per_s: float) -> dict:
    """A training record as `bench --config` writes it (the fields the estimate reads)."""
    return {"kind": "train", "name": "config", "model": to_dict(cfg.model), "seq_len": cfg.seq_len,
            "parallel": cfg.parallel, "tokens_per_s": tokens_per_s, "date": "2026-12-04T00:00:00+00:00"}


def test_estimates_rest_on_the_reference_and_the_d512_round(bench_dir):
    m = G.Measurements.load(bench_dir)
    l16 = ex.resolve("paper", "depth", "L16")
    hours, basis = G.gpu_hours(l16, m)
    assert basis == "d2048"
    assert hours == pytest.approx(G.train_flops(l16) / m.reference.flop_rate / 3600)
    # the reference model is the paper's dense 1B at T=1024: its rate is its own tokens/s
    assert hours == pytest.approx(l16.steps * l16.tokens_per_step / G.REFERENCE_TOKENS_PER_S / 3600, rel=1e-3)
    small = ex.resolve("paper", "moe", "dense-small")  # d=768: between the d=512 round and the reference
    low, high = m._dense_points()
    hours, basis = G.gpu_hours(small, m)
    assert basis == "d512-2048" and low.flop_rate < high.flop_rate
    x = 0.2925  # log2(768 / 512) / log2(2048 / 512)
    assert G.train_flops(small) / (hours * 3600) == pytest.approx(low.flop_rate + x * (high.flop_rate - low.flop_rate),
                                                                  rel=1e-3)
    moe, dense = ex.resolve("paper", "moe", "moe-large"), ex.resolve("paper", "moe", "dense-large")
    ratio = m._moe_ratio("fsdp")[0]  # no paper-scale MoE record: the d=512 pair's ratio for either mode
    assert ratio == m._moe_ratio("ddp")[0]
    assert 0.5 < ratio < 1 and G.gpu_hours(moe, m)[1] == "d2048 x moe-fsdp"
    assert G.gpu_hours(moe, m)[0] / G.gpu_hours(dense, m)[0] == pytest.approx(
        G.train_flops(moe) / G.train_flops(dense) / ratio)


def test_a_paper_scale_record_replaces_the_estimate(bench_dir):
    l16 = ex.resolve("paper", "depth", "L16")
    (bench_dir / "config-dense-1b.json").write_text(json.dumps([_record(l16, 80_000.0)]))
    m = G.Measurements.load(bench_dir)
    hours, basis = G.gpu_hours(l16, m)
    assert basis == "config-dense-1b.json"
    assert hours == pytest.approx(l16.steps * l16.tokens_per_step / 80_000 / 3600)
    # other dense d=2048 shapes now take that record's FLOP rate instead of the reference
    l32 = ex.resolve("paper", "depth", "L32")
    assert G.gpu_hours(l32, m)[1] == "d2048"
    assert G.train_flops(l32) / G.gpu_hours(l32, m)[0] / 3600 == pytest.approx(80_000 * l16.model.flops_per_token(1024))
    assert any(line.startswith("config-dense-1b.json: measured") for line in m.legend())


def test_list_prints_hours_and_the_total(bench_dir, monkeypatch, capsys):
    monkeypatch.setenv(R.ROOT_ENV, str(bench_dir.parents[2]))
    assert main(["list", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    m = G.Measurements.load(bench_dir)
    runs = ex.unique_runs("paper")
    total = sum(G.gpu_hours(ex.resolve("paper", *pairs[0]), m)[0] for pairs in runs.values())
    assert f"H200 GPU-hours to train the whole profile: {total:,.0f} ({len(runs)} distinct runs" in out
    assert "h200_h" in out and "d512-2048 x moe" in out and "71k tokens/s" in out
    assert "replace these estimates" in out
    assert main(["list", "--profile", "cpu", "--experiment", "depth"]) == 0
    assert "h200_h" not in capsys.readouterr().out  # CPU profiles: no H200 estimate


def test_an_fsdp_moe_record_sets_the_ratio_of_fsdp_moes_only(bench_dir):
    """The 64-expert FSDP record (micro-batches of one, activation checkpointing) prices FSDP MoEs; a DDP MoE
    keeps the d=512 pair's ratio."""
    l16, big = ex.resolve("paper", "depth", "L16"), ex.resolve("paper", "moe", "moe-large")
    small = ex.resolve("paper", "moe", "moe-small")
    assert big.parallel == "fsdp" and small.parallel == "ddp"
    before = G.Measurements.load(bench_dir)._moe_ratio("ddp")[0]
    (bench_dir / "config-dense-1b.json").write_text(json.dumps([_record(l16, 80_000.0)]))
    (bench_dir / "config-moe.json").write_text(json.dumps([_record(big, 20_000.0)]))
    m = G.Measurements.load(bench_dir)
    fsdp = 20_000 * big.model.flops_per_token(big.seq_len) / (80_000 * l16.model.flops_per_token(1024))
    assert m._moe_ratio("fsdp")[0] == pytest.approx(fsdp) and m._moe_ratio("ddp")[0] == pytest.approx(before)
    assert G.gpu_hours(small, m)[1] == "d512-2048 x moe"
    recipe_moe = ex.resolve("paper", "recipe", "+MoE")
    assert recipe_moe.parallel == "fsdp" and G.gpu_hours(recipe_moe, m)[1] == "d512-2048 x moe-fsdp"
    assert any(line.startswith("x moe-fsdp: an MoE under fsdp") for line in m.legend())
