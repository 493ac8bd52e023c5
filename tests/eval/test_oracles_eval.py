"""Evaluation against hand computation: perplexity and the batched scorer on a bigram model whose every
log-probability is known (a table), their argument checks at the boundaries, and evaluate_run's windows,
timings and harness path against direct calls."""
from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_trained_run
from sparsedepth.eval import (TASKS, EvalError, check_tasks, evaluate_run, mc_metrics, perplexity, score_tokens,
                              task_docs)
from sparsedepth.eval.tasks import BUILDERS, _hellaswag_clean
from sparsedepth.eval.zero_shot import encode_requests, split_context, truncated

V = 5


class BigramLM(nn.Module):
    """logits[t] = TABLE[x_t]: p(next | prev) = softmax(TABLE[prev]); a matmul, so autocast changes it."""

    def __init__(self, max_seq_len: int | None = None, vocab: int = V):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=g) * 2)
        if max_seq_len is not None:
            self.cfg = SimpleNamespace(max_seq_len=max_seq_len)

    def forward(self, idx):
        return nn.functional.one_hot(idx, self.table.shape[0]).float() @ self.table


def _logp(model: BigramLM) -> np.ndarray:
    t = model.table.detach().double().numpy()
    return t - np.log(np.exp(t).sum(1, keepdims=True))  # log-softmax of each row


def test_perplexity_is_the_mean_bigram_loss_over_every_position():
    model = BigramLM()  # no cfg: no max_seq_len check
    w = torch.randint(0, V, (10, 5), generator=torch.Generator().manual_seed(1))  # more windows than columns
    lp = _logp(model)
    want = -np.mean([lp[a, b] for row in w.tolist() for a, b in zip(row[:-1], row[1:])])
    res = perplexity(model, w, batch_size=3)
    assert res == pytest.approx({"loss": want, "ppl": math.exp(want), "seq_len": 4, "n_tokens": 40}, rel=1e-6)
    # the smallest windows: one window of one target
    one = perplexity(model, w[:1, :2], batch_size=1)
    assert one["loss"] == pytest.approx(-lp[w[0, 0], w[0, 1]], rel=1e-6) and one["n_tokens"] == 1


def test_perplexity_autocast_runs_in_bfloat16():
    model = BigramLM()
    w = torch.randint(0, V, (4, 9), generator=torch.Generator().manual_seed(2))
    exact = perplexity(model, w)["loss"]
    assert perplexity(model, w, autocast=False)["loss"] == exact  # the default off CUDA
    bf16 = perplexity(model, w, autocast=True)["loss"]
    assert bf16 != exact and bf16 == pytest.approx(exact, rel=2e-2)


@pytest.mark.parametrize("shape, batch, message", [
    ((3,), 1, "windows must be a [n, seq_len + 1] tensor with n >= 1 and seq_len >= 1, got (3,)"),
    ((0, 4), 1, "windows must be a [n, seq_len + 1] tensor with n >= 1 and seq_len >= 1, got (0, 4)"),
    ((2, 1), 1, "windows must be a [n, seq_len + 1] tensor with n >= 1 and seq_len >= 1, got (2, 1)"),
    ((2, 4), 0, "batch_size must be >= 1, got 0"),
    ((2, 6), 1, "windows hold seq_len 5 tokens but the model's max_seq_len is 4; draw windows with seq_len <= 4"),
])
def test_perplexity_bad_input_messages(shape, batch, message):
    with pytest.raises(ValueError) as err:
        perplexity(BigramLM(max_seq_len=4), torch.zeros(shape, dtype=torch.long), batch_size=batch)
    assert str(err.value) == message


def test_perplexity_accepts_windows_of_exactly_max_seq_len():
    assert perplexity(BigramLM(max_seq_len=4), torch.zeros(2, 5, dtype=torch.long))["seq_len"] == 4


