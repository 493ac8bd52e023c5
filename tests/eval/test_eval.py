"""Evaluation: packaged sets, lm-eval prompts, the batched scorer, perplexity, evaluate_run/CLI, lm-eval agreement."""
from __future__ import annotations

import json
import lzma
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from conftest import load_script, tiny_trained_run
from sparsedepth.cli import main as cli_main
from sparsedepth.config import ModelConfig
from sparsedepth.data import load_documents, train_bpe
from sparsedepth.eval import (TASKS, EvalError, MCDoc, evaluate_run, load_rows, mc_metrics, perplexity,
                              score_tokens, task_docs, zero_shot)
from sparsedepth.eval import tasks as tasks_mod
from sparsedepth.eval.zero_shot import encode_requests, get_encoder
from sparsedepth.model import build_model


# Rows per set (validation splits, as documented with the shipped data) and choices per question.
ROWS = {"arc_easy": 570, "arc_challenge": 299, "hellaswag": 10042, "piqa": 1838, "sciq": 1000, "winogrande": 1267,
        "openbookqa": 500, "boolq": 3270, "copa": 100, "social_iqa": 1954, "commonsense_qa": 1221}
N_CHOICES = {"arc_easy": {3, 4, 5}, "arc_challenge": {3, 4, 5}, "hellaswag": {4}, "piqa": {2}, "sciq": {4},
             "winogrande": {2}, "openbookqa": {4}, "boolq": {2}, "copa": {2}, "social_iqa": {3}, "commonsense_qa": {5}}


@pytest.fixture(scope="module")
def tok():
    """A small byte-level BPE trained on the packaged Wikipedia sample."""
    return train_bpe(load_documents("embedded", max_docs=60), 400, progress=False)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=400, d_model=32, n_layers=2, n_heads=2, max_seq_len=128))


class UniformLM(nn.Module):
    """Every token has probability 1/V: ll(continuation) = -n_tokens * log V, so shorter wins on acc."""

    def __init__(self, vocab: int, max_seq_len: int = 512):
        super().__init__()
        self.cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layers=1, n_heads=2, max_seq_len=max_seq_len)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        assert idx.shape[1] <= self.cfg.max_seq_len
        return torch.zeros(*idx.shape, self.cfg.vocab_size) + self.dummy


def test_packaged_sets_rows_and_labels():
    assert set(TASKS) == set(ROWS)
    for name in TASKS:
        docs = task_docs(name)
        assert len(docs) == ROWS[name], name
        for d in docs:
            n = len(d.continuations)
            assert n in N_CHOICES[name] and len(d.contexts) == len(d.norm_lengths) == n, name
            assert 0 <= d.gold < n and all(c for c in d.contexts) and min(d.norm_lengths) > 0, name
    golds = [d.gold for d in task_docs("boolq")]
    assert 0.5 < np.mean(golds) < 0.7  # BoolQ validation is ~62% "yes": labels were not all flattened to one value
    assert load_rows("copa", limit=3) == load_rows("copa")[:3]  # limit = first N rows, deterministic


def test_packaged_data_is_small():
    sizes = {p.name: p.stat().st_size for p in tasks_mod.DATA_DIR.glob("*.jsonl.xz")}
    assert len(sizes) == len(TASKS) and sum(sizes.values()) < 6e6


