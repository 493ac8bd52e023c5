"""Batched zero-shot multiple-choice scoring, with lm-evaluation-harness's definitions.

For a question with choices i = 1..n scored as continuations c_i of contexts x_i:

    ll_i     = sum_t log p(c_i[t] | x_i, c_i[:t])          (summed token log-likelihood)
    acc      = 1[argmax_i ll_i == gold]
    acc_norm = 1[argmax_i ll_i / len(choice_i) == gold]     (length in characters, as lm-eval)

Tokenisation matches lm-eval's causal models: trailing spaces of the context move to the continuation,
then ``whole = enc(context + continuation)``, ``ctx = enc(context)``, ``cont = whole[len(ctx):]`` (no
special tokens). The scored sequence ``(ctx + cont)[-(T+1):]`` is cut from the left to the model's
``max_seq_len`` T. A continuation longer than T then loses its first tokens, and its log-likelihood covers
only the last T: such requests are counted (``n_truncated``, and ``n_truncated_by_task``) and reported on
stderr, never dropped silently. Requests are sorted by length (longest first, ties by tokens, so the batches do not
depend on the order they came in), right-padded and run one forward pass per batch: with causal attention
the padding never influences the scored positions.
"""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .request_cache import cached_encode
from .tasks import TASKS, MCDoc, check_tasks, task_docs

Encoder = Callable[[list[str]], list[list[int]]]


def get_encoder(tokenizer: Any) -> tuple[Encoder, int | None]:
    """(batch encoder without special tokens, EOS id) for a TokenData, a ``tokenizers.Tokenizer`` or a
    Hugging Face tokenizer."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # TokenData wraps a tokenizers.Tokenizer
    if hasattr(tok, "encode_batch") and hasattr(tok, "token_to_id"):  # tokenizers.Tokenizer
        eos = getattr(tokenizer, "eos_id", None)
        if eos is None:
            eos = tok.token_to_id("<|endoftext|>")
        return (lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]), eos
    if hasattr(tok, "encode"):  # transformers tokenizer
        return (lambda texts: [tok.encode(t, add_special_tokens=False) for t in texts]), getattr(tok, "eos_token_id", None)
    raise TypeError(f"tokenizer must be a TokenData, tokenizers.Tokenizer or transformers tokenizer, got {type(tokenizer).__name__}")


def split_context(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval moves the context's trailing whitespace to the front of the continuation."""
    n = len(context) - len(context.rstrip())
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


def encode_requests(requests: Sequence[tuple[str, str]], encode: Encoder, eos_id: int | None) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) for each (context, continuation), as lm-eval's causal models do.

    An empty context is replaced by the EOS token (lm-eval's ``prefix_token_id``)."""
    pairs = [split_context(c, k) for c, k in requests]
    texts = sorted({c for c, _ in pairs if c} | {c + k for c, k in pairs if c}
                   | {k for c, k in pairs if not c})
    ids = dict(zip(texts, encode(texts)))
    out = []
    for ctx, cont in pairs:
        if not ctx:
            if eos_id is None:
                raise ValueError("an empty context needs an EOS token to condition on; the tokenizer has none")
            out.append(([eos_id], ids[cont]))
            continue
        c = ids[ctx]
        out.append((c, ids[ctx + cont][len(c):]))
    return out


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _max_len(model: torch.nn.Module, max_len: int | None) -> int:
    if max_len is not None:
        return max_len
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "max_seq_len"):
        raise ValueError("pass max_len: the model has no cfg.max_seq_len to truncate contexts to")
    return cfg.max_seq_len


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """no_grad + eval mode, restoring the training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


def _batch(seqs: Sequence[list[int]], n_cont: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Inputs of a batch of sequences (longest first), right-padded to ``[B, len(seqs[0]) - 1]``, and its
    scored positions as flat arrays (row, column, target token): the last ``n_cont[b]`` inputs of row b."""
    full = np.zeros((len(seqs), len(seqs[0])), dtype=np.int64)  # numpy: filling rows costs a tenth of torch's
    for b, s in enumerate(seqs):
        full[b, :len(s)] = s
    k = np.asarray(n_cont, dtype=np.int64)
    rows = np.repeat(np.arange(len(seqs)), k)
    first = np.array([len(s) - 1 for s in seqs]) - k  # column of each row's first scored position
    cols = np.repeat(first, k) + np.arange(len(rows)) - np.repeat(np.cumsum(k) - k, k)
    return full[:, :-1], rows, cols, full[rows, cols + 1]