def test_score_tokens_on_bigram_log_probabilities():
    """ll = Σ log p(c_t | previous token), greedy = every continuation token is its row's argmax; batches of
    mixed lengths, a context cut from the left to max_len, a continuation longer than max_len."""
    model = BigramLM(max_seq_len=6)
    lp = _logp(model)
    best = lp.argmax(1)
    greedy_cont = [int(best[2]), int(best[best[2]])]
    requests = [([2], greedy_cont), ([0, 1, 3], [4]), ([1, 2, 3, 4, 0, 1, 2], [3, 0]), ([4], [0, 1, 2, 3, 4, 0, 1]),
                ([3, 3], [int(best[3]), (int(best[best[3]]) + 1) % V])]

    def want(ctx, cont, max_len=6):
        full = (ctx + cont)[-(max_len + 1):]
        k = min(len(cont), len(full) - 1)
        pairs = list(zip(full[-k - 1:-1], full[-k:]))
        return sum(lp[a, b] for a, b in pairs), all(best[a] == b for a, b in pairs)

    got = score_tokens(model, requests, batch_size=2)
    for (ll, greedy), (ctx, cont) in zip(got, requests):
        w_ll, w_greedy = want(ctx, cont)
        assert ll == pytest.approx(w_ll, rel=1e-5) and greedy == w_greedy, (ctx, cont)
    assert got[0][1] and not got[4][1]  # all-argmax continuation; the same with its last token changed
    # max_len given explicitly overrides the model's
    (ll, _), = score_tokens(model, [([1, 2, 3, 4, 0, 1, 2], [3, 0])], max_len=3)
    assert ll == pytest.approx(want([1, 2, 3, 4, 0, 1, 2], [3, 0], max_len=3)[0], rel=1e-5)
    # autocast (off by default on CPU) runs the forward in bfloat16: close, not equal
    assert score_tokens(model, requests, autocast=False) == got
    bf16 = [ll for ll, _ in score_tokens(model, requests, autocast=True)]
    assert bf16 != [ll for ll, _ in got] and bf16 == pytest.approx([ll for ll, _ in got], rel=2e-2)
    assert truncated(requests, 6) == [False, False, False, True, False]
    assert truncated([([1], [2] * 6)], 6) == [False]  # exactly max_len tokens: scored whole
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        score_tokens(model, requests, batch_size=0)
    with pytest.raises(ValueError, match="at least one context token"):
        score_tokens(model, [([], [1])])
    with pytest.raises(ValueError, match="pass max_len"):
        score_tokens(BigramLM(), requests)


def test_mc_metrics_of_no_documents_is_nan():
    res = mc_metrics([], [])
    assert math.isnan(res["acc"]) and math.isnan(res["acc_norm"]) and res["n"] == 0


