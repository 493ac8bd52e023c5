"""The training loop: AdamW + warmup-cosine, accumulation, bf16 autocast, DDP or FSDP, telemetry, safe resume.

Step numbering follows OLMo's global step: step ``s`` (1-based) trains on ``get_batch(seed, s)`` with the
weights left by step ``s - 1`` and uses ``lr * lr_factor(s)``. Between log steps nothing leaves the device:
losses and gradient norms stay tensors until the next log step moves them to the host in one transfer,
together with the per-layer telemetry.
"""
from __future__ import annotations

import inspect
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from .. import provenance
from ..atomic import atomic_write_json, read_json
from ..config import ConfigError, TrainConfig, config_hash, from_dict, to_dict
from ..data import get_batch, prepare_data, val_windows
from ..errors import CorruptFileError
from ..faults import crash_point
from ..model import build_model
from ..rundir_lock import RunDirLock
from .checkpoint import (check_run_dir, clean_run_dir, latest_checkpoint, list_checkpoints, load_state, rng_state,
                         save_checkpoint, set_rng_state, write_config)
from .dcp import is_sharded, load_model, load_sharded, save_sharded
from .distributed import Dist, init_distributed, maybe_no_sync, resolve_device
from .fsdp import checkpoint_blocks, full_tensor, shard_model
from .integrity import CheckpointError, apply_state
from .optim import build_optimizer, build_scheduler, format_groups, param_groups
from .telemetry import (MetricsFile, SpikeMonitor, WandbLogger, add_stats, block_norms, final_gain, pack, peak_flops,
                        read_metrics, unpack)
from .telemetry import wandb_enabled, wandb_run_id


# The only buffers are constant RoPE tables: skip DDP's per-forward buffer broadcast (renamed in torch 2.13).
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                   else {"broadcast_buffers": False})


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the saved state."""


def check_vocab(cfg: TrainConfig, data_vocab: int | None = None) -> None:
    """The embedding must cover every token id the data can hold."""
    for what, n in (("data.vocab_size", cfg.data.vocab_size), ("the tokenizer's id space", data_vocab)):
        if n is not None and cfg.model.vocab_size < n:
            raise ConfigError(f"model.vocab_size {cfg.model.vocab_size} < {what} {n}: token ids would overflow the "
                              f"embedding; set model.vocab_size >= {n} (e.g. --set model.vocab_size={n})")


# Unix time at which every training of this process and its children stops at a checkpoint (``train(stop_at_time=)``
# where not given): set once by a command with a time limit (``sparsedepth run --stop-after-s``), so runs started
# in child processes keep the same deadline.
STOP_AT_ENV = "SPARSEDEPTH_STOP_AT_TIME"


def stop_time_from_env() -> float | None:
    value = os.environ.get(STOP_AT_ENV)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{STOP_AT_ENV}={value!r} is not a Unix time in seconds; unset it or give a number") from None


class _StopSignal:
    """SIGINT / SIGTERM set a flag: the loop finishes its step, saves a checkpoint, then re-raises
    (KeyboardInterrupt or SystemExit(128 + signum)). A second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> "_StopSignal":
        if threading.current_thread() is threading.main_thread():  # handlers can only live in the main thread
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self.handle)
        return self

    def handle(self, signum: int, frame=None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def reraise(self) -> None:
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + int(self.signum))


class _Clock:
    """Training throughput from host time at log steps (the only points where the device is in sync).

    Steady state skips the first interval of a session (warm-up, compilation) unless it is the only one.
    """

    def __init__(self) -> None:
        self.t0 = self.t_log = time.perf_counter()
        self.first, self.tokens, self.seconds = True, 0, 0.0

    def lap(self, tokens: int, count: bool = False) -> float:
        dt = max(time.perf_counter() - self.t_log, 1e-9)
        if not self.first or count:
            self.tokens, self.seconds = self.tokens + tokens, self.seconds + dt
        self.first = False
        return tokens / dt

    def restart(self) -> None:
        self.t_log = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def steady(self) -> float | None:
        return self.tokens / self.seconds if self.seconds else None