def test_requests_on_hand_checked_rows():
    arc = task_docs("arc_easy", 1)[0]
    assert arc.requests[0] == ("Question: Which technology was developed most recently?\nAnswer:", " cellular telephone")
    assert arc.gold == 0 and arc.norm_lengths == (18, 10, 12, 8)  # len(choice) without the leading space
    hs = task_docs("hellaswag", 1)[0]
    assert hs.contexts[0] == "Roof shingle removal: A man is sitting on a roof. He"
    assert hs.continuations[hs.gold] == " starts pulling up roofing on a roof." and hs.gold == 3
    wg = task_docs("winogrande", 1)[0]  # partial evaluation: option fills the blank, the rest is scored
    assert wg.contexts == ("Sarah was a much better surgeon than Maria so Sarah",
                           "Sarah was a much better surgeon than Maria so Maria")
    assert wg.continuations == (" always got the easier cases.",) * 2 and wg.gold == 1
    copa = task_docs("copa", 1)[0]  # lm-eval's delimiter plus the choice's own space: two spaces
    assert copa.contexts[0] == "The man turned on the faucet therefore"
    assert copa.continuations == ("  the toilet filled with water.", "  water flowed from the spout.") and copa.gold == 1
    bq = task_docs("boolq", 1)[0]
    assert bq.contexts[0].endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert bq.continuations == (" no", " yes") and bq.gold == 0
    sq = task_docs("sciq", 1)[0]
    assert sq.requests[3] == ("\nQuestion: Who proposed the theory of evolution by natural selection?\nAnswer:", " darwin")
    si = task_docs("social_iqa", 1)[0]
    assert si.requests[2] == ("Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need "
                              "to do before this?\nA:", " Find somewhere to go") and si.gold == 2
    cq = task_docs("commonsense_qa", 1)[0]
    assert cq.contexts[0].endswith("\nA. bank\nB. library\nC. department store\nD. mall\nE. new york\nAnswer:")
    assert cq.continuations == (" A", " B", " C", " D", " E") and cq.gold == 0
    ob = task_docs("openbookqa", 1)[0]
    assert ob.contexts[0].startswith("Frilled sharks") and ob.contexts[0].endswith("known as")
    pq = task_docs("piqa", 1)[0]
    assert pq.contexts[0] == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:" and pq.gold == 0


def test_bad_input_errors(monkeypatch, tmp_path):
    with pytest.raises(EvalError, match="known tasks: arc_easy, arc_challenge"):
        task_docs("mmlu")
    with pytest.raises(EvalError, match="unknown task"):
        tasks_mod.check_tasks("copa,nope")
    with pytest.raises(EvalError, match="limit"):
        load_rows("copa", limit=0)
    monkeypatch.setattr(tasks_mod, "DATA_DIR", tmp_path)
    with pytest.raises(EvalError, match=r"copa\.jsonl\.xz is missing.*scripts/pack_eval_sets\.py"):
        task_docs("copa")


def test_metrics_on_controlled_loglikelihoods():
    docs = [MCDoc("t", ("c",) * 2, (" ab", " abcdefghij"), (2, 10), gold=1),  # acc wrong, acc_norm right
            MCDoc("t", ("c",) * 2, (" ab", " abcdefghij"), (2, 10), gold=0),  # acc right, acc_norm wrong
            MCDoc("t", ("c",) * 3, (" a", " b", " c"), (1, 1, 1), gold=2)]  # tie -> first max, as numpy
    lls = [-4.0, -10.0, -4.0, -10.0, -1.0, -3.0, -1.0]
    assert mc_metrics(docs, lls) == {"acc": 1 / 3, "acc_norm": 1 / 3, "n": 3}
    lls[6] = -0.5
    assert mc_metrics(docs, lls) == {"acc": 2 / 3, "acc_norm": 2 / 3, "n": 3}
    with pytest.raises(ValueError, match="log-likelihoods"):
        mc_metrics(docs, lls[:-1])


def test_uniform_model_prefers_short_continuations(tok):
    """With p = 1/V everywhere, acc picks the fewest tokens and acc_norm the fewest tokens per character."""
    v = tok.get_vocab_size()
    res = zero_shot(UniformLM(v), tok, tasks=["piqa", "arc_easy"], limit=40, batch_size=7)
    for name in ("piqa", "arc_easy"):
        acc = acc_norm = 0
        for d in task_docs(name, 40):
            n_tok = [len(tok.encode(c + k, add_special_tokens=False).ids) - len(tok.encode(c, add_special_tokens=False).ids)
                     for c, k in d.requests]
            lls = -np.array(n_tok) * math.log(v)
            acc += int(np.argmax(lls) == d.gold)
            acc_norm += int(np.argmax(lls / np.array(d.norm_lengths)) == d.gold)
        assert res["tasks"][name] == pytest.approx({"acc": acc / 40, "acc_norm": acc_norm / 40, "n": 40})
    assert res["tasks"]["arc_easy"]["acc"] != res["tasks"]["arc_easy"]["acc_norm"]
    assert res["mean_acc"] == pytest.approx((res["tasks"]["piqa"]["acc"] + res["tasks"]["arc_easy"]["acc"]) / 2)


