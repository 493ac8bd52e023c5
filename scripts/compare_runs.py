"""Compare two runs of one config step by step (training loss, validation loss, last-layer variance) and, for
result folders, by their final readings (perplexity, accuracy, the probes' scores).

    PYTHONPATH=src python scripts/compare_runs.py paper_results/gpu/weight_decay/wd0.1 paper_results/gpu/seqlen/T1024

For an implementation change that should not change what is trained (``model.kernels``, a new MoE path,
another machine): the same config and seed should track the reference within bf16 rounding, far
inside the gap between two seeds (``paper_results/gpu/depth/L16`` against ``L16-seed1``). Either argument is
a run directory or a result folder holding ``metrics.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIELDS = (("loss", "train loss"), ("val_loss", "val loss"), ("layer_var", "last-layer variance"))


def load_metrics(folder: Path) -> dict[int, dict]:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; pass a run directory or a result folder with metrics.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["step"]: r for r in rows if "step" in r}


def _value(row: dict, key: str) -> float | None:
    v = row.get(key)
    return v[-1] if isinstance(v, list) and v else v if isinstance(v, (int, float)) else None


def compare(a: dict[int, dict], b: dict[int, dict]) -> dict[str, dict]:
    """Per field: the steps both runs logged it, the values and the largest relative difference."""
    out = {}
    for key, label in FIELDS:
        pairs = [(s, _value(a[s], key), _value(b[s], key)) for s in sorted(a.keys() & b.keys())]
        pairs = [(s, x, y) for s, x, y in pairs if x is not None and y is not None]
        rel = [abs(x - y) / max(abs(x), 1e-12) for _, x, y in pairs]
        out[label] = {"steps": pairs, "max_rel_diff": max(rel) if rel else None,
                      "end_rel_diff": rel[-1] if rel else None}
    return out


def readings(folder: Path) -> dict[str, float]:
    """The scorecard's scalar readings of a result folder (empty for a run directory without probes)."""
    from sparsedepth.paper.pipeline.results import load_variant
    from sparsedepth.paper.analysis.frame import readings

    res = load_variant(folder)
    if res is None:
        return {}
    m = readings(res)  # jacobian_mean among them
    return {k: v for k, v in m.items() if isinstance(v, (int, float)) and k != "useful_layers" and v is not None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path)
    ap.add_argument("other", type=Path)
    args = ap.parse_args(argv)
    res = compare(load_metrics(args.reference), load_metrics(args.other))
    for label, r in res.items():
        if not r["steps"]:
            print(f"{label}: no common steps")
            continue
        print(f"{label}: {len(r['steps'])} common steps, largest relative difference {r['max_rel_diff']:.2e}, "
              f"at the last common step {r['end_rel_diff']:.2e}")
        for s, x, y in r["steps"][-3:]:
            print(f"  step {s:>6}: {x:.6g}  vs  {y:.6g}")
    a, b = readings(args.reference), readings(args.other)
    for key in [k for k in a if k in b and not k.endswith("_se")]:
        rel = f", relative {abs(a[key] - b[key]) / abs(a[key]):.2e}" if a[key] else ""
        se = f" (standard errors {a[f'{key}_se']:.2g}, {b[f'{key}_se']:.2g})" if f"{key}_se" in a and f"{key}_se" in b else ""
        print(f"{key}: {a[key]:.6g}  vs  {b[key]:.6g}, difference {b[key] - a[key]:+.3g}{rel}{se}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
