"""pytest plugin of ``make test-gpu``: writes the GPU tier's summary to
``paper_results/bench/<device>/gpu-tests-<date>.json`` (date, device, versions, each test's outcome).

Loaded with ``-p gpu_summary`` (tests/gpu on PYTHONPATH). Without CUDA every test is skipped and nothing is
written: a summary records what ran on an accelerator.
"""
from __future__ import annotations

import datetime as dt
import importlib
import platform
from pathlib import Path

import torch

from sparsedepth.atomic import atomic_write_json
from sparsedepth.bench import device_name, device_slug

ROOT = Path(__file__).resolve().parents[2]
_outcomes: dict[str, dict] = {}


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except Exception:  # noqa: BLE001 - absent, or its extension fails to load: recorded as missing
        return None


def pytest_runtest_logreport(report) -> None:
    if report.when == "call" or report.outcome != "passed":  # a setup error or skip has no call phase
        entry = {"outcome": report.outcome, "seconds": round(report.duration, 2)}
        if report.skipped and isinstance(report.longrepr, tuple):
            entry["reason"] = report.longrepr[2]
        elif report.failed:
            entry["error"] = str(report.longrepr).strip().splitlines()[-1][:300]
        _outcomes.setdefault(report.nodeid, entry)


def pytest_sessionfinish(session, exitstatus) -> None:
    if not torch.cuda.is_available():
        print("\ngpu_summary: no CUDA device, no summary written")
        return
    dev = torch.device("cuda")
    counts = {k: sum(e["outcome"] == k for e in _outcomes.values()) for k in ("passed", "failed", "skipped")}
    now = dt.datetime.now(dt.timezone.utc)
    summary = {
        "date": now.isoformat(timespec="seconds"), "device": device_name(dev),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                     "triton": _version("triton"), "xformers": _version("xformers")},
        **counts, "tests": dict(sorted(_outcomes.items())),
    }
    path = ROOT / "paper_results" / "bench" / device_slug(dev) / f"gpu-tests-{now.date().isoformat()}.json"
    atomic_write_json(path, summary)
    print(f"\ngpu_summary: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped -> {path}")
