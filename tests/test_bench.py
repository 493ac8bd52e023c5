"""``sparsedepth bench --profile smoke`` runs end to end on CPU and writes complete, positive records."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import load_script
from sparsedepth import bench, cli
from sparsedepth.probes import PROBES

COMMON = ("name", "group", "kind", "profile", "device", "device_slug", "date", "torch", "peak_flops",
          "peak_flops_source", "tokens_per_s", "mfu", "peak_mem_gib")
MODEL = ("n_layers", "d_model", "n_heads", "n_kv_heads", "n_experts", "top_k", "vocab_size", "model", "params")


def test_bench_smoke(tmp_path):
    """One run (about 15 s on one core) checked from every side; one test so xdist runs it once."""
    records = run_smoke(tmp_path)
    check_common(records)
    check_training(records)
    check_telemetry(records)
    check_attention(records)
    check_probes(records)
    check_ablation(records)


def run_smoke(out) -> dict[str, list[dict]]:
    assert _bench(out) == 0
    folder = out / "cpu"
    files = {p.name for p in folder.glob("*.json")}
    assert files == {f"{g}-smoke.json" for g in (*bench.GROUPS, "matmul")}
    return {g: json.loads((folder / f"{g}-smoke.json").read_text()) for g in (*bench.GROUPS, "matmul")}


def _positive(r: dict, *keys: str) -> None:
    for k in keys:
        assert isinstance(r[k], (int, float)) and r[k] > 0, f"{r['name']}: {k} = {r[k]!r}"


def check_common(records):
    for group, rows in records.items():
        assert rows, group
        for r in rows:
            if "skipped" in r:
                continue
            missing = [k for k in COMMON if k not in r]
            assert not missing, f"{r.get('name')}: missing {missing}"
            assert r["profile"] == "smoke" and r["device_slug"] == "cpu" and r["torch"] == torch.__version__
            _positive(r, "peak_flops", "peak_mem_gib")
    (mm,) = records["matmul"]
    assert mm["matmul_n"] > 0 and mm["peak_flops"] == pytest.approx(max(mm["matmul_rates"]))


def check_training(records):
    rows = records["depth"] + records["gqa_moe"] + records["telemetry"]
    assert len(rows) == 9
    for r in rows:
        assert "error" not in r, r
        assert r["kind"] == "train" and all(k in r for k in MODEL)
        _positive(r, "tokens_per_s", "mfu", "flops_per_token", "seq_len", "batch_size", "steps_timed")
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * r["flops_per_token"] / r["peak_flops"])
        assert r["flops_per_token"] == pytest.approx(
            bench.ModelConfig(**r["model"]).flops_per_token(r["seq_len"]))
    depths = [r["n_layers"] for r in records["depth"]]
    assert depths == sorted(depths) and len(set(depths)) == 3
    dense, gqa, moe = records["gqa_moe"]
    assert dense["seq_len"] == gqa["seq_len"] == moe["seq_len"] > records["depth"][0]["seq_len"]
    assert gqa["n_kv_heads"] * 4 == gqa["n_heads"]
    assert (moe["n_experts"], moe["top_k"]) == (8, 2)
    router = moe["n_layers"] * moe["d_model"] * moe["n_experts"]
    assert moe["params"]["active"] == dense["params"]["active"] + router  # equal active FFN parameters


def check_telemetry(records):
    rows = {r["telemetry_interval"]: r for r in records["telemetry"]}
    assert set(rows) == {1, bench.TrainConfig().telemetry_interval, 0}
    assert rows[1]["overhead_vs_off"] == pytest.approx(rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"] - 1)


def check_attention(records):
    by_backend: dict[str, list[dict]] = {}
    for r in records["attention"]:
        by_backend.setdefault(r["name"].split("-")[1], []).append(r)
    assert set(by_backend) == set(bench.BACKENDS)
    for r in by_backend["xformers"] + by_backend["cudnn"]:  # no CPU kernels: skipped, with the reason
        assert "CUDA" in r["skipped"]
    for r in by_backend["sdpa"] + by_backend["math"]:
        assert r["kind"] == "attention" and r["n_layers"] == 1
        _positive(r, "ms_fwd_bwd", "tokens_per_s", "mfu")
    assert {r["group_size"] for r in by_backend["sdpa"]} == {1, 4}


def check_probes(records):
    deepest = max(r["n_layers"] for r in records["depth"])
    for prefix, moe in (("probe", False), ("probe-moe", True)):  # the deepest dense model and the recipe's MoE
        rows = {r["probe"]: r for r in records["probes"] if r["name"] == f"{prefix}-{r['probe']}"}
        assert set(PROBES) <= set(rows) and "total" in rows
        assert rows["total"]["n_layers"] == deepest and (rows["total"]["n_experts"] > 0) == moe
        for r in rows.values():
            assert r["seconds"] >= 0
        _positive(rows["total"], "seconds")


def test_ablation_times_the_kernels_the_profile_does_not_use():
    from sparsedepth.paper.spec.experiments import base

    gpu = bench.ablation_configs(base("gpu"))
    assert gpu["default"].model.kernels == "triton" and gpu["kernels-torch"].model.kernels == "torch"
    assert bench.ablation_configs(base("smoke"))["kernels-triton"].model.kernels == "triton"
    # one config hash (the kernels are an implementation choice), two measurements
    assert bench.measurement_key(gpu["default"]) != bench.measurement_key(gpu["kernels-torch"])
    assert bench.measurement_key(gpu["default"]) == bench.measurement_key(base("gpu"))


def test_unknown_group_is_rejected():
    with pytest.raises(SystemExit, match="unknown group.*depth"):
        bench._parse_only("depth,speed")


def check_ablation(records):
    rows = {r["name"]: r for r in records["ablation"]}
    assert set(rows) == set(bench.ablation_configs(bench.TrainConfig()))
    assert "CUDA" in rows["attn-cudnn"]["skipped"]
    assert "CUDA and Triton" in rows["kernels-triton"]["skipped"]
    default, half = rows["default"], rows["2-micro"]
    assert half["micro_batch_size"] * 2 == default["micro_batch_size"] == default["batch_size"]
    _positive(half, "tokens_per_s", "wall_s")
    # the smoke profile does not compile: the compile variants are the default config, timed once
    assert default["compile"] is None
    assert rows["compile-model"]["same_run_as"] == default.get("same_run_as", "default")
    assert rows["2-micro"]["same_run_as"] == "compile-model-2-micro"


def test_profile_step_categories_and_cpu_run(tmp_path, monkeypatch, capsys):
    ps = load_script("profile_step")
    assert ps.category("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT") == "matmul"
    assert ps.category("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma") == "attention"
    assert ps.category("triton_poi_fused_mul_silu_2") == "fused pointwise (triton)"
    assert ps.category("triton_red_fused__log_softmax_3") == "fused reduction (triton)"
    assert ps.category("void at::native::multi_tensor_apply_kernel<FusedOptimizerTensorListMetadata>") == "optimizer"
    assert ps.category("_swiglu_bwd") == ps.category("_ce_rows") == "hand-written (triton)"
    assert ps.category("some_kernel") == "other"
    out = tmp_path / "profile.json"
    monkeypatch.setattr("sys.argv", ["profile_step.py", "--profile", "smoke", "--warmup", "1", "--steps", "2",
                                     "--device", "cpu", "--kernels", "triton", "--out", str(out)])
    assert ps.main() == 0
    rec = json.loads(out.read_text())
    assert rec["n_layers"] == 3 and rec["step_ms"] > 0 and rec["top_kernels"]
    assert rec["kernels"] == "torch"  # asked for triton: without CUDA the model runs torch's code, and says so
    assert abs(sum(rec["categories_ms"].values()) - rec["busy_ms"]) < 1e-6 * max(1.0, rec["busy_ms"])
    assert "step wall" in capsys.readouterr().out


def test_profile_step_profiles_a_named_run_and_rejects_bad_options(tmp_path, monkeypatch):
    ps = load_script("profile_step")
    out = tmp_path / "profile.json"
    argv = ["profile_step.py", "--profile", "smoke", "--warmup", "1", "--steps", "1", "--device", "cpu"]
    monkeypatch.setattr("sys.argv", argv + ["--run", "recipe/+MoE", "--inductor", "coordinate_descent_tuning=False",
                                            "--out", str(out)])
    assert ps.main() == 0
    rec = json.loads(out.read_text())
    assert rec["run"] == "recipe/+MoE" and rec["n_layers"] == 6 and rec["seq_len"] == 256
    assert rec["inductor"] == {"coordinate_descent_tuning": False} and rec["sdpa"] == "auto"
    for bad in (["--inductor", "no_such_option=1"], ["--inductor", "max_autotune"], ["--run", "recipe"],
                ["--run", "recipe/+MoE", "--layers", "4"], ["--run", "recipe/no-such-variant"]):
        monkeypatch.setattr("sys.argv", argv + bad)
        with pytest.raises(SystemExit, match="--inductor|--run"):
            ps.main()


def _bench(out, *extra) -> int:
    threads = torch.get_num_threads()
    try:
        return cli.main(["bench", "--profile", "smoke", "--device", "cpu", "--out", str(out),
                         "--cache-dir", str(out / "cache"), "--threads", "1", *extra])
    finally:
        torch.set_num_threads(threads)


def test_names_and_overrides_time_only_what_is_asked_into_their_own_files(tmp_path):
    assert _bench(tmp_path, "--only", "ablation,depth", "--names", "default", "--set", "model.n_layers=3") == 0
    files = sorted(p.name for p in (tmp_path / "cpu").glob("*.json"))
    assert files == ["ablation-smoke-model.n_layers-3.json", "matmul-smoke-model.n_layers-3.json"]  # no depth
    (rec,) = json.loads((tmp_path / "cpu" / files[0]).read_text())
    assert rec["name"] == "default" and rec["n_layers"] == 3 and rec["overrides"] == ["model.n_layers=3"]
    _positive(rec, "tokens_per_s")


def test_unknown_measurement_or_override_is_rejected_before_measuring(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown measurement\(s\) \['fast'\].*choose from default"):
        _bench(tmp_path, "--only", "ablation", "--names", "fast")
    with pytest.raises(SystemExit, match=r"--set: .*model\.n_layer\b"):
        _bench(tmp_path, "--set", "model.n_layer=3")
    assert not (tmp_path / "cpu").exists()


def test_config_file_is_timed_into_its_own_record(tmp_path):
    cfg = tmp_path / "tiny-fsdp.yaml"
    cfg.write_text("model: {vocab_size: 512, d_model: 32, n_layers: 2, n_heads: 2, max_seq_len: 64}\n"
                   "data: {vocab_size: 512, max_docs: 200}\nseq_len: 32\nbatch_size: 4\nlog_interval: 2\n"
                   "parallel: fsdp\nactivation_checkpointing: true\n")
    assert _bench(tmp_path, "--config", str(cfg), "--timed-logs", "1") == 0
    (rec,) = json.loads((tmp_path / "cpu" / "config-tiny-fsdp.json").read_text())
    assert rec["name"] == "tiny-fsdp" and rec["parallel"] == "fsdp" and rec["activation_checkpointing"]
    assert rec["steps_run"] == 4 and rec["n_layers"] == 2
    _positive(rec, "tokens_per_s", "peak_mem_gib")
    with pytest.raises(SystemExit, match=r"--config/--set: .*model\.n_layer\b"):
        _bench(tmp_path, "--config", str(cfg), "--set", "model.n_layer=3")


def test_fit_problem_names_what_a_model_needs():
    from pathlib import Path

    from sparsedepth.train.cli import load_config_file

    moe = load_config_file(Path(__file__).parents[1] / "scripts" / "paper_scale" / "moe-7b-1b.yaml")
    assert moe.model.param_counts()["total"] == pytest.approx(6.92e9, rel=1e-3)  # the paper's MoE-7B/1B
    h200, a100_40 = int(139 * 2**30), 40 * 10**9
    assert bench.fit_problem(moe, h200) is None and bench.fit_problem(moe, None) is None
    msg = bench.fit_problem(moe, a100_40)
    assert "103 GiB" in msg and "parallel=fsdp on 6 or more GPUs" in msg  # 103 / (0.6 x 0.9 x 37)
    assert "activation_checkpointing" not in bench.oom_note(moe, h200)  # it is already on


def test_telemetry_overhead_on_hand_rates():
    rows = [{"telemetry_interval": 0, "tokens_per_s": 100.0}, {"telemetry_interval": 1, "tokens_per_s": 80.0},
            {"telemetry_interval": 10, "tokens_per_s": 95.0}, {"telemetry_interval": 1, "error": "oom"}]
    bench._add_overheads(rows)
    # tokens/s off / tokens/s on - 1: 100/80 - 1 = 25 %, 100/95 - 1 ≈ 5.26 %; a failed row gets none
    assert [r.get("overhead_vs_off") for r in rows] == pytest.approx([0.0, 0.25, 100 / 95 - 1, None])


def test_eval_group_times_the_scorer_on_the_shipped_requests(tmp_path):
    from sparsedepth.eval import TASKS

    assert _bench(tmp_path, "--only", "eval") == 0
    assert sorted(p.name for p in (tmp_path / "cpu").glob("*.json")) == ["eval-smoke.json", "matmul-smoke.json"]
    (r,) = json.loads((tmp_path / "cpu" / "eval-smoke.json").read_text())
    assert r["name"] == "eval-score" and r["kind"] == "eval" and all(k in r for k in COMMON + MODEL)
    rows = bench.SHAPES["smoke"].eval_rows
    assert r["n_tasks"] == len(TASKS) and r["rows_per_task"] == rows
    assert len(TASKS) * rows < r["n_requests"]  # every row is a question of two or more choices
    assert r["n_batches"] == -(-r["n_requests"] // r["batch_size"]) and r["batch_size"] == 32  # CPU default
    assert r["n_layers"] == bench.catalog.get().scale("smoke").base_depth
    _positive(r, "seconds", "forward_s", "requests_per_s", "tokens_per_s", "tokens")
    assert r["forward_s"] + r["other_s"] == pytest.approx(r["seconds"])
    assert r["requests_per_s"] == pytest.approx(r["n_requests"] / r["seconds"])
