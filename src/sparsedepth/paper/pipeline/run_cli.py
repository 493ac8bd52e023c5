"""`sparsedepth run`: train, probe and evaluate experiment variants into ``paper_results/`` without notebooks.

The same cache as the notebooks (``results.run_experiment``): a variant whose results are up to date is
skipped, a config shared by several experiments trains once, a failed variant leaves ``error.txt`` and the
others go on. Useful on a GPU machine without Jupyter; the notebooks then plot what it wrote
(``make figures PROFILE=gpu``).

    sparsedepth run --profile gpu depth                       # every variant of the depth sweep
    sparsedepth run --profile gpu depth/L24 gqa/G4 moe        # single variants and whole sweeps, in order
    sparsedepth run --profile gpu all --budget-s 560          # start only what should finish in 560 s
    sparsedepth run --profile gpu all --list                  # status and estimated time of each variant
    sparsedepth run --profile gpu-long depth --stop-after-s 480
                                  # after 480 s every training stops at a checkpoint (exit 3); the same command resumes
    sparsedepth run --profile gpu all --gpus 2 --budget-s 560 # two variants at a time, one per GPU
    sparsedepth run --profile gpu all --gpus 2 --list         # ... and the plan: which GPU trains what, when
    sparsedepth run --profile gpu seqlen --per-gpu 3 --stop-after-s 480
                                                              # three variants at a time sharing one GPU
    sparsedepth run --profile paper all --submit slurm --gpus-per-job 8 --slurm partition=gpu
                                                              # one SLURM job per run (run_submit.py)

``--budget-s`` is for machines lent by the hour: a run killed half-way loses its work once the machine is
gone, so a variant is started only when its estimated time fits in what is left of the budget. The
estimate (:func:`estimate_seconds`) comes from the profile's finished results: their training FLOP rate and
their time outside the training loop (data, compilation, probes, evaluation); for a GPU profile with none
finished yet, from the committed H200 speed measurements (training alone). A paused run is counted for the
steps after its latest checkpoint, which is all a resumed run trains.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from ..spec import experiments as ex
from . import results, run_submit
from .run_parallel import PAUSED_EXIT
from ...config import TrainConfig, config_hash

MARGIN = 1.15  # estimates are medians of a few runs; keep a safety margin
# MoE FLOP rate relative to dense while no MoE run has finished. The bench measured 0.80x at L=16, T=4096;
# a smaller MoE with its own compile ran past a 0.8x estimate and was lost, and a run cut off on a lent
# machine costs all its time while an overestimate only leaves a slot unused: guess low.
MOE_RATE_GUESS = 0.6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="+", metavar="EXPERIMENT[/VARIANT]",
                        help=f"experiments ({', '.join(ex.EXPERIMENTS)} or all; checks: {', '.join(ex.CHECKS)}) or "
                             "single variants such as depth/L24")
    parser.add_argument("--profile", choices=ex.PROFILES, default="cpu", help="scale of the runs (default: cpu)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: the profile's choice)")
    parser.add_argument("--force", action="store_true", help="retrain even where results are up to date")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start a variant only if its estimated time fits in what is left of this many seconds")
    parser.add_argument("--stop-after-s", type=float, default=None, metavar="S",
                        help="after S seconds, stop every training at a checkpoint and start nothing more; the same "
                             "command later resumes (for machines that run one command for a limited time)")
    parser.add_argument("--gpus", type=int, default=1,
                        help="train this many variants at a time, one per GPU, in child processes (default: 1); "
                             "with --device cpu, that many CPU processes")
    parser.add_argument("--per-gpu", type=int, default=1, metavar="K",
                        help="train K variants at a time on each GPU (default: 1). Small models leave a GPU partly "
                             "idle, most of all while probing and evaluating: at the gpu profile three runs sharing "
                             "one H200 took 2.1x one run's time each (1.4x the throughput) and 138 GiB at peak; "
                             "watch GPU memory")
    parser.add_argument("--list", action="store_true", help="print each variant's status and estimate, then stop")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    run_submit.add_arguments(parser)


def parse_items(profile: str | ex.Plan, items: list[str]) -> list[tuple[str, str]]:
    """(experiment, variant) pairs in the order given, without repeats; errors name the valid choices."""
    plan = ex.plan(profile)
    pairs: list[tuple[str, str]] = []
    for item in items:
        exp, _, variant = item.partition("/")
        exps = list(ex.EXPERIMENTS) if exp == "all" and not variant else [exp]  # all: the paper's, not CHECKS
        if exp not in ex.EXPERIMENTS + ex.CHECKS and exps != list(ex.EXPERIMENTS):
            raise SystemExit(f"sparsedepth run: unknown experiment {exp!r} in {item!r}; choose from "
                             f"{', '.join(ex.EXPERIMENTS + ex.CHECKS)} or all")
        for e in exps:
            names = list(plan.variants(e))
            if variant and variant not in names:
                raise SystemExit(f"sparsedepth run: unknown variant {variant!r} of {e} at profile {plan.profile}; "
                                 f"valid: {', '.join(names)}")
            for v in [variant] if variant else names:
                if (e, v) not in pairs:
                    pairs.append((e, v))
    return pairs


def _finished(profile: str) -> list[dict]:
    """Timings of the profile's finished results that were trained (not copied) here."""
    out = []
    base = results.output_root() / "paper_results" / profile
    for folder in sorted(base.glob("*/*")) if base.is_dir() else []:
        res = results.load_variant(folder)
        pipe = ((res.provenance if res else None) or {}).get("pipeline", {})
        summ = (res.summary if res else None) or {}
        if not res or "copied_from" in pipe or not summ.get("wall_s") or "train_s" not in pipe:
            continue
        cfg = TrainConfig(**res.config)
        # train_s times the last invocation only, wall_s every training segment: a run resumed across
        # invocations has train_s < wall_s and tells nothing about setup (None), only about its FLOP rate
        resumed = pipe["train_s"] < summ["wall_s"]
        out.append({"moe": cfg.model.is_moe, "layers": cfg.model.n_layers,
                    "flop_rate": summ["tokens"] * cfg.model.flops_per_token(cfg.seq_len) / summ["wall_s"],
                    "setup_s": None if resumed else pipe["train_s"] - summ["wall_s"] + pipe.get("eval_s", 0.0),
                    "probes_per_layer2": pipe.get("probes_s", 0.0) / cfg.model.n_layers ** 2})
    return out


