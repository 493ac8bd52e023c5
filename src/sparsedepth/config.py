"""Typed, validated configuration: model, optimiser, data and training.

Every config is a dataclass checked in ``__post_init__``; an error names the field and the rule. Configs
round-trip through plain dicts (``to_dict`` / ``from_dict``) so they can live in JSON, YAML and run
directories, and ``apply_overrides`` turns ``--set key=value`` strings into a new config, rejecting keys
it does not know.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError

ATTN_BACKENDS = ("auto", "sdpa", "cudnn", "xformers", "math")
KERNELS = ("torch", "triton")  # sparsedepth.model.kernels
COMPILE_MODES = (False, True, "blocks", "model")
PARALLEL_MODES = ("ddp", "fsdp")  # sparsedepth.train.distributed (DDP) and sparsedepth.train.fsdp (FSDP2)
MOE_AUX_SCALINGS = ("mean", "sum", "compound")
# keyword arguments of sparsedepth.probes.probe_run that TrainConfig.probe / probe_along may set
PROBE_KEYS = ("n_windows", "seq_len", "probes", "paper_compat", "seed", "max_pairs", "jacobian_windows",
              "jacobian_seq_len", "jacobian_layers", "batch_tokens", "attention_windows", "tf32")


class ConfigError(UserError, ValueError):
    """A config value breaks a rule; the message names the field and the fix."""


def _require(cond: bool, field_name: str, rule: str) -> None:
    if not cond:
        raise ConfigError(f"{field_name}: {rule}")


@dataclass
class ModelConfig:
    """OLMo-style pre-LN decoder: RMSNorm, SwiGLU, RoPE, no biases, untied embeddings (paper-spec 2.1-2.3)."""

    vocab_size: int = 50304
    d_model: int = 512
    n_layers: int = 16
    n_heads: int = 8
    n_kv_heads: int | None = None  # None = n_heads (MHA); group size G = n_heads / n_kv_heads
    ffn_hidden: int | None = None  # SwiGLU inner width; None = 4 * d_model (adamw-1B: 8192 at d=2048)
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02  # N(0, 0.02^2) everywhere, no depth scaling (paper-spec 2.1)
    layernorm_scaling: bool = False  # Sun et al. 2025: normed input times 1/sqrt(layer index + 1)
    attn_backend: str = "auto"
    # "triton": hand-written SwiGLU and head + cross-entropy kernels on CUDA (model/kernels.py); "torch" elsewhere
    kernels: str = "torch"
    # Mixture of experts: n_experts = 0 means a dense SwiGLU feed-forward.
    n_experts: int = 0
    top_k: int = 1
    expert_hidden: int | None = None  # None = ffn_hidden
    shared_expert_hidden: int = 0  # 0 = no shared expert; else out = shared/(k+1) + k/(k+1) * routed
    moe_renormalize: bool = False  # official code keeps the raw softmax probabilities of the top-k
    lb_loss_weight: float = 0.01
    z_loss_weight: float = 0.001
    # How per-layer aux losses combine: "mean" = weight/L per layer (intended), "sum" = weight per layer
    # (OLMoE), "compound" = weight/L^(l+1) (the official code's bug, paper-spec 2.3).
    moe_aux_scaling: str = "mean"

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.ffn_hidden is None:
            self.ffn_hidden = 4 * self.d_model
        if self.n_experts and self.expert_hidden is None:
            self.expert_hidden = self.ffn_hidden
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "max_seq_len"):
            _require(getattr(self, name) > 0, name, f"must be a positive integer, got {getattr(self, name)}")
        _require(self.d_model % self.n_heads == 0, "n_heads",
                 f"must divide d_model ({self.d_model} % {self.n_heads} != 0)")
        _require(self.head_dim % 2 == 0, "n_heads", f"head_dim d_model/n_heads = {self.head_dim} must be even for RoPE")
        _require(self.n_heads % self.n_kv_heads == 0, "n_kv_heads",
                 f"must divide n_heads ({self.n_heads} % {self.n_kv_heads} != 0)")
        _require(self.attn_backend in ATTN_BACKENDS, "attn_backend",
                 f"must be one of {ATTN_BACKENDS}, got {self.attn_backend!r}")
        _require(self.kernels in KERNELS, "kernels", f"must be one of {KERNELS}, got {self.kernels!r}")
        _require(self.n_experts >= 0, "n_experts", "must be >= 0 (0 = dense)")
        if self.n_experts:
            _require(1 <= self.top_k <= self.n_experts, "top_k",
                     f"must satisfy 1 <= top_k <= n_experts ({self.n_experts}), got {self.top_k}")
            _require(self.expert_hidden > 0, "expert_hidden", "must be positive")
        _require(self.shared_expert_hidden >= 0, "shared_expert_hidden", "must be >= 0")
        _require(self.moe_aux_scaling in MOE_AUX_SCALINGS, "moe_aux_scaling",
                 f"must be one of {MOE_AUX_SCALINGS}, got {self.moe_aux_scaling!r}")
        _require(self.init_std > 0, "init_std", "must be positive")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    def param_counts(self) -> dict[str, int]:
        """Total, active-per-token and non-embedding parameter counts (embedding and head are untied)."""
        d, hd = self.d_model, self.head_dim
        attn = d * d + 2 * d * self.n_kv_heads * hd + d * d
        norms = 2 * d
        if self.is_moe:
            expert = 3 * d * self.expert_hidden
            shared = 3 * d * self.shared_expert_hidden
            ffn_total = self.n_experts * expert + shared + d * self.n_experts
            ffn_active = self.top_k * expert + shared + d * self.n_experts
        else:
            ffn_total = ffn_active = 3 * d * self.ffn_hidden
        emb = 2 * self.vocab_size * d
        block_total = attn + norms + ffn_total
        block_active = attn + norms + ffn_active
        return {
            "total": self.n_layers * block_total + emb + d,
            "active": self.n_layers * block_active + emb + d,
            "non_embedding": self.n_layers * block_total + d,
            "active_non_embedding": self.n_layers * block_active + d,
        }

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward = 3x forward): 6 * active matmul params including
        the head, plus causal attention scores and values (6 * L * T * d, half of the full T^2 work)."""
        t = seq_len or self.max_seq_len
        c = self.param_counts()
        matmul_params = c["active_non_embedding"] - self.d_model + self.vocab_size * self.d_model
        attn = 6 * self.n_layers * t * self.d_model  # 2 matmuls x 2 flops x T/2 keys x 3 (fwd+bwd)
        return 6.0 * matmul_params + attn


