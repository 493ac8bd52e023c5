"""Pack the zero-shot evaluation sets into ``src/sparsedepth/eval/data/<task>.jsonl.xz``.

Usage: ``python scripts/pack_eval_sets.py SOURCE_DIR [--out DIR]`` where SOURCE_DIR holds one folder per
task saved with ``datasets.Dataset.save_to_disk`` (validation splits, the schemas of the Hugging Face
datasets that lm-evaluation-harness's task configs read). Each task keeps only the columns its prompt
uses; BoolQ's boolean ``answer`` becomes super_glue's integer ``label`` (0 = no, 1 = yes). Rows keep their
order, so the output is byte-for-byte reproducible from the same input.
"""
from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path

# task -> columns kept (in this order); the lm-eval task configs read exactly these fields.
COLUMNS: dict[str, tuple[str, ...]] = {
    "arc_easy": ("question", "choices", "answerKey"),
    "arc_challenge": ("question", "choices", "answerKey"),
    "hellaswag": ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
    "piqa": ("goal", "sol1", "sol2", "label"),
    "sciq": ("support", "question", "distractor1", "distractor2", "distractor3", "correct_answer"),
    "winogrande": ("sentence", "option1", "option2", "answer"),
    "openbookqa": ("question_stem", "choices", "answerKey"),
    "boolq": ("passage", "question", "label"),
    "copa": ("premise", "choice1", "choice2", "question", "label"),
    "social_iqa": ("context", "question", "answerA", "answerB", "answerC", "label"),
    "commonsense_qa": ("question", "choices", "answerKey"),
}
RENAMES = {"boolq": {"label": "answer"}}  # output column -> source column


def convert_row(task: str, row: dict) -> dict:
    out = {}
    for col in COLUMNS[task]:
        src = RENAMES.get(task, {}).get(col, col)
        if src not in row:
            raise KeyError(f"{task}: source row has no column {src!r} (columns: {sorted(row)})")
        value = row[src]
        if task == "boolq" and col == "label":
            value = int(bool(value))
        if isinstance(value, dict):  # nested choices: fixed key order for reproducible bytes
            value = {k: value[k] for k in sorted(value)}
        out[col] = value
    return out


def pack_task(task: str, source: Path, out_dir: Path) -> tuple[int, int]:
    """Write ``out_dir/<task>.jsonl.xz``; returns (rows, compressed bytes)."""
    import datasets  # only the packaging step needs it

    ds = datasets.load_from_disk(str(source / task))
    lines = [json.dumps(convert_row(task, row), ensure_ascii=False) for row in ds]
    blob = lzma.compress(("\n".join(lines) + "\n").encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{task}.jsonl.xz.tmp"
    tmp.write_bytes(blob)
    tmp.replace(out_dir / f"{task}.jsonl.xz")
    return len(lines), len(blob)


def main(argv: list[str] | None = None) -> int:
    default_out = Path(__file__).resolve().parents[1] / "src" / "sparsedepth" / "eval" / "data"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="folder with one save_to_disk folder per task")
    p.add_argument("--out", type=Path, default=default_out, help=f"output folder (default: {default_out.name}/ in the package)")
    p.add_argument("--tasks", default=",".join(COLUMNS), help="comma-separated subset (default: all)")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(COLUMNS))
    if unknown:
        p.error(f"unknown task(s) {unknown}; known: {', '.join(COLUMNS)}")
    missing = [t for t in tasks if not (args.source / t).is_dir()]
    if missing:
        p.error(f"{args.source} lacks folder(s) {missing}: expected one datasets.save_to_disk folder per task")
    total = 0
    for task in tasks:
        rows, size = pack_task(task, args.source, args.out)
        total += size
        print(f"{task:16s} {rows:6d} rows {size / 1e3:9.1f} kB")
    print(f"{'total':16s} {'':6s}      {total / 1e6:9.3f} MB -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
