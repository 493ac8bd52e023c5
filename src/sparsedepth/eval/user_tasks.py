"""Your own multiple-choice questions, scored exactly like the packaged zero-shot tasks.

A task file is JSON Lines, one question per line::

    {"context": "Question: Which gas do plants take in?\\nAnswer:", "choices": ["oxygen", "carbon dioxide"], "answer": 1}

- ``context``: the prompt, scored as the condition (may be empty: the model then conditions on EOS);
- ``choices``: two or more answers; choice i is scored as the continuation ``" " + choices[i]`` (the
  default target delimiter of lm-evaluation-harness, as for ARC, PIQA, SciQ ...);
- ``answer``: the index of the correct choice (0-based), or its exact text.

Each question becomes an ``MCDoc`` and goes through the packaged tasks' scorer (``encode_requests``,
``score_tokens``, ``mc_metrics``): ``acc`` compares summed log-likelihoods, ``acc_norm`` divides them by
the choice's length in characters. Blank lines are skipped; any other bad line raises ``EvalError`` naming
the file, the line number and the field.

    from sparsedepth.eval import read_task_file, score_docs, evaluate_task_file
    docs = read_task_file("my_questions.jsonl")
    score_docs(model, tokenizer, docs)                   # {"acc", "acc_norm", "n"}
    evaluate_task_file("runs/x", "my_questions.jsonl")  # also writes runs/x/eval_my_questions.json
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

from .tasks import EvalError, MCDoc, _single_input

FIELDS = ("context", "choices", "answer")
EXAMPLE = '{"context": "Question: ...\\nAnswer:", "choices": ["first", "second"], "answer": 0}'


def _doc(row: Any, task: str, where: str) -> MCDoc:
    """One validated question; ``where`` (``file:line``) prefixes every error."""
    if not isinstance(row, dict):
        raise EvalError(f"{where}: expected a JSON object like {EXAMPLE}, got {type(row).__name__}")
    missing = [f for f in FIELDS if f not in row]
    if missing:
        raise EvalError(f"{where}: missing field(s) {', '.join(map(repr, missing))}; each line needs "
                        f"context, choices and answer, e.g. {EXAMPLE}")
    context, choices, answer = row["context"], row["choices"], row["answer"]
    if not isinstance(context, str):
        raise EvalError(f"{where}: 'context' must be a string, got {type(context).__name__}")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise EvalError(f"{where}: 'choices' must be a list of at least two non-empty strings, got {choices!r}")
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise EvalError(f"{where}: 'answer' must be the index of the correct choice or its text, got {answer!r}")
    if isinstance(answer, str):
        if choices.count(answer) != 1:
            raise EvalError(f"{where}: 'answer' {answer!r} must match exactly one of the choices {choices!r} "
                            f"(or give its 0-based index)")
        answer = choices.index(answer)
    if not 0 <= answer < len(choices):
        raise EvalError(f"{where}: 'answer' {answer} is out of range for {len(choices)} choices (0-based index)")
    return _single_input(task, context, choices, answer)


def task_name(path: str | Path) -> str:
    """The task's name: the file name without ``.jsonl``, restricted to letters, digits, ``-``, ``_``, ``.``."""
    name = Path(path).name.removesuffix(".jsonl")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "task"


def read_task_file(path: str | Path, limit: int | None = None) -> list[MCDoc]:
    """The questions of a JSON Lines task file (the first ``limit`` when given), as MCDocs."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"task file {str(path)!r} not found; pass a JSON Lines file with one question per line")
    if limit is not None and limit < 1:
        raise EvalError(f"limit must be a positive number of questions or None, got {limit}")
    task, docs = task_name(path), []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be one "
                                f"object like {EXAMPLE}") from None
            docs.append(_doc(row, task, where))
            if limit is not None and len(docs) == limit:
                break
    if not docs:
        raise EvalError(f"task file {path} holds no questions; write one JSON object per line, e.g. {EXAMPLE}")
    return docs


def score_docs(model, tokenizer, docs: Sequence[MCDoc], *, batch_size: int = 32, max_len: int | None = None,
               progress: bool = False) -> dict[str, float | int]:
    """``{"acc", "acc_norm", "n"}`` of ``model`` on ``docs``, with the packaged tasks' scorer and tokenisation.

    ``tokenizer``: a TokenData, a ``tokenizers.Tokenizer`` or a Hugging Face tokenizer; ``max_len`` cuts each
    scored sequence from the left (default: ``model.cfg.max_seq_len``)."""
    from .zero_shot import encode_requests, get_encoder, mc_metrics, score_tokens

    encode, eos = get_encoder(tokenizer)
    requests = encode_requests([rq for d in docs for rq in d.requests], encode, eos)
    scores = score_tokens(model, requests, batch_size=batch_size, max_len=max_len, progress=progress)
    return mc_metrics(docs, [ll for ll, _ in scores])


def evaluate_task_file(run_dir: str | Path, task_file: str | Path, *, limit: int | None = None,
                       batch_size: int | None = None, device: str = "auto", out: str | None = None,
                       progress: bool = False) -> dict[str, Any]:
    """Score a run's latest checkpoint on a task file and write ``run_dir/eval_<task>.json`` atomically
    (``out`` names another file in the run directory).

    Result: ``{"task", "file", "sha256", "acc", "acc_norm", "n", "limit", "scorer", "seconds"}``; ``sha256`` is
    the task file's, so a result can be matched to the questions it scored."""
    from ..atomic import atomic_write_json
    from ..train import load_run  # lazy: reading a task file needs no torch

    t0 = time.perf_counter()
    docs = read_task_file(task_file, limit)  # validate before the model loads
    model, _, data = load_run(run_dir, device=device)
    if batch_size is None:
        batch_size = 128 if next(model.parameters()).is_cuda else 32
    result = {"task": task_name(task_file), "file": str(task_file),
              "sha256": hashlib.sha256(Path(task_file).read_bytes()).hexdigest(),
              **score_docs(model, data, docs, batch_size=batch_size, progress=progress),
              "limit": limit, "scorer": "sparsedepth", "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_json(Path(run_dir) / (out or f"eval_{result['task']}.json"), result)
    return result
