"""``sparsedepth bench``: speed of the real training step, attention backends, telemetry and probes.

Groups (``--only``):
- ``depth``: dense models of the profile's depths (gpu: d=512, L = 12, 16, 32, T = 1024);
- ``gqa_moe``: at the paper's T = 4096 (profile-scaled): dense, GQA G=4, and MoE (8 experts, top-2, expert
  width 2d) whose active parameters equal the dense model's (2 x 2d = the dense SwiGLU width 4d);
- ``attention``: one attention layer, forward + backward, per backend (sdpa, cudnn, xformers, math) and G in
  {1, 4};
- ``telemetry``: the training step with per-layer telemetry every step, at the default interval, and off;
- ``probes``: seconds per probe of ``run_probes`` on the profile's deepest model (gpu: 32 layers) and on the
  recipe's MoE model of that depth, with the profile's probe settings;
- ``eval``: the zero-shot scorer (``eval.score_tokens``) on the shipped requests (gpu: all 74,560 of the 11
  tasks; smoke: the first rows of each task) for the profile's L=16 model as ``evaluate_run`` scores it, with
  the share of its time the forward passes take;
- ``ablation``: the base config with one optimisation undone at a time (whole-forward compile instead of
  per-block, two micro-batches instead of one), with the cuDNN attention kernel and with the kernels the profile
  does not use (gpu: torch's code instead of the hand-written Triton kernels; smoke: Triton, skipped without
  CUDA); ``wall_s`` includes the compilation.

``--config FILE`` instead of the groups: one training config of your own (``scripts/paper_scale/`` holds the
paper's dense 1B and MoE-7B/1B), timed the same way; when its model and AdamW state alone cannot fit the
device, the record says so and how many GPUs under ``parallel: fsdp`` would hold it, and an out-of-memory
error says what to lower.

Training numbers come from ``sparsedepth.train.train`` itself (summary.json's steady-state tokens/s, which
leaves out the first log interval: compilation and warm-up), stopped after a few log intervals.

MFU = tokens/s x ``ModelConfig.flops_per_token(T)`` (6 x active matmul parameters including the head, plus
causal attention) / peak, where peak is the matmul rate this command measures on the device, in the dtype
the trainer computes in: bf16 8192^3 on CUDA, float32 1024^3 on CPU. Peak memory: CUDA max allocated; on CPU
the process's max resident set size (a high-water mark over the whole command).

Records go to ``<out>/<device-slug>/<group>-<profile>.json`` (a JSON list, one record per measurement);
with ``--config FILE`` to ``<out>/<device-slug>/config-<file stem>.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from . import catalog
from .atomic import atomic_write_json
from .train.distributed import resolve_device
from .config import ConfigError, ModelConfig, TrainConfig, apply_overrides, config_hash, to_dict
from .model.kernels import resolve as resolve_kernels

GROUPS = ("depth", "gqa_moe", "attention", "telemetry", "probes", "eval", "ablation")
BACKENDS = ("sdpa", "cudnn", "xformers", "math")


@dataclasses.dataclass(frozen=True)
class _Shapes:
    """What a bench profile measures beyond the experiment profile's own configs."""

    timed_logs: int  # log intervals timed after the first (warm-up) one
    attn_shapes: tuple[tuple[int, int], ...]  # (batch, T) of the attention-layer timings
    attn_iters: int
    eval_rows: int | None  # rows of each zero-shot task the scorer is timed on (None: all)


SHAPES = {
    "smoke": _Shapes(timed_logs=1, attn_shapes=((4, 64), (2, 256)), attn_iters=3, eval_rows=100),
    "gpu": _Shapes(timed_logs=2, attn_shapes=((16, 1024), (4, 4096)), attn_iters=20, eval_rows=None),
}


# ------------------------------------------------------------------------------------------------ device