def estimate_seconds(cfg: TrainConfig, finished: list[dict], steps_done: int = 0) -> float | None:
    """Rough wall time of one variant from finished runs of the same profile (None when there are none):
    training FLOPs at the median FLOP rate of finished runs of the same kind (MoE or dense; MoE runs without
    MoE history at MOE_RATE_GUESS times the dense rate), plus their median setup and evaluation time, plus
    probes scaled by L^2 (the permutation probe replays every pair of layers), times a safety margin.
    ``steps_done``: steps a paused run already has (:func:`checkpoint_step`); only the rest is trained."""
    if not finished:
        return None
    same = [f for f in finished if f["moe"] == cfg.model.is_moe]
    guess = MOE_RATE_GUESS if cfg.model.is_moe and not same else 1.0
    rate = statistics.median(f["flop_rate"] for f in same or finished) * guess
    flops = (cfg.steps - steps_done) * cfg.tokens_per_step * cfg.model.flops_per_token(cfg.seq_len)
    probes = statistics.median(f["probes_per_layer2"] for f in finished) * cfg.model.n_layers ** 2
    setups = [f["setup_s"] for f in finished if f["setup_s"] is not None]
    return MARGIN * (flops / rate + (statistics.median(setups) if setups else 0.0) + probes)


def checkpoint_step(profile: str, cfg: TrainConfig) -> int:
    """The step of a paused run's latest checkpoint (0 when it has none): resuming trains only the rest, and
    a budget that counted every step would refuse to finish a run that a lent machine could still finish."""
    from ...train.checkpoint import list_checkpoints

    ckpts = list_checkpoints(results.run_dir_for(profile, cfg))
    return min(ckpts[-1][0], cfg.steps) if ckpts else 0


def _estimate(plan: ex.Plan, cfg: TrainConfig, finished: list[dict]) -> tuple[float | None, str]:
    """(seconds, basis) of one variant still to train: :func:`estimate_seconds`, else for a GPU profile with no
    finished run the training time alone from the committed H200 speed measurements; a paused run's own
    checkpoint counts as done."""
    done = checkpoint_step(plan.profile, cfg)
    left = f", {cfg.steps - done} of {cfg.steps} steps left" if done else ""
    est = estimate_seconds(cfg, finished, done)
    if est is not None or not plan.scale.needs_cuda:
        return est, left
    from .gpu_hours import DEVICE, Measurements, gpu_hours

    speeds = Measurements.load(results.output_root() / "paper_results" / "bench" / DEVICE)
    bench = MARGIN * gpu_hours(cfg, speeds)[0] * 3600 * (cfg.steps - done) / cfg.steps
    return bench, f" of training, from the H200 bench{left}"


