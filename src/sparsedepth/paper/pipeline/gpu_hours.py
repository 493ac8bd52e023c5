"""H200 GPU-hours of a training run, estimated from measured training speeds (``sparsedepth list``).

An estimate is the run's training FLOPs (``ModelConfig.flops_per_token`` x tokens, the FLOP count ``bench``
and the trainer report MFU with) divided by a FLOP rate measured on one H200, best first:

1. a paper-scale bench record (``config-*.json``, written by ``sparsedepth bench --config FILE``) of the same
   model, context and parallel mode: its tokens/s, nothing transferred;
2. otherwise a FLOP rate for the run's width: a dense model's rate is interpolated in log2(d_model) between the
   committed d=512 records (the gpu profile's dense models) and the widest dense measurement, which is a
   paper-scale record when one exists and else the d=2048 reference below; an MoE model gets that rate times
   the measured MoE/dense ratio of its own ``parallel`` mode (a paper-scale MoE record of that mode beside a
   dense one when they exist, else the d=512 pair at T=4096): the 64-expert FSDP record trains micro-batches of
   one sequence with activation checkpointing, which prices no DDP MoE.

The context length and the attention grouping move MFU little at d=512 (T=4096 against T=1024: 48.2 % against
49.0 %; G=4: 47.3 %), so they are not modelled. GPU-hours are one GPU's time; on N GPUs the wall time is about
1/N of it where each keeps its one-GPU rate (two H200s did at d=512). Training only: the probes and evaluation
at d=2048 have not been timed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from ...config import ModelConfig, TrainConfig

DEVICE = "nvidia-h200"
# A plain compiled OLMo-style dense model, d=2048, 16 layers, T=1024, batch 16-32, on the same H200 (torch
# 2.11, bf16): 71-74k tokens/s, 65-67 % MFU against a measured 787 TFLOP/s matmul peak. The low end is taken.
REFERENCE_TOKENS_PER_S = 71_000
REFERENCE_MODEL = ModelConfig(vocab_size=50304, d_model=2048, n_layers=16, n_heads=16, max_seq_len=1024)
REFERENCE_T = 1024
REFERENCE_NAME = "a plain compiled dense d=2048, L=16, T=1024 on one H200: 71k tokens/s (the low end of 71-74k)"
PEAK_FLOPS = 787e12  # the bf16 matmul peak measured on the H200, against which the reference's MFU is stated
# the committed bench groups of the gpu profile's dense and MoE models, one file per measuring round
ROUND = re.compile(r"(depth|gqa_moe)-gpu(-\d{4}-\d{2}-\d{2})?\.json")


@dataclass(frozen=True)
class Speed:
    """One measured training speed: what it measured and its FLOP rate (FLOP/s by the trainer's count)."""

    source: str
    d_model: int
    moe: bool
    flop_rate: float
    tokens_per_s: float
    record: dict | None = None  # the bench record, for exact matches


def _speed(rec: dict, source: str) -> Speed:
    model = ModelConfig(**rec["model"])
    tps = float(rec["tokens_per_s"])
    return Speed(source, model.d_model, model.is_moe, tps * model.flops_per_token(rec["seq_len"]), tps, rec)


def _records(path: Path) -> list[dict]:
    """The training records of one bench file whose model this code can build (others are skipped)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for r in data if isinstance(data, list) else []:
        if isinstance(r, dict) and r.get("kind") == "train" and r.get("tokens_per_s") and r.get("seq_len"):
            try:
                ModelConfig(**r["model"])
            except (KeyError, TypeError, ValueError):  # no model, or one of another version of ModelConfig
                continue
            out.append(r)
    return out


@dataclass(frozen=True)
class Measurements:
    """The speeds an estimate may rest on: paper-scale records, the d=512 records, the d=2048 reference."""

    paper: list[Speed]
    d512: list[Speed]
    reference: Speed

    @classmethod
    def load(cls, bench_dir: Path) -> Measurements:
        """Read ``bench_dir`` (``paper_results/bench/nvidia-h200``). Of the d=512 records only the newest round
        counts (records carry their date), so older rounds with since-replaced code do not dilute it."""
        paper = [_speed(r, p.name) for p in sorted(bench_dir.glob("config-*.json")) for r in _records(p)]
        # a round's records are named <group>-gpu[-<date>].json; other tags are trials of single changes
        rounds = [p for p in sorted(bench_dir.glob("*-gpu*.json")) if ROUND.fullmatch(p.name)]
        small = [(r, p.name) for p in rounds for r in _records(p) if not r.get("overrides")]
        newest = max((r.get("date", "") for r, _ in small), default="")
        d512 = [_speed(r, name) for r, name in small if r.get("date", "")[:10] == newest[:10]]
        ref = Speed(REFERENCE_NAME, REFERENCE_MODEL.d_model, False,
                    REFERENCE_TOKENS_PER_S * REFERENCE_MODEL.flops_per_token(REFERENCE_T), REFERENCE_TOKENS_PER_S)
        return cls(paper, d512, ref)

    def _dense_points(self) -> tuple[Speed | None, Speed]:
        """(the d=512 dense rate, the widest dense rate): paper-scale records replace the reference."""
        dense512 = [s for s in self.d512 if not s.moe]
        low = None
        if dense512:
            rate = statistics.median(s.flop_rate for s in dense512)
            low = Speed("median of " + ", ".join(sorted({s.source for s in dense512})), 512, False, rate, 0.0)
        wide = [s for s in self.paper if not s.moe]
        high = max(wide, key=lambda s: (s.d_model, s.flop_rate)) if wide else self.reference
        return low, high

    def _moe_ratio(self, parallel: str = "ddp") -> tuple[float, str]:
        """MoE FLOP rate / dense FLOP rate: from paper-scale records of a dense model and of an MoE trained in the
        same ``parallel`` mode (the 64-expert FSDP record trains micro-batches of one sequence with activation
        checkpointing, a regime unlike a DDP MoE's), else from the d=512 pair."""
        same_mode = [s for s in self.paper if s.moe and (s.record or {}).get("parallel", "ddp") == parallel]
        pools = ((same_mode, [s for s in self.paper if not s.moe]),
                 ([s for s in self.d512 if s.moe], [s for s in self.d512 if not s.moe]))
        for moe, dense in pools:
            if moe and dense:
                m = max(moe, key=lambda s: (s.d_model, s.flop_rate))  # the widest MoE measured
                same = [s for s in dense if s.d_model == m.d_model] or dense
                ref = next((s for s in same if s.record and m.record
                            and s.record.get("seq_len") == m.record.get("seq_len")), same[0])
                return m.flop_rate / ref.flop_rate, f"{m.source} over {ref.source}"
        return 1.0, "no MoE measured: the dense rate"

    def rate(self, cfg: TrainConfig) -> tuple[float, str]:
        """(FLOP/s on one H200, a short tag of what the number rests on; ``legend`` explains the tags)."""
        m = cfg.model
        for s in self.paper:
            r = s.record or {}
            if _same_model(r["model"], m) and r["seq_len"] == cfg.seq_len and r.get("parallel", "ddp") == cfg.parallel:
                return s.tokens_per_s * m.flops_per_token(cfg.seq_len), s.source
        low, high = self._dense_points()
        if low is None or m.d_model >= high.d_model:
            rate, tag = high.flop_rate, f"d{high.d_model}"
        elif m.d_model <= low.d_model:
            rate, tag = low.flop_rate, "d512"
        else:
            x = (math.log2(m.d_model) - math.log2(low.d_model)) / (math.log2(high.d_model) - math.log2(low.d_model))
            rate, tag = low.flop_rate + x * (high.flop_rate - low.flop_rate), f"d512-{high.d_model}"
        if m.is_moe:
            rate, tag = rate * self._moe_ratio(cfg.parallel)[0], tag + _moe_tag(cfg.parallel)
        return rate, tag

    def legend(self) -> list[str]:
        """One line per tag ``rate`` gives: the measurement behind it, its FLOP rate and MFU at 787 TFLOP/s."""
        low, high = self._dense_points()
        mfu = lambda r: f"{r / PEAK_FLOPS:.0%} MFU at {PEAK_FLOPS / 1e12:.0f} TFLOP/s"  # noqa: E731
        lines = [f"{s.source}: measured on one H200 by `bench --config`, {s.tokens_per_s:,.0f} tokens/s"
                 for s in self.paper]
        lines.append(f"d{high.d_model}: {high.source}: {high.flop_rate / 1e12:.0f} TFLOP/s ({mfu(high.flop_rate)})")
        if low is not None:
            lines.append(f"d512: {low.source} (the gpu profile's dense models, newest round): "
                         f"{low.flop_rate / 1e12:.0f} TFLOP/s ({mfu(low.flop_rate)})")
            lines.append(f"d512-{high.d_model}: the rate interpolated in log2(d_model) between d512 and "
                         f"d{high.d_model}")
        for parallel in ("ddp", "fsdp"):
            ratio, why = self._moe_ratio(parallel)
            lines.append(f"{_moe_tag(parallel).strip()}: an MoE under {parallel}: times the measured MoE/dense "
                         f"FLOP-rate ratio {ratio:.2f} ({why})")
        return lines


def _moe_tag(parallel: str) -> str:
    return " x moe" if parallel == "ddp" else f" x moe-{parallel}"


def _same_model(rec_model: dict, m: ModelConfig) -> bool:
    """The same model up to its kernels (an implementation choice, as in ``config_hash``)."""
    try:
        return dataclasses.replace(ModelConfig(**rec_model), kernels=m.kernels) == m
    except (TypeError, ValueError):  # a record of an older or newer ModelConfig
        return False


def train_flops(cfg: TrainConfig) -> float:
    return cfg.steps * cfg.tokens_per_step * cfg.model.flops_per_token(cfg.seq_len)


def gpu_hours(cfg: TrainConfig, measurements: Measurements) -> tuple[float, str]:
    """(H200 GPU-hours of training ``cfg``, the tag of what the estimate rests on)."""
    rate, basis = measurements.rate(cfg)
    return train_flops(cfg) / rate / 3600.0, basis
