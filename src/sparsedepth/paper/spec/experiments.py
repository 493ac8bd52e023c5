"""The paper's experiments as data: one base config per profile plus each experiment's variants.

Six experiments (paper-spec section 3), each defined once and built at three scales (profiles):

==============  ===========================================================================================
depth           dense L = 12, 16, 24, 32 (paper 3.1)
weight_decay    L=16-equivalent, lambda = 0, 0.01, 0.1, 1, 3 (3.2)
seqlen          L=16-equivalent, T = 256 ... 8192 at equal tokens per step (batch * T constant) (3.3)
gqa             L=16-equivalent, group size G = 1, 4, 16 (MQA) (3.4)
moe             dense vs MoE (top-k/E = 1/8, equal active parameters) at two sizes (3.5)
recipe          cumulative L=32 ablation: +T4096, +T8192 (rejected), +wd0.3, +wd0.6/+wd1.0 (rejected), +G2, +MoE (3.6)
==============  ===========================================================================================

One check (``CHECKS``), outside the paper's claims and ``run all``: ``weight_decay_official`` repeats the weight
decay sweep with the official optimiser's decay of norm gains and embedding (paper-spec 2.5).

Profiles: ``smoke`` (CI, seconds per run), ``cpu`` (a laptop, about a minute per run), ``gpu`` (one H200,
paper-lite: d=512, 50-100M tokens per run), ``paper`` (the paper's own configurations: d=2048, 5B tokens per
run, the paper's batches and schedule; a cluster's work; the comments above it give its choices). A profile
is a :class:`Scale`; every config of an experiment is ``base(scale)`` with a few fields changed, so runs shared
by several experiments (the L=16-equivalent base appears in four of them) have identical configs and are
trained once (deduplicated by config hash).

Each variant's metadata (:func:`variant_meta`) says which paper value it stands for (``paper_key``), so
paper-vs-ours tables line up rows even where a profile scales a value (depth, T, and G at 8 heads).
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

from ...config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, config_hash, to_dict

PROFILES = ("smoke", "cpu", "gpu", "gpu-long", "gpu-wide", "paper")
EXPERIMENTS = ("depth", "weight_decay", "seqlen", "gqa", "moe", "recipe")
# Our checks of how the paper's numbers were made, run like experiments but outside its claims, its figures and
# `run all`. weight_decay_official: the weight-decay sweep (seed 0) with the official optimiser, which decays
# the norm gains and the embedding too (paper-spec 2.5); λ=0 decays nothing in either, so it is weight_decay's
# wd0 run (same config, trained once).
CHECKS = ("weight_decay_official",)

# Paper values each sweep stands for (paper-spec 3.1-3.6); our values are these scaled by the profile.
PAPER_DEPTHS = (12, 16, 24, 32)
PAPER_WEIGHT_DECAYS = (0.0, 0.01, 0.1, 1.0, 3.0)
PAPER_SEQ_LENS = (256, 512, 1024, 2048, 4096, 8192)
PAPER_GROUPS = (1, 4, 16)
PAPER_BASE_T = 1024  # the depth sweep's context (train-script default); component sweeps use the same here
MOE_VARIANTS = ("dense-small", "moe-small", "dense-large", "moe-large")
MOE_PAPER_LABELS = {"dense-small": "Dense-400M", "moe-small": "MoE-2B/400M",
                    "dense-large": "Dense-1B", "moe-large": "MoE-7B/1B"}


@dataclass(frozen=True)
class MoESize:
    """One dense-vs-MoE pair: the MoE keeps the dense model's attention and active FFN width."""

    d_model: int
    n_heads: int
    n_experts: int
    top_k: int
    shared: bool  # olmoe-400M-2B has a shared expert (out = shared/(k+1) + k/(k+1) routed)

    def ffn(self, d: int) -> tuple[int, int, int]:
        """(dense SwiGLU width, expert width, shared width) with equal active FFN parameters.

        Small (olmoe-400M-2B): expert = shared = 2d, dense = (k+1) * 2d (paper: 5 * 1536 = 7680 = 10d).
        Large (olmoe-1B-7B, 7B/1B reading): dense = 4d, expert = 4d/k (paper: 8192/8 = 1024).
        """
        if self.shared:
            return (self.top_k + 1) * 2 * d, 2 * d, 2 * d
        return 4 * d, 4 * d // self.top_k, 0


