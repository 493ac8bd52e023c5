"""The shipped zero-shot multiple-choice sets and their prompts, as lm-evaluation-harness builds them.

Each task turns a row into one ``MCDoc``: per choice a (context, continuation) pair whose continuation
log-likelihood is scored, the gold index, and the acc_norm denominators. The prompts follow the task
configs of lm-evaluation-harness 0.4.x (zero-shot, no description), including its quirks:

- the continuation is ``target_delimiter + choice`` with the default delimiter " " (so COPA, whose
  choices already start with a space, is scored on "  because-clause" with two spaces, as in lm-eval);
- acc_norm divides by ``len(choice)`` in characters of the choice *without* the delimiter;
- WinoGrande is a partial evaluation: the context is the sentence up to the blank with each option
  filled in, and the shared continuation is the rest after the blank. lm-eval defines only ``acc`` for
  it; since the scored continuation is the same for both options, length normalisation changes nothing
  and we report ``acc_norm = acc``.

The rows live in ``eval/data/<task>.jsonl.xz`` (validation splits; regenerate with
``scripts/pack_eval_sets.py SOURCE_DIR``).
"""
from __future__ import annotations

import functools
import json
import lzma
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError

DATA_DIR = Path(__file__).resolve().parent / "data"
TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "sciq", "winogrande", "openbookqa", "boolq",
         "copa", "social_iqa", "commonsense_qa")
PACK_SCRIPT = "scripts/pack_eval_sets.py"


class EvalError(UserError, ValueError):
    """Bad evaluation input; the message names what is wrong and how to fix it."""


@dataclass(frozen=True)
class MCDoc:
    """One multiple-choice question: choice i is scored as loglik(continuations[i] | contexts[i])."""

    task: str
    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    norm_lengths: tuple[int, ...]  # acc_norm denominators (characters), one per choice
    gold: int

    @property
    def requests(self) -> list[tuple[str, str]]:
        return list(zip(self.contexts, self.continuations))


def _single_input(task: str, context: str, choices: list[str], gold: int, delimiter: str = " ") -> MCDoc:
    n = len(choices)
    return MCDoc(task, (context,) * n, tuple(delimiter + c for c in choices), tuple(len(c) for c in choices), gold)


def _hellaswag_clean(text: str) -> str:
    """lm-eval's hellaswag ``preprocess``: strip WikiHow bracket artefacts and double spaces."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:]


def _arc(task: str) -> Callable[[dict], MCDoc]:
    def build(r: dict) -> MCDoc:
        return _single_input(task, f"Question: {r['question']}\nAnswer:", list(r["choices"]["text"]),
                             r["choices"]["label"].index(r["answerKey"]))
    return build


def _hellaswag(r: dict) -> MCDoc:
    ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
    return _single_input("hellaswag", _hellaswag_clean(r["activity_label"] + ": " + ctx),
                         [_hellaswag_clean(e) for e in r["endings"]], int(r["label"]))


def _piqa(r: dict) -> MCDoc:
    return _single_input("piqa", f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], int(r["label"]))


def _sciq(r: dict) -> MCDoc:
    return _single_input("sciq", f"{r['support'].lstrip()}\nQuestion: {r['question']}\nAnswer:",
                         [r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]], 3)


def _winogrande(r: dict) -> MCDoc:
    idx = r["sentence"].index("_")
    contexts = tuple(r["sentence"][:idx] + opt for opt in (r["option1"], r["option2"]))
    cont = " " + r["sentence"][idx + 1:].strip()
    return MCDoc("winogrande", contexts, (cont, cont), (len(cont), len(cont)), {"1": 0, "2": 1}[r["answer"]])


def _openbookqa(r: dict) -> MCDoc:
    return _single_input("openbookqa", r["question_stem"], list(r["choices"]["text"]),
                         r["choices"]["label"].index(r["answerKey"].lstrip()))


def _boolq(r: dict) -> MCDoc:
    return _single_input("boolq", f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", ["no", "yes"],
                         int(r["label"]))


def _copa(r: dict) -> MCDoc:
    connector = {"cause": "because", "effect": "therefore"}[r["question"]]
    choices = [" " + _lower_first(r["choice1"]), " " + _lower_first(r["choice2"])]
    return _single_input("copa", r["premise"].strip()[:-1] + f" {connector}", choices, int(r["label"]))


def _social_iqa(r: dict) -> MCDoc:
    return _single_input("social_iqa", f"Q: {r['context']} {r['question']}\nA:",
                         [r["answerA"], r["answerB"], r["answerC"]], int(r["label"]) - 1)


def _commonsense_qa(r: dict) -> MCDoc:
    t = r["choices"]["text"]
    ctx = (f"Question: {r['question'].strip()}\nA. {t[0]}\nB. {t[1]}\nC. {t[2]}\nD. {t[3]}\nE. {t[4]}\nAnswer:")
    letters = ["A", "B", "C", "D", "E"]
    return _single_input("commonsense_qa", ctx, letters, letters.index(r["answerKey"]))


BUILDERS: dict[str, Callable[[dict], MCDoc]] = {
    "arc_easy": _arc("arc_easy"),
    "arc_challenge": _arc("arc_challenge"),
    "hellaswag": _hellaswag,
    "piqa": _piqa,
    "sciq": _sciq,
    "winogrande": _winogrande,
    "openbookqa": _openbookqa,
    "boolq": _boolq,
    "copa": _copa,
    "social_iqa": _social_iqa,
    "commonsense_qa": _commonsense_qa,
}


def check_tasks(tasks: str | list[str] | tuple[str, ...]) -> list[str]:
    """Normalise a task list ("a,b" or a sequence), rejecting unknown names with the known ones listed."""
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise EvalError(f"no tasks given; known tasks: {', '.join(TASKS)}")
    unknown = [t for t in names if t not in BUILDERS]
    if unknown:
        raise EvalError(f"unknown task(s) {unknown}; known tasks: {', '.join(TASKS)}")
    return list(dict.fromkeys(names))  # keep order, drop repeats


def data_file(task: str) -> Path:
    """The packaged file of ``task``; raises EvalError naming it and the script that regenerates it."""
    check_tasks([task])
    path = DATA_DIR / f"{task}.jsonl.xz"
    if not path.is_file():
        raise EvalError(f"evaluation data file {path} is missing; regenerate the packaged sets with "
                        f"`python {PACK_SCRIPT} SOURCE_DIR` (SOURCE_DIR holds one datasets.save_to_disk "
                        f"folder per task)")
    return path


@functools.lru_cache(maxsize=None)
def _read_rows(path: Path) -> tuple[dict, ...]:
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def load_rows(task: str, limit: int | None = None) -> list[dict]:
    """The first ``limit`` rows (all when None) of a packaged set, in file order."""
    if limit is not None and limit < 1:
        raise EvalError(f"limit must be a positive number of rows per task or None, got {limit}")
    rows = _read_rows(data_file(task))
    return [dict(r) for r in rows[:limit]]


def task_docs(task: str, limit: int | None = None) -> list[MCDoc]:
    """The MCDocs of ``task`` (first ``limit`` rows): lm-eval's requests for each row."""
    build = BUILDERS[check_tasks([task])[0]]
    return [build(r) for r in load_rows(task, limit)]
