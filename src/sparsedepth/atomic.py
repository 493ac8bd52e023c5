"""Crash-safe file writes: write a temporary sibling, fsync it, then ``os.replace`` it into place.

A reader therefore sees either the old file or the complete new one, never a half-written file, even if
the writer is killed. Temporaries live in the destination folder so the final rename stays on one file
system (``os.replace`` is atomic only there).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_replace_dir", "make_temp_dir",
           "fsync_dir"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_dir(parent: str | os.PathLike, prefix: str = ".tmp-") -> Path:
    """A fresh folder inside ``parent`` to fill and then install with ``atomic_replace_dir``.

    Unlike ``tempfile.mkdtemp`` (mode 0700) it gets the usual umask permissions, so a shared cache stays
    readable by the group once renamed into place.
    """
    Path(parent).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~_umask())
    return path


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (the rename itself) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make shared caches unreadable to others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (sorted keys, trailing newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def atomic_replace_dir(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike, overwrite: bool = False) -> bool:
    """Move a fully written ``tmp_dir`` to ``final_dir`` with one rename (same parent file system).

    If ``final_dir`` already exists (e.g. a concurrent writer won the race) and ``overwrite`` is False,
    ``tmp_dir`` is deleted and False is returned; otherwise the folder is installed and True is returned.
    With ``overwrite`` the old folder is first renamed aside, so readers never see a mix of both.
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    for p in tmp_dir.rglob("*"):  # make the contents durable before they become visible
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    old = None
    if final_dir.exists():
        if not overwrite:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            return False
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
    try:
        os.replace(tmp_dir, final_dir)
    except OSError:
        if old is not None and not final_dir.exists():
            os.replace(old, final_dir)  # put the previous version back
            raise
        if final_dir.exists():  # lost a race to another writer: theirs is complete, keep it
            shutil.rmtree(tmp_dir, ignore_errors=True)
            return False
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(final_dir.parent)
    return True
