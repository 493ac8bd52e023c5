"""Trainer: run-directory files, telemetry rows, bitwise resume, signals, non-finite stop, groups, schedule, CLI."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import textwrap

import pytest
import torch

from conftest import word_corpus
from sparsedepth.cli import main as cli_main
from sparsedepth.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, config_hash, to_dict
from sparsedepth.data import val_windows
from sparsedepth.model import build_model
from sparsedepth.train import (NonFiniteLossError, SpikeMonitor, delete_checkpoints, load_run, lr_factor,
                               param_groups, read_metrics, train)
from sparsedepth.train import loop as loop_mod
from sparsedepth.train.checkpoint import check_run_dir, list_checkpoints, write_config
from sparsedepth.train.optim import build_optimizer, build_scheduler



@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory) -> DataConfig:
    """A tiny synthetic corpus (documents separated by <|endoftext|> lines) and a shared token cache."""
    return word_corpus(tmp_path_factory.mktemp("corpus"))


def make_cfg(data: DataConfig, model: dict | None = None, optim: dict | None = None, **kw) -> TrainConfig:
    base = dict(seq_len=32, batch_size=8, micro_batch_size=4, steps=12, log_interval=2, telemetry_interval=3,
                eval_interval=6, eval_batches=2, device="cpu", spike_window=16)
    m = {**dict(vocab_size=512, d_model=32, n_layers=2, n_heads=2, max_seq_len=64), **(model or {})}
    o = {**dict(lr=3e-3, warmup_steps=3), **(optim or {})}
    return TrainConfig(model=ModelConfig(**m), optim=OptimConfig(**o), data=data, **{**base, **kw})


def test_short_run_writes_run_dir(data_cfg, tmp_path):
    cfg = make_cfg(data_cfg)
    run = tmp_path / "run"
    summary = train(cfg, run, progress=False)
    for name in ("config.json", "metrics.jsonl", "provenance.json", "summary.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text()) == {"config": to_dict(cfg), "hash": config_hash(cfg)}
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["done"] and summary["steps"] == 12 and summary["tokens"] == 12 * 8 * 32
    assert summary["attn_backend"] == "sdpa" and summary["mfu"] is None and summary["tokens_per_s"] > 0
    assert summary["kernels"] == "torch"
    assert summary["params"] == cfg.model.param_counts()
    assert summary["peak_memory_gib"] is None  # recorded on CUDA only (the GPU tier checks it there)
    assert math.isclose(summary["val_ppl"], math.exp(summary["val_loss"]))
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["finished"] and prov["attn_backend"] == "sdpa" and prov["tokens"] == summary["tokens"]
    assert prov["kernels"] == "torch"
    assert set(prov["param_groups"]) == {"decay", "no_decay"} and "git" in prov and prov["versions"]["torch"]

    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [2, 3, 4, 6, 8, 9, 10, 12]  # log every 2, telemetry every 3, last
    for r in rows:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(r)
        tel = r["step"] % 3 == 0 or r["step"] == 12
        assert ("layer_var" in r) == tel and ("val_loss" in r) == (r["step"] in (6, 12))
        if tel:
            for key in ("layer_var", "attn_var", "ffn_var", "attn_norm", "ffn_norm", "layer_grad_norm",
                        "layer_param_norm"):
                assert len(r[key]) == cfg.model.n_layers and all(v > 0 for v in r[key]), key
            assert r["final_var"] > 0 and r["final_gain"] > 0 and "expert_load" not in r
            # block gradients are part of the global gradient (embedding and head are the rest)
            assert sum(g * g for g in r["layer_grad_norm"]) < r["grad_norm"] ** 2
    assert rows[-1]["val_loss"] == summary["val_loss"] and rows[-1]["loss"] == summary["final_loss"]
    assert rows[-1]["lr"] == pytest.approx(cfg.optim.alpha_f * cfg.optim.lr)

    # a finished run returns its summary without training (metrics untouched)
    before = (run / "metrics.jsonl").read_bytes()
    assert train(cfg, run, progress=False) == summary
    assert (run / "metrics.jsonl").read_bytes() == before

    # load_run gives the trained model: its held-out loss is the logged val_loss
    model, cfg2, data = load_run(run, device="cpu")
    assert cfg2 == cfg and not model.training
    w = val_windows(data.val, cfg.seq_len, cfg.eval_batches * cfg.micro_batch_size, seed=cfg.seed)
    with torch.no_grad():
        losses = [model(c[:, :-1], c[:, 1:]).lm_loss * len(c) for c in w.split(cfg.micro_batch_size)]
    assert float(sum(losses) / len(w)) == pytest.approx(summary["val_loss"], rel=1e-5)

    assert delete_checkpoints(run) > 0 and not (run / "checkpoints").exists()
    assert train(cfg, run, progress=False) == summary
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_run(run)


def test_stop_and_resume_is_bitwise_identical(data_cfg, tmp_path):
    cfg = make_cfg(data_cfg, log_interval=1, telemetry_interval=2, eval_interval=4, ckpt_interval=4,
                   keep_checkpoints=2)
    full = train(cfg, tmp_path / "full", progress=False)
    part = tmp_path / "part"
    first = train(cfg, part, stop_at_step=5, progress=False)
    assert not first["done"] and first["steps"] == 5
    assert [s for s, _ in list_checkpoints(part)] == [4, 5]
    # rows written after the checkpoint (a crash between checkpoint and exit) must not be duplicated
    with open(part / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 6, "loss": 0.0}) + "\n" + '{"step": 7, "lo')  # and a line cut short
    resumed = train(cfg, part, progress=False)
    assert resumed["done"] and resumed["steps"] == 12
    assert [s for s, _ in list_checkpoints(part)] == [8, 12]  # keep-last-2

    a, b = read_metrics(tmp_path / "full"), read_metrics(part)
    assert [r["step"] for r in b] == list(range(1, 13))
    after = lambda rows: [r for r in rows if r["step"] > 5]  # noqa: E731
    for ra, rb in zip(after(a), after(b), strict=True):
        for key in ("loss", "grad_norm", "lr", "layer_var", "layer_grad_norm", "layer_param_norm", "final_gain",
                    "val_loss"):
            assert ra.get(key) == rb.get(key), (ra["step"], key)  # exact, not approximate
    assert resumed["val_loss"] == full["val_loss"] and resumed["final_loss"] == full["final_loss"]


def test_final_gain_is_read_only_and_follows_the_decay_groups(data_cfg, tmp_path, monkeypatch):
    """The final norm's mean |gain| is logged without changing training; only the official decay shrinks it."""
    cfg = make_cfg(data_cfg, optim={"weight_decay": 3.0, "lr": 3e-2}, telemetry_interval=1)
    train(cfg, tmp_path / "ours", progress=False)
    rows = read_metrics(tmp_path / "ours")
    assert rows[0]["final_gain"] == 1.0  # gains start at 1 and are read before the first update
    with monkeypatch.context() as m:  # the same run without reading the gain: the same losses, bit for bit
        m.setattr(loop_mod, "final_gain", lambda model, *_: torch.zeros(()))
        train(cfg, tmp_path / "unread", progress=False)
    assert [r["loss"] for r in read_metrics(tmp_path / "unread")] == [r["loss"] for r in rows]
    official = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, paper_compat_decay=True))
    train(official, tmp_path / "official", progress=False)
    decayed = read_metrics(tmp_path / "official")
    assert decayed[-1]["final_gain"] < rows[-1]["final_gain"]
    model = build_model(cfg.model, "cpu")
    with torch.no_grad():
        model.norm.weight.copy_(torch.linspace(-2.0, 2.0, cfg.model.d_model))
    assert loop_mod.final_gain(model).item() == pytest.approx(model.norm.weight.abs().mean().item())


