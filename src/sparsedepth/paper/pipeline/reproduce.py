"""`sparsedepth reproduce`: execute the notebooks that regenerate the paper's figures and tables.

Every notebook in ``notebooks/`` (a percent-format ``.py`` source, the jupytext convention) is converted to
``build/notebooks/<profile>/<name>.ipynb`` and run there in name order with papermill (parameters
``profile``, ``force``, ``device``, ``train``), then rendered beside it to an HTML report that needs no network
(``sparsedepth.paper.report.html``). A failing
notebook is kept as far as it ran (with the error in its cell) and the next one starts; the command exits
non-zero at the end, naming the failures, after a table of what ran and how long it took.

With ``--no-train`` (``make figures``) a sweep notebook whose experiment has no results at the profile is left
out, and a profile with no results at all runs no notebook and says so (exit 0): a gpu rung before its runs.

``--only depth,seqlen`` picks notebooks by name: the part after the number (``01_depth.py`` -> ``depth``), the
number itself, or an alias (``seqlen`` -> ``03_sequence_length``). The notebooks call
``sparsedepth.paper.pipeline.results.run_experiment``, which trains only runs whose results are missing or stale; with
``--force`` this command exports ``SPARSEDEPTH_FORCE_SINCE`` so each shared run is retrained once.

``--jobs N`` (``auto`` by default: one per GPU, or one per CPU core for profiles whose runs use one thread;
1 for the smoke profile, whose runs are too short to gain)
first trains the chosen notebooks' variants N at a time in separate processes (``sparsedepth run --gpus N``);
the notebooks then find their results ready and only plot. On 2 CPU cores four cpu-profile runs took 110 s
this way against 201 s one after another.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

from ..spec.experiments import EXPERIMENTS, PROFILES, scale
from ..report.html import render_html
from .results import FORCE_ENV, ROOT_ENV, output_root

ALIASES = {"seqlen": "sequence_length", "wd": "weight_decay", "probe": "probe_a_model", "scores": "summary"}
# Notebooks run with their own parameter defaults (a demo on a fixed small run, whatever the profile).
DEFAULTS_ONLY = ("probe_a_model",)
KERNEL = "python3"  # ipykernel's native kernel: the interpreter running this command


def notebook_name(path: Path) -> str:
    """``01_depth.py`` -> ``depth``."""
    return re.sub(r"^\d+[_-]", "", path.stem)


def find_notebooks(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {folder}; run from the repository or pass --notebooks DIR")
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("."))


def to_ipynb(source: Path, out: Path) -> Path:
    """Write the notebook of the percent-format ``source`` to ``out`` (no outputs), for papermill to run."""
    import jupytext
    import nbformat

    nb = jupytext.read(source)
    # the sources name the package's kernel (what JupyterLab opens); papermill runs KERNEL, the interpreter
    # of this command, so reproduce works where that kernel was never installed
    nb.metadata.setdefault("kernelspec", {"name": KERNEL, "display_name": "Python 3", "language": "python"})
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out))
    return out


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks matching any of ``only`` (all when empty); an unknown name raises ValueError."""
    if not only:
        return notebooks
    chosen: list[Path] = []
    for token in only:
        t = ALIASES.get(token, token)
        hits = [p for p in notebooks if t in (p.stem, notebook_name(p)) or p.stem.split("_")[0] == t]
        if not hits:  # a unique prefix ("weight" -> weight_decay) is fine too
            hits = [p for p in notebooks if notebook_name(p).startswith(t)]
            hits = hits if len(hits) == 1 else []
        if not hits:
            names = ", ".join(notebook_name(p) for p in notebooks)
            raise ValueError(f"--only {token!r} matches no notebook; choose from: {names} (aliases: "
                             f"{', '.join(f'{a}={b}' for a, b in ALIASES.items())})")
        chosen += [p for p in hits if p not in chosen]
    return [p for p in notebooks if p in chosen]