def _done_hashes(plan: ex.Plan) -> set[str]:
    """Config hashes with up-to-date results anywhere in the profile: such a variant is copied, not trained."""
    return {config_hash(plan.resolve(e, v)) for e in ex.EXPERIMENTS
            for v, st in results.status(plan, e).items() if st == "done"}


def _statuses(plan: ex.Plan, pairs: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """{experiment: {variant: status}} for the experiments among ``pairs``."""
    return {e: results.status(plan, e) for e in dict.fromkeys(e for e, _ in pairs)}


def run(args: argparse.Namespace) -> int:
    plan = ex.plan(args.profile)
    pairs = parse_items(plan, args.items)
    finished = _finished(args.profile)
    if args.list:
        status = _statuses(plan, pairs)
        done = _done_hashes(plan)
        total, counted = 0.0, set()
        for e, v in pairs:
            cfg = plan.resolve(e, v)
            st = status[e][v]
            if st != "done" and config_hash(cfg) in done:
                st = "same config done elsewhere (copied, not trained)"
            elif st != "done" and config_hash(cfg) in counted:
                st += " (same config as a variant above: trained once)"
            counted.add(config_hash(cfg))
            todo = st in ("missing", "stale", results.FAILED, results.PAUSED)
            if st == "stale":  # say what changed (a config, a probe or evaluation version, settings)
                st += f" ({results.stale_reason(plan, e, v)})"
            est, basis = _estimate(plan, cfg, finished) if todo else (None, "")
            total += est or 0.0
            print(f"{args.profile}/{e}/{v}: {st}" + ("" if est is None else f" (about {est:.0f} s{basis})"))
        if total:
            print(f"to train: about {total / 60:.0f} min")
        if _slots(args) != 1 and total:
            _print_plan(args, plan, _to_train(args, plan, pairs), finished)
        return 0
    deadline = None
    if getattr(args, "stop_after_s", None) is not None:
        from ...train.loop import STOP_AT_ENV

        if args.stop_after_s <= 0:
            raise SystemExit(f"sparsedepth run: --stop-after-s must be positive, got {args.stop_after_s:g}")
        deadline = time.time() + args.stop_after_s
        os.environ[STOP_AT_ENV] = repr(deadline)  # every training of this command, child processes included
    if args.force:  # one "forced since" for the whole command: a config shared by variants is forced once,
        os.environ.setdefault(results.FORCE_ENV, repr(time.time()))  # the others then find it fresh (copies)
    if args.submit:
        return run_submit.submit(args, pairs)
    if _slots(args) != 1:
        rc = train_in_parallel(args, pairs)
        return PAUSED_EXIT if _paused(plan, pairs, deadline) and rc in (0, 1) else rc
    t0, failed, skipped = time.monotonic(), [], []
    for e, v in pairs:
        if deadline is not None and time.time() >= deadline:
            skipped.append(f"{e}/{v}")
            continue
        if args.budget_s is not None and config_hash(plan.resolve(e, v)) not in _done_hashes(plan):
            est = _estimate(plan, plan.resolve(e, v), finished)[0]
            left = args.budget_s - (time.monotonic() - t0)
            if est is not None and est > left:
                print(f"[{args.profile}/{e}/{v}] not started: about {est:.0f} s needed, {left:.0f} s of the budget left",
                      flush=True)
                skipped.append(f"{e}/{v}")
                continue
        statuses = results.run_experiment(plan, e, args.force, variants=[v], progress=not args.quiet,
                                          device=args.device, raise_on_error=False)
        failed += [f"{e}/{name}" for name, st in statuses.items() if st == results.FAILED]
        finished = _finished(args.profile)  # the new run refines the estimates
    paused = _paused(plan, pairs, deadline)
    rc = _report([f for f in failed if f not in paused], skipped)
    return PAUSED_EXIT if rc == 0 and (paused or (deadline is not None and skipped)) else rc


def _paused(plan: ex.Plan, pairs: list[tuple[str, str]], deadline: float | None) -> list[str]:
    """With --stop-after-s: the variants whose training stopped at a checkpoint before its end (paused, not
    failed: the same command resumes them)."""
    if deadline is None:
        return []
    status = _statuses(plan, pairs)
    paused = [f"{e}/{v}" for e, v in pairs if status[e][v] == results.PAUSED]
    if paused:
        print(f"time limit reached (--stop-after-s); paused at a checkpoint: {', '.join(paused)}; resume with the "
              f"same command", flush=True)
    return paused


def _report(failed: list[str], skipped: list[str]) -> int:
    if skipped:
        print(f"not started (budget or time limit): {', '.join(skipped)}", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)} (error.txt in their results folders)", file=sys.stderr)
        return 1
    return 0


