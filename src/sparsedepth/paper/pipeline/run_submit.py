"""``sparsedepth run --submit CLUSTER``: each variant that needs training becomes one batch job, through submitit.

The cluster's scheduler runs the jobs (``slurm``; ``local`` runs them as processes of this machine, ``debug``
inside this process) and each job brings its variants up to date through the same run cache as every other
path (``results.run_experiment``): the results land in ``paper_results/<profile>/`` and the run directories in
``runs/<profile>/``, which must therefore be on a file system the jobs share. One job per distinct config: its
first variant trains, the others with the same config are installed as copies at its end. Variants whose
config is already finished elsewhere are copied here, without a job.

With ``--gpus-per-job N`` above 1 a job trains its run with ``torchrun`` on its N GPUs (the config's
``parallel`` mode: DDP, or FSDP for the paper's 64-expert MoEs), then probes and evaluates it in one process.
A job that hits its time limit leaves its checkpoints: submitting again resumes it.

Without ``--wait`` the command returns once the jobs are queued, printing their ids; ``sparsedepth run ... --list``
shows what has finished since.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ..spec import experiments as ex
from . import results
from ...config import config_hash

CLUSTERS = ("slurm", "local", "debug")
SHARED = ("mem_gb", "cpus_per_task", "stderr_to_stdout")  # submitit's cluster-independent options a user may set


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch jobs (submitit)")
    group.add_argument("--submit", choices=CLUSTERS,
                       help="submit each variant that needs training as one batch job: slurm (a SLURM cluster), "
                            "local (processes on this machine) or debug (in this process)")
    group.add_argument("--gpus-per-job", type=int, default=1,
                       help="GPUs of one job; above 1 the run trains under torchrun on all of them (default: 1)")
    group.add_argument("--timeout-min", type=int, default=24 * 60,
                       help="time limit of a job in minutes; a run cut off resumes when submitted again "
                            "(default: 1440)")
    group.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                       help="a job option for submitit: mem_gb, cpus_per_task, or any option of its SLURM "
                            "executor (partition=gpu, account=me, constraint=h200, ...); repeatable")
    group.add_argument("--jobs-dir", type=Path,
                       help="where submitit keeps job scripts and logs (default: runs/submitit under the output root)")
    group.add_argument("--wait", action="store_true", help="wait for the jobs and report failures (exit 1)")


def job_groups(plan: ex.Plan, pairs: list[tuple[str, str]], force: bool) -> list[list[tuple[str, str]]]:
    """The variants of ``pairs`` that need bringing up to date, one group per distinct config in the order
    given: the group's first variant trains, the rest are copies of it. Variants already done are left out (all
    of them are redone with ``force``)."""
    status = {e: results.status(plan, e) for e in dict.fromkeys(e for e, _ in pairs)}
    groups: dict[str, list[tuple[str, str]]] = {}
    for e, v in pairs:
        if force or status[e][v] != "done":
            groups.setdefault(config_hash(plan.resolve(e, v)), []).append((e, v))
    return list(groups.values())


def torchrun_command(profile: str, pair: tuple[str, str], gpus: int, run_dir: Path) -> list[str]:
    """Train one variant on ``gpus`` GPUs of this node into ``run_dir`` (the run cache's directory of its
    config), resuming what is there."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus),
            "-m", "sparsedepth.cli", "train", "--profile", profile, "--experiment", pair[0], "--variant", pair[1],
            "--run-dir", str(run_dir), "--no-progress"]


