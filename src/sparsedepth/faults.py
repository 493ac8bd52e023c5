"""Crash points for the fault-injection tests: ``SPARSEDEPTH_CRASH_AT=NAME[:N]`` kills the process with
SIGKILL (as ``kill -9`` would: no cleanup, no flush) the N-th time (default the first) it reaches
``crash_point(NAME)``. Unset, a crash point costs one dictionary lookup.

Points: ``tokenize`` (a shard half written), ``train_step`` (after a step's update), ``checkpoint`` (the
checkpoint's files written, not yet renamed into place), ``probe`` (probes computed, not yet written),
``install`` (a results folder copied, not yet renamed into place).
"""
from __future__ import annotations

import os
import signal

ENV = "SPARSEDEPTH_CRASH_AT"
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