def test_context_whitespace_moves_to_the_continuation():
    assert split_context("Answer: ", "yes") == ("Answer:", " yes")
    assert split_context("Answer:\n\n", " yes") == ("Answer:", "\n\n yes")
    assert split_context("Answer:", " yes") == ("Answer:", " yes")
    enc = lambda texts: [[ord(ch) for ch in t] for t in texts]  # noqa: E731  one id per character
    assert encode_requests([("", "xy"), ("ab ", "c")], enc, eos_id=7) == [([7], [120, 121]), ([97, 98], [32, 99])]
    with pytest.raises(ValueError, match="EOS"):
        encode_requests([("", "xy")], enc, eos_id=None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_trained_run(tmp_path_factory.mktemp("eval_oracles"))


def test_evaluate_run_uses_seed_0_windows_and_times_itself(run):
    from sparsedepth.data import val_windows
    from sparsedepth.train import load_run

    t0 = time.perf_counter()
    res = evaluate_run(run, tasks="copa", limit=2, ppl_windows=1, seq_len=64, out=None)  # seq_len = max_seq_len
    wall = time.perf_counter() - t0
    assert not (run / "eval.json").exists()
    model, _, data = load_run(run, device="cpu")
    assert res["perplexity"] == pytest.approx(perplexity(model, val_windows(data.val, 64, 1, seed=0)), rel=1e-6)
    assert 0 <= res["seconds"] <= wall + 1e-3
    assert res["limit"] == 2 and res["scorer"] == "sparsedepth" and res["n_truncated"] == 0
    with pytest.raises(EvalError, match="ppl_windows must be >= 1, got 0"):
        evaluate_run(run, tasks="copa", ppl_windows=0, out=None)
    with pytest.raises(EvalError, match="seq_len 65 exceeds the model's max_seq_len 64"):
        evaluate_run(run, tasks="copa", seq_len=65, out=None)


def test_evaluate_run_through_the_harness_gives_the_same_numbers(run):
    pytest.importorskip("lm_eval")
    ours = evaluate_run(run, tasks=["copa", "piqa"], limit=6, ppl_windows=1, out=None)
    theirs = evaluate_run(run, tasks=["copa", "piqa"], limit=6, ppl_windows=1, out="harness.json", harness=True)
    assert theirs["scorer"] == "lm_eval" and "lm_eval" not in theirs and theirs["limit"] == 6
    assert theirs["tasks"] == ours["tasks"] and theirs["mean_acc"] == ours["mean_acc"]
    assert all(r["n"] == 6 for r in theirs["tasks"].values())
    assert json.loads((run / "harness.json").read_text())["scorer"] == "lm_eval"


def test_harness_rolling_loglikelihood_is_the_bigram_sum_over_windows(run):
    """lm-eval's rolling perplexity scores every token once, the first after EOS, in windows of max_length:
    for a bigram model the total is Σ log p(t_i | t_{i-1}) however the windows fall."""
    pytest.importorskip("lm_eval")
    from sparsedepth.eval.lm_eval_adapter import SparsedepthLM
    from sparsedepth.train import load_run

    _, _, data = load_run(run, device="cpu")
    vocab = data.tokenizer.get_vocab_size()
    model = BigramLM(max_seq_len=64, vocab=vocab)
    lp = _logp(model)
    text = "the quick brown fox jumps over the lazy dog and then the dog sleeps"
    for max_length in (4, 64):
        lm = SparsedepthLM(model=model, tokenizer=data, max_length=max_length, batch_size=3, progress=False)
        ids = [lm.eot_token_id] + lm.tok_encode(text)
        assert len(ids) > 2 * max_length or max_length == 64
        (got,) = lm.loglikelihood_rolling([SimpleNamespace(args=(text,))])
        assert got == pytest.approx(sum(lp[a, b] for a, b in zip(ids[:-1], ids[1:])), rel=1e-5), max_length
    # loglikelihood cuts to the adapter's max_length, not the model's: a 4-token window scores the last 4 pairs
    lm = SparsedepthLM(model=model, tokenizer=data, max_length=4, progress=False)
    ctx, cont = "the quick brown fox", " jumps over the lazy dog and then"
    whole = lm.tok_encode(ctx + cont)
    n_cont = len(whole) - len(lm.tok_encode(ctx))
    assert n_cont > 4
    ((ll, _),) = lm.loglikelihood([SimpleNamespace(args=(ctx, cont))])
    assert ll == pytest.approx(sum(lp[a, b] for a, b in zip(whole[-5:-1], whole[-4:])), rel=1e-5)


def test_every_doc_names_its_task():
    for name in TASKS:
        assert {d.task for d in task_docs(name, 3)} == {name}


def test_prompt_builders_on_hand_made_rows():
    """Rows shaped like the source sets where the real data hides a mistake: a blank followed by "'s", a
    support passage with leading whitespace, an answer key with a leading space, WikiHow brackets."""
    wg = BUILDERS["winogrande"]({"sentence": "Ann lent Beth a pen because _'s pen broke.", "option1": "Ann",
                                 "option2": "Beth", "answer": "2"})
    assert wg.contexts == ("Ann lent Beth a pen because Ann", "Ann lent Beth a pen because Beth")
    assert wg.continuations == (" 's pen broke.",) * 2 and wg.norm_lengths == (14, 14) and wg.gold == 1
    sq = BUILDERS["sciq"]({"support": "\n  Cells divide. ", "question": "What divides?", "distractor1": "rocks",
                           "distractor2": "air", "distractor3": "light", "correct_answer": "cells"})
    assert sq.contexts[0] == "Cells divide. \nQuestion: What divides?\nAnswer:" and sq.gold == 3
    ob = BUILDERS["openbookqa"]({"question_stem": "The sun is", "answerKey": " B",
                                 "choices": {"text": ["cold", "hot"], "label": ["A", "B"]}})
    assert ob.gold == 1 and ob.requests == [("The sun is", " cold"), ("The sun is", " hot")]
    # strip, " [title]" -> ". ", brackets dropped, then one pass of double spaces to single (lm-eval's order)
    assert _hellaswag_clean(" Cooking [title] Boil water. [step] Stir  well ") == "Cooking. Boil water. Stir well"


def test_no_tasks_is_a_clear_error():
    with pytest.raises(EvalError) as err:
        check_tasks(" , ")
    assert str(err.value) == f"no tasks given; known tasks: {', '.join(TASKS)}"


class _CharTokenizer:
    """A transformers-style tokenizer of one id per letter a..e (e = 4 is also EOS)."""

    eos_token_id = 4

    def encode(self, text, add_special_tokens=False):
        assert not add_special_tokens
        return [ord(ch) - ord("a") for ch in text]


def test_score_docs_passes_max_len_and_the_eos_on_to_the_scorer():
    """score_docs on a bigram model, by hand: an empty context conditions on EOS, and with max_len=2 only the
    last two tokens of a four-token continuation are scored, which here changes the answer."""
    from sparsedepth.eval import MCDoc, score_docs

    model = BigramLM(max_seq_len=8)
    lp = _logp(model)
    ids = lambda s: [ord(ch) - ord("a") for ch in s]  # noqa: E731

    def ll(context: str, cont: str, max_len: int) -> float:
        full = ([_CharTokenizer.eos_token_id] if not context else ids(context)) + ids(cont)
        full = full[-(max_len + 1):]
        k = min(len(cont), len(full) - 1)
        return sum(lp[a, b] for a, b in zip(full[-k - 1:-1], full[-k:]))

    words = ["".join("abcde"[(i * 7 + j * j * 3 + j) % 5] for j in range(4)) for i in range(40)]
    pair = next((x, y) for x in words for y in words
                if (ll("c", x, 8) > ll("c", y, 8)) != (ll("c", x, 2) > ll("c", y, 2)))
    winner_at_2 = 0 if ll("c", pair[0], 2) > ll("c", pair[1], 2) else 1
    doc = MCDoc("t", ("c", "c"), pair, (4, 4), gold=winner_at_2)
    assert score_docs(model, _CharTokenizer(), [doc], max_len=2)["acc"] == 1.0
    assert score_docs(model, _CharTokenizer(), [doc])["acc"] == 0.0  # the model's max_seq_len: the other choice
    # an empty context: each choice's first letter is conditioned on EOS (e)
    first = [a for a in "abcd"]
    gold = int(np.argmax([lp[4, ids(a)[0]] for a in first]))
    empty = MCDoc("t", ("",) * 4, tuple(first), (1,) * 4, gold=gold)
    assert score_docs(model, _CharTokenizer(), [empty])["acc"] == 1.0