def run_job(profile: str, group: list[tuple[str, str]], root: str, force_since: str | None, device: str | None,
            gpus: int, run=subprocess.run) -> dict[str, str]:
    """One batch job: bring ``group`` up to date in the run cache under ``root``; returns {variant: status} and
    raises when one failed, so the scheduler marks the job failed. ``run`` starts the torchrun training."""
    os.environ[results.ROOT_ENV] = root  # the submitting checkout's cache, wherever the job starts
    if force_since:
        os.environ[results.FORCE_ENV] = force_since
    plan = ex.plan(profile)
    if gpus > 1:  # train first on every GPU; the pass below then finds the run finished and probes it
        run_dir = results.run_dir_for(profile, plan.resolve(*group[0]), root)
        proc = run(torchrun_command(profile, group[0], gpus, run_dir), cwd=root)
        if proc.returncode != 0:
            raise RuntimeError(f"{profile}/{group[0][0]}/{group[0][1]}: torchrun training exited with "
                               f"{proc.returncode}; its log is this job's output")
    statuses = {}
    for e, v in group:
        statuses[f"{e}/{v}"] = results.run_experiment(plan, e, force=force_since is not None, variants=[v],
                                                      progress=False, device=device, raise_on_error=False)[v]
    failed = [name for name, st in statuses.items() if st == results.FAILED]
    if failed:
        raise RuntimeError(f"{profile}: {', '.join(failed)} failed (error.txt in their results folders)")
    return statuses


def make_executor(args: argparse.Namespace, folder: Path):
    """A submitit executor for ``args.submit`` with the job's resources and the ``--slurm`` options."""
    try:
        import submitit
    except ImportError:
        raise SystemExit("sparsedepth run: --submit needs submitit; pip install submitit==1.5.4 (requirements.txt)") \
            from None
    options = {}
    for item in args.slurm:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"sparsedepth run: --slurm expects KEY=VALUE (e.g. partition=gpu), got {item!r}")
        # submitit's shared resource names go as they are; the rest are sbatch options of its SLURM executor
        options[key if key in SHARED else f"slurm_{key}"] = int(value) if value.isdigit() else value
    executor = submitit.AutoExecutor(folder=folder, cluster=args.submit)
    gpus = args.gpus_per_job if (args.device or "auto") != "cpu" else 0
    executor.update_parameters(name="sparsedepth", timeout_min=args.timeout_min, nodes=1, tasks_per_node=1,
                               gpus_per_node=gpus, **options)
    return executor


def submit(args: argparse.Namespace, pairs: list[tuple[str, str]]) -> int:
    """Queue one job per config that needs training (``args`` as ``sparsedepth run`` parses them)."""
    if args.gpus != 1:
        raise SystemExit("sparsedepth run: --submit and --gpus N do not combine; give each job its GPUs with "
                         "--gpus-per-job N")
    if args.gpus_per_job < 1:
        raise SystemExit(f"sparsedepth run: --gpus-per-job must be at least 1, got {args.gpus_per_job}")
    if args.force and args.gpus_per_job > 1:
        raise SystemExit("sparsedepth run: --force with --gpus-per-job above 1 is not supported (the cache would "
                         "discard the run torchrun just trained); delete the results folders to retrain instead")
    plan = ex.plan(args.profile)
    root = results.output_root()
    groups = job_groups(plan, pairs, args.force)
    done = set() if args.force else {config_hash(plan.resolve(e, v)) for e in ex.EXPERIMENTS
                                     for v, st in results.status(plan, e).items() if st == "done"}
    copies = [g for g in groups if config_hash(plan.resolve(*g[0])) in done]
    for group in copies:  # finished under another name: a copy, no job
        for e, v in group:
            results.run_experiment(plan, e, variants=[v], train=False, progress=False, raise_on_error=False)
    groups = [g for g in groups if g not in copies]
    if not groups:
        print("nothing to submit: every variant is up to date", flush=True)
        return 0
    folder = args.jobs_dir or root / "runs" / "submitit"
    executor = make_executor(args, folder / "%j")
    force_since = os.environ.get(results.FORCE_ENV) if args.force else None
    jobs = []
    for group in groups:
        job = executor.submit(run_job, args.profile, group, str(root), force_since, args.device, args.gpus_per_job)
        names = ", ".join(f"{e}/{v}" for e, v in group)
        print(f"submitted job {job.job_id}: {args.profile} {names}", flush=True)
        jobs.append((names, job))
    print(f"{len(jobs)} job(s) on {args.submit}; logs in {folder}", flush=True)
    if not args.wait:
        return 0
    failed = []
    for names, job in jobs:
        try:
            job.result()
        except Exception as e:  # noqa: BLE001 - submitit re-raises the job's error; report them all
            failed.append(names)
            print(f"job {job.job_id} ({names}) failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e}",
                  file=sys.stderr, flush=True)
    return 1 if failed else 0