def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform

    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def device_slug(dev: torch.device) -> str:
    """Folder name of a device: "nvidia-h200", "cpu"."""
    if dev.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(dev).lower()).strip("-")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_mem(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_mem_gib(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux reports KiB


def measure_peak_flops(dev: torch.device, n: int | None = None, repeats: int = 5) -> dict:
    """Dense matmul FLOP/s: the best of ``repeats`` timings of 10 back-to-back n^3 matmuls (2 n^3 FLOPs each).
    The best, not the median: a GPU that heats up drops its clock by about 9% within seconds (H200)."""
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    n = n or (8192 if dev.type == "cuda" else 1024)
    a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(dev)
        rates.append(10 * 2 * n**3 / (time.perf_counter() - t0))
    return {"peak_flops": max(rates), "matmul_median_flops": statistics.median(rates), "matmul_n": n, "matmul_dtype": str(dtype).split(".")[-1],
            "matmul_rates": rates}


# ------------------------------------------------------------------------------------------------ configs

def bench_configs(profile: str, corpus: str | None = None, cache_dir: str | None = None,
                  compile: bool | None = None) -> dict[str, dict[str, TrainConfig]]:
    """The training configs each group times: the experiment profile's own (the catalog's ``base``), with the
    data swapped for the packaged corpus (content does not change speed)."""
    base = catalog.get().base
    s = catalog.get().scale(profile)
    t_long = s.seq_for(4096)
    d = s.d_model

    def cfg(**kw) -> TrainConfig:
        c = base(profile, **kw)
        data = dataclasses.replace(c.data, corpus=corpus or "embedded",
                                   **({"cache_dir": cache_dir} if cache_dir else {}))
        return dataclasses.replace(c, data=data, compile=c.compile if compile is None else compile)

    depth = {f"dense-L{L}-T{s.seq_len}": cfg(n_layers=L) for L in (s.depths[0], s.base_depth, s.deep_depth)}
    long = {f"dense-L{s.base_depth}-T{t_long}": cfg(seq_len=t_long)}
    if s.n_heads % 4 == 0:
        long[f"gqa4-L{s.base_depth}-T{t_long}"] = cfg(seq_len=t_long, group=4)
    long[f"moe8x2-L{s.base_depth}-T{t_long}"] = cfg(seq_len=t_long, ffn_hidden=4 * d, moe=(8, 2, 2 * d, 0))
    default_interval = TrainConfig().telemetry_interval
    tele = {}
    for interval in (1, default_interval, 0):
        c = cfg()
        tele[f"telemetry-{interval or 'off'}"] = dataclasses.replace(c, telemetry_interval=interval)
    return {"depth": depth, "gqa_moe": long, "telemetry": tele, "ablation": ablation_configs(cfg())}


def _config_file(path: Path, corpus: str | None, cache_dir: str | None, no_compile: bool) -> TrainConfig:
    """A config file for ``--config``, with ``--corpus``, ``--cache-dir`` and ``--no-compile`` applied."""
    from .train.cli import load_config_file

    c = load_config_file(path)
    data = dataclasses.replace(c.data, **({"corpus": corpus} if corpus else {}),
                               **({"cache_dir": cache_dir} if cache_dir else {}))
    return dataclasses.replace(c, data=data, compile=False if no_compile else c.compile)


def ablation_configs(c: TrainConfig) -> dict[str, TrainConfig]:
    """One change at a time on the base config ``c`` (the profile's default): how it compiles (whole
    forward vs per block), two micro-batches instead of one, the attention kernel and the kernels the profile does
    not use (Triton or torch). Where the profile does not compile (CPU) the compile variants coincide and are timed
    once."""
    rep = dataclasses.replace
    half = rep(c, micro_batch_size=max(1, c.batch_size // 2))
    whole = "model" if c.compile else False
    cudnn = rep(c, model=rep(c.model, attn_backend="cudnn"))
    other = "torch" if c.model.kernels == "triton" else "triton"  # the kernels the profile does not use
    return {"default": c, "compile-model": rep(c, compile=whole),
            "compile-model-2-micro": rep(half, compile=whole), "2-micro": half, "attn-cudnn": cudnn,
            f"kernels-{other}": rep(c, model=rep(c.model, kernels=other))}


# ------------------------------------------------------------------------------------------- measurements

def _model_fields(m: ModelConfig) -> dict:
    return {"n_layers": m.n_layers, "d_model": m.d_model, "n_heads": m.n_heads, "n_kv_heads": m.n_kv_heads,
            "n_experts": m.n_experts, "top_k": m.top_k, "vocab_size": m.vocab_size, "model": to_dict(m),
            "params": m.param_counts()}


def time_training(cfg: TrainConfig, dev: torch.device, peak: float, timed_logs: int) -> dict:
    """Run the real trainer for 1 + ``timed_logs`` log intervals in a temporary run directory; the
    schedule is planned for one step more so the last step adds no extra telemetry or validation."""
    from .train import train

    stop = cfg.log_interval * (1 + timed_logs)
    cfg = dataclasses.replace(cfg, steps=stop + 1)
    run_dir = Path(tempfile.mkdtemp(prefix="sparsedepth-bench-"))
    try:
        _reset_mem(dev)
        t0 = time.perf_counter()
        summary = train(cfg, run_dir, stop_at_step=stop, progress=False, device=str(dev), checkpoints=False)
        wall = time.perf_counter() - t0
        mem = _peak_mem_gib(dev)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    tps = summary["tokens_per_s"]
    fpt = cfg.model.flops_per_token(cfg.seq_len)
    return {"kind": "train", **_model_fields(cfg.model), "seq_len": cfg.seq_len, "batch_size": cfg.batch_size,
            "micro_batch_size": cfg.micro_batch_size, "compile": cfg.compile_mode, "dtype": cfg.dtype,
            "telemetry_interval": cfg.telemetry_interval, "log_interval": cfg.log_interval,
            "parallel": cfg.parallel, "activation_checkpointing": cfg.activation_checkpointing,
            "steps_run": stop, "steps_timed": stop - cfg.log_interval, "wall_s": wall,
            "attn_backend": summary.get("attn_backend"), "tokens_per_s": tps, "flops_per_token": fpt,
            "mfu": tps * fpt / peak if tps else None, "trainer_mfu": summary.get("mfu"), "peak_mem_gib": mem,
            "config": to_dict(cfg), "config_hash": config_hash(cfg)}


# fp32 parameter, fp32 gradient and AdamW's two fp32 moments: what training keeps per parameter, sharded or not
STATE_BYTES_PER_PARAM = 16


def device_bytes(dev: torch.device) -> int | None:
    return torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda" else None


def fit_problem(cfg: TrainConfig, have: int | None, usable: float = 0.9) -> str | None:
    """Why ``cfg`` cannot train on one device of ``have`` bytes (its model and optimiser state alone pass
    ``usable`` of them), with what it needs instead; None when the state fits or ``have`` is unknown (CPU).
    Activations may still not fit: ``oom_note`` explains that case after the fact."""
    need = STATE_BYTES_PER_PARAM * cfg.model.param_counts()["total"]
    if have is None or need <= usable * have:
        return None
    gpus = math.ceil(need / (0.6 * usable * have))  # leave 40 % of each GPU for activations and buffers
    return (f"does not fit one GPU: parameters, gradients and AdamW state need {need / 2**30:.0f} GiB "
            f"({STATE_BYTES_PER_PARAM} bytes x {cfg.model.param_counts()['total'] / 1e9:.2f}B parameters) and "
            f"this device has {have / 2**30:.0f} GiB; train it with parallel=fsdp on {gpus} or more GPUs "
            f"(about {need / gpus / 2**30:.0f} GiB of state each)")


def oom_note(cfg: TrainConfig, have: int | None) -> str:
    need = STATE_BYTES_PER_PARAM * cfg.model.param_counts()["total"] / 2**30
    hint = "" if cfg.activation_checkpointing else ", or set activation_checkpointing=true"
    return (f"out of memory: {need:.0f} GiB of model and AdamW state plus the activations of micro-batches of "
            f"{cfg.micro_batch_size} x {cfg.seq_len} tokens pass the device's "
            f"{'?' if have is None else f'{have / 2**30:.0f}'} GiB; lower micro_batch_size{hint}, or shard over "
            f"more GPUs with parallel=fsdp")


def attention_flops_per_token(m: ModelConfig, seqlen: int) -> float:
    """Forward + backward FLOPs per token of one attention layer: 6 x (qkv + out projection parameters)
    plus causal scores and values (6 T d, the convention of ``flops_per_token``)."""
    proj = m.d_model * (m.d_model + 2 * m.n_kv_heads * m.head_dim) + m.d_model * m.d_model
    return 6.0 * proj + 6.0 * seqlen * m.d_model


def time_attention(m: ModelConfig, backend: str, bsz: int, seqlen: int, dev: torch.device, peak: float,
                   iters: int) -> dict:
    """One attention layer (projections, RoPE, kernel), forward + backward, under the trainer's precision."""
    from .model.attention import Attention, resolve_backend, rope_cache

    resolve_backend(backend, dev)  # raises with the reason when the backend cannot run here
    attn = Attention(m).to(dev)
    attn.backend = backend
    cos, sin = (t.to(dev) for t in rope_cache(seqlen, m.head_dim, m.rope_theta))
    x = torch.randn(bsz, seqlen, m.d_model, device=dev, requires_grad=True)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with amp:
            y = attn(x, cos, sin)
        y.float().square().mean().backward()

    for _ in range(2):
        step()
    _reset_mem(dev)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(dev)
    secs = (time.perf_counter() - t0) / iters
    tps = bsz * seqlen / secs
    fpt = attention_flops_per_token(m, seqlen)
    return {"kind": "attention", "backend": backend, **_model_fields(m), "n_layers": 1, "seq_len": seqlen,
            "batch_size": bsz, "group_size": m.group_size, "ms_fwd_bwd": secs * 1e3, "tokens_per_s": tps,
            "flops_per_token": fpt, "mfu": tps * fpt / peak, "peak_mem_gib": _peak_mem_gib(dev),
            "dtype": "bfloat16 autocast" if dev.type == "cuda" else "float32"}


def time_probes(cfg: TrainConfig, profile: str, dev: torch.device, prefix: str = "probe") -> list[dict]:
    """Seconds per probe of ``run_probes`` on a freshly initialised model of ``cfg`` (timing does not
    depend on the weights, except an MoE's through its routing balance) over the profile's probe windows of
    held-out text; records are named ``<prefix>-<probe>``."""
    from .data import prepare_data, val_windows
    from .model import build_model
    from .probes import run_probes

    ps = catalog.get().probe_settings(profile)
    n, seqlen = ps.pop("n_windows", 16), ps.pop("seq_len", None) or cfg.seq_len
    data = prepare_data(cfg.data, progress=False)
    windows = val_windows(data.val, seqlen, n, seed=0)
    torch.manual_seed(0)
    model = build_model(cfg.model, dev).float()
    _reset_mem(dev)
    res = run_probes(model, windows.to(dev), **ps)
    mem = _peak_mem_gib(dev)
    common = {"kind": "probe", **_model_fields(cfg.model), "seq_len": seqlen, "n_windows": n, "peak_mem_gib": mem,
              "mfu": None, "probe_meta": res.get("meta", {}).get("options")}
    # tokens/s and MFU do not apply: each probe does its own amount of work per window
    return [{**common, "name": f"{prefix}-{name}", "probe": name, "seconds": secs, "tokens_per_s": None}
            for name, secs in res["timings"].items()]


def time_eval(cfg: TrainConfig, dev: torch.device, rows: int | None) -> dict:
    """Seconds of ``score_tokens`` on the shipped zero-shot requests (the first ``rows`` rows of each task; None:
    all) for a freshly initialised model of ``cfg``, scored as ``evaluate_run`` scores a run (torch's kernels,
    its batch size and autocast); the weights change no timing. ``forward_s``: the same batches' forward passes
    replayed alone between two synchronisations; ``other_s``, the rest of the scorer's time, is what the host
    adds around them (batching, uploads, scoring, waiting). ``tokens``: the forwards' input positions, padding
    included."""
    from .data import prepare_data
    from .eval import TASKS, default_batch_size, score_tokens, task_docs
    from .eval.request_cache import cached_encode
    from .eval.zero_shot import encode_requests, eval_mode, get_encoder
    from .model import build_model

    data = prepare_data(cfg.data, progress=False)
    requests = [rq for name in TASKS for d in task_docs(name, rows) for rq in d.requests]
    encode, eos = get_encoder(data)
    token_reqs = cached_encode(requests, data, eos, lambda: encode_requests(requests, encode, eos),
                               Path(cfg.data.cache_dir) / "eval-requests")
    torch.manual_seed(0)
    model = build_model(cfg.model, dev)
    model.set_kernels("torch")
    batch = default_batch_size(dev)
    score_tokens(model, token_reqs[:2 * batch], batch_size=batch)  # warm-up: kernels, allocator
    inputs: list[torch.Tensor] = []  # each forward's input batch, for the forward-only replay
    hook = model.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    _reset_mem(dev)
    _sync(dev)
    t0 = time.perf_counter()
    try:
        score_tokens(model, token_reqs, batch_size=batch)
    finally:
        hook.remove()
    seconds = time.perf_counter() - t0
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    with eval_mode(model), amp:  # score_tokens' forward: bf16 autocast on CUDA
        _sync(dev)
        t0 = time.perf_counter()
        for x in inputs:
            model(x)
        _sync(dev)
    forward = time.perf_counter() - t0
    tokens = sum(x.numel() for x in inputs)
    return {"kind": "eval", **_model_fields(cfg.model), "max_seq_len": cfg.model.max_seq_len,
            "n_tasks": len(TASKS), "rows_per_task": rows, "n_requests": len(token_reqs), "batch_size": batch,
            "n_batches": len(inputs), "tokens": tokens, "seconds": seconds,
            "requests_per_s": len(token_reqs) / seconds, "tokens_per_s": tokens / seconds, "mfu": None,
            "forward_s": forward, "other_s": seconds - forward, "forward_share": forward / seconds,
            "peak_mem_gib": _peak_mem_gib(dev)}


# --------------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=tuple(SHAPES), default=None,
                        help="shapes: smoke (tiny, CPU/CI, under a minute) or gpu (d=512 on CUDA); "
                             "default gpu on CUDA, else smoke")
    parser.add_argument("--only", default="", help=f"comma-separated groups of {', '.join(GROUPS)} (default all)")
    parser.add_argument("--out", default="paper_results/bench", help="output folder; a device folder is added")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--timed-logs", type=int, default=None,
                        help="log intervals timed after the warm-up interval (default 2)")
    parser.add_argument("--corpus", default=None, help="corpus for the training runs (default: the packaged sample)")
    parser.add_argument("--cache-dir", default=None, help="token cache folder (default: the DataConfig default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is fastest for smoke shapes)")
    parser.add_argument("--no-compile", action="store_true", help="time eager training even where the profile compiles")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override every timed training config, e.g. --set model.kernels=torch (repeatable)")
    parser.add_argument("--names", default="",
                        help="only these measurements of the chosen groups, comma-separated (e.g. default,kernels-torch)")
    parser.add_argument("--config", type=Path, default=None,
                        help="time this training config file (YAML/JSON) instead of the profile's groups")
    parser.add_argument("--tag", default=None,
                        help="suffix of the record files (default: made from --set, none without it)")


def _parse_only(text: str) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in text.split(",") if g.strip()) or GROUPS
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise SystemExit(f"sparsedepth bench: unknown group(s) {unknown}; choose from {', '.join(GROUPS)}")
    return groups


def _fmt(r: dict) -> str:
    if "error" in r or "skipped" in r:
        return f"{r['name']:<28} {'ERROR' if 'error' in r else 'SKIP':<5} {r.get('error') or r.get('skipped')}"
    tps, mfu = r.get("tokens_per_s"), r.get("mfu")
    extra = (f"{r['ms_fwd_bwd']:8.2f} ms" if "ms_fwd_bwd" in r else f"{r['seconds']:8.2f} s" if "seconds" in r else "")
    if "requests_per_s" in r:
        extra += f"  {r['requests_per_s']:,.0f} req/s, forward {r['forward_s']:.2f} s ({r['forward_share']:.0%})"
    return (f"{r['name']:<28} {'':<5} {'' if tps is None else f'{tps:,.0f} tok/s':>16}  "
            f"mfu {'  n/a' if mfu is None else f'{mfu:5.1%}'}  mem {r.get('peak_mem_gib', 0):6.2f} GiB  {extra}")


def run(args: argparse.Namespace) -> int:
    dev = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = args.profile or ("gpu" if dev.type == "cuda" else "smoke")
    groups = _parse_only(args.only)
    shapes = SHAPES[profile]
    timed_logs = args.timed_logs or shapes.timed_logs
    out = Path(args.out) / device_slug(dev)
    overrides = list(args.set or [])
    tag = _tag(args.tag, overrides)
    compile_flag = False if args.no_compile else (None if dev.type == "cuda" else False)
    try:
        if args.config:  # one config of the user's: its file stem names the records
            profile, groups = args.config.stem, ("config",)
            configs = {"config": {profile: _config_file(args.config, args.corpus, args.cache_dir, args.no_compile)}}
        else:
            configs = bench_configs(profile, args.corpus, args.cache_dir, compile_flag)
        configs = {g: {n: apply_overrides(c, overrides) for n, c in cs.items()} for g, cs in configs.items()}
    except ConfigError as e:
        raise SystemExit(f"sparsedepth bench: {'--config/' if args.config else ''}--set: {e}") from None
    peak: dict = {}  # filled below, before any job runs
    done: dict[str, dict] = {}  # measurement_key -> record: a config shared by two groups is trained once

    def timed(cfg: TrainConfig, name: str) -> dict:
        if resolve_kernels(cfg.model.kernels, dev) != cfg.model.kernels:
            return {"skipped": f"kernels={cfg.model.kernels} needs CUDA and Triton; this device runs torch's code"}
        key = measurement_key(cfg)
        if key in done:
            return {**done[key], "same_run_as": done[key]["name"]}
        problem = fit_problem(cfg, device_bytes(dev))
        if problem:
            return {"skipped": problem, **_model_fields(cfg.model), "config": to_dict(cfg)}
        if not done:
            # An untimed first run: the first training of a process on an idle H200 measured 514k tokens/s
            # where the same config measured 591k later, beyond what skipping the first log interval absorbs.
            time_training(cfg, dev, peak["peak_flops"], 0)
        done[key] = {**time_training(cfg, dev, peak["peak_flops"], timed_logs), "name": name}
        return done[key]

    jobs = {group: _jobs(group, configs, profile, shapes, dev, peak, timed) for group in groups}
    if args.names:
        wanted = [n.strip() for n in args.names.split(",") if n.strip()]
        known = [n for js in jobs.values() for n, _ in js]
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise SystemExit(f"sparsedepth bench: --names: unknown measurement(s) {unknown} in groups "
                             f"{', '.join(groups)}; choose from {', '.join(known)}")
        jobs = {g: [(n, j) for n, j in js if n in wanted] for g, js in jobs.items()}
        jobs = {g: js for g, js in jobs.items() if js}

    common = {"profile": profile, "device": device_name(dev), "device_slug": device_slug(dev),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, "cuda": torch.version.cuda, "torch_threads": torch.get_num_threads(),
              **({"overrides": overrides} if overrides else {})}
    try:
        from .provenance import git_info

        common["git"] = git_info()
    except Exception:  # noqa: BLE001 - provenance is a nicety here
        pass

    print(f"sparsedepth bench: profile {profile} on {common['device']}, torch {torch.__version__}; groups "
          f"{', '.join(jobs)}" + (f"; overrides {' '.join(overrides)}" if overrides else ""), flush=True)
    peak.update(measure_peak_flops(dev))
    peak_note = f"best of 5 timings of a {peak['matmul_dtype']} {peak['matmul_n']}^3 matmul on this device"
    common.update(peak_flops=peak["peak_flops"], peak_flops_source=peak_note)
    print(f"peak: {peak['peak_flops'] / 1e12:.2f} TFLOP/s ({peak_note})", flush=True)
    _write(out, "matmul", profile, tag, [{**common, "kind": "matmul", "name": "matmul", "group": "matmul", **peak,
                                          "tokens_per_s": None, "mfu": None, "peak_mem_gib": _peak_mem_gib(dev)}])

    failed = 0
    for group, group_jobs in jobs.items():
        records = []
        for name, job in group_jobs:
            try:
                got = job()
                rows = got if isinstance(got, list) else [{**got, "name": name}]
            except torch.cuda.OutOfMemoryError:
                traceback.print_exc()
                cfg = configs.get(group, {}).get(name)
                note = oom_note(cfg, device_bytes(dev)) if cfg else "out of memory"
                rows, failed = [{"name": name, "error": note}], failed + 1
            except (ImportError, RuntimeError) as e:
                if _unavailable(e):
                    rows = [{"name": name, "skipped": _first_line(e)}]
                else:
                    traceback.print_exc()
                    rows, failed = [{"name": name, "error": f"{type(e).__name__}: {_first_line(e)}"}], failed + 1
            except Exception as e:  # noqa: BLE001 - one failed measurement must not lose the others
                traceback.print_exc()
                rows, failed = [{"name": name, "error": f"{type(e).__name__}: {_first_line(e)}"}], failed + 1
            for r in rows:
                r.update(common, group=group)
                print(_fmt(r), flush=True)
            records += rows
        if group == "telemetry":
            _add_overheads(records)
            for r in records:
                if "overhead_vs_off" in r:
                    print(f"  {r['name']}: telemetry overhead {r['overhead_vs_off']:+.1%} vs off", flush=True)
        _write(out, group, profile, tag, records)
    print(f"records in {out}/", flush=True)
    return 1 if failed else 0


def _jobs(group: str, configs: dict, profile: str, shapes, dev: torch.device, peak: dict,
          timed: Callable[[TrainConfig, str], dict]) -> list[tuple[str, Callable[[], dict | list[dict]]]]:
    """(measurement name, job) pairs of one group; the jobs read ``peak`` when they run."""
    jobs: list[tuple[str, Callable[[], dict | list[dict]]]] = []
    if group in configs:
        for name, cfg in configs[group].items():
            jobs.append((name, lambda cfg=cfg, name=name: timed(cfg, name)))
    elif group == "attention":
        s = _attention_model(profile)
        for bsz, seqlen in shapes.attn_shapes:
            for g in (1, 4):
                m = dataclasses.replace(s, n_kv_heads=s.n_heads // g, max_seq_len=seqlen)
                for backend in BACKENDS:
                    jobs.append((f"attn-{backend}-G{g}-B{bsz}-T{seqlen}",
                                 lambda m=m, b=backend, bsz=bsz, t=seqlen:
                                 time_attention(m, b, bsz, t, dev, peak["peak_flops"], shapes.attn_iters)))
    elif group == "probes":
        deep = configs["depth"][max(configs["depth"], key=lambda k: configs["depth"][k].model.n_layers)]
        # the recipe's last step: the deepest MoE model, whose probes ran about 4x the dense suite's time
        deep_moe = dataclasses.replace(deep, model=catalog.get().resolve(profile, "recipe", "+MoE").model)
        jobs.append(("probes", lambda: time_probes(deep, profile, dev)))
        jobs.append(("probes-moe", lambda: time_probes(deep_moe, profile, dev, prefix="probe-moe")))
    elif group == "eval":
        s = catalog.get().scale(profile)
        base = configs["depth"][f"dense-L{s.base_depth}-T{s.seq_len}"]  # the model evaluated most often (gpu: L=16)
        jobs.append(("eval-score", lambda: time_eval(base, dev, shapes.eval_rows)))
    return jobs


def measurement_key(cfg: TrainConfig) -> str:
    """What makes two timed configs the same measurement: the whole config, the implementation choices that
    ``config_hash`` leaves out (the kernels) included, since they are what a speed measurement compares."""
    return json.dumps(to_dict(cfg), sort_keys=True)


def _tag(tag: str | None, overrides: list[str]) -> str:
    """The records' file-name suffix: ``--tag``, else one made from ``--set`` (so overrides never overwrite the
    default records), else none."""
    tag = tag if tag is not None else "_".join(overrides)
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", tag).strip("-")
    return tag


def _attention_model(profile: str) -> ModelConfig:
    s = catalog.get().scale(profile)
    return ModelConfig(vocab_size=256, d_model=s.d_model, n_layers=1, n_heads=s.n_heads)


def _unavailable(e: Exception) -> bool:
    """An optional component is missing (a skip, not a failure)."""
    msg = str(e)
    return isinstance(e, ImportError) or "cannot be imported" in msg or "needs a CUDA device" in msg


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def _add_overheads(records: list[dict]) -> None:
    """Telemetry overhead = tokens/s without telemetry / tokens/s with it - 1."""
    off = next((r for r in records if r.get("telemetry_interval") == 0 and r.get("tokens_per_s")), None)
    for r in records:
        if off and r.get("tokens_per_s"):
            r["overhead_vs_off"] = off["tokens_per_s"] / r["tokens_per_s"] - 1.0


def _write(out: Path, group: str, profile: str, tag: str, records: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{group}-{profile}{'-' + tag if tag else ''}.json", _finite(records))


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


if __name__ == "__main__":  # python -m sparsedepth.bench: the command, with its catalog of named configs
    from .cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