def test_a_time_limit_stops_at_a_checkpoint_and_the_same_call_resumes(data_cfg, tmp_path, monkeypatch):
    """A run longer than one command of a lent machine: stopped at the time limit (argument, or the environment
    a time-limited `sparsedepth run` sets for its children), then continued by the same call, bit for bit."""
    cfg = make_cfg(data_cfg, log_interval=4, ckpt_interval=0)
    full = train(cfg, tmp_path / "full", progress=False)
    part = tmp_path / "part"
    first = train(cfg, part, progress=False, stop_at_time=0.0)  # long past: stops at the first step
    assert not first["done"] and first["steps"] == 1 and [s for s, _ in list_checkpoints(part)] == [1]
    monkeypatch.setenv(loop_mod.STOP_AT_ENV, "0")
    assert train(cfg, part, progress=False)["steps"] == 2
    monkeypatch.setenv(loop_mod.STOP_AT_ENV, "soon")
    with pytest.raises(ConfigError, match="SPARSEDEPTH_STOP_AT_TIME='soon' is not a Unix time"):
        train(cfg, part, progress=False)
    monkeypatch.delenv(loop_mod.STOP_AT_ENV)
    resumed = train(cfg, part, progress=False)
    assert resumed["done"] and resumed["final_loss"] == full["final_loss"] and resumed["val_loss"] == full["val_loss"]


