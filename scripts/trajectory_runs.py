"""Train a profile's runs with probes along training: trajectory.json, then probes.json, and the probing cost.

    PYTHONPATH=src python3 scripts/trajectory_runs.py --profile gpu --experiment depth --variants L12,L32 \\
        --points 8 --out runs/trajectory

Each run trains the profile's config of that variant unchanged (the probe settings are not hashed) in
``OUT/<experiment>/<variant>``, probing the weights at ``--points`` steps spaced evenly in log tokens. The last
point uses the profile's probe settings and writes probes.json (``--check`` probes the final checkpoint again
with ``probe_run`` and reports the largest difference from the last point); the points before it use the
cheaper ``--along`` settings (default ``ALONG``; ``--along none`` probes every point in full). A run that
stops resumes, keeping its points. Prints one JSON line per run: the time spent on the points before the
last (the extra cost: the last one replaces the final probes), the training time without the probes, and
their ratio.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from sparsedepth.config import ConfigError
from sparsedepth.paper.spec.experiments import TRAJECTORY_ALONG, probe_settings, resolve, variants
from sparsedepth.probes import probe_run
from sparsedepth.probes.trajectory import probe_cost, read_trajectory, summarize
from sparsedepth.paper.pipeline.results import run_context
from sparsedepth.train import train

# Before the last point: a quarter of the windows, 64 of the permutation's L(L-1)/2 pairs, 2 Jacobian windows,
# and only the probes a trajectory keeps (no logit lens, no sparsity); the gpu rungs use the same. On the gpu
# profile the full probes of L = 32 take 53 s (37 s of it the 496 permutation pairs) against 327 s of training.
ALONG = TRAJECTORY_ALONG


def _along(items: list[str]) -> dict:
    if items == ["none"]:
        return {}
    out = dict(ALONG)
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--along {item!r}: give KEY=VALUE (e.g. --along n_windows=8) or --along none")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v.strip())
    return out


def max_difference(a, b) -> float:
    """Largest absolute difference between two nested JSON values of the same shape (inf if shapes differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return max([max_difference(a[k], b[k]) for k in a] or [0.0]) if a.keys() == b.keys() else float("inf")
    if isinstance(a, list) and isinstance(b, list):
        return max([max_difference(x, y) for x, y in zip(a, b)] or [0.0]) if len(a) == len(b) else float("inf")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b)
    return 0.0 if a == b else float("inf")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="gpu")
    ap.add_argument("--experiment", default="depth")
    ap.add_argument("--variants", default=None, help="comma-separated (default: all of the experiment)")
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--along", action="append", default=[], metavar="KEY=VALUE",
                    help="probe setting for the points before the last (repeatable; 'none' = full settings)")
    ap.add_argument("--keep-checkpoints", action="store_true", help="keep each probe point's weights")
    ap.add_argument("--check", action="store_true", help="probe the final checkpoint again and compare")
    ap.add_argument("--out", default="runs/trajectory")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    try:
        names = args.variants.split(",") if args.variants else list(variants(args.profile, args.experiment))
        settings = probe_settings(args.profile)
        along = _along(args.along)
        out = Path(args.out).resolve()
        for name in names:
            cfg = dataclasses.replace(resolve(args.profile, args.experiment, name), probe_points=args.points,
                                      probe=settings, probe_along=along,
                                      keep_probe_checkpoints=args.keep_checkpoints)
            run_dir = out / args.experiment / name
            with run_context(args.profile):  # the profile's threads, from the root its data paths are relative to
                summary = train(cfg, run_dir, progress=True, device=args.device)
                if not summary.get("done"):
                    print(f"{name}: stopped at step {summary.get('steps')}; rerun to resume", file=sys.stderr)
                    return 1
                check = probe_run(run_dir, device=args.device or "auto", out="probes-check.json",
                                  **settings) if args.check else None
            points = read_trajectory(run_dir)["points"]
            cost = probe_cost(run_dir)
            row = {"run": str(run_dir), **cost, "final_probes_s": points[-1]["probe_s"],
                   "extra_probe_s": cost["probe_s"] - points[-1]["probe_s"],
                   "extra_fraction": (cost["probe_s"] - points[-1]["probe_s"]) / cost["train_s"]}
            if check is not None:
                stats = summarize(check)
                row["last_point_vs_probe_run_max_abs_diff"] = max_difference({k: points[-1][k] for k in stats}, stats)
            print(json.dumps(row), flush=True)
    except ConfigError as e:
        print(f"trajectory_runs: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