class Trainer:
    """One run in one run directory; ``fit`` trains from wherever the latest checkpoint left off."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, dist: Dist, progress: bool = True, root: Path | None = None):
        self.cfg, self.run_dir, self.dist = cfg, Path(run_dir), dist
        self.dev, self.main = dist.device, dist.is_main
        if self.dev.type == "cuda":  # summary's peak_memory_gib is this run's, not an earlier run's in the process
            torch.cuda.reset_peak_memory_stats(self.dev)
        self.progress = progress and self.main
        per_rank, rem = divmod(cfg.batch_size, dist.world_size)
        if rem or per_rank % cfg.micro_batch_size:
            raise ConfigError(f"batch_size {cfg.batch_size} must split into {dist.world_size} ranks x whole micro-batches "
                              f"of micro_batch_size {cfg.micro_batch_size}; pick batch_size a multiple of "
                              f"{dist.world_size * cfg.micro_batch_size}")
        self.n_micro = per_rank // cfg.micro_batch_size
        self.data = dist.main_first(lambda: prepare_data(cfg.data, progress=self.progress, root=root))
        check_vocab(cfg, self.data.vocab_size)
        self.val = val_windows(self.data.val, cfg.seq_len, cfg.eval_batches * cfg.micro_batch_size, seed=cfg.seed)
        # config.json marks a run that has started: written only once its data is ready, so a run that failed
        # on its input (a wrong corpus path, ...) can be retried in the same folder with the input corrected
        if self.main and not (self.run_dir / "config.json").exists():
            write_config(self.run_dir, cfg)

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, self.dev)
        bf16 = cfg.uses_bf16(self.dev.type)
        self.fsdp = cfg.parallel == "fsdp"
        if cfg.activation_checkpointing:
            checkpoint_blocks(self.model)
        if self.fsdp:  # before the optimiser: sharding replaces the parameters
            shard_model(self.model, self.dev, bf16)
        groups, self.groups = param_groups(self.model, cfg.optim)
        self.params = [p for g in groups for p in g["params"]]
        self.opt = build_optimizer(groups, cfg.optim, self.dev)
        self.sched = build_scheduler(self.opt, cfg)
        self.monitor = SpikeMonitor(cfg.spike_window, cfg.spike_sigma)
        self.step, self.prior_wall, self.val_loss = 0, 0.0, None
        self._resume()

        self.ddp = DDP(self.model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None,
                       **_NO_BUFFER_SYNC) if dist.enabled and not self.fsdp else None
        self.fwd = self.ddp or self.model
        self.eval_fwd = self.model
        if cfg.compile_mode:
            # a fresh dynamo cache per run: the runs of a sweep in one process would otherwise pile up
            # recompilations of the same code objects and pass the recompile limit (then run eagerly)
            torch._dynamo.reset()
        if cfg.compile_mode == "model":
            self.fwd = torch.compile(self.fwd)
            self.eval_fwd = torch.compile(self.model) if dist.enabled else self.fwd
        elif cfg.compile_mode == "blocks":
            # in place: the DDP wrapper and evaluation use the compiled blocks; FSDP's hooks stay eager
            self.model.compile_regions(hooks_eager=self.fsdp)
        self.amp = (lambda: torch.autocast(self.dev.type, dtype=torch.bfloat16)) if bf16 else nullcontext
        self.peak = peak_flops(self.dev)
        self.metrics: MetricsFile | None = None  # rank 0 only, opened by fit
        self.wandb: WandbLogger | None = None
        self.flops_per_token = cfg.model.flops_per_token(cfg.seq_len)
        self.trajectory = None  # probes along training (sparsedepth.probes.trajectory), on a copy of the weights
        if cfg.probe_points:
            from ..probes.trajectory import TrainingHook

            self.trajectory = TrainingHook(self)

    # ---- state -----------------------------------------------------------------------------------------
    def _resume(self) -> None:
        """Restore the newest checkpoint that verifies. A damaged one is reported and renamed ``damaged-<name>``
        (kept for inspection, out of the way of resume and keep-last-k); each restore sets every tensor, so a
        partial one is overwritten by the next."""
        damaged: list[tuple[Path, CheckpointError]] = []
        for _, folder in reversed(list_checkpoints(self.run_dir)):
            try:
                self._restore(folder)
            except CheckpointError as e:
                damaged.append((folder, e))
                continue
            for bad, e in damaged:
                print(f"warning: checkpoint file {str(e.path)!r} is unusable ({e.why}); set aside as "
                      f"damaged-{bad.name}, resuming from {folder.name}", file=sys.stderr, flush=True)
                if self.main:
                    bad.rename(bad.with_name(f"damaged-{bad.name}"))
            self.dist.barrier()
            return
        if damaged:
            raise damaged[0][1]  # none verifies: the newest one's error says which file and what to do

    def _restore(self, folder: Path) -> None:
        st = load_state(folder, "train.pt")
        if self.fsdp:  # the sharded state is read by DCP, whose files carry no recorded hash
            load_sharded(folder, self.model, self.opt)
        else:
            apply_state(folder / "model.pt", self.model.load_state_dict, load_state(folder, "model.pt"))

        def train_state(st: dict) -> None:
            if not self.fsdp:
                self.opt.load_state_dict(st["optim"])
            self.sched.load_state_dict(st["sched"])
            self.monitor.load_state_dict(st["monitor"])
            set_rng_state(st["rng"])
            self.step, self.prior_wall, self.val_loss = st["step"], st["wall_s"], st.get("val_loss")

        apply_state(folder / "train.pt", train_state, st)

    def _save(self, name: str, wall_s: float, keep: int | None, **meta) -> Path | None:
        path = None
        train_state = {"sched": self.sched.state_dict(), "step": self.step, "rng": rng_state(),
                       "monitor": self.monitor.state_dict(), "wall_s": wall_s, "val_loss": self.val_loss}
        meta = {"step": self.step, "hash": config_hash(self.cfg), **meta}
        if self.fsdp:  # every rank writes its shards
            return save_sharded(self.run_dir, name, self.model, self.opt, train_state, meta, keep, self.dist)
        if self.main:
            train_state["optim"] = self.opt.state_dict()
            path = save_checkpoint(self.run_dir, name, {"model.pt": self.model.state_dict(), "train.pt": train_state},
                                   meta, keep)
        self.dist.barrier()
        return path

    # ---- one step --------------------------------------------------------------------------------------
    def _to_dev(self, t: torch.Tensor) -> torch.Tensor:
        return t.pin_memory().to(self.dev, non_blocking=True) if self.dev.type == "cuda" else t

    def train_step(self, step: int, telemetry: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Forward/backward over the micro-batches, clip, AdamW update. Returns device tensors: mean LM loss,
        global grad norm (before clipping) and the packed telemetry vector (or None)."""
        cfg, n = self.cfg, self.n_micro
        x, y = get_batch(self.data.train, cfg.seq_len, cfg.batch_size, cfg.seed, step,
                         self.dist.rank, self.dist.world_size)
        loss, stats = torch.zeros((), device=self.dev), None
        for i, (xb, yb) in enumerate(zip(x.split(cfg.micro_batch_size), y.split(cfg.micro_batch_size))):
            with maybe_no_sync(self.ddp, i < n - 1):  # all-reduce gradients once, on the last micro-batch
                with self.amp():
                    out = self.fwd(self._to_dev(xb), self._to_dev(yb), telemetry=telemetry)
                (out.loss / n).backward()
            loss += out.lm_loss.detach().float()
            if telemetry:
                stats = add_stats(stats, out.stats)
        flat = None
        if telemetry:
            sum_shards = self.dist.all_reduce_sum if self.fsdp else None
            # norms before clipping, the gain before this step's update (the one the forward used)
            flat, self.layout = pack(stats, 1.0 / n, *block_norms(self.model, sum_shards),
                                     final_gain(self.model, sum_shards))
        grad_norm = full_tensor(get_total_norm([p.grad for p in self.params if p.grad is not None]))
        if cfg.optim.grad_clip > 0:
            clip_grads_with_norm_(self.params, cfg.optim.grad_clip, grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return loss / n, grad_norm, flat

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean LM loss over the fixed held-out windows (each rank takes every world_size-th window)."""
        self.model.eval()
        total = torch.zeros(2, device=self.dev)
        mb, world = self.cfg.micro_batch_size, self.dist.world_size
        chunks = [(c, len(c)) for c in self.val[self.dist.rank::world].split(mb)]
        if self.fsdp:  # each forward gathers parameters collectively: every rank runs as many (spares weigh 0)
            chunks += [(self.val[:1], 0)] * (math.ceil(math.ceil(len(self.val) / world) / mb) - len(chunks))
        for chunk, count in chunks:
            chunk = self._to_dev(chunk)
            with self.amp():
                out = self.eval_fwd(chunk[:, :-1], chunk[:, 1:])
            total[0] += out.lm_loss.float() * count
            total[1] += count
        self.model.train()
        total = self.dist.all_reduce_sum(total).tolist()
        return total[0] / total[1]

    def _is_telemetry(self, step: int) -> bool:
        ti = self.cfg.telemetry_interval
        return step == self.cfg.steps or (ti > 0 and step % ti == 0)

    def _is_eval(self, step: int) -> bool:
        ei = self.cfg.eval_interval
        return step == self.cfg.steps or (ei > 0 and step % ei == 0)

    def _is_ckpt(self, step: int) -> bool:
        ci = self.cfg.ckpt_interval
        return ci > 0 and step % ci == 0

    # ---- the loop --------------------------------------------------------------------------------------
    def fit(self, stop_at_step: int | None = None, checkpoints: bool = True, stop_at_time: float | None = None) -> dict:
        cfg = self.cfg
        last = cfg.steps if stop_at_step is None else min(stop_at_step, cfg.steps)
        if self.step >= last:
            return self._read_summary() or self._rebuild_summary()
        self.metrics = MetricsFile(self.run_dir / "metrics.jsonl", keep_up_to_step=self.step) if self.main else None
        self.wandb = (WandbLogger(self.run_dir, cfg.wandb_project, to_dict(cfg), wandb_run_id(config_hash(cfg)))
                      if self.main and wandb_enabled(cfg.wandb) else None)
        if self.progress:
            print(format_groups(self.groups), flush=True)
        self._write_provenance(self.prior_wall, finished=False)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", desc=self.run_dir.name, dynamic_ncols=True,
                   disable=not self.progress)
        clock = _Clock()
        buf: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []  # (step, lr, loss, grad norm) since last log
        row: dict = {}
        try:
            with _StopSignal() as stop:
                for step in range(self.step + 1, last + 1):
                    tel = self._is_telemetry(step)
                    lr = self.sched.get_last_lr()[0]
                    loss, gnorm, flat = self.train_step(step, tel)
                    self.step = step
                    crash_point("train_step")
                    buf.append((step, lr, loss, gnorm))
                    timed_out = stop_at_time is not None and time.time() >= stop_at_time and step < last
                    asked = stop.signum is not None or timed_out
                    local_stop = asked and not self.dist.enabled  # ranks agree at log steps
                    if not (step % cfg.log_interval == 0 or tel or step == last or local_stop
                            or self._is_eval(step) or self._is_ckpt(step)):
                        continue
                    row, stopping = self._log(buf, flat, asked, clock, final=step == last)
                    buf.clear()
                    bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:,.0f}",
                                    mfu="n/a" if row["mfu"] is None else f"{row['mfu']:.1%}", refresh=False)
                    bar.update(step - bar.n)
                    if checkpoints and (step == last or stopping or self._is_ckpt(step)):
                        if self.metrics:
                            self.metrics.sync()  # rows up to the checkpoint are durable before it exists
                        self._save(f"step-{step:08d}", self.prior_wall + clock.elapsed(), keep=cfg.keep_checkpoints)
                    if self.trajectory is not None:  # probe steps are log steps
                        self.trajectory.after_step(step)
                    if stopping:
                        break
                    clock.restart()  # eval and checkpoint time do not count as training time
                summary = self._finish(row, self.prior_wall + clock.elapsed(), clock.steady())
                if stop.signum is not None:
                    stop.reraise()  # after everything is saved
                return summary
        finally:
            bar.close()
            if self.metrics:
                self.metrics.close()
            if self.wandb:
                self.wandb.finish()

    def _log(self, buf: list, flat: torch.Tensor | None, stop_requested: bool, clock: _Clock,
             final: bool) -> tuple[dict, bool]:
        """A log step: ONE device-to-host transfer of the buffered losses and grad norms, the telemetry vector
        and the stop flag (all-reduced across ranks), then rows, validation, files. Returns (row, stop?)."""
        n = len(buf)
        parts = [torch.stack([b[2] for b in buf]), torch.stack([b[3] for b in buf]).float(),
                 torch.full((1,), float(stop_requested), device=self.dev)]
        host = self.dist.all_reduce_mean(torch.cat(parts + ([flat] if flat is not None else []))).cpu().tolist()
        tps = clock.lap(n * self.cfg.tokens_per_step, count=final)
        rows = self._rows(buf, host[:n], host[n:2 * n])
        row = rows[-1]
        bad = row.get("nonfinite", False)
        mfu = tps * self.flops_per_token / (self.peak * self.dist.world_size) if self.peak else None
        row.update(tokens=row["step"] * self.cfg.tokens_per_step, tokens_per_s=tps, mfu=mfu)
        if flat is not None and not bad:
            row.update(unpack(host[2 * n + 1:], self.layout))
        if not bad and self._is_eval(row["step"]):
            self.val_loss = self.evaluate()
            row.update(val_loss=self.val_loss, val_ppl=math.exp(min(self.val_loss, 700.0)))
        for r in rows:
            if self.metrics:
                self.metrics.write(r)
            if self.wandb:
                self.wandb.log(r)
        if bad:
            if self.metrics:
                self.metrics.sync()
            self._nonfinite(row, self.prior_wall + clock.elapsed())
        return row, host[2 * n] > 0

    def _rows(self, buf: list, losses: list[float], gnorms: list[float]) -> list[dict]:
        """The row of the current step, preceded by rows of earlier unlogged steps that spiked or went non-finite."""
        rows = []
        for (step, lr, _, _), loss, gn in zip(buf, losses, gnorms):
            row = {"step": step, "loss": loss, "lr": lr, "grad_norm": gn}
            if not math.isfinite(loss):
                row["nonfinite"] = True
            else:
                spiked = self.monitor.update(loss=loss, grad_norm=gn)
                if spiked:
                    row.update(spike=True, spike_on=spiked)
            if step == buf[-1][0] or "spike" in row or "nonfinite" in row:
                rows.append(row)
            if "nonfinite" in row:
                break  # the run stops here
        return rows

    def _nonfinite(self, row: dict, wall: float) -> None:
        bad = row["step"]
        path = self._save(f"nonfinite-step-{bad}", wall, keep=None, first_nonfinite_step=bad)
        msg = (f"non-finite training loss ({row['loss']}) at step {bad}; the state after step {self.step} was saved "
               f"to {path or 'checkpoints/nonfinite-step-' + str(bad)}. Lower optim.lr, raise optim.warmup_steps "
               f"or check the data, then resume from an earlier checkpoint")
        if self.main:
            self._write_summary({"done": False, "error": msg, "steps": self.step})
        raise NonFiniteLossError(msg)

    # ---- outputs ---------------------------------------------------------------------------------------
    def _summary(self, done: bool, last_row: dict, wall: float, tps: float | None) -> dict:
        return {
            "done": done, "steps": self.step, "tokens": self.step * self.cfg.tokens_per_step,
            "final_loss": last_row.get("loss"), "val_loss": self.val_loss,
            "val_ppl": math.exp(self.val_loss) if self.val_loss is not None and self.val_loss < 700 else None,
            "wall_s": wall, "tokens_per_s": tps,
            "mfu": tps * self.flops_per_token / (self.peak * self.dist.world_size) if tps and self.peak else None,
            "attn_backend": self.model.attn_backend, "kernels": self.model.kernels,
            "params": self.cfg.model.param_counts(),
            # what runs sharing a GPU (`sparsedepth run --per-gpu K`) must fit beside each other: the peak of
            # allocated GPU memory since this training started (a resumed run: since it resumed); None off CUDA
            "peak_memory_gib": (round(torch.cuda.max_memory_allocated(self.dev) / 2**30, 2)
                                if self.dev.type == "cuda" else None),
        }

    def _write_summary(self, summary: dict) -> None:
        atomic_write_json(self.run_dir / "summary.json", summary)

    def _read_summary(self) -> dict | None:
        return _read_summary(self.run_dir / "summary.json")

    def _rebuild_summary(self) -> dict:
        """summary.json of a run whose file is missing or damaged, from its last checkpoint and metrics (the
        throughput of the original session is unknown: null)."""
        rows = read_metrics(self.run_dir) if self.main else []
        return self._finish(rows[-1] if rows else {}, self.prior_wall, None)

    def _finish(self, last_row: dict, wall: float, tps: float | None) -> dict:
        summary = self._summary(self.step >= self.cfg.steps, last_row, wall, tps)
        if self.main:
            self._write_summary(summary)
            self._write_provenance(wall, finished=summary["done"])
        self.dist.barrier()
        return summary

    def _write_provenance(self, wall: float, finished: bool) -> None:
        if not self.main:
            return
        atomic_write_json(self.run_dir / "provenance.json", provenance.collect(
            self.dev, config_hash=config_hash(self.cfg), attn_backend=self.model.attn_backend,
            kernels=self.model.kernels,
            world_size=self.dist.world_size, micro_batches=self.n_micro,
            dtype="bfloat16 autocast" if self.amp is not nullcontext else "float32", compile=self.cfg.compile_mode,
            param_groups=self.groups, data={"key": self.data.key, "vocab_size": self.data.vocab_size},
            steps=self.step, tokens=self.step * self.cfg.tokens_per_step, wall_s=wall, finished=finished))


def train(cfg: TrainConfig, run_dir: str | Path, *, stop_at_step: int | None = None, progress: bool = True,
          device: str | None = None, checkpoints: bool = True, root: str | Path | None = None,
          stop_at_time: float | None = None) -> dict:
    """Train ``cfg`` into ``run_dir`` and return the summary (also written to run_dir/summary.json).

    Resumes from the latest checkpoint in ``run_dir``; refuses a run_dir that holds another config; returns
    the stored summary at once when the run is complete. ``stop_at_step=K`` ends after step K with a
    checkpoint, the schedule still planned for ``cfg.steps``; ``stop_at_time`` (Unix time, default
    ``$SPARSEDEPTH_STOP_AT_TIME``) likewise ends at the first log step after that time, so a run longer than a
    machine's command limit goes on with the same call in the next command (summary ``done: false``).
    ``device`` overrides ``cfg.device`` for this call only (where to run is not part of the experiment).
    ``checkpoints=False`` writes none (timing runs: a paper-scale model's state is tens of GB, written at every
    stop). Relative data paths of ``cfg`` are taken
    relative to ``root`` (default: the current folder). Under torchrun (WORLD_SIZE > 1) it trains data
    parallel (DDP, or sharded with ``parallel: fsdp``), and rank 0 writes the files (every rank writes its
    shards of a sharded checkpoint).
    """
    run_dir = Path(run_dir)
    check_vocab(cfg)
    # one writer per run directory; under torchrun rank 0 holds it for all ranks of its job
    with RunDirLock(run_dir) if int(os.environ.get("RANK", "0")) == 0 else nullcontext():
        check_run_dir(run_dir, cfg)
        summary = _read_summary(run_dir / "summary.json")
        ckpts = list_checkpoints(run_dir)
        # done, unless its final checkpoint was removed (damaged) while earlier ones remain: then retrain the
        # last steps from those (a run whose checkpoints were all deleted to free space stays done)
        if summary and summary.get("done") and (not ckpts or ckpts[-1][0] >= summary.get("steps", 0)):
            return summary
        clean_run_dir(run_dir)
        dist = init_distributed(device or cfg.device, group_of_one=cfg.parallel == "fsdp")
        try:
            return Trainer(cfg, run_dir, dist, progress, root).fit(
                stop_at_step, checkpoints, stop_time_from_env() if stop_at_time is None else stop_at_time)
        finally:
            dist.close()


def _read_summary(path: Path) -> dict | None:
    """summary.json, or None when absent or damaged (training then simply goes on and rewrites it)."""
    try:
        summary = read_json(path, "") if path.is_file() else None
    except CorruptFileError:
        return None
    return summary if isinstance(summary, dict) else None


def load_run(run_dir: str | Path, device: str = "auto", root: str | Path | None = None,
             checkpoint: str | Path | None = None):
    """``(model, cfg, data)`` of a run directory: the model from its latest checkpoint (or the checkpoint
    folder ``checkpoint``), in eval mode, on ``device``; the TrainConfig; the TokenData it was trained on
    (relative data paths taken relative to ``root``, default the current folder). The model runs torch's code
    whatever kernels it trained with, so no reading (evaluation, probes) depends on how training computed."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} has no config.json: not a run directory (train it first)")
    saved = read_json(cfg_path, "restore it or retrain the run")
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise CorruptFileError(f"{str(cfg_path)!r} holds no 'config' mapping; restore it or retrain the run")
    cfg = from_dict(saved["config"])
    ckpt = latest_checkpoint(run_dir) if checkpoint is None else Path(checkpoint)
    if ckpt is None:
        raise FileNotFoundError(f"{str(run_dir)!r} has no checkpoint: train it (or retrain it if its checkpoints "
                                f"were removed with delete_checkpoints)")
    model = build_model(cfg.model, resolve_device(device))
    model.set_kernels("torch")
    if is_sharded(ckpt):
        load_model(ckpt, model)
    else:
        apply_state(ckpt / "model.pt", model.load_state_dict, load_state(ckpt, "model.pt"))
    model.eval()
    return model, cfg, prepare_data(cfg.data, progress=False, root=root)