def _to_train(args: argparse.Namespace, plan: ex.Plan, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The variants that need training, one per distinct config (the others are cached or will be copies)."""
    todo, hashes = [], set(_done_hashes(plan)) if not args.force else set()
    for e, v in pairs:
        h = config_hash(plan.resolve(e, v))
        if h not in hashes:
            hashes.add(h)
            todo.append((e, v))
    return todo


def _print_plan(args: argparse.Namespace, plan: ex.Plan, todo: list[tuple[str, str]], finished: list[dict]) -> None:
    from . import run_parallel

    rows, skipped = run_parallel.simulate(todo, _slots(args), args.budget_s,
                                          _shared(args, lambda p: _estimate(plan, plan.resolve(*p), finished)[0]))
    print(f"plan for {_slots(args)} jobs at a time{_per_gpu_words(args) or ' (one per GPU)'}" + ("" if args.budget_s is None else f" within {args.budget_s:.0f} s") + ":")
    for slot, (e, v), start, end in sorted(rows, key=lambda r: (r[0], r[2])):
        print(f"  job {slot}: {start:5.0f}-{end:5.0f} s  {e}/{v}")
    if rows:
        print(f"  about {max(r[3] for r in rows) / 60:.0f} min of wall time")
    if skipped:
        print(f"  not started (budget): {', '.join(skipped)}")


def _slots(args: argparse.Namespace) -> int:
    """Child processes at a time: ``--per-gpu`` on each of ``--gpus``."""
    if getattr(args, "per_gpu", 1) < 1:
        raise SystemExit(f"sparsedepth run: --per-gpu must be at least 1, got {args.per_gpu}")
    return args.gpus * getattr(args, "per_gpu", 1)


def _per_gpu_words(args: argparse.Namespace) -> str:
    """How the jobs sit on devices, for the plan's and the run's first line ('' for plain jobs: GPUs or CPUs)."""
    k = getattr(args, "per_gpu", 1)
    return "" if k == 1 else f" ({k} sharing each GPU)"


def _shared(args: argparse.Namespace, estimate):
    """Estimates for runs sharing a GPU with ``--per-gpu K`` - 1 others: K times one run's time. Measured
    3 runs on one H200 at 2.1x rather than 3x; a run cut off on a lent machine loses all its time while an
    overestimate only leaves a slot unused, so the budget counts the worst case."""
    k = getattr(args, "per_gpu", 1)
    return lambda pair: None if (est := estimate(pair)) is None else est * k


def train_in_parallel(args: argparse.Namespace, pairs: list[tuple[str, str]]) -> int:
    """Variants that need training, one per distinct config, spread over ``--gpus`` x ``--per-gpu`` child
    processes; then a pass here that installs every variant whose config another one trained (copies, no
    training). ``args`` as this command parses them (profile, device, force, budget_s, gpus, per_gpu)."""
    from . import run_parallel

    run_parallel.check_gpus(args.gpus, args.device)
    plan = ex.plan(args.profile)
    if args.force:  # run() set one "forced since" for the children and the copies below
        pending = pairs
    else:  # variants already up to date need nothing, not even a report
        status = _statuses(plan, pairs)
        pending = [(e, v) for e, v in pairs if status[e][v] != "done"]
    todo = _to_train(args, plan, pending)
    if todo:
        print(f"training {len(todo)} variant(s), {_slots(args)} at a time{_per_gpu_words(args)}", flush=True)
    failed, skipped = run_parallel.schedule(
        todo, _slots(args), args.budget_s,
        _shared(args, lambda p: _estimate(plan, plan.resolve(*p), _finished(args.profile))[0]),
        run_parallel.subprocess_launcher(args))
    for e, v in pending:  # copies of the configs trained above, or of ones already done elsewhere
        if (e, v) not in todo:
            results.run_experiment(plan, e, force=args.force, variants=[v], train=False, progress=False,
                                   raise_on_error=False)
    return _report(failed, skipped)
