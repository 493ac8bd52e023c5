#!/usr/bin/env python
"""Round committed metrics.jsonl files and bring them under the pipeline's size limit, as installing them today would.

    PYTHONPATH=src python scripts/fit_metrics.py paper_results/gpu            # every run folder below
    PYTHONPATH=src python scripts/fit_metrics.py paper_results/gpu/moe/moe-large

The limit (``METRICS_LIMIT_BYTES``) and the rounding (``METRICS_DIGITS`` significant digits) keep the repository
small enough to travel; runs installed before either was lowered are brought under it here instead of being
retrained. The telemetry no table or figure reads (``BULKY_METRICS``: sublayer statistics, per-layer gradient
and parameter norms, expert loads) is thinned first, whole rows after; what was dropped joins the folder's
provenance.json (``pipeline``). Both files are replaced atomically; a folder already fitted is left
untouched. A copied variant's metrics.jsonl is a link to the trained folder's, fitted there; the copy's
provenance.json takes over what that folder's records say was dropped. Prints one line per folder changed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import sparsedepth  # noqa: F401
except ImportError:  # run from a checkout: PYTHONPATH=src is the documented way, this is the fallback
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sparsedepth.atomic import atomic_write_text  # noqa: E402
from sparsedepth.paper.pipeline.results import METRICS_RECORDS, fit_metrics, linked_source  # noqa: E402


def fit_folder(folder: Path) -> str | None:
    """Fit one run folder; returns a line saying what changed, or None when it was already fitted."""
    source = linked_source(folder)
    if source is not None:  # a copy: writing its metrics.jsonl would replace the link with a second file
        return _follow_source(folder, source)
    metrics, prov_path = folder / "metrics.jsonl", folder / "provenance.json"
    lines = metrics.read_text().splitlines()
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    pipeline = dict(prov.get("pipeline", {}))
    kept = fit_metrics(lines, pipeline)
    if kept == lines:
        return None
    before = metrics.stat().st_size
    prov["pipeline"] = pipeline
    atomic_write_text(prov_path, json.dumps(prov, indent=2, sort_keys=True) + "\n")
    atomic_write_text(metrics, "\n".join(kept) + ("\n" if kept else ""))
    return f"{folder}: {before / 1024:.0f} -> {metrics.stat().st_size / 1024:.0f} KiB"


def _follow_source(folder: Path, source: Path) -> str | None:
    """A copied variant's provenance records what its (linked) source's metrics.jsonl dropped."""
    prov_path = folder / "provenance.json"
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    pipeline = dict(prov.get("pipeline", {}))
    src = json.loads((source / "provenance.json").read_text()).get("pipeline", {})
    records = {k: src[k] for k in METRICS_RECORDS if k in src}
    if all(pipeline.get(k) == v for k, v in records.items()):
        return None
    prov["pipeline"] = {**pipeline, **records}
    atomic_write_text(prov_path, json.dumps(prov, indent=2, sort_keys=True) + "\n")
    return f"{folder}: records of {source.name}'s metrics.jsonl (linked) taken over"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, help="run folders, or folders to search for them")
    args = ap.parse_args(argv)
    folders = []
    for p in args.paths:
        if not p.is_dir():
            ap.error(f"{p} is not a folder: give a run folder (with metrics.jsonl) or a folder holding run folders")
        folders += sorted(m.parent for m in p.rglob("metrics.jsonl"))
    folders.sort(key=lambda f: linked_source(f) is not None)  # copies after the folders they link to
    if not folders:
        ap.error(f"no metrics.jsonl under {', '.join(map(str, args.paths))}: give paper_results/<profile> or a run folder")
    for folder in folders:
        line = fit_folder(folder)
        if line:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
