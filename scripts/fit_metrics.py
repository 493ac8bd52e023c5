#!/usr/bin/env python
"""Round committed metrics.jsonl files and bring them under the pipeline's size limit, as installing them today would.

    PYTHONPATH=src python scripts/fit_metrics.py paper_results/gpu            # every run folder below
    PYTHONPATH=src python scripts/fit_metrics.py paper_results/gpu/moe/moe-large

The limit (``METRICS_LIMIT_BYTES``) and the rounding (``METRICS_DIGITS`` significant digits) keep the repository
small enough to travel; runs installed before either was lowered are brought under it here instead of being
retrained. Bulky matrix fields (expert loads, of which the
figures read the last row) are thinned first, whole rows after; what was dropped joins the folder's
provenance.json (``pipeline``). Both files are replaced atomically; a folder already fitted is left
untouched, and so is a copied variant's folder, whose metrics.jsonl is a link to the trained folder's (fitted
there). Prints one line per folder changed.
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
from sparsedepth.paper.pipeline.results import fit_metrics, linked_source  # noqa: E402


def fit_folder(folder: Path) -> str | None:
    """Fit one run folder; returns a line saying what changed, or None when it was already fitted."""
    if linked_source(folder) is not None:
        return None  # a copy: writing here would replace its link with a second copy of the file
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, help="run folders, or folders to search for them")
    args = ap.parse_args(argv)
    folders = []
    for p in args.paths:
        if not p.is_dir():
            ap.error(f"{p} is not a folder: give a run folder (with metrics.jsonl) or a folder holding run folders")
        folders += sorted(m.parent for m in p.rglob("metrics.jsonl"))
    if not folders:
        ap.error(f"no metrics.jsonl under {', '.join(map(str, args.paths))}: give paper_results/<profile> or a run folder")
    for folder in folders:
        line = fit_folder(folder)
        if line:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
