"""Crash-safe file writes: write a temporary sibling, fsync it, then ``os.replace`` it into place.

A reader therefore sees either the old file or the complete new one, never a half-written file, even if
the writer is killed. Temporaries live in the destination folder so the final rename stays on one file
system (``os.replace`` is atomic only there).

Every temporary is named ``.<name>.tmp-<pid>@<host>-<random>``: a writer killed before its rename leaves it
behind, and the next writer into the same folder (``clean_stale_temps``) removes the temporaries whose
process is gone. Temporaries of live processes, or of other hosts sharing the file system, are left alone.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from .errors import CorruptFileError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_replace_dir", "make_temp_dir",
           "fsync_dir", "clean_stale_temps", "is_temp_name", "read_json", "HOST"]

HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"
_TEMP = re.compile(r"^\.(?:.*\.)?tmp-(\d+)@(.+)-[^-]*$")


def _temp_prefix(prefix: str) -> str:
    """``prefix`` (e.g. ``.name.tmp-``) followed by who writes: ``<pid>@<host>-``."""
    return f"{prefix}{os.getpid()}@{HOST}-"


def is_temp_name(name: str) -> bool:
    """Whether a folder entry is a temporary of these helpers (readers of a folder skip them)."""
    return _TEMP.match(name) is not None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as alive until reaped)."""
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM  # exists, owned by another user
    return True


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries in ``folder`` left by killed writers of this host; returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m or m.group(2) != HOST or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON in ``path``; a damaged file raises CorruptFileError naming it, the parse error and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{str(path)!r} is damaged, not valid JSON ({e}); {fix}") from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_dir(parent: str | os.PathLike, prefix: str = ".tmp-") -> Path:
    """A fresh folder inside ``parent`` to fill and then install with ``atomic_replace_dir``; ``prefix``
    should start with ``.`` and end with ``tmp-``. Stale temporaries of killed writers in ``parent`` are
    removed first.

    Unlike ``tempfile.mkdtemp`` (mode 0700) it gets the usual umask permissions, so a shared cache stays
    readable by the group once renamed into place.
    """
    Path(parent).mkdir(parents=True, exist_ok=True)
    clean_stale_temps(parent)
    path = Path(tempfile.mkdtemp(prefix=_temp_prefix(prefix), dir=parent))
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
    clean_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(f".{path.name}.tmp-"), dir=path.parent)
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
        old = final_dir.with_name(_temp_prefix(f".{final_dir.name}.tmp-") + "old")
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