def test_other_config_in_run_dir_is_refused(data_cfg, tmp_path):
    train(make_cfg(data_cfg, steps=2), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"steps: 2 -> 3"):
        train(make_cfg(data_cfg, steps=3), tmp_path, progress=False)


def test_vocab_mismatch_names_both_sizes(data_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"model.vocab_size 290 < data.vocab_size 300.*model.vocab_size=300"):
        train(make_cfg(data_cfg, model={"vocab_size": 290}), tmp_path, progress=False)


def test_gradient_accumulation_matches_full_batch(data_cfg, tmp_path):
    rows = {}
    for mb in (8, 2):
        cfg = make_cfg(data_cfg, steps=3, micro_batch_size=mb, log_interval=1, telemetry_interval=1)
        train(cfg, tmp_path / str(mb), progress=False)
        rows[mb] = read_metrics(tmp_path / str(mb))
    for r8, r2 in zip(rows[8], rows[2], strict=True):
        assert r2["loss"] == pytest.approx(r8["loss"], rel=1e-5)
        assert r2["grad_norm"] == pytest.approx(r8["grad_norm"], rel=1e-4)
        assert r2["layer_var"] == pytest.approx(r8["layer_var"], rel=1e-5)


@pytest.mark.parametrize("moe", [False, True])
def test_param_groups(moe):
    cfg = ModelConfig(vocab_size=512, d_model=32, n_layers=2, n_heads=2,
                      **({"n_experts": 4, "top_k": 2, "expert_hidden": 16} if moe else {}))
    model = build_model(cfg)
    groups, info = param_groups(model, OptimConfig(weight_decay=0.1))
    by_group = {g["name"]: {id(p) for p in g["params"]} for g in groups}
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[i] for i in by_group["no_decay"]}
    decay = {names[i] for i in by_group["decay"]}
    assert no_decay == {"embed.weight", "norm.weight"} | {f"blocks.{i}.{k}.weight" for i in range(2)
                                                          for k in ("attn_norm", "ffn_norm")}
    assert "head.weight" in decay and "blocks.0.attn.qkv.weight" in decay
    if moe:
        assert {"blocks.1.ffn.router.weight", "blocks.1.ffn.w_gate", "blocks.1.ffn.w_down"} <= decay
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert info["no_decay"]["count"] == 6 and "blocks.*.attn_norm.weight" in info["no_decay"]["names"]
    assert sum(v["numel"] for v in info.values()) == sum(p.numel() for p in model.parameters())

    groups, info = param_groups(model, OptimConfig(weight_decay=0.1, paper_compat_decay=True))
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.1
    assert len(groups[0]["params"]) == len(list(model.parameters()))


def test_lr_schedule():
    cfg = make_cfg(DataConfig(), steps=100, optim={"lr": 1e-3, "warmup_steps": 10, "alpha_f": 0.1})
    oc = cfg.optim
    assert lr_factor(1, oc, 100) == pytest.approx(0.1)  # linear warmup from 0, OLMo's 1-based step
    assert lr_factor(10, oc, 100) == 1.0
    assert lr_factor(55, oc, 100) == pytest.approx(0.55)  # cosine midpoint: (1 + alpha_f) / 2
    assert lr_factor(100, oc, 100) == pytest.approx(0.1)
    assert lr_factor(1, OptimConfig(warmup_steps=0), 10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 10)))
    p = torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer([{"params": [p]}], oc, torch.device("cpu"))
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])  # the lr the coming step uses
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def _hook_after(model, module, n_calls: int, fn):
    """Forward hook on ``module`` that replaces its output by fn(output) from the n-th training call on."""
    calls = [0]

    def hook(mod, args, out):
        if model.training:
            calls[0] += 1
            if calls[0] == n_calls:
                return fn(out)
    return module.register_forward_hook(hook)


