#!/usr/bin/env python
"""How far apart do seeds land? Train every variant of an experiment over several seeds and compare final
validation losses, so a single-seed gap between two variants can be read against the seed spread.

    PYTHONPATH=src python scripts/seed_spread.py --profile cpu --experiment gqa --seeds 0-5

Each (variant, seed) is the profile's config with only ``seed`` changed (it sets the initialisation and the
data order), trained in ``runs/<profile>/<config hash>`` like every other run: finished runs are reused,
interrupted ones resume. Prints a table (one row per seed, the worst variant marked), mean and standard
deviation per variant, and paired differences; writes ``paper_results/<profile>/seed_spread/<experiment>.csv``
(one row per run) atomically. Only training runs: no probes, no evaluation.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import sys
from pathlib import Path

try:
    import sparsedepth  # noqa: F401
except ImportError:  # run from a checkout: PYTHONPATH=src is the documented way, this is the fallback
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sparsedepth.paper.spec import experiments as ex  # noqa: E402
from sparsedepth.atomic import atomic_write_text  # noqa: E402
from sparsedepth.paper.pipeline.results import output_root, run_context, run_dir_for  # noqa: E402
from sparsedepth.train import train  # noqa: E402


def parse_seeds(text: str) -> list[int]:
    """``"0-5"`` or ``"0,2,7"`` -> a sorted list of distinct seeds."""
    seeds: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise SystemExit(f"--seeds: expected a range like 0-5 or a list like 0,2,7, got {text!r}") from None
    if not seeds:
        raise SystemExit("--seeds: no seeds given")
    return sorted(seeds)


def spread_rows(profile: str, experiment: str, seeds: list[int], variants: list[str], device: str,
                progress: bool) -> list[dict]:
    """Train (or reuse) every (variant, seed); one row each with the final validation loss."""
    rows = []
    with run_context(profile) as root:
        for v in variants:
            base = ex.resolve(profile, experiment, v)
            for s in seeds:
                cfg = dataclasses.replace(base, seed=s)
                run_dir = run_dir_for(profile, cfg, root)
                print(f"[{profile}/{experiment}/{v} seed {s}] {run_dir}", flush=True)
                summary = train(cfg, run_dir, progress=progress, device=device, root=root)
                rows.append({"variant": v, "seed": s, "val_loss": summary["val_loss"], "steps": summary["steps"],
                             "run": run_dir.name})
    return rows


def report(rows: list[dict], variants: list[str], seeds: list[int]) -> str:
    loss = {(r["variant"], r["seed"]): r["val_loss"] for r in rows}
    out = io.StringIO()
    out.write("seed  " + "  ".join(f"{v:>9s}" for v in variants) + "  worst\n")
    for s in seeds:
        vals = {v: loss[v, s] for v in variants}
        out.write(f"{s:4d}  " + "  ".join(f"{vals[v]:9.4f}" for v in variants) + f"  {max(vals, key=vals.get)}\n")
    for v in variants:
        xs = [loss[v, s] for s in seeds]
        sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
        out.write(f"{v}: mean {statistics.mean(xs):.4f}, sd {sd:.4f}, range {min(xs):.4f}-{max(xs):.4f}\n")
    for i, a in enumerate(variants):
        for b in variants[i + 1:]:
            d = [loss[a, s] - loss[b, s] for s in seeds]
            se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
            out.write(f"{a} - {b}: mean {statistics.mean(d):+.4f} (standard error {se:.4f}), "
                      f"per seed {min(d):+.4f} to {max(d):+.4f}\n")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--experiment", required=True, choices=ex.EXPERIMENTS)
    ap.add_argument("--seeds", default="0-2", help="a range (0-5) or a list (0,2,7); default 0-2")
    ap.add_argument("--variants", default=None, help="comma-separated variant names (default: all)")
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: the config's)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    names = list(ex.variants(args.profile, args.experiment))
    variants = names if args.variants is None else [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in names]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown} for {args.profile}/{args.experiment}; valid: {', '.join(names)}")
    rows = spread_rows(args.profile, args.experiment, seeds, variants, args.device, not args.quiet)
    print(report(rows, variants, seeds), end="")
    dest = output_root() / "paper_results" / args.profile / "seed_spread" / f"{args.experiment}.csv"
    dest.parent.mkdir(parents=True, exist_ok=True)
    lines = ["variant,seed,val_loss,steps,run"] + [f"{r['variant']},{r['seed']},{r['val_loss']:.6g},{r['steps']},{r['run']}"
                                                  for r in rows]
    atomic_write_text(dest, "\n".join(lines) + "\n")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