def for_profile(notebooks: list[Path], profile: str) -> tuple[list[Path], list[Path]]:
    """(kept, left out): the notebooks of experiments the profile does not run are left out (a rung such as
    ``gpu-long`` runs only some sweeps), and at a rung beside gpu the theory notebook too (a simulation of no
    trained run: it would redraw the gpu profile's figures); the summary and the probe demo always run."""
    from ..report.rungs import RUNGS

    runs = scale(profile).experiments
    left = [p for p in notebooks if any(ALIASES.get(e, e) == notebook_name(p) for e in set(EXPERIMENTS) - set(runs))
            or (profile in RUNGS[1:] and notebook_name(p) == "theory")]
    return [p for p in notebooks if p not in left], left


def plottable(notebooks: list[Path], profile: str) -> tuple[list[Path] | None, list[Path]]:
    """(kept, left out) for ``--no-train``: the sweep notebooks none of whose experiments has results at
    ``profile`` are left out (nothing to plot); kept is None when the profile has no results at all (the
    theory, summary and probe notebooks would only write a profile of nothing)."""
    from .results import experiments_with_results

    done = set(experiments_with_results(profile))
    if not done:
        return None, notebooks
    left = [p for p in notebooks if experiments_of([p]) and not done & set(experiments_of([p]))]
    return [p for p in notebooks if p not in left], left


def parameters_for(path: Path, params: dict) -> dict:
    """The parameters this notebook declares in its ``parameters`` cell (all when it declares none)."""
    import papermill

    declared = set(papermill.inspect_notebook(str(path)))
    if any(n in notebook_name(path) for n in DEFAULTS_ONLY):
        params = {k: v for k, v in params.items() if k == "device" and v != "auto"}
    return {k: v for k, v in params.items() if k in declared} if declared else params


def execute(path: Path, out_dir: Path, params: dict, log_output: bool = True, progress: bool = True) -> dict:
    """Convert one notebook source, run it in place with papermill (from the source's folder) and render it;
    returns {name, status, seconds, output, error}."""
    import papermill

    out = out_dir / f"{path.stem}.ipynb"
    rec = {"name": path.stem, "status": "ok", "seconds": 0.0, "output": str(out), "error": ""}
    t0 = time.time()
    try:
        to_ipynb(path, out)
        papermill.execute_notebook(str(out), str(out), parameters=parameters_for(out, params), kernel_name=KERNEL,
                                   progress_bar=progress, log_output=log_output, cwd=str(path.parent))
    except Exception as e:  # PapermillExecutionError: the partial notebook is already saved
        rec.update(status="failed", error=f"{type(e).__name__}: {_first_line(e)}")
    rec["seconds"] = time.time() - t0
    if out.exists():
        try:
            rec["html"] = str(render_html(out))
        except Exception as e:
            rec.update(status="failed", error=rec["error"] or f"HTML rendering: {type(e).__name__}: {e}")
    return rec


def _first_line(e: Exception) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    # papermill's message starts with a banner; the exception line is the informative one
    tail = [ln for ln in lines if re.match(r"^\w+(Error|Exception)\b", ln.strip())]
    return (tail[-1] if tail else lines[-1] if lines else repr(e)).strip()[:300]


def summary_table(records: list[dict]) -> str:
    rows = [("notebook", "status", "time", "report")] + [
        (r["name"], r["status"], f"{r['seconds']:.1f}s", r.get("html", r["output"])) for r in records]
    total = sum(r["seconds"] for r in records)
    rows.append(("total", "", f"{total:.1f}s", ""))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip() for r in rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=PROFILES, default="cpu", help="scale of every run (default: cpu)")
    parser.add_argument("--force", action="store_true", help="retrain every run even if its results are up to date")
    parser.add_argument("--only", action="append", metavar="NAME[,NAME]",
                        help="only these notebooks (e.g. depth, seqlen, 05, summary); repeatable")
    parser.add_argument("--no-train", dest="train", action="store_false",
                        help="plot results already under paper_results/ and train nothing")
    parser.add_argument("--device", default="auto", help="device for the notebooks' own computations (default: auto)")
    parser.add_argument("--out", type=Path, help="output folder (default: build/notebooks/<profile>)")
    parser.add_argument("--notebooks", type=Path, help="folder of notebooks to run (default: <repo>/notebooks)")
    parser.add_argument("--quiet", action="store_true", help="do not stream cell output, only the progress bar")
    parser.add_argument("--jobs", default="auto",
                        help="train the notebooks' variants this many at a time before running them, each in its "
                             "own process (one per GPU); 1 = train inside the notebooks; auto (default): one per "
                             "GPU, or one per CPU core (at most 8) for profiles whose runs use one thread, 1 for "
                             "smoke")
    parser.add_argument("--list", action="store_true", help="list the notebooks that would run, then stop")


