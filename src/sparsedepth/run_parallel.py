"""``sparsedepth run --gpus N``: spread variants over N GPUs, one child ``sparsedepth run`` per GPU at a time.

Each child trains, probes and evaluates one variant with ``CUDA_VISIBLE_DEVICES`` set to its GPU, through the
same run cache as a sequential run, so results, resumption and ``error.txt`` work as always. Variants are taken
in the order given (the order is the priority): a GPU that frees up takes the first waiting variant whose
estimated time fits in what is left of the budget. A config shared by several variants trains once: only its
first variant is scheduled, and a last pass in this process installs the others as copies, training nothing.

Why processes rather than threads: each run compiles and owns its GPU; a crash or an out-of-memory error in one
must not take the others with it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Iterable, Protocol


class Child(Protocol):
    def poll(self) -> int | None: ...


Launch = Callable[[tuple[str, str], int], Child]


def schedule(pairs: list[tuple[str, str]], slots: int, budget_s: float | None,
             estimate: Callable[[tuple[str, str]], float | None], launch: Launch, *,
             poll_s: float = 1.0, log: Callable[[str], None] = print,
             clock: Callable[[], float] = time.monotonic) -> tuple[list[str], list[str]]:
    """Run ``pairs`` on ``slots`` parallel children; returns (failed, not started for lack of budget).

    ``estimate(pair)`` is asked again each time a slot frees up, so it can learn from runs that finished.
    """
    t0 = clock()
    ests: dict[tuple[str, str], float | None] = {}  # cleared when a run finishes: the estimates learn from it
    est_of = lambda p: ests[p] if p in ests else ests.setdefault(p, estimate(p))  # noqa: E731
    waiting = list(pairs)
    running: dict[int, tuple[tuple[str, str], Child, float]] = {}
    failed: list[str] = []
    skipped: list[str] = []
    while waiting or running:
        for slot in range(slots):
            if slot in running or not waiting:
                continue
            left = None if budget_s is None else budget_s - (clock() - t0)
            for pair in list(waiting):
                est = est_of(pair)
                if left is None or est is None or est <= left:
                    waiting.remove(pair)
                    log(f"[gpu {slot}] start {pair[0]}/{pair[1]}" + ("" if est is None else f" (about {est:.0f} s)"))
                    running[slot] = (pair, launch(pair, slot), clock())
                    break
        if not running:  # nothing fits any more
            for e, v in waiting:
                log(f"[{e}/{v}] not started: about {est_of((e, v)):.0f} s needed, "
                    f"{budget_s - (clock() - t0):.0f} s of the budget left")
                skipped.append(f"{e}/{v}")
            break
        time.sleep(poll_s)
        for slot, (pair, child, started) in list(running.items()):
            rc = child.poll()
            if rc is None:
                continue
            del running[slot]
            ests.clear()
            name = f"{pair[0]}/{pair[1]}"
            log(f"[gpu {slot}] {'done' if rc == 0 else f'FAILED (exit {rc})'} {name} in {clock() - started:.0f} s; "
                f"{len(waiting)} waiting, {len(running)} running, {clock() - t0:.0f} s elapsed")
            if rc != 0:
                failed.append(name)
    return failed, skipped


def _relay(stream: Iterable[str], prefix: str) -> None:
    for line in stream:
        print(prefix + line, end="", flush=True)


def subprocess_launcher(args: argparse.Namespace) -> Launch:
    """Start ``sparsedepth run`` for one variant on GPU ``slot``, its output relayed line by line with a
    ``[gpu N]`` prefix (progress bars are off in the children: several bars on one terminal garble). Slot N
    is the N-th GPU this process sees, so an outer ``CUDA_VISIBLE_DEVICES=2,3`` is respected."""
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [d.strip() for d in outer.split(",")] if outer else [str(i) for i in range(args.gpus)]
    def launch(pair: tuple[str, str], slot: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "sparsedepth.cli", "run", f"{pair[0]}/{pair[1]}", "--profile", args.profile,
               "--quiet"] + (["--force"] if args.force else []) + (["--device", args.device] if args.device else [])
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible[slot], "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=_relay, args=(child.stdout, f"[gpu {slot}] "), daemon=True).start()
        return child
    return launch


def check_gpus(n: int, device: str | None) -> None:
    """``--gpus N`` needs N visible GPUs, except with ``--device cpu`` (N CPU processes, as the tests use)."""
    if n < 1:
        raise SystemExit(f"sparsedepth run: --gpus must be at least 1, got {n}")
    if device == "cpu" or n == 1:
        return
    have = _cuda_count()
    if have < n:
        raise SystemExit(f"sparsedepth run: --gpus {n} but {have} CUDA GPU(s) are visible; "
                         f"use --gpus {max(have, 1)} or check CUDA_VISIBLE_DEVICES")


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()
