"""One writer per run directory: an exclusive ``flock`` on ``RUN_DIR/.lock`` for as long as a run trains.

The lock file names its holder (pid, host, start time) so that a second process is refused with a message
that says who holds the folder. The kernel drops an ``flock`` when its process dies, even by ``kill -9``, so a
lock left by a killed run is stale by construction: the next run takes it over and rewrites the holder line.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .atomic import HOST
from .errors import UserError

LOCK_NAME = ".lock"


class RunDirBusyError(UserError, RuntimeError):
    """Another live process holds the run directory."""


class RunDirLock:
    """``with RunDirLock(run_dir):`` holds the run directory exclusively or raises RunDirBusyError."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunDirLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunDirBusyError(f"run directory {str(self.run_dir)!r} is in use by {holder}; wait for that run "
                                  f"to finish (or stop it), or pass another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {HOST} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (removing it would race a new holder)
            self._fd = None
