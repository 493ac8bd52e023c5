"""Fault injection: kills, damaged files, concurrent runs and bad corpora end in exact recovery or one line.

Kills drive the command line in subprocesses: ``SPARSEDEPTH_CRASH_AT=NAME[:N]`` (sparsedepth.faults) sends
SIGKILL to the process at a named point of tokenisation, training, checkpointing, probing or result
installation; the rerun must then match an uninterrupted run bit for bit (weights, optimiser state, metrics).
Every other fault must end in one line on stderr and a non-zero exit, never a traceback, or in recovery.

The default part runs in ``make test`` (tiny smoke-scale runs of 6 steps). ``make test-faults`` sets
SPARSEDEPTH_FAULTS=full for the longer randomised part (kills at seeded random times and crash points, the
``sparsedepth run`` pipeline) and SPARSEDEPTH_FAULTS_DOC=docs/faults.md to write the table of what each
fault looks like to the user from this module's results.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparsedepth.cli import main as cli_main
from sparsedepth.data import DataError, load_documents

SRC = Path(__file__).resolve().parents[1] / "src"
FULL = os.environ.get("SPARSEDEPTH_FAULTS") == "full"
full_only = pytest.mark.skipif(not FULL, reason="randomised fault suite: make test-faults")
SEED_ARGS = ["--profile", "smoke", "--experiment", "depth", "--variant", "L2", "--set", "steps=6",
             "--set", "ckpt_interval=2", "--no-progress", "--device", "cpu"]
TIMING_KEYS = {"tokens_per_s", "mfu", "wall_s"}  # clock readings: differ between any two runs
ROWS: list[tuple[str, str]] = []  # (fault, what the user sees) for docs/faults.md


def seen(fault: str, outcome: str) -> None:
    ROWS.append((fault, outcome))


@pytest.fixture(scope="module", autouse=True)
def _write_table():
    yield
    out = os.environ.get("SPARSEDEPTH_FAULTS_DOC")
    if not out or not ROWS:
        return
    lines = ["# Faults tried and what the user sees", "",
             "Written by `make test-faults` from the results of `tests/test_faults.py` (smoke-scale runs on the "
             "CPU); every row is a passing test. `<tmp>` stands for the test's temporary folder.", "",
             "| fault | what the user sees |", "| --- | --- |"]
    for fault, outcome in ROWS:
        lines.append(f"| {fault} | {outcome.replace('|', '/')} |")
    Path(out).write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------ helpers


def env(**extra: str) -> dict:
    e = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1",
         "PYTHONHASHSEED": "0"}
    e.pop("SPARSEDEPTH_CRASH_AT", None)
    return {**e, **extra}


def sd(*args: str, cwd: Path, crash: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """``sparsedepth ARGS`` in a subprocess (killed by SIGKILL at ``crash``)."""
    extra = {"SPARSEDEPTH_CRASH_AT": crash} if crash else {}
    p = subprocess.run([sys.executable, "-m", "sparsedepth.cli", *args], cwd=cwd, env=env(**extra),
                       capture_output=True, text=True, timeout=300)
    if crash:
        assert p.returncode == -signal.SIGKILL, f"crash point {crash} not reached: {p.stderr[-2000:]}"
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def train_args(cache: Path, run_dir: Path, *more: str) -> list[str]:
    return ["train", *SEED_ARGS, "--set", f"data.cache_dir={cache}", "--run-dir", str(run_dir), *more]


def one_line_error(stderr: str, rc: int, *needles: str) -> str:
    """The single error line of a failed command (warnings aside); fails on a traceback."""
    assert rc not in (0, None), "expected a failure"
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1, stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def run_in_process(capsys, *args: str) -> tuple[int, str]:
    rc = cli_main(list(args))
    return rc, capsys.readouterr().err


def tidy(text: str, tmp: Path) -> str:
    return text.replace(str(tmp), "<tmp>")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_strip(v) for v in obj]
    return obj


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def run_state(run_dir: Path) -> dict:
    """Everything a finished run holds except clock readings: final weights, optimiser/RNG state, metrics."""
    ck = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    train = _strip(torch.load(ck / "train.pt", weights_only=True))
    for lib in ("python", "numpy"):  # saved, but unseeded and unused by training: each process starts its own
        train["rng"].pop(lib)
    return {"checkpoint": ck.name, "model": torch.load(ck / "model.pt", weights_only=True), "train": train,
            "metrics": _strip([json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]),
            "summary": _strip(json.loads((run_dir / "summary.json").read_text()))}


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = run_state(a), run_state(b)
    for key in sa:
        assert _equal(sa[key], sb[key]), f"{key} differs between {a} and {b}"


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*tmp-*")) if folder.exists() else []


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def reference(work) -> Path:
    """An uninterrupted 6-step run (checkpoints at steps 2, 4, 6); its token cache is ``work/cache``."""
    run = work / "reference"
    sd(*train_args(work / "cache", run), cwd=work, check=True)
    return run


# --------------------------------------------------------------------------------------- kill -9, rerun


@pytest.mark.parametrize("point", ["train_step:3", "checkpoint:2"])
def test_kill_during_training_resumes_bit_exact(work, reference, point):
    run = work / f"killed-{point.replace(':', '-')}"
    sd(*train_args(work / "cache", run), cwd=work, crash=point)
    left = temps(run)
    sd(*train_args(work / "cache", run), cwd=work, check=True)  # the killed run's lock is stale: taken over
    assert temps(run) == []
    assert_same_run(reference, run)
    what = "after a step's update" if point.startswith("train") else "with a checkpoint half written"
    seen(f"kill -9 during training, {what} (`{point}`), then the same command again",
         f"resumes from the last checkpoint; weights, optimiser state and metrics bit-identical to an "
         f"uninterrupted run{'; the temporary checkpoint folder is removed' if left else ''}")


def test_kill_during_tokenisation_then_rerun(work, reference):
    cache, run = work / "cache-killed", work / "killed-tokenize"
    sd(*train_args(cache, run), cwd=work, crash="tokenize")
    assert temps(cache / "tokens"), "the kill should leave a half-written shard folder"
    assert not (run / "config.json").exists(), "config.json is written only once the data is ready"
    sd(*train_args(cache, run), cwd=work, check=True)
    assert temps(cache / "tokens") == []
    ref_tokens = next((work / "cache" / "tokens").iterdir())
    for name in ("train.bin", "val.bin"):
        assert (cache / "tokens" / ref_tokens.name / name).read_bytes() == (ref_tokens / name).read_bytes()
    assert_same_run(reference, run)
    seen("kill -9 while tokenising the corpus, then the same command again",
         "the half-written shard folder is removed, the shards are rebuilt byte-identical, the run matches an "
         "uninterrupted one")


def _probe_json(run: Path) -> dict:
    res = json.loads((run / "probes.json").read_text())
    res.pop("timings")
    return res


def test_kill_during_probe_then_rerun(work, reference, capsys):
    args = ["--probes", "variance,causal,permutation", "--n-windows", "2", "--device", "cpu", "--quiet"]
    assert run_in_process(capsys, "probe", str(reference), *args)[0] == 0  # the uninterrupted probe
    run = work / "probe-killed"
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns("probes.json"))
    sd("probe", str(run), *args, cwd=work, crash="probe")
    assert not (run / "probes.json").exists() and temps(run) == []
    sd("probe", str(run), *args, cwd=work, check=True)
    assert _probe_json(run) == _probe_json(reference)
    seen("kill -9 while probing, then the same command again",
         "no probes.json until the probes finish; the rerun writes one identical to an uninterrupted probe")


# ---------------------------------------------------------------------------------------- concurrency


def test_second_training_into_a_held_run_dir_is_refused(work, reference):
    from sparsedepth.rundir_lock import RunDirLock

    run = work / "held"
    with RunDirLock(run):  # this test process holds it, as a running training would
        p = sd(*train_args(work / "cache", run), cwd=work)
    line = one_line_error(p.stderr, p.returncode, "is in use by pid", str(os.getpid()), "--run-dir")
    assert not (run / "metrics.jsonl").exists()
    line = re.sub(r"pid \d+ on \S+ since [\d-]+ [\d:]+", "pid <pid> on <host> since <start time>", line)
    seen("a second `sparsedepth train` into a run directory that a live run holds", f"`{tidy(line, work)}`")


def test_concurrent_trainings_write_each_step_once(work, reference):
    run = work / "concurrent"
    procs = [subprocess.Popen([sys.executable, "-m", "sparsedepth.cli", *train_args(work / "cache", run)],
                              cwd=work, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    for rc, err in outs:  # either it trained, found the run already done, or was refused while the other ran
        assert rc == 0 or "is in use by pid" in one_line_error(err, rc), err
    assert_same_run(reference, run)  # metrics hold every step once, as an uninterrupted run's
    seen("two `sparsedepth train` started at once into one run directory",
         "one trains; the other is refused with the holder's pid and host (or, started after the first "
         "finished, reports the finished run); metrics.jsonl has every step once")


# -------------------------------------------------------------------------------------- damaged files


def _stopped_run(work: Path, name: str, capsys) -> Path:
    """The reference run stopped after step 4 (checkpoints at steps 2 and 4); in this process, to save the
    start-up of another (damaged files need no kill)."""
    run = work / name
    rc, err = run_in_process(capsys, *train_args(work / "cache", run, "--stop-at-step", "4"))
    assert rc == 0, err
    return run


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "bit-flipped":
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:])
    elif how == "garbage":
        path.write_bytes(b"\x00\xffnot what was written{")


@pytest.mark.parametrize("how", ["truncated", "empty", "bit-flipped"])
def test_damaged_checkpoint_one_line_then_resume_falls_back(work, reference, capsys, how):
    run = _stopped_run(work, f"damaged-{how}", capsys)
    bad = run / "checkpoints" / "step-00000004" / "model.pt"
    _damage(bad, how)
    rc, err = run_in_process(capsys, "probe", str(run), "--probes", "variance", "--n-windows", "2",
                             "--device", "cpu", "--quiet")
    line = one_line_error(err, rc, str(bad), "damaged")
    seen(f"{how} checkpoint `model.pt`: `sparsedepth probe` (or eval)", f"`{tidy(line, work)}`")
    rc, err = run_in_process(capsys, *train_args(work / "cache", run))
    assert rc == 0 and "resuming from step-00000002" in err, err
    assert (run / "checkpoints" / "damaged-step-00000004").is_dir()
    assert_same_run(reference, run)
    seen(f"{how} checkpoint `model.pt`: `sparsedepth train` (resume)",
         "a warning naming the file; resumes from the previous checkpoint (the damaged one is renamed "
         "`damaged-step-...`), final state bit-identical to an uninterrupted run")


def test_advice_for_a_damaged_final_checkpoint_works(work, reference, capsys):
    """The probe error says: delete the damaged folder and train again; a finished run then retrains its
    last steps from the previous checkpoint, exactly."""
    run = work / "final-deleted"
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns("probes.json"))
    shutil.rmtree(run / "checkpoints" / "step-00000006")
    rc, err = run_in_process(capsys, *train_args(work / "cache", run))
    assert rc == 0, err
    assert_same_run(reference, run)
    seen("the damaged final checkpoint of a finished run deleted as the error advises, then `sparsedepth train`",
         "retrains the last steps from the previous checkpoint, bit-identical to the original run")


def test_wrong_shape_checkpoint_is_one_line(work, reference, capsys):
    from sparsedepth.train.integrity import file_sha256

    run = work / "wrong-shape"
    shutil.copytree(reference, run)
    ck = run / "checkpoints" / "step-00000006"
    state = torch.load(ck / "model.pt", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, ck / "model.pt")  # whole, hashed afresh: a checkpoint of another model, not a damaged one
    meta = json.loads((ck / "meta.json").read_text())
    meta["sha256"]["model.pt"] = file_sha256(ck / "model.pt")
    (ck / "meta.json").write_text(json.dumps(meta))
    rc, err = run_in_process(capsys, "probe", str(run), "--probes", "variance", "--device", "cpu", "--quiet")
    line = one_line_error(err, rc, "does not fit this model", "model.pt")
    seen("a checkpoint of another model (missing key) in the run directory: `sparsedepth probe`",
         f"`{tidy(line, work)[:160]}...`")


def test_damaged_run_files_are_one_line_or_recovered(work, reference, capsys):
    run = work / "damaged-files"
    shutil.copytree(reference, run)
    _damage(run / "checkpoints" / "step-00000006" / "meta.json", "garbage")
    rc, err = run_in_process(capsys, "eval", str(run), "--tasks", "copa", "--limit", "2", "--device", "cpu")
    line = one_line_error(err, rc, "meta.json", "damaged")
    seen("damaged checkpoint `meta.json`: `sparsedepth eval`", f"`{tidy(line, work)}`")

    _damage(run / "config.json", "garbage")
    for cmd in (["probe", str(run), "--device", "cpu", "--quiet"], train_args(work / "cache", run)):
        rc, err = run_in_process(capsys, *cmd)
        line = one_line_error(err, rc, "config.json", "damaged")
    seen("damaged run `config.json`: `sparsedepth train` / `probe` / `eval`", f"`{tidy(line, work)}`")

    run2 = work / "damaged-summary"
    shutil.copytree(reference, run2)
    _damage(run2 / "summary.json", "garbage")
    rc, err = run_in_process(capsys, *train_args(work / "cache", run2))
    assert rc == 0 and json.loads((run2 / "summary.json").read_text())["done"]
    seen("damaged `summary.json` of a finished run: `sparsedepth train`",
         "the run is recognised from its last checkpoint and summary.json is rewritten")


@pytest.mark.parametrize("what", ["meta.json", "train.bin", "tokenizer.json"])
def test_damaged_token_cache_is_rebuilt(work, reference, capsys, what):
    cache = work / f"cache-{what}"
    shutil.copytree(work / "cache", cache)
    folder = next((cache / "tokens").iterdir())
    _damage(folder / what, "truncated" if what.endswith(".bin") else "garbage")
    run = work / f"run-cache-{what}"
    rc, err = run_in_process(capsys, *train_args(cache, run))
    assert rc == 0 and "token cache" in err and "rebuilding it" in err, err
    ref_tokens = next((work / "cache" / "tokens").iterdir())
    assert (folder / "train.bin").read_bytes() == (ref_tokens / "train.bin").read_bytes()
    assert_same_run(reference, run)
    seen(f"damaged token cache `{what}`", "a warning; the cache is rebuilt from the corpus, the run is identical")


def test_damaged_bpe_cache_and_config_file(work, reference, capsys):
    cache = work / "cache-bpe"
    shutil.copytree(work / "cache", cache)
    shutil.rmtree(cache / "tokens")
    _damage(next((cache / "tokenizers").iterdir()), "garbage")
    run = work / "run-bpe"
    rc, err = run_in_process(capsys, *train_args(cache, run))
    assert rc == 0 and "retraining it" in err, err
    assert_same_run(reference, run)
    seen("damaged cached BPE tokenizer", "a warning; the tokenizer is retrained (identical), the run is identical")

    for suffix in (".yaml", ".json"):
        cfg = work / f"bad{suffix}"
        cfg.write_bytes(b"\x00\xffnot what was written{")
        rc, err = run_in_process(capsys, "train", "--config", str(cfg), "--run-dir", str(work / "never"))
        line = one_line_error(err, rc, str(cfg), "not valid UTF-8")
    seen("a binary or malformed `--config` file", f"`{tidy(line, work)}`")


def test_config_errors_name_the_dotted_field(work, capsys):
    rc, err = run_in_process(capsys, "train", *SEED_ARGS, "--set", "optim.lr=-1", "--run-dir", str(work / "never"))
    line = one_line_error(err, rc, "optim.lr: must be positive")
    seen("`--set optim.lr=-1`", f"`{line}`")


# -------------------------------------------------------------------------------------------- corpora


def _docs_files(tmp: Path) -> dict[str, Path]:
    """The same five documents (one blank, one whitespace-only) in every supported format."""
    import datasets

    docs = ["first document", "", "  \n\t ", "second\nwith two lines", "third"]
    out = {"txt": tmp / "c.txt", "jsonl": tmp / "c.jsonl", "jsonl.gz": tmp / "c.jsonl.gz", "csv": tmp / "c.csv",
           "saved Dataset": tmp / "saved", "saved DatasetDict": tmp / "saved-dict"}
    out["txt"].write_text("\n<|endoftext|>\n".join(docs))
    lines = "".join(json.dumps({"text": d}) + "\n" for d in docs)
    out["jsonl"].write_text(lines)
    out["jsonl.gz"].write_bytes(gzip.compress(lines.encode()))
    datasets.Dataset.from_dict({"text": docs}).to_csv(str(out["csv"]), index=False)
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(out["saved Dataset"]))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": docs}),
                          "test": datasets.Dataset.from_dict({"text": ["held-out only"]})}
                         ).save_to_disk(str(out["saved DatasetDict"]))
    return out


def test_every_corpus_format_gives_the_same_documents(tmp_path):
    files = _docs_files(tmp_path)
    want = ["first document", "second\nwith two lines", "third"]
    for kind, path in files.items():
        assert load_documents(str(path), cache_dir=str(tmp_path / "ds")) == want, kind
    assert load_documents(str(files["jsonl"]), max_docs=2, cache_dir=str(tmp_path / "ds")) == want[:2]
    seen("the same documents as .txt, .jsonl, .jsonl.gz, .csv, a `save_to_disk` Dataset or DatasetDict "
         "folder (blank and whitespace-only documents included)",
         "the same documents from every format (blank ones dropped everywhere; a DatasetDict reads its "
         "`train` split)")


@pytest.mark.parametrize("case", ["non-string text", "binary .txt", "malformed .jsonl", "non-UTF-8 .txt"])
def test_bad_corpus_is_one_line(tmp_path, capsys, case):
    path = {"non-string text": tmp_path / "n.jsonl", "binary .txt": tmp_path / "b.txt",
            "malformed .jsonl": tmp_path / "m.jsonl", "non-UTF-8 .txt": tmp_path / "l.txt"}[case]
    if case == "non-string text":
        path.write_text("".join(json.dumps({"text": v}) + "\n" for v in (1, 2, 3)))
        needles = ["row 0", "type int", "not a string"]
    elif case == "binary .txt":
        path.write_bytes(bytes(range(256)) * 4)
        needles = ["binary file", "NUL byte"]
    elif case == "malformed .jsonl":
        path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)) + '{"text": "cut\n')
        needles = ["could not be read as json", "in row 5"]
    else:
        path.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
        needles = ["not valid UTF-8", "line 1", "iconv"]
    with pytest.raises(DataError) as e:
        load_documents(str(path), cache_dir=str(tmp_path / "ds"))
    assert "\n" not in str(e.value)
    rc, err = run_in_process(capsys, "train", *SEED_ARGS, "--set", f"data.corpus={path}",
                             "--set", f"data.cache_dir={tmp_path / 'cache'}", "--run-dir", str(tmp_path / "run"))
    line = one_line_error(err, rc, *needles)
    assert not (tmp_path / "run" / "config.json").exists()  # retrying with the corpus fixed is allowed
    seen(f"corpus: {case}", f"`{tidy(line, tmp_path)[:220]}`")


def test_wrong_corpus_path_can_be_retried_in_the_same_run_dir(work, reference, capsys):
    run = work / "retry"
    rc, err = run_in_process(capsys, *train_args(work / "cache", run), "--set", "data.corpus=nowhere.txt")
    one_line_error(err, rc, "does not exist")
    rc, err = run_in_process(capsys, *train_args(work / "cache", run))
    assert rc == 0, err
    assert_same_run(reference, run)
    seen("a run started with a wrong corpus path, then retried in the same run directory with the right one",
         "the first fails with one line and leaves no config.json, so the retry trains normally")


# ----------------------------------------------------------------------------------- undefined results


def test_one_layer_scores_are_null_with_a_reason():
    from sparsedepth.model import build_model
    from sparsedepth.probes import run_probes

    from conftest import tiny_config

    model = build_model(tiny_config(n_layers=1), torch.device("cpu"))
    res = run_probes(model, torch.randint(0, 64, (2, 17)), probes=("causal", "permutation"))
    for key in ("causal", "permutation"):
        assert res[key]["score"] is None and "1-layer" in res[key]["reason"]
    seen("causal / permutation probe of a 1-layer model", "`score: null` with a `reason` (was 0.0)")


def test_zero_shot_counts_truncated_continuations(work, reference):
    from sparsedepth.eval import zero_shot
    from sparsedepth.train import load_run

    model, _, data = load_run(reference, device="cpu")
    short = zero_shot(model, data, ["copa"], limit=4, max_len=3)
    full = zero_shot(model, data, ["copa"], limit=4)
    assert short["n_truncated"] == short["n_truncated_by_task"]["copa"] > 0
    assert full["n_truncated"] == 0
    seen("zero-shot continuation longer than the model's context",
         "scored on its last tokens as lm-eval does, counted in `n_truncated` (and `n_truncated_by_task`) and "
         "reported on stderr")


# ------------------------------------------------------------------------- randomised (make test-faults)


def _newest_write(run: Path) -> int:
    """The newest modification time under ``run`` (files come and go while it trains: ignore vanished ones)."""
    newest = 0
    for p in run.rglob("*") if run.exists() else ():
        try:
            newest = max(newest, p.stat().st_mtime_ns)
        except FileNotFoundError:
            pass
    return newest


@full_only
@pytest.mark.parametrize("trial", range(4))
def test_random_kill_times_resume_bit_exact(work, reference, trial):
    rng = random.Random(1000 + trial)
    run = work / f"random-kill-{trial}"
    args = [sys.executable, "-m", "sparsedepth.cli", *train_args(work / "cache", run)]
    kills = 0
    for _ in range(3):
        before = _newest_write(run)
        p = subprocess.Popen(args, cwd=work, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while p.poll() is None and _newest_write(run) == before:  # past start-up: the run is writing
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))  # then somewhere in training, checkpointing or finishing
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills, "every attempt finished before its kill: nothing was tested"
    sd(*train_args(work / "cache", run), cwd=work, check=True)
    assert temps(run) == []
    assert_same_run(reference, run)
    seen(f"kill -9 at a seeded random time once the run writes (trial {trial}: {kills} kill(s) in 3 attempts), "
         f"then the same command",
         "resumes bit-identical to an uninterrupted run")


@full_only
@pytest.mark.parametrize("point", ["train_step", "checkpoint", "tokenize"])
def test_random_crash_points_resume_bit_exact(work, reference, point):
    rng = random.Random(point)
    n = {"train_step": 6, "checkpoint": 3, "tokenize": 1}[point]
    for trial in range(2):
        k = rng.randint(1, n)
        cache = work / f"cache-random-{point}-{trial}" if point == "tokenize" else work / "cache"
        run = work / f"random-{point}-{trial}"
        sd(*train_args(cache, run), cwd=work, crash=f"{point}:{k}")
        sd(*train_args(cache, run), cwd=work, check=True)
        assert temps(run) == [] and temps(cache) == []
        assert_same_run(reference, run)
        seen(f"kill -9 at a seeded random crash point (`{point}:{k}`), then the same command",
             "resumes bit-identical to an uninterrupted run, no temporaries left")


@full_only
def test_kill_during_result_installation(tmp_path):
    e = {"SPARSEDEPTH_OUTPUT_ROOT": str(tmp_path)}
    args = [sys.executable, "-m", "sparsedepth.cli", "run", "--profile", "smoke", "--quiet", "depth/L2"]
    p = subprocess.run(args, cwd=tmp_path, env=env(SPARSEDEPTH_CRASH_AT="install", **e), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    results = tmp_path / "paper_results" / "smoke" / "depth"
    assert not (results / "L2").exists() and temps(results)
    p = subprocess.run(args, cwd=tmp_path, env=env(**e), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert temps(results) == [] and (results / "L2" / "summary.json").is_file()
    seen("kill -9 while installing a result folder (`sparsedepth run`), then the same command",
         "no partial result folder is ever visible; the rerun reuses the finished run, installs the folder and "
         "removes the temporary")
