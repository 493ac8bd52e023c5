"""Evaluation: held-out perplexity and zero-shot multiple-choice accuracy (lm-evaluation-harness definitions).

    from sparsedepth.eval import perplexity, zero_shot, evaluate_run, TASKS

The evaluation sets ship inside the package (``eval/data/<task>.jsonl.xz``); ``lm_eval_adapter`` gives
the same numbers through lm-evaluation-harness. Your own questions (a JSON Lines file of context, choices,
answer) go through the same scorer with ``read_task_file``, ``score_docs`` and ``evaluate_task_file``
(``sparsedepth.eval.user_tasks``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch

from .perplexity import perplexity
from .tasks import TASKS, EvalError, MCDoc, check_tasks, load_rows, task_docs
from .user_tasks import evaluate_task_file, read_task_file, score_docs
from .zero_shot import mc_metrics, score_tokens, zero_shot

__all__ = ["CODE_VERSION", "TASKS", "EvalError", "MCDoc", "check_tasks", "default_batch_size", "evaluate_run",
           "evaluate_task_file", "load_rows", "mc_metrics", "perplexity", "read_task_file", "score_docs",
           "score_tokens", "task_docs", "zero_shot"]

PPL_WINDOWS = 64  # held-out windows for perplexity (64 x T tokens)
# Bump when a change alters what perplexity or the zero-shot scoring returns: cached evaluations of runs then
# count as stale. tests/eval/test_eval_code_version.py holds the digest of each version's outputs on a tiny fixed
# model and fails when the outputs change while this number does not.
CODE_VERSION = 1


def default_batch_size(device: torch.device) -> int:
    """Zero-shot requests per forward pass when none is given: 128 on CUDA, 32 elsewhere."""
    return 128 if device.type == "cuda" else 32


def evaluate_run(run_dir: str | Path, *, tasks: Sequence[str] | str = TASKS, limit: int | None = None,
                 ppl_windows: int = PPL_WINDOWS, seq_len: int | None = None, batch_size: int | None = None,
                 harness: bool = False, device: str = "auto", out: str | None = "eval.json",
                 progress: bool = False, root: str | Path | None = None) -> dict[str, Any]:
    """Perplexity on the run's validation split at ``seq_len`` (default: the run's training seq_len) and
    zero-shot accuracy of its latest checkpoint; writes ``run_dir/out`` atomically (``out=None``: don't).

    Result: ``{"perplexity": {"loss", "ppl", "seq_len", "n_tokens"}, "tasks": {name: {"acc", "acc_norm",
    "n"}}, "mean_acc", "mean_acc_norm", "limit", "scorer", "seconds", "stage_seconds",
    "zero_shot_stage_seconds"}`` (load, perplexity, zero_shot; the last split into docs, encode and score).
    ``harness=True`` scores through lm-evaluation-harness instead of the built-in scorer (same numbers,
    slower). ``batch_size`` (requests per forward) defaults to 128 on CUDA and 32 elsewhere; all 11 sets are
    74,560 requests, whose score stage took 19-61 s on an H200 shared with training runs (d=512 models, while the
    scorer still waited for the device after every batch; ``sparsedepth bench --only eval`` times it).
    ``root``: where the run's relative data paths start (default: the current folder)."""
    from ..atomic import atomic_write_json
    from ..data import at_root, val_windows
    from ..train import load_run  # lazy: evaluation of in-memory models needs no trainer

    names = check_tasks(tasks)
    if ppl_windows < 1:
        raise EvalError(f"ppl_windows must be >= 1, got {ppl_windows}")
    t0 = time.perf_counter()
    model, cfg, data = load_run(run_dir, device=device, root=root)
    t_load = time.perf_counter()
    seq_len = seq_len or cfg.seq_len
    if seq_len > model.cfg.max_seq_len:
        raise EvalError(f"seq_len {seq_len} exceeds the model's max_seq_len {model.cfg.max_seq_len}")
    if batch_size is None:
        batch_size = default_batch_size(next(model.parameters()).device)
    windows = val_windows(data.val, seq_len, ppl_windows, seed=0)
    ppl = perplexity(model, windows, batch_size=max(1, min(batch_size, 16)))
    t_ppl = time.perf_counter()
    if harness:
        from .lm_eval_adapter import lm_eval_zero_shot

        zs = lm_eval_zero_shot(model, data, names, limit=limit, batch_size=batch_size, progress=progress)
        zs.pop("lm_eval")
    else:
        zs = zero_shot(model, data, names, limit=limit, batch_size=batch_size, progress=progress,
                       cache_dir=Path(at_root(cfg.data, root).cache_dir) / "eval-requests")
    result = {"perplexity": ppl, "tasks": zs["tasks"], "mean_acc": zs["mean_acc"],
              "mean_acc_norm": zs["mean_acc_norm"], "limit": limit, "scorer": "lm_eval" if harness else "sparsedepth",
              "n_truncated": zs.get("n_truncated"),  # continuations longer than the context (built-in scorer)
              "seconds": round(time.perf_counter() - t0, 3),
              "stage_seconds": {"load": round(t_load - t0, 3), "perplexity": round(t_ppl - t_load, 3),
                                "zero_shot": round(time.perf_counter() - t_ppl, 3)},
              "zero_shot_stage_seconds": zs.get("stage_seconds")}  # None through lm-eval
    if out is not None:
        atomic_write_json(Path(run_dir) / out, result)
    return result
