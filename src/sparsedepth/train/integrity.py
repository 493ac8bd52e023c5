"""Checkpoint files that prove they are whole: a SHA-256 of each torch file is taken while it is written and
recorded in the checkpoint's ``meta.json``; loading checks it first.

A truncated, emptied or bit-flipped file thus gives one ``CheckpointError`` naming the file instead of a
zip, pickle or EOF error from deep inside ``torch.load`` (whose advice to pass ``weights_only=False`` would be
unsafe for a damaged file). Checkpoints written before hashes were recorded load without the check.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ..atomic import read_json
from ..errors import UserError, one_line

META = "meta.json"
_CHUNK = 1 << 22


class CheckpointError(UserError, ValueError):
    """A checkpoint file is damaged or does not fit the model; the message names the file, ``path`` is it and
    ``why`` says what is wrong with it."""

    def __init__(self, message: str, path: Path, why: str):
        super().__init__(message)
        self.path, self.why = Path(path), why


class _HashingWriter:
    """A binary file that hashes what is written through it (torch.save streams into it)."""

    def __init__(self, path: Path):
        self._f = open(path, "wb")
        self.sha = hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def save_hashed(obj: Any, path: Path) -> str:
    """``torch.save(obj, path)``; returns the SHA-256 hex digest of the bytes written."""
    w = _HashingWriter(Path(path))
    try:
        torch.save(obj, w)
    finally:
        w.close()
    return w.sha.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint file {str(path)!r} is damaged ({why}); delete its folder "
                           f"{str(path.parent)!r} and run the same `sparsedepth train` again: it retrains from the "
                           f"previous checkpoint", path, why)


def read_meta(folder: Path) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise _damaged(path, "missing")
    try:
        meta = read_json(path, "")
    except UserError as e:
        raise _damaged(path, "not valid JSON") from e
    if not isinstance(meta, dict):
        raise _damaged(path, "not a JSON object")
    return meta


def load_verified(folder: Path, fname: str) -> dict:
    """``torch.load`` of ``folder/fname`` on the CPU after checking its recorded SHA-256 (weights only)."""
    path = Path(folder) / fname
    if not path.is_file():
        raise _damaged(path, "missing")
    expected = read_meta(folder).get("sha256", {}).get(fname)
    if expected is not None and file_sha256(path) != expected:
        raise _damaged(path, f"SHA-256 differs from the one recorded in {META} when it was written")
    try:
        # on the CPU: RNG states must stay CPU tensors; the model and optimiser copy to their own device
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip, pickle, EOF and unpickler errors all mean the same here
        raise _damaged(path, f"{type(e).__name__}: {one_line(e)[:200]}") from e


def apply_state(path: Path, load: Any, state: Any) -> None:
    """``load(state)`` (a ``load_state_dict``), turning a key or shape mismatch into a CheckpointError."""
    try:
        load(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        why = f"does not fit this model/config: {one_line(e)[:300]}"
        raise CheckpointError(f"checkpoint file {str(path)!r} {why}; it was written by another run: use that "
                              f"run's config or delete the checkpoint", path, why) from e