def test_nonfinite_loss_stops_with_step(data_cfg, tmp_path, monkeypatch):
    def build(cfg, device):
        m = build_model(cfg, device)
        _hook_after(m, m.head, 7, lambda out: out * float("nan"))  # 2 micro-batches per step: step 4
        return m

    monkeypatch.setattr(loop_mod, "build_model", build)
    with pytest.raises(NonFiniteLossError, match="at step 4"):
        train(make_cfg(data_cfg, log_interval=3), tmp_path, progress=False)
    assert (tmp_path / "checkpoints" / "nonfinite-step-4" / "model.pt").is_file()
    rows = read_metrics(tmp_path)
    assert rows[-1]["step"] == 4 and rows[-1]["loss"] is None and rows[-1]["nonfinite"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["done"] and "step 4" in summary["error"]


def test_spike_monitor_sequence():
    mon = SpikeMonitor(window=20, sigma=6.0)
    flagged = [mon.update(loss=1.0 + 0.01 * math.sin(i), grad_norm=0.5 + 0.01 * math.cos(i)) for i in range(40)]
    assert not any(flagged)
    assert mon.update(loss=1.5, grad_norm=0.5) == ["loss"]
    assert mon.update(loss=1.0, grad_norm=3.0) == ["grad_norm"]
    assert mon.update(loss=0.2, grad_norm=0.1) == []  # drops are not spikes
    for _ in range(25):  # a lasting level shift is absorbed by the window
        last = mon.update(loss=2.0, grad_norm=0.5)
    assert last == []
    state = mon.state_dict()
    mon2 = SpikeMonitor(window=20, sigma=6.0)
    mon2.load_state_dict(state)
    assert mon2.update(loss=9.0) == mon.update(loss=9.0) == ["loss"]


def test_spike_between_log_steps_gets_a_row(data_cfg, tmp_path, monkeypatch):
    def build(cfg, device):
        m = build_model(cfg, device)
        _hook_after(m, m.head, 19, lambda out: out * 40.0)  # first micro-batch of step 10
        return m

    monkeypatch.setattr(loop_mod, "build_model", build)
    train(make_cfg(data_cfg, log_interval=4, telemetry_interval=0, eval_interval=0, spike_window=8), tmp_path, progress=False)
    rows = {r["step"]: r for r in read_metrics(tmp_path)}
    assert sorted(rows) == [4, 8, 10, 12]
    assert rows[10]["spike"] and "loss" in rows[10]["spike_on"]
    assert not rows[12].get("spike") and "layer_var" in rows[12]  # last step: telemetry even when off


@pytest.mark.parametrize("sig,exc", [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_signal_saves_resumable_checkpoint(data_cfg, tmp_path, monkeypatch, sig, exc):
    def build(cfg, device):
        m = build_model(cfg, device)
        _hook_after(m, m.head, 5, lambda out: os.kill(os.getpid(), sig))  # during step 3
        return m

    old = signal.getsignal(sig)
    cfg = make_cfg(data_cfg, log_interval=5)
    monkeypatch.setattr(loop_mod, "build_model", build)
    with pytest.raises(exc) as info:
        train(cfg, tmp_path, progress=False)
    if exc is SystemExit:
        assert info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(sig) is old  # handlers restored
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3]  # the step finished, then was saved
    assert read_metrics(tmp_path)[-1]["step"] == 3
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 3
    monkeypatch.setattr(loop_mod, "build_model", build_model)
    summary = train(cfg, tmp_path, progress=False)
    assert summary["done"] and [r["step"] for r in read_metrics(tmp_path)] == [3, 5, 6, 9, 10, 12]


def test_moe_run_logs_expert_load(data_cfg, tmp_path):
    cfg = make_cfg(data_cfg, steps=3, telemetry_interval=0,
                   model={"n_experts": 4, "top_k": 2, "expert_hidden": 16})
    summary = train(cfg, tmp_path, progress=False)
    last = read_metrics(tmp_path)[-1]
    assert summary["params"]["active"] < summary["params"]["total"]
    assert len(last["expert_load"]) == 2 and all(len(row) == 4 for row in last["expert_load"])
    for row in last["expert_load"]:
        assert sum(row) == pytest.approx(1.0) and min(row) >= 0


def test_wandb_offline_logs_into_run_dir(data_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))  # dir= passed to init wins
    train(make_cfg(data_cfg, steps=2, wandb=True), tmp_path / "run", progress=False)
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_cli_config_file_and_overrides(data_cfg, tmp_path, capsys):
    # a hand-written YAML: partial (defaults fill the rest), with an exponent float YAML 1.1 reads as a string
    path = tmp_path / "cfg.yaml"
    path.write_text(textwrap.dedent(f"""
        model: {{vocab_size: 512, d_model: 32, n_layers: 2, n_heads: 2, max_seq_len: 64}}
        optim: {{lr: 3e-3, warmup_steps: 2}}
        data: {{corpus: {data_cfg.corpus}, vocab_size: 300, cache_dir: {data_cfg.cache_dir}}}
        seq_len: 32
        batch_size: 4
        steps: 5
        device: cpu
    """))
    run = tmp_path / "run"
    assert cli_main(["train", "--config", str(path), "--set", "steps=3", "--run-dir", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"run dir: {run}" in out and '"done": true' in out
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["steps"] == 3 and saved["optim"]["lr"] == 3e-3 and saved["model"]["n_layers"] == 2
    assert json.loads((run / "summary.json").read_text())["steps"] == 3

    assert cli_main(["train", "--config", str(path), "--set", "model.n_layer=3", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "model.n_layer" in err and "valid keys" in err and "model.n_layers" in err

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**to_dict(make_cfg(data_cfg)), "stepz": 3}))
    assert cli_main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "stepz" in err and "valid keys" in err
    assert cli_main(["train", "--profile", "smoke"]) == 2
    assert "--experiment" in capsys.readouterr().err


def test_run_dir_written_before_a_new_setting_is_accepted(tmp_path):
    """A config.json without a setting added since reads as that setting's default; a real change is refused."""
    cfg = TrainConfig()
    write_config(tmp_path, cfg)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["config"]["model"]["kernels"]  # as written before ModelConfig.kernels existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_run_dir(tmp_path, cfg)
    with pytest.raises(ConfigError, match=r"model\.n_layers: 16 -> 4"):
        check_run_dir(tmp_path, dataclasses.replace(cfg, model=ModelConfig(n_layers=4)))


def test_kernels_are_an_implementation_choice(data_cfg, tmp_path, monkeypatch):
    """Torch and Triton kernels share a run directory; load_run always gives torch's code (the probes'
    torch.func transforms need it), even where the Triton kernels would run."""
    cfg = make_cfg(data_cfg, steps=4)
    triton_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kernels="triton"))
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    check_run_dir(run, triton_cfg)  # resuming with the other kernels is accepted
    with pytest.raises(ConfigError, match=r"model\.n_layers"):
        check_run_dir(run, dataclasses.replace(triton_cfg, model=dataclasses.replace(triton_cfg.model, n_layers=3)))
    write_config(run, triton_cfg)
    monkeypatch.setattr("sparsedepth.model.kernels.resolve", lambda name, device: name)  # as on CUDA with Triton
    assert build_model(triton_cfg.model).kernels == "triton"
    model, cfg2, _ = load_run(run, device="cpu")
    assert cfg2.model.kernels == "triton" and model.kernels == "torch"


def test_provenance_names_the_source_that_ran(tmp_path):
    """A copy of the tree without .git still records which code ran: the hash of the package's sources."""
    from sparsedepth.provenance import git_info, source_hash

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "notes.txt").write_text("not code")
    first = source_hash(pkg)
    assert len(first) == 64 and source_hash(pkg) == first
    (pkg / "notes.txt").write_text("changed, still not code")
    assert source_hash(pkg) == first
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert source_hash(pkg) != first
    assert git_info()["src_sha256"] == source_hash()