@dataclass
class OptimConfig:
    """AdamW with a linear-warmup cosine schedule (paper-spec 2.5)."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 100
    alpha_f: float = 0.1  # final lr = alpha_f * lr
    grad_clip: float = 1.0
    # The official code decays norm gains and embeddings too (its no-decay flag is a no-op, paper-spec 2.5).
    paper_compat_decay: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        _require(self.lr > 0, "lr", "must be positive")
        _require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "must be two values in [0, 1)")
        _require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        _require(0 <= self.alpha_f <= 1, "alpha_f", "must be in [0, 1]")
        _require(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables clipping)")


@dataclass
class DataConfig:
    """Where tokens come from. ``corpus`` is "embedded" (the Wikipedia sample shipped in the package), a
    local file or folder (txt, txt.xz, jsonl, parquet, arrow) or ``hf:NAME`` for a hub dataset (online only).
    ``tokenizer`` is "bpe" (train a byte-level BPE of ``vocab_size`` on the training split) or a path to a
    tokenizer.json (the GPT-NeoX one of the paper)."""

    corpus: str = "embedded"
    tokenizer: str = "bpe"
    vocab_size: int = 8192
    val_fraction: float = 0.05
    max_docs: int | None = None  # use only the first N documents (small profiles)
    split_seed: int = 1234
    cache_dir: str = ".cache/sparsedepth"

    def __post_init__(self) -> None:
        _require(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)")
        _require(256 < self.vocab_size <= 65536, "vocab_size", "must be in (256, 65536] to fit uint16 shards")
        _require(self.max_docs is None or self.max_docs > 1, "max_docs", "must be > 1 or null")


@dataclass
class TrainConfig:
    """One training run: model, optimiser, data and the loop's own settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seq_len: int = 256
    batch_size: int = 16  # global batch in sequences
    micro_batch_size: int | None = None  # None = batch_size (no accumulation)
    steps: int = 100
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, float32 on CPU) | float32 | bfloat16
    # torch.compile: False, "blocks" (each block and the head + loss: one graph for every layer and depth,
    # short compiles), "model" (the whole forward as one graph), or True (= "blocks", the measured default)
    compile: bool | str = False
    telemetry_interval: int = 10  # per-layer statistics every N steps (0 = off)
    log_interval: int = 10
    eval_interval: int = 0  # validation loss every N steps (0 = only at the end)
    eval_batches: int = 8
    ckpt_interval: int = 0  # 0 = only at the end / on interruption
    keep_checkpoints: int = 2
    spike_window: int = 128
    spike_sigma: float = 6.0
    wandb: bool = False
    wandb_project: str = "sparsedepth"
    # Data parallelism across torchrun ranks: "ddp" (every rank holds the whole model and optimiser) or "fsdp"
    # (FSDP2: parameters, gradients and AdamW state sharded per block, bf16 parameters in compute with float32
    # gradient reductions; checkpoints through torch.distributed.checkpoint, resumable on another world size).
    # DDP is the default, measured: the paper's dense 1B on one H200 trains 1.7 % faster under DDP than FSDP
    # (paper_results/bench/nvidia-h200/config-dense-1b*); FSDP is for models whose state does not fit one GPU.
    parallel: str = "ddp"
    # Recompute each block's activations in the backward pass (memory for compute; same results, not hashed)
    activation_checkpointing: bool = False
    # Probes along training (sparsedepth.probes.trajectory): probe the weights at `probe_points` steps, evenly
    # spaced in log tokens from the end of warmup and always including the last step, into trajectory.json.
    # What is measured, not what is trained (training is bit for bit the same): none of these is hashed.
    probe_points: int = 0
    probe: dict = field(default_factory=dict)  # probe_run keyword arguments: the final probes' settings
    probe_along: dict = field(default_factory=dict)  # cheaper overrides before the last point (see PROBE_KEYS)
    keep_probe_checkpoints: bool = False  # keep each probed checkpoint's weights (checkpoints/probe-step-N)

    def __post_init__(self) -> None:
        for name, cls in _NESTED.items():
            if isinstance(getattr(self, name), dict):
                try:
                    setattr(self, name, cls(**getattr(self, name)))
                except ConfigError as e:  # the section's own check names "lr": the user wrote "optim.lr"
                    raise ConfigError(f"{name}.{e}") from None
        if self.micro_batch_size is None:
            self.micro_batch_size = self.batch_size
        _require(self.seq_len > 0, "seq_len", "must be positive")
        _require(self.seq_len <= self.model.max_seq_len, "seq_len",
                 f"{self.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}; raise model.max_seq_len")
        _require(self.batch_size > 0, "batch_size", "must be positive")
        _require(0 < self.micro_batch_size <= self.batch_size and self.batch_size % self.micro_batch_size == 0,
                 "micro_batch_size", f"must divide batch_size {self.batch_size}, got {self.micro_batch_size}")
        _require(self.steps > 0, "steps", "must be positive")
        _require(self.device in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
        _require(self.dtype in ("auto", "float32", "bfloat16"), "dtype", "must be auto, float32 or bfloat16")
        _require(self.compile in COMPILE_MODES, "compile",
                 f"must be one of false, true, 'blocks' or 'model', got {self.compile!r}")
        for name in ("telemetry_interval", "log_interval", "eval_interval", "ckpt_interval"):
            _require(getattr(self, name) >= 0, name, "must be >= 0")
        _require(self.log_interval > 0, "log_interval", "must be positive")
        _require(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        _require(self.probe_points >= 0, "probe_points", "must be >= 0 (0 = no probes along training)")
        for name in ("probe", "probe_along"):
            value = getattr(self, name)
            _require(isinstance(value, dict), name, f"must be a mapping of probe settings, got {value!r}")
            unknown = sorted(set(value) - set(PROBE_KEYS))
            _require(not unknown, name, f"unknown setting(s) {unknown}; valid: {', '.join(PROBE_KEYS)}")
        _require(not (self.probe_points and self.parallel == "fsdp"), "probe_points",
                 "probes along training copy the whole model on rank 0; with parallel=fsdp keep the checkpoints "
                 "(ckpt_interval) and run `sparsedepth probe RUN --trajectory` afterwards")
        _require(self.parallel in PARALLEL_MODES, "parallel", f"must be one of {PARALLEL_MODES}, got {self.parallel!r}")
        _require(not (self.parallel == "fsdp" and self.compile_mode == "model"), "compile",
                 "compile='model' traces the whole forward, FSDP's per-block hooks included; with parallel=fsdp "
                 "use compile: blocks")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def compile_mode(self) -> str | None:
        """None (eager), "blocks" or "model"."""
        return "blocks" if self.compile is True else self.compile or None

    def uses_bf16(self, device_type: str) -> bool:
        """Whether training (and its evaluation) runs under bf16 autocast on a device of this type."""
        return self.dtype == "bfloat16" or (self.dtype == "auto" and device_type == "cuda")


def to_dict(cfg: Any) -> dict:
    """A plain, JSON-ready dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(d: dict) -> TrainConfig:
    """Build a TrainConfig from a nested dict, rejecting unknown keys at every level."""
    _check_keys(TrainConfig, d, "")
    return TrainConfig(**d)


# How a model computes, not what it trains: a run trained with the Triton kernels tracks its torch twin within
# rerun noise (docs/performance.md), and activation checkpointing recomputes exactly what it dropped, so each
# pair shares a hash, a cached result and a resumable run directory. config.json and provenance still say which ran.
IMPLEMENTATION_KEYS = (("model", "kernels"), ("activation_checkpointing",))
# What a run measures along the way, not what it trains: never hashed, so turning probes on keeps the hash.
OBSERVATION_KEYS = (("probe_points",), ("probe",), ("probe_along",), ("keep_probe_checkpoints",))
# Fields added after runs were cached: hashed only when they differ from this value, so every existing hash
# (run cache, run directories) stays valid. FSDP computes in bf16 parameters, DDP under autocast: hashed.
HASHED_UNLESS = {("parallel",): "ddp"}


def hashed_fields(d: dict) -> dict:
    """A config dict (as ``to_dict`` writes) without the implementation choices (``IMPLEMENTATION_KEYS``), the
    observation settings (``OBSERVATION_KEYS``) and the later fields at their old behaviour (``HASHED_UNLESS``)."""
    d = json.loads(json.dumps(d))
    drop = list(IMPLEMENTATION_KEYS) + list(OBSERVATION_KEYS)
    drop += [path for path, value in HASHED_UNLESS.items() if _get(d, path) == value]
    for *section, key in drop:
        node = d
        for name in section:
            node = node.get(name, {})
        node.pop(key, None)
    return d


def _get(d: dict, path: tuple[str, ...]) -> Any:
    for name in path:
        d = d.get(name, {}) if isinstance(d, dict) else {}
    return d


def config_hash(cfg: TrainConfig) -> str:
    """Stable short hash of the resolved config (sorted JSON) without its implementation choices."""
    blob = json.dumps(hashed_fields(to_dict(cfg)), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


_NESTED = {"model": ModelConfig, "optim": OptimConfig, "data": DataConfig}


def valid_keys() -> list[str]:
    """Every dotted key that ``--set`` accepts."""
    keys = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NESTED:
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(_NESTED[f.name])]
        else:
            keys.append(f.name)
    return keys


def _check_keys(cls: type, d: dict, prefix: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; valid keys: {sorted(prefix + n for n in names)}")
    for k, v in d.items():
        if k in _NESTED and cls is TrainConfig and isinstance(v, dict):
            _check_keys(_NESTED[k], v, f"{k}.")


def _parse_value(text: str) -> Any:
    try:
        import yaml

        value = yaml.safe_load(text)
    except Exception:
        value = text
    # YAML 1.1 reads exponent floats without a dot (3e-4) as strings
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value):
        return float(value)
    return value


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any] | list[str]) -> TrainConfig:
    """Return a new config with dotted-key overrides applied (``{"model.n_layers": 8}`` or ``["model.n_layers=8"]``).

    Unknown keys raise ConfigError listing the valid keys; values from strings are parsed as YAML scalars.
    """
    if isinstance(overrides, (list, tuple)):
        parsed = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value (for example model.n_layers=8)")
            k, v = item.split("=", 1)
            parsed[k.strip()] = _parse_value(v.strip())
        overrides = parsed
    d = to_dict(cfg)
    valid = set(valid_keys())
    for key, value in overrides.items():
        if key not in valid:
            raise ConfigError(f"unknown --set key {key!r}; valid keys: {', '.join(sorted(valid))}")
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    # derived defaults (n_kv_heads, ffn_hidden, ...) were resolved for the old values: re-derive when the
    # override changed what they derive from and did not set them explicitly.
    m, old = d["model"], cfg.model
    if "model.n_kv_heads" not in overrides and "model.n_heads" in overrides and old.n_kv_heads == old.n_heads:
        m["n_kv_heads"] = None
    if "model.ffn_hidden" not in overrides and "model.d_model" in overrides and old.ffn_hidden == 4 * old.d_model:
        m["ffn_hidden"] = None
    if "model.expert_hidden" not in overrides and old.is_moe and old.expert_hidden == old.ffn_hidden and (
            "model.ffn_hidden" in overrides or m["ffn_hidden"] is None):
        m["expert_hidden"] = None
    if "micro_batch_size" not in overrides and "batch_size" in overrides and cfg.micro_batch_size == cfg.batch_size:
        d["micro_batch_size"] = None
    try:
        return from_dict(d)
    except TypeError as e:  # a value of the wrong type (model.n_layers=abc) fails a comparison in validation
        raise ConfigError(f"override {overrides} has a value of the wrong type ({e}); "
                          f"give numbers for numeric keys, true/false for switches") from e
