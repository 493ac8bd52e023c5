"""Sharded checkpoints through ``torch.distributed.checkpoint`` (DCP), for runs with ``parallel: fsdp``.

A checkpoint folder holds ``dcp/`` (model and AdamW state, keyed by parameter name, each rank writing its
own shards) beside the usual ``train.pt`` (scheduler, RNG, spike monitor, step; no optimiser) and
``meta.json``. DCP reshards on load, so a run saved by N processes resumes on M, and ``load_model`` reads
it into a whole model in one process (probes, evaluation). All ranks write into one folder: on several
nodes the run directory must be on a shared file system.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from .checkpoint import save_checkpoint
from .distributed import Dist

SHARDED_DIR = "dcp"


def is_sharded(folder: Path) -> bool:
    return (Path(folder) / SHARDED_DIR).is_dir()


def save_sharded(run_dir: Path, name: str, model: torch.nn.Module, opt: torch.optim.Optimizer, train_state: dict,
                 meta: dict, keep: int | None, dist: Dist) -> Path | None:
    """Every rank writes its shards into a staging folder; rank 0 adds train.pt and meta.json and renames the
    folder into place (atomically, as ``save_checkpoint`` does). Returns the folder on rank 0."""
    staged = Path(run_dir) / "checkpoints" / f".{name}.tmp-dcp"
    if dist.is_main:
        shutil.rmtree(staged, ignore_errors=True)  # left by a crash mid-save
        staged.mkdir(parents=True)
    dist.barrier()
    model_state, optim_state = get_state_dict(model, opt)
    # collective: it returns on rank 0 after every rank's shards are written and the metadata file is
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=staged / SHARDED_DIR)
    path = None
    if dist.is_main:
        path = save_checkpoint(run_dir, name, {"train.pt": train_state}, meta, keep, staged=staged)
    dist.barrier()
    return path


def load_sharded(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Load model and optimiser state (collective), resharded to this run's world size."""
    model_state, optim_state = get_state_dict(model, opt)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=Path(folder) / SHARDED_DIR)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])


def load_model(folder: Path, model: torch.nn.Module) -> None:
    """Load the model's weights from a sharded checkpoint into an unsharded model, in this process alone."""
    state = model.state_dict()
    with warnings.catch_warnings():  # DCP warns that it assumes one process, which is what no_dist asks for
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({"model": state}, checkpoint_id=Path(folder) / SHARDED_DIR, no_dist=True)
    model.load_state_dict(state)