@dataclass(frozen=True)
class Scale:
    """Everything a profile changes. ``base_depth``/``deep_depth`` stand for the paper's L=16/L=32."""

    name: str
    d_model: int
    n_heads: int
    depths: tuple[int, ...]  # stand for PAPER_DEPTHS
    base_depth: int
    deep_depth: int
    seq_len: int  # stands for T=1024
    batch_size: int  # sequences per step at seq_len; other T keep batch_size * seq_len tokens per step
    micro_tokens: int | None  # tokens per micro-batch (None = no gradient accumulation)
    depth_steps: int  # depth sweep
    steps: int  # weight decay, seqlen, gqa, moe
    recipe_steps: int | None  # None = depth_steps (then the recipe baseline is the depth sweep's deepest run)
    lr: float
    warmup_frac: float
    vocab_size: int
    tokenizer: str
    corpus: str
    max_docs: int | None
    groups: tuple[int, ...]  # stand for PAPER_GROUPS
    moe_small: MoESize
    moe_large: MoESize
    recipe_moe: tuple[int, int]  # (experts, top_k) of the recipe's last step
    # Seeds (init and data order) per experiment (others: seed 0 alone). Each seed after the first repeats the
    # whole sweep as ``<variant>-seed<s>``, so figures show the mean and range and claims a seed spread.
    seeds: dict = field(default_factory=dict)
    dtype: str = "auto"
    compile: bool = False
    kernels: str = "torch"  # ModelConfig.kernels; the hand-written ones only ever run on CUDA
    telemetry_interval: int = 10
    log_interval: int = 10
    eval_interval: int = 0
    eval_batches: int = 8
    ckpt_interval: int = 0
    probe: dict = field(default_factory=dict)  # probe_run keyword arguments
    eval: dict = field(default_factory=dict)  # evaluate_run keyword arguments
    threads: int | None = None  # torch CPU threads while a run trains/probes/evaluates (None = torch's default)
    # `reproduce --jobs auto` trains several runs at once (one process each) only where a run outlasts the
    # cost of its process: smoke runs take seconds, and 2 jobs made `make reproduce PROFILE=smoke` slower
    # (187 s against about 180 s on 2 cores)
    parallel_runs: bool = True
    needs_cuda: bool = False
    keep_checkpoints: bool = True  # False: delete run checkpoints once the small result files are copied
    note: str = ""
    # The fields below let a profile follow the paper's own schedule; their defaults keep the scaled profiles'
    # configs (and so their config hashes and cached results) exactly as they were.
    run_tokens: int | None = None  # every run trains this many tokens (steps follow from its batch); None = steps
    # What stays fixed when T changes (seqlen sweep, recipe): "tokens" per step (batch = tokens_per_step / T) or
    # "sequences" per step (batch_size, as the paper's train script), then steps = run_tokens / (batch * T)
    batch_unit: str = "tokens"
    shapes: dict = field(default_factory=dict)  # experiment -> (T, batch) where it differs from (seq_len, batch_size)
    warmup_steps: int | None = None  # absolute warmup (the paper's t_warmup); None = warmup_frac of the steps
    recipe_model: tuple[int, int, int] | None = None  # (d_model, n_heads, dense SwiGLU width) of the L=32 recipe
    fsdp_params: float | None = None  # models with more parameters than this train with parallel="fsdp"
    # A rung that runs only some sweeps (and some decays); the others have no variants at it
    experiments: tuple[str, ...] = EXPERIMENTS + CHECKS  # what this profile runs (checks included)
    weight_decays: tuple[float, ...] = PAPER_WEIGHT_DECAYS
    # Probes along training (TrainConfig.probe_points, not hashed): 0 = none; the last point uses ``probe``
    probe_points: int = 0
    probe_along: dict = field(default_factory=dict)  # cheaper settings before the last point

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def seeds_for(self, experiment: str) -> tuple[int, ...]:
        """The seeds ``experiment`` runs at this profile; the first is 0, whose variants keep the plain names."""
        seeds = tuple(self.seeds.get(experiment, (0,)))
        if not seeds or seeds[0] != 0 or len(set(seeds)) != len(seeds):
            raise ConfigError(f"profile {self.name!r}: seeds of {experiment!r} must be distinct and start with 0, "
                              f"got {seeds}")
        return seeds

    def seq_for(self, paper_t: int) -> int:
        return max(8, paper_t * self.seq_len // PAPER_BASE_T)

    def shape(self, experiment: str) -> dict:
        """``base`` keywords of the experiment's context and batch where the profile gives it its own."""
        if experiment not in self.shapes:
            return {}
        t, batch = self.shapes[experiment]
        return {"seq_len": t, "batch": batch}


# Probe settings before a trajectory's last point: a quarter of the windows, 64 of the permutation's L(L-1)/2
# pairs, 2 Jacobian windows, only the probes a trajectory keeps. On the cpu profile (README, "Probes along
# training") 8 points cost 18 % of training beyond the final probes. On the H200 a point of gpu-wide's L=12
# run (d=1024) took 13.5 s against 324 s of training alone (at its measured speed): 29 % for 7 points, the
# Jacobian 4.8 s of it and a float32 validation-loss pass most of the 6.5 s outside the probes (now in the
# training's bf16). gpu-wide therefore takes one Jacobian window before the last point (the final probes keep 8):
# its L=32 run then took about 20 s a point against 788 s of training, 18 % for 7 points.
TRAJECTORY_ALONG = {"n_windows": 16, "max_pairs": 64, "jacobian_windows": 2,
                    "probes": "variance,jacobian,usefulness,causal,permutation,angular_distance,block_influence"}
GPU_LONG_STEPS = 4600  # 4600 x 65,536 = 301M tokens per run: about 3.3 passes over the three Wikipedia shards

SCALES: dict[str, Scale] = {
    "smoke": Scale(
        name="smoke", d_model=48, n_heads=4, depths=(2, 3, 4, 6), base_depth=3, deep_depth=6,
        seq_len=64, batch_size=16, micro_tokens=None, depth_steps=24, steps=24, recipe_steps=None,
        lr=2e-3, warmup_frac=0.1,
        vocab_size=512, tokenizer="bpe", corpus="embedded", max_docs=300, groups=(1, 2, 4),
        moe_small=MoESize(32, 2, 8, 1, True), moe_large=MoESize(48, 4, 8, 1, False), recipe_moe=(8, 1),
        telemetry_interval=4, log_interval=4, eval_batches=2,
        probe={"n_windows": 4, "seq_len": 64, "paper_compat": True, "jacobian_windows": 2,
               "jacobian_seq_len": 32},
        eval={"limit": 10, "ppl_tokens": 4096}, threads=1, parallel_runs=False,
        note="CI scale: a few seconds per run, checks that every path runs; numbers are noise"),
    "cpu": Scale(
        name="cpu", d_model=96, n_heads=4, depths=(3, 4, 6, 8), base_depth=4, deep_depth=8,
        # 8 x 240 steps at lr 4e-3 beat 16 x 120 at 2e-3 in the same time (val loss 5.51 vs 5.93, L=4)
        seq_len=128, batch_size=8, micro_tokens=None, depth_steps=240, steps=240, recipe_steps=None,
        lr=4e-3, warmup_frac=0.1,
        vocab_size=2048, tokenizer="bpe", corpus="embedded", max_docs=None, groups=(1, 2, 4),
        moe_small=MoESize(64, 2, 16, 2, True), moe_large=MoESize(96, 4, 16, 2, False), recipe_moe=(16, 2),
        telemetry_interval=5, log_interval=5, eval_batches=4,
        probe={"n_windows": 8, "seq_len": 128, "paper_compat": True, "jacobian_windows": 2,
               "jacobian_seq_len": 64},
        eval={"limit": 50, "ppl_tokens": 8192}, threads=1,
        note="laptop scale (2 cores): about a minute per run including probes and evaluation"),
    "gpu": Scale(
        name="gpu", d_model=512, n_heads=8, depths=(12, 16, 24, 32), base_depth=16, deep_depth=32,
        # one micro-batch of 64 x 1024 tokens: faster than two of 32 (bench "ablation"), 139 GiB has room
        seq_len=1024, batch_size=64, micro_tokens=None, depth_steps=1500, steps=800, recipe_steps=800,
        lr=1e-3, warmup_frac=0.05,
        vocab_size=50304, tokenizer="gpt-neox", corpus=".data/wiki-en-2019.00.txt.xz", max_docs=None,
        groups=(1, 4, 8), moe_small=MoESize(256, 4, 32, 4, True), moe_large=MoESize(512, 8, 64, 8, False),
        recipe_moe=(64, 8), dtype="auto", compile=True,
        seeds={"depth": (0, 1), "weight_decay": (0, 1, 2), "seqlen": (0, 1, 2), "gqa": (0, 1, 2), "moe": (0, 1, 2),
               "recipe": (0, 1)},
        # 9-14 % more tokens/s and a whole run that tracks the torch code within rerun noise (docs/performance.md)
        kernels="triton", telemetry_interval=10,
        log_interval=10, eval_interval=250, eval_batches=16, ckpt_interval=250,
        probe={"n_windows": 64, "seq_len": 512, "paper_compat": True, "jacobian_windows": 8,
               "jacobian_seq_len": 256, "batch_tokens": 32768},
        eval={"limit": None, "ppl_tokens": 65536},
        needs_cuda=True, keep_checkpoints=False,
        note="paper-lite on one H200: d=512, 98M tokens (depth) or 52M tokens (others) per run"),
    # The paper's own scale (paper-spec 2.5-2.7 and 3). Choices where the paper is ambiguous, and why:
    # - tokens: 2384 x 256 x 8192 = 4,999,610,368 ("5e9T"): the one count near 5B that every run's batch divides,
    #   so all runs train the same tokens (the depth sweep gets 19,072 steps where 5e9 / 262,144 gives 19,073);
    # - lr 4e-4 (the released YAMLs; the README's 1e-3 is an example argument of the train script), warmup 1000
    #   steps (the train script's override of the YAMLs' 5000), cosine to 0.1 lr, AdamW lambda 0.1;
    # - depth sweep: T=1024, 256 sequences (19k steps, as its variance figure);
    # - weight decay: ~9.5k steps means 512k tokens per step; T=1024 with 512 sequences rather than T=2048 with
    #   256, because its lambda=0.1 perplexity (14.83) is near the T=1024 row of the length sweep (14.77), not the
    #   T=2048 row (14.51), and the train script fixes T=1024;
    # - sequence length: 256 sequences per step at every T (the train script's batch), so steps = 5B / (256 T):
    #   the T=4096 run, GQA's G=1 and the MoE table's Dense-1B then are one run, as their identical perplexity
    #   (14.52 in all three tables) says; the figure's common ~2.4k-step axis is the T=8192 run's length;
    # - GQA and MoE: T=4096, 256 sequences (4,768 steps, as their figures); Dense-400M is the d=768 dense model
    #   with the MoE-2B/400M's active parameters (SwiGLU 7680), MoE-7B/1B has experts of width 1024 (the
    #   7B/1B of its name; the released YAML's 2048 builds 13.4B/2.1B);
    # - recipe: the olmoe-1B-7B-ablation shape (d=1120, 16 heads of 70, L=32), its dense baseline with SwiGLU
    #   8960 = the MoE's 8 x 1120 active width (1.24B, the paper's "1.2B"), baseline T=1024 and lambda 0.1 (the
    #   train script's defaults; the paper does not say);
    # - models above 4B parameters (the two 64-expert MoEs: 103-118 GiB of float32 state) train with FSDP, the
    #   others with DDP, the default every measured run used;
    # - one seed (the paper's); micro-batches of 16k tokens per GPU; checkpoints every 1000 steps and kept.
    "paper": Scale(
        name="paper", d_model=2048, n_heads=16, depths=PAPER_DEPTHS, base_depth=16, deep_depth=32,
        # steps: from run_tokens and each run's batch (depth_steps and steps are not used)
        seq_len=1024, batch_size=256, micro_tokens=16384, depth_steps=0, steps=0, recipe_steps=None,
        lr=4e-4, warmup_frac=0.05, warmup_steps=1000, run_tokens=2384 * 256 * 8192, batch_unit="sequences",
        shapes={"weight_decay": (1024, 512), "gqa": (4096, 256), "moe": (4096, 256)},
        vocab_size=50304, tokenizer="gpt-neox",
        # any local corpus (file or folder), or hf:HuggingFaceFW/fineweb-edu:sample-10BT when online; part of the
        # config hash, so results of different corpora never mix
        corpus=os.environ.get("SPARSEDEPTH_PAPER_CORPUS", ".data/wiki-en-2019.00.txt.xz"), max_docs=None,
        groups=PAPER_GROUPS, moe_small=MoESize(768, 12, 32, 4, True), moe_large=MoESize(2048, 16, 64, 8, False),
        recipe_moe=(64, 8), recipe_model=(1120, 16, 8960), fsdp_params=4e9, dtype="auto", compile=True,
        kernels="triton", telemetry_interval=10, log_interval=10, eval_interval=1000, eval_batches=16,
        ckpt_interval=1000,
        # the official analysis scripts' samples: 100 x 512 tokens (usefulness, causal, permutation), 50 x 512
        # (Jacobian)
        probe={"n_windows": 100, "seq_len": 512, "paper_compat": True, "jacobian_windows": 50,
               "jacobian_seq_len": 512, "batch_tokens": 32768},
        eval={"limit": None, "ppl_tokens": 1048576},
        needs_cuda=True, keep_checkpoints=True,
        note="the paper's own configurations: d=2048 (MoE-2B/400M d=768, recipe d=1120), 5B tokens per run, "
             "256 sequences per step (weight decay 512), lr 4e-4, 1000 warmup steps, cosine to 0.1; a GPU "
             "cluster's work (`sparsedepth run --submit slurm`)"),
}

# The gpu rungs beside ``gpu``: one longer (tokens) and one wider (width), each changing one axis of it, with
# probes along training (8 points spaced in log tokens) so the statistics can be followed against tokens.
# One seed each (the gpu profile's seed spread says what a single run's noise is).
_GPU_RUNG = dict(seeds={}, probe_points=8, probe_along=TRAJECTORY_ALONG)
SCALES["gpu-long"] = replace(
    SCALES["gpu"], name="gpu-long", **_GPU_RUNG, experiments=("depth", "weight_decay"), weight_decays=(0.0, 0.1, 1.0),
    depth_steps=GPU_LONG_STEPS, steps=GPU_LONG_STEPS, recipe_steps=None, eval_interval=500, ckpt_interval=500,
    corpus=".data/wiki-en-2019.0[0-2].txt.xz",
    note=f"the gpu scale (d=512) trained {GPU_LONG_STEPS * SCALES['gpu'].tokens_per_step / 1e6:.0f}M tokens per "
         f"run on the three Wikipedia shards (about 90M unique tokens, each seen about 3.3 times): depth and weight "
         f"decay (λ = 0, 0.1, 1), with probes along training")
SCALES["gpu-wide"] = replace(
    SCALES["gpu"], name="gpu-wide", **{**_GPU_RUNG, "probe_along": {**TRAJECTORY_ALONG, "jacobian_windows": 1}},
    experiments=("depth",), d_model=1024, n_heads=16,
    # two micro-batches of 32 x 1024: the d=512 L=32 step already holds 58 GiB in one
    micro_tokens=32768,
    note="the gpu depth sweep at d=1024 (16 heads of 64), 98M tokens per run, with probes along training")


# ---------------------------------------------------------------------------------------------- building


def _scale(profile: str) -> Scale:
    if profile not in SCALES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return SCALES[profile]


def _check_experiment(experiment: str) -> None:
    if experiment not in EXPERIMENTS + CHECKS:
        raise ConfigError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS + CHECKS)}")


