"""Your own multiple-choice questions: the file format's errors, and the same numbers as the packaged tasks."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_trained_run
from sparsedepth.cli import main as cli_main
from sparsedepth.config import ModelConfig
from sparsedepth.data import load_documents, train_bpe
from sparsedepth.eval import EvalError, read_task_file, score_docs, task_docs, zero_shot
from sparsedepth.model import build_model


def _write(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _as_user_rows(task: str, limit: int) -> list[dict]:
    """A packaged single-prompt task rewritten in the user format (the continuation minus its delimiter)."""
    return [{"context": d.contexts[0], "choices": [c[1:] for c in d.continuations], "answer": d.gold}
            for d in task_docs(task, limit)]


def test_user_file_builds_the_packaged_requests(tmp_path):
    rows = _as_user_rows("arc_easy", 20)
    rows[1]["answer"] = rows[1]["choices"][rows[1]["answer"]]  # the answer may be given as its text
    docs = read_task_file(_write(tmp_path / "arc copy.jsonl", rows[:10] + [""] + rows[10:]))  # blank line skipped
    want = task_docs("arc_easy", 20)
    assert [d.requests for d in docs] == [d.requests for d in want]
    assert [(d.norm_lengths, d.gold) for d in docs] == [(d.norm_lengths, d.gold) for d in want]
    assert {d.task for d in docs} == {"arc_copy"}
    assert len(read_task_file(tmp_path / "arc copy.jsonl", limit=3)) == 3


GOOD = {"context": "Q: 2+2?\nA:", "choices": ["4", "5"], "answer": 0}


@pytest.mark.parametrize("bad, message", [
    ('{"context": "x", "choices": ["a", "b"]', r"q\.jsonl:2: not valid JSON"),
    ({"context": "x", "choices": ["a", "b"]}, r"q\.jsonl:2: missing field\(s\) 'answer'"),
    ({"choices": ["a", "b"], "answer": 0}, r"q\.jsonl:2: missing field\(s\) 'context'"),
    ([1, 2], r"q\.jsonl:2: expected a JSON object"),
    ({"context": 3, "choices": ["a", "b"], "answer": 0}, r":2: 'context' must be a string"),
    ({"context": "x", "choices": ["a"], "answer": 0}, r":2: 'choices' must be a list of at least two"),
    ({"context": "x", "choices": "ab", "answer": 0}, r":2: 'choices' must be a list"),
    ({"context": "x", "choices": ["a", ""], "answer": 0}, r":2: 'choices' must be a list of at least two non-empty"),
    ({"context": "x", "choices": ["a", "b"], "answer": 2}, r":2: 'answer' 2 is out of range for 2 choices"),
    ({"context": "x", "choices": ["a", "b"], "answer": "c"}, r":2: 'answer' 'c' must match exactly one"),
    ({"context": "x", "choices": ["a", "b"], "answer": True}, r":2: 'answer' must be the index"),
])
def test_malformed_lines_name_file_line_and_field(tmp_path, bad, message):
    with pytest.raises(EvalError, match=message):
        read_task_file(_write(tmp_path / "q.jsonl", [GOOD, bad]))


def test_missing_or_empty_files(tmp_path):
    with pytest.raises(EvalError, match="not found"):
        read_task_file(tmp_path / "nope.jsonl")
    with pytest.raises(EvalError, match="holds no questions"):
        read_task_file(_write(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(EvalError, match="limit must be"):
        read_task_file(_write(tmp_path / "one.jsonl", [GOOD]), limit=0)


def test_score_docs_equals_the_packaged_scorer(tmp_path):
    tok = train_bpe(load_documents("embedded", max_docs=60), 400, progress=False)
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=400, d_model=32, n_layers=2, n_heads=2, max_seq_len=128))
    for task in ("piqa", "sciq"):
        docs = read_task_file(_write(tmp_path / f"{task}.jsonl", _as_user_rows(task, 12)))
        ours = score_docs(model, tok, docs, batch_size=5)
        packaged = zero_shot(model, tok, [task], limit=12, batch_size=7)["tasks"][task]
        assert ours == {k: packaged[k] for k in ("acc", "acc_norm", "n")}


def test_cli_writes_eval_json_and_reports_bad_lines(tmp_path, capsys):
    run = tiny_trained_run(tmp_path)
    task = _write(tmp_path / "mine.jsonl", [GOOD, {"context": "The sky is", "choices": ["blue", "loud", "wet"],
                                                   "answer": "blue"}])
    assert cli_main(["eval", str(run), "--task", task, "--device", "cpu"]) == 0
    res = json.loads((run / "eval_mine.json").read_text())
    assert res["task"] == "mine" and res["n"] == 2 and res["scorer"] == "sparsedepth"
    assert 0 <= res["acc"] <= 1 and 0 <= res["acc_norm"] <= 1 and len(res["sha256"]) == 64
    assert not (run / "eval.json").exists()  # the packaged tasks did not run

    bad = _write(tmp_path / "bad.jsonl", [GOOD, {"context": "x", "choices": ["a", "b"]}])
    assert cli_main(["eval", str(run), "--task", bad]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2: missing field(s) 'answer'" in err and len(err.strip().splitlines()) == 1


def test_evaluate_task_file_result_names_its_file_limit_and_time(tmp_path):
    import time

    from sparsedepth.eval import evaluate_task_file

    run = tiny_trained_run(tmp_path)
    task = _write(tmp_path / "two.jsonl", [GOOD, {"context": "The sky is", "choices": ["blue", "wet"], "answer": 0}])
    assert len(read_task_file(task, limit=1)) == 1  # the smallest limit
    t0 = time.perf_counter()
    res = evaluate_task_file(run, task, limit=1, out="mine.json")
    wall = time.perf_counter() - t0
    assert json.loads((run / "mine.json").read_text()) == res
    assert (res["task"], res["file"], res["limit"], res["n"], res["scorer"]) == ("two", task, 1, 1, "sparsedepth")
    assert 0 <= res["seconds"] <= wall + 1e-3


def test_task_name_keeps_letters_of_either_case():
    from sparsedepth.eval.user_tasks import task_name

    assert task_name("dir/My Quiz (v2).jsonl") == "My_Quiz_v2_" and task_name("Q.A.jsonl") == "Q.A"
    assert task_name("+++.jsonl") == "_" and task_name(".jsonl") == "task"  # nothing left: a name still
