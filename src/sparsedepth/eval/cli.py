"""`sparsedepth eval RUN_DIR`: perplexity and zero-shot accuracy of a run directory, written to eval.json.

``--task FILE.jsonl`` scores your own multiple-choice questions instead (see ``eval/user_tasks.py``) and
writes ``eval_<file name>.json``."""
from __future__ import annotations

import argparse
import sys

from ..errors import UserError, one_line
from .tasks import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory written by `sparsedepth train`")
    parser.add_argument("--task", metavar="FILE.jsonl", default=None,
                        help="score your own multiple-choice questions (one JSON object per line: context, "
                             "choices, answer) instead of the packaged tasks; writes eval_<name>.json")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated tasks (default: all: {','.join(TASKS)})")
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each task (default: all)")
    parser.add_argument("--seq-len", type=int, default=None, help="perplexity context length (default: the run's seq_len)")
    parser.add_argument("--ppl-windows", type=int, default=64, help="held-out windows for perplexity (default: 64)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="requests per forward pass (default: 128 on CUDA, 32 on CPU)")
    parser.add_argument("--harness", action="store_true", help="score through lm-evaluation-harness (same numbers)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--out", default=None,
                        help="file name inside RUN_DIR (default: eval.json, or eval_<name>.json with --task)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")


def run_task_file(args: argparse.Namespace) -> int:
    from .user_tasks import evaluate_task_file

    try:
        res = evaluate_task_file(args.run_dir, args.task, limit=args.limit, batch_size=args.batch_size,
                                 device=args.device, out=args.out, progress=args.progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"sparsedepth eval: error: {e}", file=sys.stderr)
        return 2
    print(f"{'task':16s} {'acc':>7s} {'acc_norm':>9s} {'n':>7s}")
    print(f"{res['task']:16s} {res['acc']:7.4f} {res['acc_norm']:9.4f} {res['n']:7d}")
    print(f"wrote {args.run_dir}/{args.out or 'eval_' + res['task'] + '.json'}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.task:
        return run_task_file(args)
    from . import evaluate_run

    args.out = args.out or "eval.json"
    try:
        res = evaluate_run(args.run_dir, tasks=args.tasks, limit=args.limit, ppl_windows=args.ppl_windows,
                           seq_len=args.seq_len, batch_size=args.batch_size, harness=args.harness,
                           device=args.device, out=args.out, progress=args.progress)
    except (UserError, ValueError, FileNotFoundError) as e:  # EvalError, CheckpointError, DataError, ...
        print(f"sparsedepth eval: error: {one_line(e)}", file=sys.stderr)
        return 2
    p = res["perplexity"]
    print(f"perplexity  {p['ppl']:.3f}  (loss {p['loss']:.4f}, seq_len {p['seq_len']}, {p['n_tokens']} tokens)")
    print(f"{'task':16s} {'acc':>7s} {'acc_norm':>9s} {'n':>7s}")
    for name, r in res["tasks"].items():
        print(f"{name:16s} {r['acc']:7.4f} {r['acc_norm']:9.4f} {r['n']:7d}")
    print(f"{'mean':16s} {res['mean_acc']:7.4f} {res['mean_acc_norm']:9.4f}")
    print(f"wrote {args.run_dir}/{args.out}" if args.out else "")
    return 0
