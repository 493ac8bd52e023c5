"""Probes along training: how each statistic moves with training tokens, kept in ``RUN_DIR/trajectory.json``.

A run with ``probe_points: N`` (TrainConfig) probes its own weights at N steps spaced evenly in log tokens from
the end of warmup to the last step (``probe_steps``; every point is a log step, the last step always one).
At a point the trainer's weights are copied into a fresh model in eval mode (the weights the checkpoint of that
step holds) and probed with ``probe_run``'s code and windows, so the last point equals ``probes.json`` made with
the same settings (``TrainConfig.probe``). Points before the last may use cheaper settings
(``TrainConfig.probe_along``: a probe subset, fewer permutation pairs or Jacobian windows, and ``n_windows``
read as the first that many of the final windows); each point says which settings it used. The last point then
also holds, under ``along``, the same weights probed with those cheaper settings: a trend in tokens needs every
point on one footing, and the footings differ by more than noise (gpu-wide L=32: its 64 random permutation pairs
read 0.035 at the final weights, all 496 pairs 0.092). ``RunResult.points()`` reads that series.

Training is untouched: the probe runs on a copy, and every RNG state is restored afterwards, so a run with
probe points trains bit for bit like one without (tests/probes/test_trajectory.py). The file is rewritten atomically
after each point; a resumed run keeps the points already there. The last point's whole result is also
written as ``probes.json``: it is the computation ``probe_run`` with ``TrainConfig.probe`` does on the same
weights (bitwise the same on CPU, tested), so probing along training costs only the points before the last. ``sparsedepth probe RUN --trajectory`` probes
the checkpoints a run kept (``keep_probe_checkpoints: true`` keeps each probe point's weights as
``checkpoints/probe-step-N``) and adds the points that are missing.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import time
from pathlib import Path

import torch

from .adapters import ProbeError

__all__ = ["TRAJECTORY", "probe_steps", "summarize", "TrajectoryProbe", "TrainingHook", "probe_checkpoints",
           "kept_checkpoints", "read_trajectory", "probe_cost"]

TRAJECTORY = "trajectory.json"
FORMAT = 1
_KEPT = re.compile(r"^(?:probe-)?step-(\d+)$")


def probe_steps(cfg) -> list[int]:
    """The steps probed for ``cfg.probe_points`` points: evenly spaced in log steps (= log tokens) from
    max(warmup, log_interval) to ``cfg.steps``, each rounded to a log step, duplicates merged, the last step
    always included. Warmup is skipped because a near-initial model would dominate a trend fit in log tokens."""
    n, last, li = cfg.probe_points, cfg.steps, cfg.log_interval
    if n <= 0:
        return []
    first = min(max(cfg.optim.warmup_steps, li), last)
    if n == 1 or first >= last:
        return [last]
    raw = (math.exp(math.log(first) + i * (math.log(last) - math.log(first)) / (n - 1)) for i in range(n))
    return sorted({min(last, max(li, li * round(x / li))) for x in raw} | {last})


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(res: dict) -> dict:
    """The statistics a trajectory point keeps, read from a ``run_probes`` result (probes.json)."""
    out: dict = {}
    if "variance" in res:
        v = res["variance"]
        out["variance"] = {"last_layer_var": v["layer_var"][-1], "final_norm_var": v["final_norm_var"],
                           "layer_var": v["layer_var"], "max_abs": v.get("max_abs")}
    if "usefulness" in res:
        u = res["usefulness"]
        out["usefulness"] = {"score": u["score"], "loss_ratio": u["loss_ratio"], "r2": u["r2"],
                             "base_loss": u["base_loss"]}
        for variant in ("paper_compat", "skip"):
            if variant in u:
                out["usefulness"][variant] = {"score": u[variant]["score"], "loss_ratio": u[variant]["loss_ratio"]}
    if "jacobian" in res:
        j = res["jacobian"]
        out["jacobian"] = {"mean": j.get("mean_jacobian_norm"), "per_layer": j["jacobian_norm"]}
    if "causal" in res:
        out["causal"] = {"score": res["causal"]["score"], "per_layer": res["causal"]["per_layer"]}
    if "permutation" in res:
        p = res["permutation"]
        out["permutation"] = {"score": p["score"], "stderr": p["stderr"], "n_pairs": p["n_pairs"],
                              **({"sampling": p["sampling"]} if "sampling" in p else {})}
    if "angular_distance" in res:
        n1 = res["angular_distance"]["n1"]
        out["angular_distance"] = {"mean_n1": _mean(n1), "n1": n1}
    if "block_influence" in res:
        bi = res["block_influence"]
        out["block_influence"] = {"mean": _mean(bi), "per_layer": bi}
    return out


@torch.no_grad()
def _val_loss(model, cfg, data) -> float:
    """Mean LM loss on the training's own validation windows, in the training's own precision
    (``Trainer.evaluate``'s windows and autocast): on CUDA a float32 pass over them cost about as much as all
    the probes of a point at d=1024 (H200), and bf16 gives the loss the training logs."""
    from ..data import val_windows

    val = val_windows(data.val, cfg.seq_len, cfg.eval_batches * cfg.micro_batch_size, seed=cfg.seed)
    dev = next(model.parameters()).device
    bf16 = cfg.uses_bf16(dev.type)
    total, count = 0.0, 0
    for chunk in val.split(max(1, 8192 // cfg.seq_len)):  # float32 logits of 8k tokens: 1.6 GB at vocab 50k
        chunk = chunk.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            total += float(model(chunk[:, :-1], chunk[:, 1:]).lm_loss) * len(chunk)
        count += len(chunk)
    return total / count


def read_trajectory(run_dir) -> dict | None:
    path = Path(run_dir) / TRAJECTORY
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ProbeError(f"{path} is not valid JSON ({e}); move it aside to start the trajectory afresh") from e


class TrajectoryProbe:
    """Probes one run's points and keeps ``trajectory.json`` (see the module doc). ``settings``: probe_run
    keyword arguments of the last point; ``along``: overrides for the points before it."""

    def __init__(self, run_dir, cfg, data, *, settings: dict, along: dict | None = None):
        from ..config import config_hash

        self.run_dir, self.cfg, self.data = Path(run_dir), cfg, data
        self.settings, self.along = dict(settings), dict(along or {})
        self.doc = read_trajectory(self.run_dir) or {"format": FORMAT, "points": []}
        self.doc.update({"format": FORMAT, "config_hash": config_hash(cfg), "tokens_per_step": cfg.tokens_per_step,
                         "steps": cfg.steps, "planned_steps": probe_steps(cfg), "settings": self.settings,
                         "along": self.along,
                         "note": "points before the last use `settings` updated by `along` (n_windows there = "
                                 "the first that many of the final windows), and so does the last point's own "
                                 "`along` reading; val_loss is on the training's "
                                 "validation windows in its precision (bf16 autocast on CUDA)"})

    def has(self, step: int) -> bool:
        return any(p["step"] == step for p in self.doc["points"])

    def point_settings(self, step: int) -> dict:
        return dict(self.settings) if step >= self.cfg.steps else self.along_settings()

    def along_settings(self) -> dict:
        """The settings of the points before the last (the final ones where ``along`` is empty)."""
        s = {**self.settings, **{k: v for k, v in self.along.items() if k != "n_windows"}}
        if "n_windows" in self.along:
            s["first_windows"] = min(int(self.along["n_windows"]), int(self.settings.get("n_windows", 16)))
        return s

    def probe(self, step: int, model, source: str) -> dict:
        """Probe ``model`` (the weights after ``step``; probed as it is, in eval mode), write the point and
        return the whole probe result."""
        from .suite import probe_model

        t0 = time.perf_counter()
        settings = self.point_settings(step)
        res = probe_model(model, self.cfg, self.data, **settings)
        point = {"step": step, "tokens": step * self.cfg.tokens_per_step, "final": step >= self.cfg.steps,
                 "source": source,
                 "settings": settings, "val_loss": _val_loss(model, self.cfg, self.data), **summarize(res),
                 "timings": res["timings"]}
        point["probe_s"] = time.perf_counter() - t0
        if point["final"] and self.along:  # after the final probes, so those stay exactly probe_run's
            t0 = time.perf_counter()
            cheap = self.along_settings()
            point["along"] = {"settings": cheap, **summarize(probe_model(model, self.cfg, self.data, **cheap)),
                              "probe_s": time.perf_counter() - t0}
        self.doc["points"] = sorted([p for p in self.doc["points"] if p["step"] != step] + [point],
                                    key=lambda p: p["step"])
        self._write()
        return res

    def _write(self) -> None:
        from ..atomic import atomic_write_json

        atomic_write_json(self.run_dir / TRAJECTORY, self.doc)


class TrainingHook:
    """What ``Trainer`` calls at each probe step: copy the live weights into a fresh model, probe it, and
    restore every RNG state, so training continues exactly as it would have without the probe."""

    def __init__(self, trainer):
        cfg = trainer.cfg
        self.trainer = trainer
        self.steps = set(probe_steps(cfg))
        self.traj = (TrajectoryProbe(trainer.run_dir, cfg, trainer.data, settings=cfg.probe, along=cfg.probe_along)
                     if trainer.main else None)

    def after_step(self, step: int) -> None:
        if step not in self.steps:
            return
        t = self.trainer
        if self.traj is not None and not self.traj.has(step):
            from ..model import build_model
            from ..train.checkpoint import rng_state, set_rng_state

            rng = rng_state()
            try:
                model = build_model(t.cfg.model, t.dev)
                model.set_kernels("torch")
                model.load_state_dict(t.model.state_dict())
                model.eval()
                if t.cfg.keep_probe_checkpoints:
                    _keep_weights(t.run_dir, step, model)
                res = self.traj.probe(step, model, "training")
                if step == t.cfg.steps:  # the final probes themselves: the same weights, settings and windows
                    from ..atomic import atomic_write_json

                    atomic_write_json(t.run_dir / "probes.json", res)
                del model
            finally:
                set_rng_state(rng)
        t.dist.barrier()


def _keep_weights(run_dir: Path, step: int, model) -> Path:
    """Write ``checkpoints/probe-step-N/model.pt`` (weights only; never pruned, never resumed from)."""
    from ..train.checkpoint import save_checkpoint

    return save_checkpoint(run_dir, f"probe-step-{step:08d}", {"model.pt": model.state_dict()},
                           {"step": step, "probe_point": True})


def kept_checkpoints(run_dir) -> dict[int, Path]:
    """Every checkpoint folder of a run that holds weights, by step (``step-N`` wins over ``probe-step-N``)."""
    root = Path(run_dir) / "checkpoints"
    found: dict[int, Path] = {}
    if root.is_dir():
        for p in sorted(root.iterdir(), key=lambda p: p.name.startswith("step-")):
            m = _KEPT.match(p.name)
            if m and p.is_dir():
                found[int(m.group(1))] = p
    return found


def probe_checkpoints(run_dir, *, device: str = "auto", along: dict | None = None, progress: bool = False,
                      **settings) -> dict:
    """``sparsedepth probe RUN --trajectory``: probe every kept checkpoint of a run whose point is missing from
    its trajectory.json (points already there are kept) and return the trajectory."""
    from ..train import load_run

    run_dir = Path(run_dir)
    ckpts = kept_checkpoints(run_dir)
    if not ckpts:
        raise ProbeError(f"{run_dir} has no kept checkpoints to probe; train it with keep_probe_checkpoints: true "
                         f"(or a ckpt_interval and enough keep_checkpoints)")
    done = {p["step"] for p in (read_trajectory(run_dir) or {"points": []})["points"]}
    traj = None
    for step, folder in sorted(ckpts.items()):
        if step in done:
            continue
        model, cfg, data = load_run(run_dir, device=device, checkpoint=folder)
        traj = traj or TrajectoryProbe(run_dir, cfg, data, settings=settings, along=along)
        if progress:
            print(f"trajectory: probing step {step} ({folder.name})", flush=True)
        traj.probe(step, model, folder.name)
    return read_trajectory(run_dir)


def probe_cost(run_dir) -> dict:
    """Time spent probing during training against the run's training time (summary.json's wall_s includes it)."""
    run_dir = Path(run_dir)
    traj = read_trajectory(run_dir) or {"points": []}
    summary = json.loads((run_dir / "summary.json").read_text())
    probe_s = sum(p["probe_s"] + p.get("along", {}).get("probe_s", 0.0) for p in traj["points"]
                  if p.get("source") == "training")
    train_s = summary["wall_s"] - probe_s
    return {"probe_s": probe_s, "train_s": train_s, "fraction": probe_s / train_s if train_s > 0 else None,
            "points": len(traj["points"])}