def test_score_tokens_matches_direct_computation_and_truncates(tiny_model):
    g = torch.Generator().manual_seed(1)
    ctx = torch.randint(0, 400, (150,), generator=g).tolist()  # longer than max_seq_len 128
    cont = torch.randint(0, 400, (5,), generator=g).tolist()
    for c in (ctx[:20], ctx):
        (ll, greedy), = score_tokens(tiny_model, [(c, cont)], batch_size=4)
        full = (c + cont)[-129:]  # truncated from the left to max_seq_len + 1
        with torch.no_grad():
            lp = tiny_model(torch.tensor([full[:-1]])).logits[0].float().log_softmax(-1)
        pos = range(len(full) - 1 - len(cont), len(full) - 1)
        want = sum(lp[p, full[p + 1]].item() for p in pos)
        assert ll == pytest.approx(want, abs=1e-4)
        assert greedy == all(lp[p].argmax().item() == full[p + 1] for p in pos)


def test_batched_equals_unbatched(tiny_model, tok):
    docs = [d for name in ("copa", "winogrande", "boolq") for d in task_docs(name, 4)]
    enc, eos = get_encoder(tok)
    reqs = encode_requests([r for d in docs for r in d.requests], enc, eos)
    one = score_tokens(tiny_model, reqs, batch_size=1)
    many = score_tokens(tiny_model, reqs, batch_size=16)
    np.testing.assert_allclose([x for x, _ in one], [x for x, _ in many], rtol=0, atol=1e-4)
    assert [g for _, g in one] == [g for _, g in many]
    shuffled = list(range(len(reqs)))
    random.Random(0).shuffle(shuffled)  # request order does not change the batches (sorted by length, tokens)
    again = score_tokens(tiny_model, [reqs[i] for i in shuffled], batch_size=16)
    assert [again[shuffled.index(i)] for i in range(len(reqs))] == many
    a = zero_shot(tiny_model, tok, tasks="copa,arc_easy", limit=5, batch_size=1)
    b = zero_shot(tiny_model, tok, tasks="copa,arc_easy", limit=5, batch_size=32)
    assert a["tasks"] == b["tasks"]


def test_perplexity_equals_exp_model_loss(tiny_model):
    w = torch.randint(0, 400, (5, 65))
    tiny_model.train()
    res = perplexity(tiny_model, w, batch_size=2)
    assert tiny_model.training  # the training flag is restored
    tiny_model.eval()
    with torch.no_grad():
        want = tiny_model(w[:, :-1], w[:, 1:]).lm_loss.item()
    assert res["loss"] == pytest.approx(want, rel=1e-5)
    assert res["ppl"] == pytest.approx(math.exp(want), rel=1e-5)
    assert res["seq_len"] == 64 and res["n_tokens"] == 5 * 64
    with pytest.raises(ValueError, match="max_seq_len"):
        perplexity(tiny_model, torch.zeros(2, 130, dtype=torch.long))


def test_evaluate_run_and_cli(tmp_path, capsys):
    run = tiny_trained_run(tmp_path)
    res = evaluate_run(run, tasks=["copa", "piqa"], limit=4, ppl_windows=3)
    assert json.loads((run / "eval.json").read_text()) == json.loads(json.dumps(res))
    assert res["perplexity"]["seq_len"] == 32 and res["perplexity"]["n_tokens"] == 3 * 32
    assert math.isclose(res["perplexity"]["ppl"], math.exp(res["perplexity"]["loss"]))
    assert set(res["tasks"]) == {"copa", "piqa"} and all(r["n"] == 4 for r in res["tasks"].values())
    assert {"perplexity", "tasks", "mean_acc", "mean_acc_norm"} <= set(res)
    stages = res["stage_seconds"]
    assert set(stages) == {"load", "perplexity", "zero_shot"} and all(v >= 0 for v in stages.values())
    assert sum(stages.values()) <= res["seconds"] + 0.01
    zs_stages = res["zero_shot_stage_seconds"]
    assert set(zs_stages) == {"docs", "encode", "score"} and all(v >= 0 for v in zs_stages.values())
    assert sum(zs_stages.values()) <= stages["zero_shot"] + 0.01
    assert len(list(tmp_path.rglob("eval-requests/*.npz"))) == 1  # kept beside the run's token cache
    again = evaluate_run(run, tasks=["copa", "piqa"], limit=4, ppl_windows=3, out=None)
    assert again["tasks"] == res["tasks"]  # read back from that cache: the same scores
    assert cli_main(["eval", str(run), "--tasks", "copa", "--limit", "2", "--seq-len", "16", "--out", "e2.json"]) == 0
    e2 = json.loads((run / "e2.json").read_text())
    assert e2["perplexity"]["seq_len"] == 16 and e2["tasks"]["copa"]["n"] == 2
    assert cli_main(["eval", str(run), "--tasks", "copa,mmlu"]) == 2
    assert "unknown task(s) ['mmlu']; known tasks:" in capsys.readouterr().err