def experiments_of(notebooks: list[Path]) -> list[str]:
    """The experiments whose variants these notebooks train, in notebook order."""
    names = [notebook_name(p) for p in notebooks]
    return [e for name in names for e in EXPERIMENTS if ALIASES.get(e, e) == name]


def jobs_for(args: argparse.Namespace) -> int:
    if args.jobs == "auto":
        from .run_parallel import auto_jobs

        s = scale(args.profile)
        return auto_jobs(s.threads, args.device) if s.parallel_runs else 1
    try:
        n = int(args.jobs)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--jobs must be a positive integer or auto, got {args.jobs!r}")
    return n


def pretrain(args: argparse.Namespace, notebooks: list[Path], jobs: int) -> None:
    """Train what the notebooks need, ``jobs`` runs at a time; failures are left for the notebooks to
    report (they retry the variant and show its error)."""
    from . import run_cli

    exps = experiments_of(notebooks)
    if jobs <= 1 or not exps or not args.train:
        return
    ns = argparse.Namespace(profile=args.profile, device=None if args.device == "auto" else args.device,
                            force=args.force, budget_s=None, gpus=jobs, quiet=True)
    run_cli.train_in_parallel(ns, run_cli.parse_items(args.profile, exps))


def run(args: argparse.Namespace) -> int:
    root = output_root()
    folder = args.notebooks or root / "notebooks"
    only = [t.strip() for item in (args.only or []) for t in item.split(",") if t.strip()]
    try:
        chosen = select(find_notebooks(folder), only)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    chosen, left = for_profile(chosen, args.profile)
    if left:
        print(f"reproduce: profile {args.profile} does not run " + ", ".join(notebook_name(p) for p in left)
              + "; those notebooks are left out", flush=True)
    if not chosen:
        print(f"error: no notebooks to run in {folder} at profile {args.profile}", file=sys.stderr)
        return 2
    if not args.train:
        chosen, unplottable = plottable(chosen, args.profile)
        if chosen is None:
            print(f"reproduce: nothing has been run at profile {args.profile} (no results under "
                  f"paper_results/{args.profile}/); train with `sparsedepth run --profile {args.profile} all` "
                  f"first. No notebook runs.", flush=True)
            return 0
        if unplottable:
            print(f"reproduce: no results of {args.profile}/" + f", {args.profile}/".join(
                notebook_name(p) for p in unplottable) + " yet; those notebooks are left out (--no-train)", flush=True)
    if args.list:
        print("\n".join(f"{p.name}  (--only {notebook_name(p)})" for p in chosen))
        return 0
    try:
        jobs = jobs_for(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = (args.out or root / "build" / "notebooks" / args.profile).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(ROOT_ENV, str(root))  # kernels write into the same tree as this command
    if args.force:
        os.environ[FORCE_ENV] = repr(time.time())
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    params = {"profile": args.profile, "force": bool(args.force), "device": args.device, "train": bool(args.train)}
    print(f"reproduce: profile {args.profile}, {len(chosen)} notebook(s) -> {out_dir}"
          + (" (forced)" if args.force else "") + ("" if args.train else " (no training)"), flush=True)
    pretrain(args, chosen, jobs)
    records = []
    for i, nb in enumerate(chosen, 1):
        print(f"\n=== [{i}/{len(chosen)}] {nb.name} ===", flush=True)
        rec = execute(nb, out_dir, params, log_output=not args.quiet)
        records.append(rec)
        why = f": {rec['error']}" if rec["error"] else ""
        print(f"=== {nb.name}: {rec['status']} in {rec['seconds']:.1f}s{why}", flush=True)
    print("\n" + summary_table(records))
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        print(f"\n{len(failed)} notebook(s) failed: " + ", ".join(f"{r['name']} ({r['error']})" for r in failed)
              + f"\nThe partially executed notebooks are in {out_dir}.", file=sys.stderr)
        return 1
    return 0
