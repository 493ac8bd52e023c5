"""`sparsedepth run`: train, probe and evaluate experiment variants into ``paper_results/`` without notebooks.

The same cache as the notebooks (``sparsedepth.results.run_experiment``): a variant whose results are up to
date is skipped, a config shared by several experiments trains once, a failed variant leaves ``error.txt``
and the others go on. Useful on a GPU machine without Jupyter; the notebooks then plot what it wrote
(``make figures PROFILE=gpu``).

    sparsedepth run --profile gpu depth                      # every variant of the depth sweep
    sparsedepth run --profile gpu depth --variants L12,L16   # some of them
    sparsedepth run --profile gpu all --list                 # what would run, and what is already done
"""
from __future__ import annotations

import argparse
import sys

from . import experiments as ex
from . import results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiments", nargs="+", metavar="EXPERIMENT",
                        help=f"one or more of {', '.join(ex.EXPERIMENTS)}, or all")
    parser.add_argument("--profile", choices=ex.PROFILES, default="cpu", help="scale of the runs (default: cpu)")
    parser.add_argument("--variants", default="", help="comma-separated variant names (one experiment only)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: the profile's choice)")
    parser.add_argument("--force", action="store_true", help="retrain even where results are up to date")
    parser.add_argument("--list", action="store_true", help="print each variant's status and stop")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _experiments(names: list[str]) -> list[str]:
    if "all" in names:
        return list(ex.EXPERIMENTS)
    unknown = [n for n in names if n not in ex.EXPERIMENTS]
    if unknown:
        raise SystemExit(f"sparsedepth run: unknown experiment(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(ex.EXPERIMENTS)} or all")
    return names


def run(args: argparse.Namespace) -> int:
    exps = _experiments(args.experiments)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()] or None
    if chosen and len(exps) != 1:
        raise SystemExit("sparsedepth run: --variants needs exactly one experiment")
    if chosen:
        valid = ex.variants(args.profile, exps[0])
        bad = [v for v in chosen if v not in valid]
        if bad:
            raise SystemExit(f"sparsedepth run: unknown variant(s) {', '.join(bad)} of {exps[0]} at profile "
                             f"{args.profile}; valid: {', '.join(valid)}")
    if args.list:
        for e in exps:
            for name, st in results.status(args.profile, e).items():
                if not chosen or name in chosen:
                    print(f"{args.profile}/{e}/{name}: {st}")
        return 0
    failed = []
    for e in exps:
        statuses = results.run_experiment(args.profile, e, args.force, variants=chosen, progress=not args.quiet,
                                          device=args.device, raise_on_error=False)
        failed += [f"{e}/{v}" for v, st in statuses.items() if st == results.FAILED]
    if failed:
        print(f"failed: {', '.join(failed)} (error.txt in their results folders)", file=sys.stderr)
        return 1
    return 0