def test_pack_script_round_trip(tmp_path):
    datasets = pytest.importorskip("datasets")
    src = tmp_path / "src"
    datasets.Dataset.from_dict({"question": ["is it", "is it not"], "answer": [True, False],
                                "passage": ["p1", "p2"], "extra": [1, 2]}).save_to_disk(str(src / "boolq"))
    pack = load_script("pack_eval_sets")
    out = tmp_path / "out"
    assert pack.main([str(src), "--out", str(out), "--tasks", "boolq"]) == 0
    first = (out / "boolq.jsonl.xz").read_bytes()
    assert pack.main([str(src), "--out", str(out), "--tasks", "boolq"]) == 0
    assert (out / "boolq.jsonl.xz").read_bytes() == first  # reproducible bytes
    rows = [json.loads(x) for x in lzma.decompress(first).decode().splitlines()]
    assert rows == [{"passage": "p1", "question": "is it", "label": 1}, {"passage": "p2", "question": "is it not", "label": 0}]


# ---- lm-evaluation-harness: same prompts, same numbers (offline, on the packaged data) ----

def test_requests_match_lm_eval_task_configs(tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from sparsedepth.eval.lm_eval_adapter import write_task_configs

    names = list(TASKS)
    cfg_dir = write_task_configs(tmp_path / "tasks", names, cache_dir=tmp_path / "hf")
    loaded = TaskManager(include_path=str(cfg_dir), include_defaults=False).load(names)
    for name in names:
        task = loaded["tasks"][name]
        task.build_all_requests(limit=8)
        theirs = [tuple(i.args) for i in sorted(task.instances, key=lambda i: (i.doc_id, i.idx))]
        docs = task_docs(name, 8)
        assert theirs == [r for d in docs for r in d.requests], name
        for doc, ours in zip(list(task.eval_docs)[:8], docs):
            choices = task.doc_to_choice(doc)
            gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
            assert ours.gold == (choices.index(gold) if isinstance(gold, str) else gold), name
            if name != "winogrande":  # lm-eval defines only acc there
                assert ours.norm_lengths == tuple(len(c) for c in choices), name


def test_lm_eval_agrees_with_our_scorer(tiny_model, tok):
    pytest.importorskip("lm_eval")
    from sparsedepth.eval.lm_eval_adapter import lm_eval_zero_shot

    tasks = ["arc_easy", "piqa", "copa", "winogrande"]
    ours = zero_shot(tiny_model, tok, tasks=tasks, limit=20)
    theirs = lm_eval_zero_shot(tiny_model, tok, tasks=tasks, limit=20)
    assert theirs["tasks"] == ours["tasks"]  # identical acc, acc_norm and n
    assert theirs["mean_acc"] == ours["mean_acc"] and theirs["mean_acc_norm"] == ours["mean_acc_norm"]
    assert ours["tasks"]["piqa"]["acc"] != ours["tasks"]["piqa"]["acc_norm"] or \
        ours["tasks"]["arc_easy"]["acc"] != ours["tasks"]["arc_easy"]["acc_norm"]  # both metrics exercised


def test_lm_eval_adapter_decodes_and_refuses_generation(tiny_model, tok):
    pytest.importorskip("lm_eval")
    from sparsedepth.eval.lm_eval_adapter import SparsedepthLM

    lm = SparsedepthLM(model=tiny_model, tokenizer=tok)
    text = "Question: which is larger?"
    assert lm.tok_decode(lm.tok_encode(text)) == text
    with pytest.raises(EvalError, match="log-likelihoods only"):
        lm.generate_until([])