def score_tokens(model: torch.nn.Module, requests: Sequence[tuple[list[int], list[int]]], *, batch_size: int = 32,
                 max_len: int | None = None, autocast: bool | None = None,
                 progress: bool = False) -> list[tuple[float, bool]]:
    """(log-likelihood, is_greedy) of each continuation given its context, lm-eval's ``_loglikelihood_tokens``.

    ``max_len`` defaults to ``model.cfg.max_seq_len``; ``autocast`` (default: on CUDA) runs the forward in
    bfloat16; log-softmax and sums are float32. ``is_greedy``: every continuation token is the argmax.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_len = _max_len(model, max_len)
    device = _device(model)
    autocast = device.type == "cuda" if autocast is None else autocast
    seqs, n_cont = [], []
    for ctx, cont in requests:
        if not ctx:
            raise ValueError("every request needs at least one context token (lm-eval uses EOS for empty contexts)")
        full = (list(ctx) + list(cont))[-(max_len + 1):]
        seqs.append(full)
        n_cont.append(min(len(cont), len(full) - 1))
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), seqs[i]))
    # The loop never waits for the device: each batch goes up in one copy (from pinned memory on CUDA) and the
    # scores stay on the device until the end. A per-batch torch.tensor(list) or .tolist() would stall the host
    # until the GPU, often shared with training runs, had caught up, leaving it idle while the next batch is built.
    ll = torch.zeros(len(seqs), device=device)  # summed log-likelihood per request
    miss = torch.zeros(len(seqs), device=device)  # continuation tokens that are not the argmax
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seqs), desc="scoring", unit="req")  # counts batches queued, not finished
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            inputs, rows, cols, tgts = _batch([seqs[i] for i in idx], [n_cont[i] for i in idx])
            packed = torch.from_numpy(np.concatenate([inputs.ravel(), rows, cols, tgts, np.asarray(idx)[rows]]))
            if device.type == "cuda":
                packed = packed.pin_memory()
            x, r, c, t, owner = packed.to(device, non_blocking=True).split([inputs.size] + [len(rows)] * 4)
            ctx_mgr = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with ctx_mgr:
                logits = _logits(model, x.view(inputs.shape))
            sel = logits[r, c].float().log_softmax(-1)  # only the scored positions: [n_scored, V]
            ll.index_add_(0, owner, sel.gather(1, t[:, None])[:, 0])
            miss.index_add_(0, owner, 1.0 - (sel.argmax(-1) == t).float())
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    lls, misses = torch.stack([ll, miss]).tolist()
    return [(v, m == 0) for v, m in zip(lls, misses)]


def truncated(requests: Sequence[tuple[list[int], list[int]]], max_len: int) -> list[bool]:
    """Per request: whether ``score_tokens`` scores only part of its continuation (longer than ``max_len``)."""
    return [len(cont) > max_len for _, cont in requests]


def mc_metrics(docs: Sequence[MCDoc], lls: Sequence[float]) -> dict[str, float | int]:
    """acc and acc_norm of ``docs`` given the flat log-likelihoods of their choices (doc by doc, in order).

    Ties go to the first maximum (numpy argmax), as in lm-eval."""
    if len(lls) != sum(len(d.continuations) for d in docs):
        raise ValueError(f"{len(lls)} log-likelihoods for {sum(len(d.continuations) for d in docs)} choices")
    acc = acc_norm = 0
    pos = 0
    for d in docs:
        v = np.asarray(lls[pos:pos + len(d.continuations)], dtype=np.float64)
        pos += len(d.continuations)
        acc += int(np.argmax(v) == d.gold)
        acc_norm += int(np.argmax(v / np.asarray(d.norm_lengths, dtype=np.float64)) == d.gold)
    n = len(docs)
    return {"acc": acc / n if n else float("nan"), "acc_norm": acc_norm / n if n else float("nan"), "n": n}


def summarize(per_task: dict[str, dict]) -> dict[str, Any]:
    """Unweighted means over tasks of acc and acc_norm."""
    return {"tasks": per_task,
            "mean_acc": float(np.mean([v["acc"] for v in per_task.values()])),
            "mean_acc_norm": float(np.mean([v["acc_norm"] for v in per_task.values()]))}


def zero_shot(model: torch.nn.Module, tokenizer: Any, tasks: Sequence[str] | str = TASKS, limit: int | None = None,
              batch_size: int = 32, progress: bool = False, max_len: int | None = None,
              cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Zero-shot accuracy on the shipped sets: ``{"tasks": {name: {"acc", "acc_norm", "n"}}, "mean_acc",
    "mean_acc_norm", "n_requests", "seconds", "stage_seconds"}`` (docs, encode, score). ``limit`` keeps the
    first N rows of each task.

    All tasks' requests are scored in one pool (one forward per batch of ``batch_size`` requests).
    ``cache_dir``: where the tokenised requests are kept for the next call (``request_cache``; None: not kept).
    """
    t0 = time.perf_counter()
    names = check_tasks(tasks)
    docs = {name: task_docs(name, limit) for name in names}
    requests = [rq for name in names for d in docs[name] for rq in d.requests]
    t_docs = time.perf_counter()
    encode, eos = get_encoder(tokenizer)
    token_reqs = cached_encode(requests, tokenizer, eos, lambda: encode_requests(requests, encode, eos), cache_dir)
    t_encode = time.perf_counter()
    scores = score_tokens(model, token_reqs, batch_size=batch_size, max_len=max_len, progress=progress)
    t_score = time.perf_counter()
    cut = truncated(token_reqs, _max_len(model, max_len))
    per_task, by_task, pos = {}, {}, 0
    for name in names:
        n = sum(len(d.continuations) for d in docs[name])
        per_task[name] = mc_metrics(docs[name], [ll for ll, _ in scores[pos:pos + n]])
        by_task[name] = sum(cut[pos:pos + n])
        pos += n
    out = summarize(per_task)
    out["n_requests"] = len(requests)
    out["n_truncated"], out["n_truncated_by_task"] = sum(cut), by_task
    if out["n_truncated"]:
        print(f"warning: {out['n_truncated']} of {len(requests)} zero-shot continuations are longer than the "
              f"model's context of {_max_len(model, max_len)} tokens and were scored on their last tokens only "
              f"(n_truncated_by_task in the result)", file=sys.stderr)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    # where the time goes (reading the sets, tokenizing, scoring): on an H200 shared with 2-3 training runs,
    # gpu-profile runs spent about 2 s on the first two and 19-61 s scoring, where their d=512 forward passes
    # should take a few seconds; `sparsedepth bench --only eval` splits the scorer's time
    out["stage_seconds"] = {"docs": round(t_docs - t0, 3), "encode": round(t_encode - t_docs, 3),
                            "score": round(t_score - t_encode, 3)}
    return out
