"""What the trainer records: metrics rows, per-layer telemetry, the spike monitor, MFU and wandb.

Per-layer statistics (paper-spec 1.1, with the fixes of section 5.4): the model computes them inside its
forward (``telemetry=True``) as small float32 tensors; the trainer averages them over micro-batches on the
device, adds per-block gradient and parameter norms, packs everything into ONE flat tensor, all-reduces it
across ranks and moves it to the host once per telemetry step.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections import deque
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..atomic import atomic_write_text
from ..config import ConfigError
from ..model import STAT_KEYS
from .fsdp import local_tensor

# Row key of each model statistic; the residual stream variance is "layer_var" as in the official logs.
ROW_KEYS = {"out_var": "layer_var", "attn_var": "attn_var", "ffn_var": "ffn_var",
            "attn_norm": "attn_norm", "ffn_norm": "ffn_norm"}

# Dense bf16 peak FLOP/s per device, by a substring of the device name. H100/H200: 7.87e14 is the
# measured 8192^3 bf16 matmul rate on our H200 (the datasheet's 9.89e14 is never reached); A100: datasheet.
PEAK_FLOPS = {"H200": 7.87e14, "H100": 7.87e14, "A100": 3.12e14}


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of one device: env SPARSEDEPTH_PEAK_FLOPS, else the table by CUDA device name; None on CPU
    or an unknown GPU (MFU is then reported as null)."""
    env = os.environ.get("SPARSEDEPTH_PEAK_FLOPS")
    if env:
        return float(env)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def block_norms(model: nn.Module, sum_across_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block L2 norms of the gradients and of the parameters, each [L] float32 on the device.

    ``||g_l|| = sqrt(sum_{p in block l} ||grad p||^2)``: one ``_foreach_norm`` over all block tensors, then
    a sum of squares per block. Call it after backward and before clipping; missing gradients count as zero.
    Sharded parameters (FSDP): each rank squares its own shards and ``sum_across_ranks`` adds them up.
    """
    params = [list(b.parameters()) for b in model.blocks]
    flat = [p for ps in params for p in ps]
    grads = [local_tensor(p.grad) if p.grad is not None else torch.zeros_like(local_tensor(p)) for p in flat]
    gn = torch._foreach_norm([g.float() for g in grads]) if grads else []
    pn = torch._foreach_norm([local_tensor(p.detach()).float() for p in flat]) if flat else []
    sq, i = [], 0
    for ps in params:
        sq.append(torch.stack([torch.stack(gn[i:i + len(ps)]).square().sum(),
                               torch.stack(pn[i:i + len(ps)]).square().sum()]))
        i += len(ps)
    sq = torch.stack(sq, 1)  # [2, L]
    if sum_across_ranks is not None:
        sq = sum_across_ranks(sq)
    return sq[0].sqrt(), sq[1].sqrt()


def final_gain(model: nn.Module, sum_across_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None
               ) -> torch.Tensor:
    """Mean |g| of the final RMSNorm's gain, a float32 scalar on the device. The official code logged the last
    layer's variance after this norm, N_f(h_L) = g * h_L / rms(h_L), so a shrinking gain lowers that reading
    while the residual stream stays as it is. Sharded (FSDP): each rank sums its shard, ``sum_across_ranks``
    adds them up. Read-only: training is unchanged."""
    g = model.norm.weight
    total = local_tensor(g.detach()).float().abs().sum().reshape(1)
    if sum_across_ranks is not None:
        total = sum_across_ranks(total)
    return total[0] / g.numel()


def add_stats(acc: dict | None, stats: dict) -> dict:
    """Running sum of telemetry stats over micro-batches (detached, float32, on the device)."""
    stats = {k: v.detach().float() for k, v in stats.items()}
    if acc is None:
        return stats
    return {k: acc[k] + v for k, v in stats.items()}


def pack(stats: dict, scale: float, grad_norm: torch.Tensor, param_norm: torch.Tensor,
         gain: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Flatten averaged stats, block norms and the final norm's mean gain (:func:`final_gain`) into one float32
    vector and a layout for ``unpack``."""
    parts, layout = [], []
    named = [(ROW_KEYS[k], stats[k] * scale) for k in STAT_KEYS]
    named += [("final_var", stats["final_var"] * scale)]
    if "expert_load" in stats:
        named.append(("expert_load", stats["expert_load"] * scale))
    named += [("layer_grad_norm", grad_norm), ("layer_param_norm", param_norm), ("final_gain", gain)]
    for key, t in named:
        parts.append(t.reshape(-1).float())
        layout.append((key, tuple(t.shape)))
    return torch.cat(parts), layout


def unpack(flat: list[float], layout: list) -> dict[str, Any]:
    """Inverse of ``pack`` on host floats: scalars stay floats, [L] become lists, [L, E] nested lists."""
    out, i = {}, 0
    for key, shape in layout:
        n = math.prod(shape)
        vals = flat[i:i + n]
        i += n
        if not shape:
            out[key] = vals[0]
        elif len(shape) == 1:
            out[key] = vals
        else:
            out[key] = [vals[r * shape[1]:(r + 1) * shape[1]] for r in range(shape[0])]
    return out


class SpikeMonitor:
    """Flags a value above ``mean + sigma * std`` of the previous ``window`` values of the same series.

    Needs ``min_history`` earlier values before it flags anything; every value (spikes too) enters the
    window, so a lasting level shift stops being flagged once the window has absorbed it.
    """

    def __init__(self, window: int, sigma: float, min_history: int = 8):
        self.window, self.sigma, self.min_history = window, sigma, min_history
        self.history: dict[str, deque] = {}

    def update(self, **values: float) -> list[str]:
        """Feed one step's values; returns the names that spiked."""
        flagged = []
        for name, v in values.items():
            h = self.history.setdefault(name, deque(maxlen=self.window))
            if len(h) >= max(2, self.min_history) and math.isfinite(v):
                mean = sum(h) / len(h)
                std = math.sqrt(sum((x - mean) ** 2 for x in h) / (len(h) - 1))
                if v > mean + self.sigma * std and v > mean * (1 + 1e-6):
                    flagged.append(name)
            if math.isfinite(v):
                h.append(v)
        return flagged

    def state_dict(self) -> dict:
        return {k: list(v) for k, v in self.history.items()}

    def load_state_dict(self, state: dict) -> None:
        self.history = {k: deque(v, maxlen=self.window) for k, v in state.items()}


def _clean(v: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


class MetricsFile:
    """metrics.jsonl: one JSON object per logged step, appended and flushed (readers see it at once).

    ``sync`` (fsync) runs before every checkpoint and at close: rows after the last checkpoint are dropped
    on resume anyway (atomic rewrite), so fsync per row would buy nothing and cost milliseconds per step.
    A resumed run's file thus has each step once, exactly as an uninterrupted run's.
    """

    def __init__(self, path: Path, keep_up_to_step: int):
        self.path = Path(path)
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            kept = [ln for ln, row in zip(lines, map(_parse, lines)) if row and row["step"] <= keep_up_to_step]
            if len(kept) != len(lines):
                atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        self._f.flush()

    def sync(self) -> None:
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self.sync()
        self._f.close()


def _parse(line: str) -> dict | None:
    """One metrics row, or None for a blank line or a line cut short by a crash mid-write."""
    try:
        return json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
        return None


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """All rows of a run's metrics.jsonl (a partial last line from a crash is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [row for row in map(_parse, path.read_text().splitlines()) if row]


WANDB_ENV = "SPARSEDEPTH_WANDB"  # 1: log every run to W&B, without touching its config (or config hash)
PER_LAYER = "per_layer"  # W&B section of the per-layer series: per_layer/<stat>/layer_<l>
CHARTS = "per_layer_charts"  # one chart per statistic, a line per layer, drawn when the run finishes
CHART_POINTS = 300  # steps per line in those charts (every k-th telemetry row)


def wandb_enabled(cfg_wandb: bool = False) -> bool:
    """Whether to log to W&B: the config's ``wandb`` field or ``SPARSEDEPTH_WANDB=1`` in the environment."""
    value = os.environ.get(WANDB_ENV, "").strip().lower()
    if value not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"{WANDB_ENV}={os.environ[WANDB_ENV]!r}: use 1 to log runs to W&B, 0 (or unset) not to")
    return bool(cfg_wandb) or value in ("1", "true", "yes", "on")


def wandb_run_id(config_hash: str) -> str:
    """The W&B run id of a run: its config hash, so a resumed run (and its later probes) log into one run."""
    return f"sd-{config_hash}"


def _open_run(run_dir: Path, project: str, run_id: str, config: dict | None = None):
    """Start or resume the W&B run ``run_id``, writing under ``run_dir/wandb``. Offline unless WANDB_MODE says
    otherwise (``wandb sync run_dir/wandb/offline-run-*`` uploads it later); never logs in."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb  # lazy: only runs that ask for it need it

    return wandb.init(project=project, dir=str(run_dir), config=config, id=run_id, name=Path(run_dir).name,
                      resume="allow")


def layer_key(stat: str, layer: int, n_layers: int) -> str:
    """``per_layer/<stat>/layer_<l>``, l 1-based (block l's output, as in the figures) and zero-padded so
    W&B lists the lines in layer order."""
    return f"{PER_LAYER}/{stat}/layer_{layer + 1:0{len(str(n_layers))}d}"


class WandbLogger:
    """Mirrors metrics rows to Weights & Biases, with the config; see ``_open_run`` for where and how.

    Scalars keep their row names (loss, lr, grad_norm, val_loss, ...). Each per-layer list (residual variance
    ``layer_var``, sublayer variances ``attn_var``/``ffn_var`` and norms, ``layer_grad_norm``,
    ``layer_param_norm``) becomes one series per layer, ``per_layer/<stat>/layer_<l>``; expert load is
    reduced to its per-layer max and min so a 64-expert model does not create thousands of keys. At the end
    ``finish`` draws, from metrics.jsonl (so a resumed run's earlier steps count too), one chart per
    statistic with a line per layer under ``per_layer_charts/<stat>``.
    """

    def __init__(self, run_dir: Path, project: str, config: dict, run_id: str):
        self.run_dir = Path(run_dir)
        self.run = _open_run(self.run_dir, project, run_id, config)

    @staticmethod
    def flatten(row: dict) -> dict[str, float]:
        """A metrics row as W&B keys (see the class docstring); strings and non-numeric lists are left out."""
        flat = {}
        for k, v in row.items():
            if k == "step" or v is None or isinstance(v, str):
                continue
            if k == "expert_load":
                for i, load in enumerate(v):
                    flat[layer_key("expert_load_max", i, len(v))] = max(load)
                    flat[layer_key("expert_load_min", i, len(v))] = min(load)
            elif isinstance(v, list):
                if v and isinstance(v[0], (int, float)):
                    flat.update({layer_key(k, i, len(v)): x for i, x in enumerate(v)})
            else:
                flat[k] = float(v)
        return flat

    def log(self, row: dict) -> None:
        self.run.log(self.flatten(row), step=row["step"])

    def _charts(self) -> None:
        import wandb

        rows = [r for r in read_metrics(self.run_dir) if "layer_var" in r]
        rows = rows[::max(1, math.ceil(len(rows) / CHART_POINTS))]
        stats = [k for k, v in (rows[-1].items() if rows else ()) if isinstance(v, list) and v
                 and isinstance(v[0], (int, float))]
        charts = {}
        for stat in stats:
            series = [r[stat] for r in rows if isinstance(r.get(stat), list)]
            steps = [r["step"] for r in rows if isinstance(r.get(stat), list)]
            n = len(series[-1])
            ys = [[(s[i] if i < len(s) and s[i] is not None else float("nan")) for s in series] for i in range(n)]
            charts[f"{CHARTS}/{stat}"] = wandb.plot.line_series(
                xs=steps, ys=ys, keys=[layer_key(stat, i, n).rsplit("/", 1)[1] for i in range(n)], title=stat,
                xname="step")
        if charts:
            self.run.log(charts)

    def finish(self) -> None:
        try:
            self._charts()
        except Exception as e:  # a chart is a view of logged data: never let it fail a finished run
            print(f"warning: W&B per-layer charts not drawn ({type(e).__name__}: {e}); the series are logged",
                  file=sys.stderr)
        finally:
            self.run.finish()


def _scalars(prefix: str, d: Any, out: dict) -> dict:
    """Every finite number in a nested dict, as ``prefix/key/subkey`` (lists are left out)."""
    if isinstance(d, dict):
        for k, v in d.items():
            _scalars(f"{prefix}/{k}", v, out)
    elif isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d):
        out[prefix] = d
    return out


def wandb_log_scores(run_dir: str | os.PathLike, project: str, run_id: str) -> dict[str, float]:
    """Put a finished run's probe scores (probes.json) and evaluation (eval.json) into its W&B run's summary,
    as ``probes/<probe>/<score>`` and ``eval/...``; returns what was logged (empty when neither file exists)."""
    run_dir = Path(run_dir)
    scores: dict[str, float] = {}
    for name, prefix in (("probes.json", "probes"), ("eval.json", "eval")):
        path = run_dir / name
        if path.is_file():
            _scalars(prefix, json.loads(path.read_text()), scores)
    if scores:
        run = _open_run(run_dir, project, run_id)
        try:
            run.summary.update(scores)
        finally:
            run.finish()
    return scores
