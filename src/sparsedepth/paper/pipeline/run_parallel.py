"""``sparsedepth run --gpus N``: spread variants over N GPUs (or CPU processes), one child ``sparsedepth run`` each.

Each child trains, probes and evaluates one variant with ``CUDA_VISIBLE_DEVICES`` set to its GPU, through the
same run cache as a sequential run, so results, resumption and ``error.txt`` work as always. Variants are taken
in the order given (the order is the priority): a GPU that frees up takes the first waiting variant whose
estimated time fits in what is left of the budget. A config shared by several variants trains once: only its
first variant is scheduled, and a last pass in this process installs the others as copies, training nothing.

On a machine without CUDA the N children are CPU processes: the small profiles train on one thread per run,
so N runs use N cores (``sparsedepth reproduce --jobs auto`` relies on this).

Why processes rather than threads: each run compiles and owns its GPU; a crash or an out-of-memory error in one
must not take the others with it. Interrupting this process (Ctrl-C, SIGTERM) terminates its children; their
runs resume from the last checkpoint next time, like any interrupted run.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, Mapping, Protocol

PAUSED_EXIT = 3  # `sparsedepth run` stopped its trainings at a time limit (--stop-after-s): the same command resumes


class Child(Protocol):
    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


STOP_WAIT_S = 15.0  # how long an interrupted child may take to checkpoint at its step boundary and exit


Launch = Callable[[tuple[str, str], int], Child]


def schedule(pairs: list[tuple[str, str]], slots: int, budget_s: float | None,
             estimate: Callable[[tuple[str, str]], float | None], launch: Launch, *,
             poll_s: float = 1.0, log: Callable[[str], None] = print,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> tuple[list[str], list[str]]:
    """Run ``pairs`` on ``slots`` parallel children; returns (failed, not started for lack of budget).

    ``estimate(pair)`` is asked again each time a run finishes, so it can learn from that run.
    """
    pool = _Pool(list(pairs), slots, budget_s, estimate, launch, log, clock)
    try:
        with _sigterm_as_exit():
            while pool.waiting or pool.running:
                pool.fill()
                if not pool.running:  # nothing that waits fits in the budget any more
                    pool.skip_waiting()
                    break
                sleep(poll_s)
                pool.reap()
    finally:  # interrupted (Ctrl-C, SIGTERM from a time limit): stop the children with us, not orphaned
        for _, child, _ in pool.running.values():
            child.terminate()  # the trainer saves a checkpoint at the end of its step, then exits
        for _, child, _ in pool.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=STOP_WAIT_S)
    return pool.failed, pool.skipped


class _Timed:
    """A simulated child that exits successfully at ``end`` on the simulated clock ``now[0]``."""

    def __init__(self, now: list[float], end: float):
        self.now, self.end = now, end

    def poll(self) -> int | None:
        return 0 if self.now[0] >= self.end else None

    def terminate(self) -> None:
        self.end = self.now[0]

    def wait(self, timeout: float | None = None) -> int:
        return 0


def simulate(pairs: list[tuple[str, str]], slots: int, budget_s: float | None,
             estimate: Callable[[tuple[str, str]], float | None]) -> tuple[list[tuple], list[str]]:
    """Dry run of :func:`schedule` taking the estimates as durations: ([(slot, pair, start_s, end_s)], variants
    left out by the budget). What ``--list --gpus N`` prints."""
    now, rows = [0.0], []

    def launch(pair: tuple[str, str], slot: int) -> _Timed:
        rows.append((slot, pair, now[0], now[0] + (estimate(pair) or 0.0)))
        return _Timed(now, rows[-1][3])

    def tick(seconds: float) -> None:
        now[0] += seconds

    _, skipped = schedule(pairs, slots, budget_s, estimate, launch, log=lambda m: None, clock=lambda: now[0],
                          sleep=tick)
    return rows, skipped


class _Pool:
    def __init__(self, waiting, slots, budget_s, estimate, launch, log, clock):
        self.waiting, self.slots, self.budget_s, self.estimate = waiting, slots, budget_s, estimate
        self.launch, self.log, self.clock, self.t0 = launch, log, clock, clock()
        self.running: dict[int, tuple[tuple[str, str], Child, float]] = {}
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self._ests: dict[tuple[str, str], float | None] = {}

    def _est(self, pair: tuple[str, str]) -> float | None:
        if pair not in self._ests:
            self._ests[pair] = self.estimate(pair)
        return self._ests[pair]

    def _left(self) -> float | None:
        return None if self.budget_s is None else self.budget_s - (self.clock() - self.t0)

    def fill(self) -> None:
        """Give each free slot the first waiting variant that fits in the budget."""
        for slot in range(self.slots):
            if slot in self.running:
                continue
            left = self._left()
            for pair in self.waiting:
                est = self._est(pair)
                if left is None or est is None or est <= left:
                    self.waiting.remove(pair)
                    self.log(f"[job {slot}] start {pair[0]}/{pair[1]}" + ("" if est is None else f" (about {est:.0f} s)"))
                    self.running[slot] = (pair, self.launch(pair, slot), self.clock())
                    break

    def reap(self) -> None:
        for slot, (pair, child, started) in list(self.running.items()):
            rc = child.poll()
            if rc is None:
                continue
            del self.running[slot]
            self._ests.clear()  # the finished run refines the estimates
            name = f"{pair[0]}/{pair[1]}"
            what = {0: "done", PAUSED_EXIT: "paused at a time limit"}.get(rc, f"FAILED (exit {rc})")
            self.log(f"[job {slot}] {what} {name} in "
                     f"{self.clock() - started:.0f} s; {len(self.waiting)} waiting, {len(self.running)} running, "
                     f"{self.clock() - self.t0:.0f} s elapsed{self._eta()}")
            if rc not in (0, PAUSED_EXIT):
                self.failed.append(name)

    def _eta(self) -> str:
        """Rough time left: the estimated work still to do (what runs, less its elapsed time, and what waits and
        fits in the budget) spread over the GPUs, but never less than its longest single piece."""
        now, left = self.clock(), self._left()
        ests = [self._est(p) for p in self.waiting]
        if any(e is None for e in ests):
            return ""
        parts = [e for e in ests if left is None or e <= left]
        parts += [max(0.0, (self._est(p) or 0.0) - (now - t)) for p, _, t in self.running.values()]
        eta = max([sum(parts) / self.slots, *parts], default=0.0)
        if not eta:
            return ""
        return f", about {eta / 60:.0f} min left" if eta >= 60 else ", under a minute left"

    def skip_waiting(self) -> None:
        for e, v in self.waiting:
            self.log(f"[{e}/{v}] not started: about {self._est((e, v)):.0f} s needed, {self._left():.0f} s of "
                     f"the budget left")
            self.skipped.append(f"{e}/{v}")


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (``timeout``, a scheduler) would end this process without running ``finally`` blocks; raise
    SystemExit instead so the children are terminated too. Only the main thread may set signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _relay(stream: Iterable[str], prefix: str) -> None:
    for line in stream:
        print(prefix + line, end="", flush=True)


def gpu_of_slot(slot: int, per_gpu: int, visible: list[str]) -> str:
    """The GPU of job ``slot`` when ``per_gpu`` jobs share each: slots 0..K-1 on the first, K..2K-1 on the next."""
    return visible[slot // per_gpu]


def sharing_env(per_gpu: int, environ: Mapping[str, str]) -> dict[str, str]:
    """Allocator setting for runs that share a GPU: each process's caching allocator keeps freed blocks for
    itself, and fragmented reserve is what ran three sharing runs out of memory on an H200 (6 GiB reserved but
    unallocated in the one that failed), so sharing runs grow their pools in expandable segments. A user's own
    ``PYTORCH_CUDA_ALLOC_CONF`` wins; one run per GPU is left as it is."""
    if per_gpu <= 1 or "PYTORCH_CUDA_ALLOC_CONF" in environ:
        return {}
    return {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


def subprocess_launcher(args: argparse.Namespace) -> Launch:
    """Start ``sparsedepth run`` for one variant as job ``slot`` on its GPU (``gpu_of_slot``; an outer
    ``CUDA_VISIBLE_DEVICES=2,3`` is respected), its output relayed line by line with a ``[job N]`` prefix
    (progress bars are off in the children: several bars on one terminal garble)."""
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [d.strip() for d in outer.split(",")] if outer else [str(i) for i in range(args.gpus)]
    per_gpu = getattr(args, "per_gpu", 1)

    def launch(pair: tuple[str, str], slot: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "sparsedepth.cli", "run", f"{pair[0]}/{pair[1]}", "--profile", args.profile,
               "--quiet"] + (["--force"] if args.force else []) + (["--device", args.device] if args.device else [])
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu_of_slot(slot, per_gpu, visible), "PYTHONUNBUFFERED": "1",
               **sharing_env(per_gpu, os.environ)}
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=_relay, args=(child.stdout, f"[job {slot}] "), daemon=True).start()
        return child
    return launch


def check_gpus(n: int, device: str | None) -> None:
    """``--gpus N`` needs N visible GPUs, unless the runs are on CPU (``--device cpu``, or no CUDA at all)."""
    if n < 1:
        raise SystemExit(f"sparsedepth run: --gpus must be at least 1, got {n}")
    if device == "cpu" or n == 1:
        return
    have = _cuda_count()
    if have == 0 and device in (None, "auto"):
        return  # N CPU processes
    if have < n:
        raise SystemExit(f"sparsedepth run: --gpus {n} but {have} CUDA GPU(s) are visible; "
                         f"use --gpus {max(have, 1)} or check CUDA_VISIBLE_DEVICES")


MAX_CPU_JOBS = 8  # tiny CPU runs: more processes than this only add memory (each imports torch)


def auto_jobs(threads_per_run: int | None, device: str | None) -> int:
    """How many runs to train at once: one per GPU where runs go to CUDA; on CPU one per core (at most
    MAX_CPU_JOBS) when each run uses one thread, else 1 (a run that takes every core gains nothing)."""
    if device != "cpu" and _cuda_count() > 0:
        return _cuda_count()
    if threads_per_run == 1:
        return max(1, min(os.cpu_count() or 1, MAX_CPU_JOBS))
    return 1


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()
