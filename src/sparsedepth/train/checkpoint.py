"""Run-directory state: config check, atomic checkpoints with keep-last-k, RNG capture, cleanup.

A checkpoint is a folder ``checkpoints/step-00000123/`` holding ``model.pt`` (the model's state dict, all
that ``load_run`` reads), ``train.pt`` (optimiser, scheduler, RNG states, spike-monitor window, wall time)
and ``meta.json`` (which records each torch file's SHA-256, checked on load: ``integrity``); a sharded run
(``parallel: fsdp``) has ``dcp/`` in place of ``model.pt`` and the optimiser (``dcp.py``). It is written under
a temporary name and renamed into place, so a folder with that name is always complete. The data position
needs no saving: ``get_batch(seed, step)`` is a pure function of the step.
"""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_replace_dir, atomic_write_json, clean_stale_temps, make_temp_dir, read_json
from ..config import ConfigError, TrainConfig, config_hash, from_dict, hashed_fields, to_dict
from ..faults import crash_point
from .integrity import load_verified, save_hashed

_STEP_DIR = re.compile(r"^step-(\d+)$")


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_run_dir(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse a run directory that holds a different config; the error names every differing key."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return
    saved = read_json(path, "delete it (it is rewritten when the run starts) or use another run directory")
    if not isinstance(saved, dict):
        saved = {}  # no config to compare: reported below as differing everywhere
    try:  # through the dataclasses: a setting added since the folder was written reads as its default
        saved_cfg = to_dict(from_dict(saved.get("config", {})))
    except (ConfigError, TypeError):
        saved_cfg = saved.get("config", {})
    saved_cfg, cfg_dict = hashed_fields(saved_cfg), hashed_fields(to_dict(cfg))  # kernels may change on resume
    if saved.get("hash") == config_hash(cfg) and saved_cfg == cfg_dict:
        return
    old, new = _flatten(saved_cfg), _flatten(cfg_dict)
    diffs = [f"{k}: {old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r}"
             for k in sorted(set(old) | set(new)) if old.get(k, "<missing>") != new.get(k, "<missing>")]
    raise ConfigError(f"run directory {str(run_dir)!r} holds a different config ({'; '.join(diffs) or 'hash differs'}); "
                      f"use another run directory or delete this one")


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    atomic_write_json(Path(run_dir) / "config.json", {"config": to_dict(cfg), "hash": config_hash(cfg)})


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete regular checkpoints as (step, folder), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def rng_state() -> dict:
    """torch, CUDA, numpy and python RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_checkpoint(run_dir: Path, name: str, files: dict[str, dict], meta: dict, keep: int | None = None,
                    staged: Path | None = None) -> Path:
    """Write ``checkpoints/<name>`` (one torch file per entry of ``files``, plus meta.json) atomically; with
    ``keep`` delete all but the newest ``keep`` step folders. ``staged``: a temporary folder under
    ``checkpoints/`` that already holds more of the checkpoint (the sharded state of ``dcp.save_sharded``)."""
    root = Path(run_dir) / "checkpoints"
    tmp = staged or make_temp_dir(root, prefix=f".{name}.tmp-")
    try:
        hashes = {fname: save_hashed(obj, tmp / fname) for fname, obj in files.items()}
        atomic_write_json(tmp / "meta.json", {**meta, "sha256": hashes})
        crash_point("checkpoint")
        atomic_replace_dir(tmp, root / name, overwrite=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if keep is not None:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return root / name


def load_state(folder: Path, fname: str) -> dict:
    """``model.pt`` or ``train.pt`` on the CPU, verified; a damaged file raises CheckpointError naming it."""
    return load_verified(folder, fname)


def clean_run_dir(run_dir: Path) -> None:
    """Remove what killed writers left in a run directory: temporary files and half-written checkpoints."""
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        clean_stale_temps(folder)


def delete_checkpoints(run_dir: str | Path) -> int:
    """Remove ``run_dir/checkpoints`` (keeps config, metrics, summary, provenance); returns bytes freed."""
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return 0
    freed = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    shutil.rmtree(root)
    return freed