def _probe_len(s: Scale) -> int:
    return int(s.probe.get("seq_len") or s.seq_len)


def base(profile: str, *, n_layers: int | None = None, seq_len: int | None = None, steps: int | None = None,
         weight_decay: float = 0.1, group: int = 1, d_model: int | None = None, n_heads: int | None = None,
         ffn_hidden: int | None = None, moe: tuple[int, int, int, int] | None = None,
         batch: int | None = None) -> TrainConfig:
    """The profile's dense base config with the knobs the experiments turn.

    ``seq_len`` keeps tokens per step fixed (batch = batch_size * seq_len / T), or the batch in sequences
    where the profile's ``batch_unit`` says so; ``batch`` sets it outright. With ``run_tokens`` the steps
    follow from the batch. ``moe`` = (experts, top_k, expert width, shared width). ``model.max_seq_len``
    covers the probes' context too (RoPE table only).
    """
    s = _scale(profile)
    t = seq_len or s.seq_len
    if batch is not None or s.batch_unit == "sequences":
        bsz = batch or s.batch_size
    elif s.tokens_per_step % t:
        raise ConfigError(f"seq_len {t} does not divide the {s.tokens_per_step} tokens per step of profile {profile!r}")
    else:
        bsz = s.tokens_per_step // t
    micro = bsz if s.micro_tokens is None else max(1, min(bsz, s.micro_tokens // t))
    n_steps = steps or s.steps
    if s.run_tokens:
        if s.run_tokens % (bsz * t):
            raise ConfigError(f"profile {profile!r}: {s.run_tokens} tokens per run are not whole steps of "
                              f"{bsz} x {t} tokens")
        n_steps = s.run_tokens // (bsz * t)
    d = d_model or s.d_model
    heads = n_heads or s.n_heads
    experts, top_k, expert_hidden, shared = moe or (0, 1, None, 0)
    vocab = s.vocab_size
    model = ModelConfig(
        vocab_size=vocab, d_model=d, n_layers=n_layers or s.base_depth, n_heads=heads,
        n_kv_heads=heads // group, ffn_hidden=ffn_hidden, max_seq_len=max(t, _probe_len(s)),
        n_experts=experts, top_k=top_k, expert_hidden=expert_hidden, shared_expert_hidden=shared,
        kernels=s.kernels)
    warmup = s.warmup_steps or max(1, round(s.warmup_frac * n_steps))
    optim = OptimConfig(lr=s.lr, weight_decay=weight_decay, warmup_steps=warmup, alpha_f=0.1)
    data = DataConfig(corpus=s.corpus, tokenizer=s.tokenizer, vocab_size=min(vocab, 65536), max_docs=s.max_docs)
    sharded = s.fsdp_params is not None and model.param_counts()["total"] > s.fsdp_params
    return TrainConfig(model=model, optim=optim, data=data, seq_len=t, batch_size=bsz, micro_batch_size=micro,
                       steps=n_steps, seed=0, dtype=s.dtype, compile=s.compile,
                       telemetry_interval=s.telemetry_interval, log_interval=s.log_interval,
                       eval_interval=s.eval_interval, eval_batches=s.eval_batches, ckpt_interval=s.ckpt_interval,
                       **({"parallel": "fsdp"} if sharded else {}),
                       **({"probe_points": s.probe_points, "probe": dict(s.probe), "probe_along": dict(s.probe_along)}
                          if s.probe_points else {}))


def _fmt(v: float) -> str:
    return f"{v:g}"


def _build(profile: str, experiment: str) -> list[tuple[str, TrainConfig, dict]]:
    """(name, config, meta) of every variant, in the paper's order, one whole sweep per seed.

    Seed 0 keeps the plain names (and so its results); each later seed repeats the sweep as
    ``<name>-seed<s>`` with the same label and paper_key, which is how figures, tables and claims know to
    aggregate them (mean and spread). Only the seed differs between a variant and its repeats.
    """
    s = _scale(profile)
    _check_experiment(experiment)
    if experiment not in s.experiments:
        return []
    sweep = _recipe(profile, s) if experiment == "recipe" else _sweep(profile, s, experiment)
    out: list[tuple[str, TrainConfig, dict]] = []
    for seed in s.seeds_for(experiment):
        suffix = "" if seed == 0 else f"-seed{seed}"
        for name, cfg, meta in sweep:
            meta = {**meta, "order": len(out), "seed": seed}
            if meta.get("parent"):  # the recipe's parent is the same seed's kept step
                meta["parent"] += suffix
            out.append((name + suffix, replace(cfg, seed=seed), meta))
    return out


def _sweep(profile: str, s: Scale, experiment: str) -> list[tuple[str, TrainConfig, dict]]:
    """One seed's variants of a component sweep (everything but the recipe), in the paper's order."""
    out: list[tuple[str, TrainConfig, dict]] = []

    def add(name: str, cfg: TrainConfig, label: str, value: Any, paper_key: Any, paper_label: str, **extra: Any):
        meta = {"label": label, "value": value, "paper_key": paper_key, "paper_label": paper_label, **extra}
        out.append((name, cfg, meta))

    if experiment == "depth":
        for L, pL in zip(s.depths, PAPER_DEPTHS):
            add(f"L{L}", base(profile, n_layers=L, steps=s.depth_steps), f"L={L}", L, pL, f"L={pL}",
                param="model.n_layers")
    elif experiment == "weight_decay":
        for wd in s.weight_decays:
            cfg = base(profile, weight_decay=wd, **s.shape(experiment))
            add(f"wd{_fmt(wd)}", cfg, f"λ={_fmt(wd)}", wd, wd, f"λ={_fmt(wd)}", param="optim.weight_decay")
    elif experiment == "weight_decay_official":  # same names and configs as weight_decay's, official decay
        for wd in s.weight_decays:
            cfg = base(profile, weight_decay=wd, **s.shape("weight_decay"))
            if wd:
                cfg = replace(cfg, optim=replace(cfg.optim, paper_compat_decay=True))
            add(f"wd{_fmt(wd)}", cfg, f"λ={_fmt(wd)} (official decay)", wd, wd, f"λ={_fmt(wd)}",
                param="optim.weight_decay", decay="official")
    elif experiment == "seqlen":
        for pt in PAPER_SEQ_LENS:
            t = s.seq_for(pt)
            cfg = base(profile, seq_len=t)
            add(f"T{t}", cfg, f"T={t}", t, pt, f"T={pt}", param="seq_len", batch_size=cfg.batch_size)
    elif experiment == "gqa":
        for g, pg in zip(s.groups, PAPER_GROUPS):
            cfg = base(profile, group=g, **s.shape(experiment))
            add(f"G{g}", cfg, f"G={g}" + (" (MHA)" if g == 1 else " (MQA)" if g == s.n_heads else ""), g, pg,
                f"G={pg}", param="model.n_kv_heads", n_kv_heads=cfg.model.n_kv_heads)
    elif experiment == "moe":
        for size, m in (("small", s.moe_small), ("large", s.moe_large)):
            dense_w, expert_w, shared_w = m.ffn(m.d_model)
            dense = base(profile, d_model=m.d_model, n_heads=m.n_heads,
                         ffn_hidden=None if dense_w == 4 * m.d_model else dense_w, **s.shape(experiment))
            moe = base(profile, d_model=m.d_model, n_heads=m.n_heads, ffn_hidden=dense_w,
                       moe=(m.n_experts, m.top_k, expert_w, shared_w), **s.shape(experiment))
            pair = f"dense-{size}"
            add(f"dense-{size}", dense, f"dense ({size})", "dense", f"dense-{size}",
                MOE_PAPER_LABELS[f"dense-{size}"], size=size, moe=False, pair=pair)
            add(f"moe-{size}", moe, f"MoE {m.n_experts}x top-{m.top_k}" + (" + shared" if m.shared else "")
                + f" ({size})", "moe", f"moe-{size}", MOE_PAPER_LABELS[f"moe-{size}"], size=size, moe=True,
                pair=pair, n_experts=m.n_experts, top_k=m.top_k, density=m.top_k / m.n_experts)
    return out


def _recipe(profile: str, s: Scale) -> list[tuple[str, TrainConfig, dict]]:
    """The cumulative L=32 recipe (paper-spec 3.6): each step starts from the last *kept* state."""
    t4, t8 = s.seq_for(4096), s.seq_for(8192)
    e, k = s.recipe_moe
    ffn = 4 * s.d_model if s.recipe_model is None else s.recipe_model[2]
    # (name, paper step, kept, changes relative to the last kept state)
    steps: list[tuple[str, str, bool, dict]] = [
        ("baseline", "baseline", True, {}),
        (f"+T{t4}", "+T4096", True, {"seq_len": t4}),
        (f"+T{t8}", "+T8192", False, {"seq_len": t8}),
        ("+wd0.3", "+wd0.3", True, {"weight_decay": 0.3}),
        ("+wd0.6", "+wd0.6", False, {"weight_decay": 0.6}),
        ("+wd1", "+wd1.0", False, {"weight_decay": 1.0}),
        ("+G2", "+G2", True, {"group": 2}),
        ("+MoE", "+MoE", True, {"moe": (e, k, ffn // k, 0), "ffn_hidden": ffn}),
    ]
    state: dict = {"n_layers": s.deep_depth, "steps": s.recipe_steps or s.depth_steps}
    if s.recipe_model is not None:  # its own width (paper: the 32-layer MoE ablation's d=1120)
        d, heads, _ = s.recipe_model
        state.update(d_model=d, n_heads=heads, ffn_hidden=ffn)
    parent = None
    rows = []
    for i, (name, paper_step, kept, change) in enumerate(steps):
        knobs = {**state, **change}
        cfg = base(profile, **knobs)
        rows.append((name, cfg, {"label": name, "value": name, "paper_key": paper_step, "paper_label": paper_step,
                                 "order": i, "kept": kept, "parent": parent, "step": paper_step,
                                 "change": {k2: list(v) if isinstance(v, tuple) else v for k2, v in change.items()}}))
        if kept:
            state, parent = knobs, name
    return rows


# -------------------------------------------------------------------------------------------------- API


@dataclass(frozen=True)
class Plan:
    """A profile resolved once: its scale and, built on first use, each experiment's variants (config and
    metadata) in the paper's order. The pipeline makes one per command or notebook and passes it along, so a
    profile's name is looked up once."""

    profile: str
    scale: Scale
    _sweeps: dict = field(default_factory=dict, repr=False, compare=False)

    def _sweep(self, experiment: str) -> dict[str, tuple[TrainConfig, dict]]:
        if experiment not in self._sweeps:
            self._sweeps[experiment] = {name: (cfg, meta) for name, cfg, meta in _build(self.profile, experiment)}
        return self._sweeps[experiment]

    def variants(self, experiment: str) -> dict[str, TrainConfig]:
        """Every variant's resolved TrainConfig, in the paper's order."""
        return {name: cfg for name, (cfg, _) in self._sweep(experiment).items()}

    def meta(self, experiment: str) -> dict[str, dict]:
        """Per variant: label, value (ours), paper_key / paper_label (the paper value it stands for), order,
        and experiment-specific fields (recipe: kept, parent, step, change; moe: size, pair, density)."""
        return {name: meta for name, (_, meta) in self._sweep(experiment).items()}

    def resolve(self, experiment: str, variant: str) -> TrainConfig:
        """One variant's config; a typo raises ConfigError listing the valid names."""
        sweep = self._sweep(experiment)
        if variant not in sweep:
            raise ConfigError(f"unknown variant {variant!r} of experiment {experiment!r} at profile "
                              f"{self.profile!r}; valid: {', '.join(sweep)}")
        return sweep[variant][0]

    def probe_settings(self) -> dict:
        """Keyword arguments for ``sparsedepth.probes.probe_run`` at this profile."""
        return dict(self.scale.probe)

    def eval_settings(self, cfg: TrainConfig | None = None) -> dict:
        """Keyword arguments for ``sparsedepth.eval.evaluate_run`` at this profile; with ``cfg``, the profile's
        ``ppl_tokens`` becomes ``ppl_windows`` of the run's own context, so perplexity is measured on the same
        number of tokens at every T (a fixed window count would cost 64x more at T=8192 than at T=128)."""
        kw = dict(self.scale.eval)
        tokens = kw.pop("ppl_tokens", None)
        if tokens and cfg is not None:
            kw["ppl_windows"] = max(4, tokens // cfg.seq_len)
        return kw


def plan(profile: str | Plan) -> Plan:
    """The plan of ``profile`` (a plan is returned as it is); an unknown name raises ConfigError."""
    return profile if isinstance(profile, Plan) else Plan(profile, _scale(profile))


# The same by profile name, for callers that need one answer (the list command, the catalog, scripts).


def variants(profile: str | Plan, experiment: str) -> dict[str, TrainConfig]:
    return plan(profile).variants(experiment)


def variant_meta(profile: str | Plan, experiment: str) -> dict[str, dict]:
    return plan(profile).meta(experiment)


def resolve(profile: str | Plan, experiment: str, variant: str) -> TrainConfig:
    return plan(profile).resolve(experiment, variant)


def probe_settings(profile: str | Plan) -> dict:
    return plan(profile).probe_settings()


def eval_settings(profile: str | Plan, cfg: TrainConfig | None = None) -> dict:
    return plan(profile).eval_settings(cfg)


def scale(profile: str | Plan) -> Scale:
    return plan(profile).scale


def unique_runs(profile: str) -> dict[str, list[tuple[str, str]]]:
    """config hash -> [(experiment, variant), ...]: the distinct trainings a whole reproduce needs."""
    runs: dict[str, list[tuple[str, str]]] = {}
    for exp in EXPERIMENTS:
        for name, cfg in variants(profile, exp).items():
            runs.setdefault(config_hash(cfg), []).append((exp, name))
    return runs


def profile_experiments(profile: str) -> tuple[str, ...]:
    """The paper's experiments that ``profile`` runs, in the paper's order (a gpu rung runs one or two); every
    experiment for a name that is none of ours (a results tree written by hand, or a test's)."""
    s = SCALES.get(profile)
    return tuple(e for e in EXPERIMENTS if s is None or e in s.experiments)


def profile_note(profile: str, experiment: str) -> str:
    """How this profile shrinks the paper's setup for ``experiment`` (human-readable)."""
    s = _scale(profile)
    _check_experiment(experiment)
    tok = f"{s.tokens_per_step} tokens/step"
    t_scale = "as the paper" if s.seq_len == PAPER_BASE_T else f"T/{PAPER_BASE_T // s.seq_len}"
    common = (f"{profile}: {s.note}. d_model {s.d_model} (paper 2048), {s.n_heads} heads of {s.d_model // s.n_heads}, "
              f"T {s.seq_len} (paper 1024, {t_scale}), {tok}, "
              f"vocab {s.vocab_size} ({s.tokenizer} on {s.corpus})")
    base_l = f"L={s.base_depth} stands for the paper's L=16"
    if s.run_tokens:  # the paper's schedule: steps follow from each run's batch
        shapes = sorted({(c.seq_len, c.batch_size, c.steps) for c in variants(profile, experiment).values()})
        steps = f"{s.run_tokens:,} tokens per run (" + ", ".join(
            f"T={t} x {b} sequences: {n} steps" for t, b, n in shapes) + ")"
    if experiment == "depth":
        m = ", ".join(f"{p}->{o}" for p, o in zip(PAPER_DEPTHS, s.depths))
        ratio = "as the paper" if s.base_depth == 16 else f"about L/{16 / s.base_depth:.3g}"
        spec = f"L {m} ({ratio}); " + (steps if s.run_tokens else
                                       f"{s.depth_steps} steps = {s.depth_steps * s.tokens_per_step:,} tokens")
    elif experiment == "weight_decay":
        spec = (f"{base_l}; λ as the paper (0, 0.01, 0.1, 1, 3), decoupled AdamW with the trainer's decay groups; "
                + (steps if s.run_tokens else
                   f"{s.steps} steps: the total decay lr·λ·steps is far smaller than the paper's ~9.5k steps, "
                   f"so effects are weaker"))
    elif experiment == "weight_decay_official":
        spec = ("weight_decay's configs with the official decay: norm gains and embedding decayed too (λ=0 is "
                "weight_decay's wd0 run); " + (steps if s.run_tokens else f"{s.steps} steps"))
    elif experiment == "seqlen":
        m = ", ".join(f"{p}->{s.seq_for(p)}" for p in PAPER_SEQ_LENS)
        fixed = (f"{s.batch_size} sequences per step at every T" if s.batch_unit == "sequences" else
                 f"batch*T = {s.tokens_per_step} for every T")
        spec = f"{base_l}; T {m} ({t_scale}), {fixed}; " + (steps if s.run_tokens else f"{s.steps} steps")
    elif experiment == "gqa":
        m = ", ".join(f"{p}->{o}" for p, o in zip(PAPER_GROUPS, s.groups))
        spec = (f"{base_l}; group size G {m} of {s.n_heads} heads (the paper's 16 heads allow G=16 = MQA; here "
                f"G={s.n_heads} is MQA); " + (steps if s.run_tokens else f"{s.steps} steps"))
    elif experiment == "moe":
        a, b = s.moe_small, s.moe_large
        spec = (f"{base_l}; small pair d={a.d_model}: {a.n_experts} experts top-{a.top_k} + shared expert "
                f"(paper d=768, 32 top-4 + shared); large pair d={b.d_model}: {b.n_experts} top-{b.top_k} (paper "
                f"d=2048, 64 top-8); top-k/E = 1/8 and equal active parameters in each pair; "
                + (steps if s.run_tokens else f"{s.steps} steps"))
    else:
        e, k = s.recipe_moe
        spec = (f"L={s.deep_depth} stands for the paper's L=32; cumulative steps T {s.seq_for(4096)} (=4096), "
                f"T {s.seq_for(8192)} (=8192, rejected), λ 0.3 / 0.6 / 1.0, G=2, MoE {e} experts top-{k}; ")
        if s.recipe_model is not None:
            d, heads, ffn = s.recipe_model
            spec += f"d={d}, {heads} heads, dense SwiGLU {ffn} (the paper's 32-layer MoE ablation); " + steps
        else:
            spec += (f"{s.recipe_steps or s.depth_steps} steps each"
                     + ("; baseline = the depth sweep's deepest run" if s.recipe_steps in (None, s.depth_steps) else
                        f" (the depth sweep's L={s.deep_depth} run has {s.depth_steps})"))
    seeds = s.seeds_for(experiment)
    if len(seeds) > 1:
        spec += (f"; seeds {', '.join(map(str, seeds))} of every setting (figures and tables show the seed mean, "
                 f"bands and error bars the min-max range)")
    return f"{common}. {experiment}: {spec}."


# ------------------------------------------------------------------------------------------ list command


def _human(n: float) -> str:
    for unit, div in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def variant_rows(profile: str, experiment: str) -> list[dict]:
    """One summary row per variant: shape, tokens, parameter counts and FLOPs (for tables and ``list``)."""
    rows = []
    metas = variant_meta(profile, experiment)
    for name, cfg in variants(profile, experiment).items():
        m = cfg.model
        pc = m.param_counts()
        ffn = str(m.ffn_hidden)
        if m.is_moe:
            shared = f"+{m.shared_expert_hidden}" if m.shared_expert_hidden else ""
            ffn = f"{m.n_experts}x{m.expert_hidden} k{m.top_k}{shared}"
        tokens = cfg.steps * cfg.tokens_per_step
        fpt = m.flops_per_token(cfg.seq_len)
        rows.append({"variant": name, "paper": metas[name]["paper_label"], "L": m.n_layers, "d": m.d_model,
                     "heads": f"{m.n_heads}/{m.n_kv_heads}",
                     "ffn": ffn,
                     "T": cfg.seq_len, "batch": cfg.batch_size, "steps": cfg.steps, "wd": cfg.optim.weight_decay,
                     "tokens": tokens, "params": pc["total"], "active": pc["active"],
                     "flops_per_token": fpt, "train_flops": fpt * tokens, "kept": metas[name].get("kept"),
                     "hash": config_hash(cfg)})
    return rows


def _table(rows: list[dict], cols: list[str]) -> str:
    fmt = {"tokens": _human, "params": _human, "active": _human, "flops_per_token": _human, "train_flops": _human,
           "h200_h": lambda h: f"{h:.1f}"}
    cells = [[fmt[c](r[c]) if c in fmt else ("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    line = lambda xs: "  ".join(x.ljust(w) for x, w in zip(xs, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(x) for x in cells])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=PROFILES, help="show full tables for one profile (default: overview)")
    parser.add_argument("--experiment", choices=EXPERIMENTS + CHECKS, action="append",
                        help="only this experiment (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the resolved configs as JSON")


def run(args: argparse.Namespace) -> int:
    exps = args.experiment or list(EXPERIMENTS)
    if args.json:
        profiles = [args.profile] if args.profile else list(PROFILES)
        blob = {p: {e: {n: {"config": to_dict(c), "hash": config_hash(c), "meta": variant_meta(p, e)[n]}
                        for n, c in variants(p, e).items()} for e in exps} for p in profiles}
        print(json.dumps(blob, indent=2))
        return 0
    if not args.profile:
        print("Experiments (variants per profile; `sparsedepth list --profile P` for configs, parameters, FLOPs):\n")
        for e in exps:
            print(f"{e}:")
            for p in PROFILES:
                print(f"  {p:8s} {', '.join(variants(p, e)) or '(not in this profile)'}")
        for p in PROFILES:
            print(f"\n{p}: {len(unique_runs(p))} distinct runs; {SCALES[p].note}")
        return 0
    cols = ["variant", "paper", "L", "d", "heads", "ffn", "T", "batch", "steps", "wd", "tokens", "params", "active",
            "flops_per_token", "train_flops", "hash"]
    exps = [e for e in exps if e in SCALES[args.profile].experiments]  # a rung may run only some sweeps
    speeds = _h200_speeds() if SCALES[args.profile].needs_cuda else None
    hours: dict[str, float] = {}  # config hash -> H200 GPU-hours
    for e in exps:
        rows = variant_rows(args.profile, e)
        if speeds is not None:
            from ..pipeline.gpu_hours import gpu_hours

            for r, cfg in zip(rows, variants(args.profile, e).values()):
                r["h200_h"], r["basis"] = gpu_hours(cfg, speeds)
                hours[r["hash"]] = r["h200_h"]
        c = cols + (["kept"] if e == "recipe" else []) + (["h200_h", "basis"] if speeds is not None else [])
        print(f"== {e} ==\n{profile_note(args.profile, e)}\n\n{_table(rows, c)}\n")
    runs = unique_runs(args.profile)
    shared = {h: v for h, v in runs.items() if len(v) > 1}
    print(f"{len(runs)} distinct runs at profile {args.profile!r}; shared between experiments:")
    for h, v in shared.items():
        print(f"  {h}: " + ", ".join(f"{e}/{n}" for e, n in v))
    print(f"probes: {probe_settings(args.profile)}; evaluation: {SCALES[args.profile].eval}")
    if speeds is not None:
        whole = list(profile_experiments(args.profile))
        what = "the whole profile" if exps == whole else ", ".join(exps)
        print(f"\nH200 GPU-hours to train {what}: {sum(hours.values()):,.0f} ({len(hours)} distinct runs, each "
              f"counted once; training only, probes and evaluation not included; on N GPUs about 1/N of it in "
              f"wall time). h200_h = train_flops / a FLOP rate measured on one H200; basis:")
        print("\n".join(f"  {line}" for line in speeds.legend()))
        if not speeds.paper:
            print("  Paper-scale records (config-*.json, `sparsedepth bench --config FILE`, scripts/paper_scale/bench.sh) "
                  "replace these estimates once they exist.")
    return 0


def _h200_speeds():
    """The committed H200 training-speed measurements the GPU-hours estimates rest on."""
    from ..pipeline.gpu_hours import DEVICE, Measurements
    from ..pipeline.results import output_root

    return Measurements.load(output_root() / "paper_results" / "bench" / DEVICE)
