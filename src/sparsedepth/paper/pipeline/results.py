"""Run cache: train, probe and evaluate each experiment variant once, keep its small result files.

Layout (relative to the output root, see :func:`output_root`):

- ``runs/<profile>/<config hash>/``: the training run (checkpoints, never committed). Identical configs in
  different experiments share one run directory, so they train once.
- ``paper_results/<profile>/<experiment>/<variant>/``: the small files a notebook needs: ``config.json``
  (resolved config, its hash, RESULTS_VERSION, variant metadata), ``metrics.jsonl`` (thinned to
  ``METRICS_LIMIT_BYTES``), ``probes.json``, ``eval.json``, ``summary.json``, ``provenance.json`` (plus stage timings);
  ``error.txt`` instead when the variant failed. Installed with one atomic folder rename. A variant whose
  config another variant of the profile already finished is a copy: its own ``config.json`` and
  ``provenance.json`` beside relative links to the other folder's data files (``SHARED_FILES``), so each
  result is stored once.

A variant is up to date when its ``config.json`` holds the current config hash and results key
(RESULTS_VERSION, the probe and evaluation code versions, the profile's probe and evaluation settings); then
it is neither retrained nor re-probed. A changed config (hash) means retraining; a changed results key means
re-probing and re-evaluating (retraining only where the checkpoints are gone). ``force`` retrains runs not
finished since the force began: ``sparsedepth reproduce --force`` exports that moment in
``SPARSEDEPTH_FORCE_SINCE`` so a run shared by several notebooks is retrained once, not once per notebook.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from ..spec import experiments as ex
from .run_result import RunResult
from ...atomic import atomic_replace_dir, atomic_write_json, atomic_write_text, is_temp_name, make_temp_dir
from ...config import TrainConfig, apply_overrides, config_hash, to_dict
from ...faults import crash_point

# Bump when a metric definition, probe setting or result file format changes: results become stale
# (re-probed and re-evaluated) although their training config did not change.
RESULTS_VERSION = 1
LEGACY_CODE = {"eval": 1, "probes": 1}  # the probe and evaluation code versions of keys that name none
RESULT_FILES = ("config.json", "metrics.jsonl", "probes.json", "eval.json", "summary.json", "provenance.json")
# Installed beside them when the run wrote them: probes along training (``probe_points``)
OPTIONAL_FILES = ("trajectory.json",)
# What a copied variant shares with the folder it was copied from (links); config and provenance are its own
SHARED_FILES = tuple(f for f in RESULT_FILES + OPTIONAL_FILES if f not in ("config.json", "provenance.json"))
# A committed metrics.jsonl stays under this: with over a hundred committed runs the repository stays small
# enough to travel to the GPU machine. The per-step telemetry no table or figure reads goes first, on every k-th
# telemetry row (BULKY_METRICS: sublayer variances and norms, per-layer gradient and parameter norms, and the
# per-layer x per-expert loads, of which the expert-load figure reads the last row, always kept); whole rows
# only after that (every k-th, keeping validation and spike rows). The run directory keeps every row whole.
METRICS_LIMIT_BYTES = 150_000
BULKY_METRICS = ("attn_var", "ffn_var", "attn_norm", "ffn_norm", "layer_grad_norm", "layer_param_norm", "expert_load")
RESULT_DIGITS = 6  # significant digits of the floats in a committed probes.json and trajectory.json
# A committed metrics.jsonl, the bulk of the repository, keeps RESULT_DIGITS in the telemetry that claims and
# tables read (N_f(h_L) effects are differences of 0.5 % between runs: 4 digits would move them by a quarter
# of their error) and METRICS_DIGITS in the rest, per-step curves that are only drawn.
READ_METRICS = ("layer_var", "final_var", "final_gain")
METRICS_DIGITS = 4
# What fit_metrics records in the provenance's pipeline section about the metrics.jsonl it wrote
METRICS_RECORDS = ("metrics_digits", "bulky_metrics_thinned", "metrics_downsampled")
FORCE_ENV = "SPARSEDEPTH_FORCE_SINCE"
ROOT_ENV = "SPARSEDEPTH_OUTPUT_ROOT"
THREADS_ENV = "SPARSEDEPTH_THREADS"
STAGES = "results_stages.json"  # in the run directory: which post-training stages finished, at which version

# Statuses returned by run_variant / run_experiment.
DONE = ("cached", "copied", "trained", "retrained", "forced")
FAILED = "failed"
PAUSED = "paused"  # training stopped at a checkpoint at a time limit ($SPARSEDEPTH_STOP_AT_TIME): rerun resumes


class RunError(RuntimeError):
    """A variant failed; ``error.txt`` in its results folder has the traceback."""


class RunPaused(RunError):
    """Training stopped at a checkpoint before its last step because of a time limit, not an error: the same
    command resumes it. No ``error.txt`` is written."""


class ExperimentError(RuntimeError):
    """Some variants of a sweep failed (the others finished); ``statuses`` maps variant -> status."""

    def __init__(self, message: str, statuses: dict[str, str]):
        super().__init__(message)
        self.statuses = statuses


# ------------------------------------------------------------------------------------------------ paths


def _checkout_root() -> Path | None:
    cand = Path(__file__).resolve().parents[4]  # src/sparsedepth/paper/pipeline -> checkout (src layout)
    if (cand / "pyproject.toml").is_file() and (cand / "src" / "sparsedepth").is_dir():
        return cand
    return None


def output_root(root: str | os.PathLike | None = None) -> Path:
    """Where ``runs/`` and ``paper_results/`` live: ``root``, else $SPARSEDEPTH_OUTPUT_ROOT, else the source
    checkout holding this package, else the current folder (the same rule as the figure and table writers)."""
    if root is not None:
        return Path(root).expanduser().resolve()
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return _checkout_root() or Path.cwd().resolve()


def results_dir(profile: str, experiment: str, variant: str, root: str | os.PathLike | None = None) -> Path:
    return output_root(root) / "paper_results" / profile / experiment / variant


def run_dir_for(profile: str, cfg: TrainConfig, root: str | os.PathLike | None = None) -> Path:
    return output_root(root) / "runs" / profile / config_hash(cfg)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Tiny CPU models run faster on one intra-op thread, and several threads on a busy 2-core machine spin
    against each other (we measured 3x slower); $SPARSEDEPTH_THREADS overrides the profile (0 = torch default)."""
    env = os.environ.get(THREADS_ENV)
    n = (int(env) or None) if env and env.isdigit() else n
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _optional(folder: Path) -> dict[str, Path]:
    return {f: folder / f for f in OPTIONAL_FILES if (folder / f).is_file()}


@contextlib.contextmanager
def run_context(profile: str | ex.Plan, root: str | os.PathLike | None = None) -> Iterator[Path]:
    """How every run of ``profile`` trains: with the profile's torch threads. Yields the output root, which
    the stages take as the start of the configs' relative paths (corpus, data cache), wherever a notebook
    runs from."""
    path = output_root(root)
    path.mkdir(parents=True, exist_ok=True)
    with _threads(ex.scale(profile).threads):
        yield path


def _log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------- records


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_record(folder: Path) -> dict | None:
    """The results ``config.json`` of a complete results folder (every file present), else None; None too for
    a copy whose source folder no longer holds the same config (retrained after a config change, removed)."""
    if not all((folder / f).is_file() for f in RESULT_FILES):
        return None
    rec = _read_json(folder / "config.json")
    summary = _read_json(folder / "summary.json")
    if not isinstance(rec, dict) or "hash" not in rec or not isinstance(summary, dict) or not summary.get("done"):
        return None
    source = linked_source(folder)
    if source is not None and (read_record(source) or {}).get("hash") != rec["hash"]:
        return None
    return rec


def linked_source(folder: Path) -> Path | None:
    """The results folder whose data files a copied ``folder`` links to; None where it holds its own."""
    link = folder / "metrics.jsonl"
    return link.resolve().parent if link.is_symlink() else None


def results_key(plan: ex.Plan | str) -> dict:
    """What besides the training config defines a result: the version of the result files, the versions of
    the probe and evaluation code, and the profile's probe and evaluation settings (JSON-normalised so it
    compares equal after a round trip)."""
    from ...eval import CODE_VERSION as EVAL_CODE
    from ...probes import CODE_VERSION as PROBE_CODE

    plan = ex.plan(plan)
    key = {"results_version": RESULTS_VERSION, "code": {"probes": PROBE_CODE, "eval": EVAL_CODE},
           "probe": plan.probe_settings(), "eval": plan.eval_settings()}
    return json.loads(json.dumps(key, sort_keys=True))


def stored_key(rec: dict | None) -> dict | None:
    """The results key a record or stages file was written under. Keys written before the code versions were
    part of it hold none: their probes and evaluation are those of version 1."""
    key = rec.get("results_key") if isinstance(rec, dict) else None
    return {**key, "code": LEGACY_CODE} if isinstance(key, dict) and "code" not in key else key


def why_stale(rec: dict, h: str, key: dict) -> str:
    """What makes the result recorded in ``rec`` differ from one made now (config hash ``h``, results key
    ``key``), in words: "config changed (hash a -> b)", "probes code version 1 -> 2", "probe settings changed
    (n_windows)", ...; "forced" when nothing differs."""
    if rec.get("hash") != h:
        return f"config changed (hash {rec.get('hash')} -> {h})"
    old = stored_key(rec) or {}
    parts = []
    if rec.get("results_version") != key["results_version"]:
        parts.append(f"results version {rec.get('results_version')} -> {key['results_version']}")
    for name, version in key["code"].items():
        was = (old.get("code") or {}).get(name)
        if was != version:
            parts.append(f"{name} code version {was} -> {version}")
    for part in ("probe", "eval"):
        was, now = old.get(part) or {}, key[part] or {}
        changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
        if changed:
            parts.append(f"{part} settings changed ({', '.join(changed)})")
    return "; ".join(parts) or "forced"


def _fresh(rec: dict | None, h: str, since: float | None, key: dict) -> bool:
    return (rec is not None and rec.get("hash") == h and stored_key(rec) == key
            and (since is None or float(rec.get("completed_at", 0)) >= since))


def _find_same_config(profile: str, h: str, since: float | None, root: Path, exclude: Path,
                      key: dict) -> Path | None:
    """Another results folder of this profile holding a fresh result of the same config (dedup)."""
    base = root / "paper_results" / profile
    if not base.is_dir():
        return None
    for cfg_file in sorted(base.glob("*/*/config.json")):
        folder = cfg_file.parent
        if folder == exclude or is_temp_name(folder.name):  # a temporary left by a killed install
            continue
        rec = _read_json(cfg_file)
        if isinstance(rec, dict) and rec.get("hash") == h and _fresh(read_record(folder), h, since, key):
            return folder
    return None


def _force_since(force: bool) -> float | None:
    if not force:
        return None
    env = os.environ.get(FORCE_ENV)
    try:
        return float(env) if env else time.time()
    except ValueError:
        return time.time()


# ------------------------------------------------------------- committed copies: compact, downsampled


def _round_floats(obj: Any, digits: int) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else obj
    if isinstance(obj, list):
        return [_round_floats(x, digits) for x in obj]
    if isinstance(obj, dict):
        return {k: _round_floats(v, digits) for k, v in obj.items()}
    return obj


def compact_json(text: str, digits: int = RESULT_DIGITS) -> str:
    """A JSON document (probes.json, trajectory.json) with every float rounded to ``digits`` significant digits
    and no whitespace: the committed copy is under half the size of the run's own file (probes are float32 at
    heart, about 7 digits, so 6 lose nothing a figure or a claim can show). Text that is not JSON is kept as it
    is."""
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    return json.dumps(_round_floats(obj, digits), separators=(",", ":"))


def compact_metrics_row(text: str) -> str:
    """A metrics row as :func:`compact_json` writes it, ``READ_METRICS`` at ``RESULT_DIGITS`` and the other fields
    at ``METRICS_DIGITS`` significant digits."""
    try:
        row = json.loads(text)
    except ValueError:
        return text
    if not isinstance(row, dict):
        return compact_json(text)
    return json.dumps({k: _round_floats(v, RESULT_DIGITS if k in READ_METRICS else METRICS_DIGITS)
                       for k, v in row.items()}, separators=(",", ":"))


def _size(lines: list[str]) -> int:
    return sum(len(x) + 1 for x in lines)


def thin_bulky_metrics(lines: list[str], limit: int = METRICS_LIMIT_BYTES) -> tuple[list[str], int]:
    """Keep the ``BULKY_METRICS`` fields (per-layer x per-expert matrices) on every k-th row that holds them
    (smallest k that fits ``limit`` bytes) plus the last; every row keeps its other fields. Returns (lines, k);
    k = 1 when nothing was dropped."""
    if _size(lines) <= limit or not any(f'"{f}"' in ln for ln in lines for f in BULKY_METRICS):
        return lines, 1
    rows = [json.loads(ln) for ln in lines]
    last = len(rows) - 1

    def thinned(k: int) -> list[str]:
        out, j = [], -1  # j counts the rows that hold a bulky field, so that a second pass thins further
        for i, (ln, row) in enumerate(zip(lines, rows)):
            bulky = any(f in row for f in BULKY_METRICS)
            j += bulky
            if not bulky or j % k == 0 or i == last:
                out.append(ln)
            else:
                out.append(json.dumps({f: v for f, v in row.items() if f not in BULKY_METRICS},
                                      separators=(",", ":")))
        return out

    k = 2
    while True:
        out = thinned(k)
        if _size(out) <= limit or k >= len(lines):
            return out, k
        k *= 2


def bulky_every(lines: list[str]) -> dict[str, int]:
    """Per ``BULKY_METRICS`` field in ``lines``: on about every how many telemetry rows (rows with ``layer_var``)
    it is kept, read from the rows themselves so that it stays true over passes with other fields or limits."""
    rows = [json.loads(ln) for ln in lines]
    telemetry = sum("layer_var" in r for r in rows)
    counts = {f: sum(f in r for r in rows) for f in BULKY_METRICS}
    return {f: max(1, round(telemetry / n)) for f, n in counts.items() if n}


def downsample_metrics(lines: list[str], limit: int = METRICS_LIMIT_BYTES) -> tuple[list[str], int]:
    """Keep every k-th row (smallest k that fits ``limit`` bytes) plus the first, the last and every row with
    validation or a spike flag. Returns (kept lines, k); k = 1 when nothing was dropped."""
    size = _size(lines)
    if size <= limit or len(lines) < 3:
        return lines, 1
    keep_always = {0, len(lines) - 1}
    for i, ln in enumerate(lines):
        if '"val_loss"' in ln or '"spike": true' in ln:
            keep_always.add(i)
    k = max(2, math.ceil(size / limit))
    while True:
        kept = [ln for i, ln in enumerate(lines) if i % k == 0 or i in keep_always]
        if _size(kept) <= limit or k >= len(lines):
            return kept, k
        k *= 2


def fit_metrics(lines: list[str], pipeline: dict, limit: int = METRICS_LIMIT_BYTES) -> list[str]:
    """Round a metrics.jsonl's rows (:func:`compact_metrics_row`), bring it under ``METRICS_LIMIT_BYTES`` (bulky
    fields first, then rows) and record in ``pipeline`` (the provenance's pipeline section) what was dropped, on
    top of what an earlier pass dropped. A second pass changes nothing."""
    rounded = [compact_metrics_row(ln) for ln in lines]
    if rounded != [compact_json(ln, digits=17) for ln in lines]:  # digits dropped, not whitespace alone (17: exact)
        pipeline["metrics_digits"] = METRICS_DIGITS
    lines, kb = thin_bulky_metrics(rounded, limit)
    kept, k = downsample_metrics(lines, limit)
    if kb > 1:
        pipeline["bulky_metrics_thinned"] = {"every": bulky_every(lines)}
    if k > 1:
        before = pipeline.get("metrics_downsampled", {})
        pipeline["metrics_downsampled"] = {"every": k * before.get("every", 1), "rows": len(kept),
                                           "of": before.get("of", len(lines))}
    return kept


# ------------------------------------------------------------------------------------------------ stages


def _stages(run_dir: Path, key: dict) -> dict:
    st = _read_json(run_dir / STAGES)
    return st if isinstance(st, dict) and stored_key(st) == key else {"results_key": key}


def _mark(run_dir: Path, stages: dict, name: str, seconds: float) -> None:
    stages[name] = True
    stages[f"{name}_s"] = round(seconds, 3)
    atomic_write_json(run_dir / STAGES, stages)


def _has_checkpoint(run_dir: Path) -> bool:
    ck = run_dir / "checkpoints"
    return ck.is_dir() and any(ck.iterdir())


def _train_run(cfg: TrainConfig, run_dir: Path, progress: bool, device: str | None, root: Path) -> dict:
    from ...train import train

    return train(cfg, run_dir, progress=progress, device=device, root=root)


def _probe_run(run_dir: Path, settings: dict, root: Path) -> Any:
    from ...probes import probe_run

    return probe_run(run_dir, root=root, **settings)


def _eval_run(run_dir: Path, settings: dict, root: Path) -> Any:
    from ...eval import evaluate_run

    return evaluate_run(run_dir, root=root, **settings)


def _check_device(plan: ex.Plan, device: str | None) -> None:
    if not plan.scale.needs_cuda:
        return
    profile = plan.profile
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        raise RunError(f"profile {profile!r} trains paper-lite models and needs a CUDA GPU, and none is available; "
                       f"plot the committed results instead (`make figures PROFILE={profile}` or "
                       f"`sparsedepth reproduce --profile {profile} --no-train`), or use --profile cpu")


def _execute(plan: ex.Plan, cfg: TrainConfig, run_dir: Path, root: Path, progress: bool, device: str | None,
             probe_kw: dict, eval_kw: dict) -> dict:
    """Train (resuming), probe and evaluate in ``run_dir``; returns stage timings in seconds."""
    key = results_key(plan)
    stages = _stages(run_dir, key)
    summary = _read_json(run_dir / "summary.json") or {}
    if summary.get("done") and not _has_checkpoint(run_dir) and not (stages.get("probes") and stages.get("eval")):
        # checkpoints were deleted (gpu profile) but the probes must run again: retrain from scratch
        _log(f"  {run_dir.name}: checkpoints gone and probes outdated; retraining")
        shutil.rmtree(run_dir)
        stages = {"results_key": key}
    if not (summary.get("done") and (run_dir / "provenance.json").exists()):
        _check_device(plan, device)
    times = {}
    trained_here = not summary.get("done")
    with run_context(plan, root):
        t0 = time.time()
        summary = _train_run(cfg, run_dir, progress, device, root)
        times["train_s"] = time.time() - t0
        if not summary.get("done"):
            raise RunPaused(f"paused at step {summary.get('steps')} of {cfg.steps} (time limit); rerun to resume")
        for name, fn, kw in (("probes", _probe_run, probe_kw), ("eval", _eval_run, eval_kw)):
            out = run_dir / ("probes.json" if name == "probes" else "eval.json")
            if stages.get(name) and out.is_file():
                times[f"{name}_s"] = stages.get(f"{name}_s", 0.0)
                continue
            if name == "probes" and trained_here and cfg.probe_points and out.is_file() and \
                    cfg.probe == {k: v for k, v in kw.items() if k != "device"}:
                _mark(run_dir, stages, name, 0.0)  # the last probe point along training wrote these very probes
                times["probes_s"] = 0.0
                continue
            t0 = time.time()
            fn(run_dir, kw, root)
            if not out.is_file():
                raise RunError(f"{name} finished without writing {out}")
            times[f"{name}_s"] = time.time() - t0
            _mark(run_dir, stages, name, times[f"{name}_s"])
            if name == "eval":  # the probes ran before it
                _wandb_scores(cfg, run_dir)
    return times


def _wandb_scores(cfg: TrainConfig, run_dir: Path) -> None:
    """With W&B logging on, the run's probe scores and evaluation join its W&B run's summary."""
    from ...train.telemetry import wandb_enabled, wandb_log_scores, wandb_run_id

    if wandb_enabled(cfg.wandb):
        wandb_log_scores(run_dir, cfg.wandb_project, wandb_run_id(config_hash(cfg)))


def _symlink(target: Path, link: Path) -> bool:
    """A relative link at ``link`` to ``target``; False where the file system allows none (then it is copied)."""
    try:
        os.symlink(os.path.relpath(target, link.parent.resolve()), link)
    except (OSError, NotImplementedError):
        return False
    return True


def _install(src_files: dict[str, Path | str], dest: Path, record: dict, pipeline: dict, *,
             link: bool = False) -> None:
    """Copy result files into a temporary sibling of ``dest`` and rename it into place (atomic). ``link``: the
    files are another results folder's, already installed: the ``SHARED_FILES`` become relative links to them
    (to the file itself where that is a link too), which stay valid once the sibling is renamed to ``dest``
    (copies where the file system allows no links)."""
    tmp = make_temp_dir(dest.parent, prefix=f".{dest.name}.tmp-")
    try:
        for name, src in src_files.items():
            if link and name in SHARED_FILES and _symlink(Path(src).resolve(), tmp / name):
                continue
            if name == "metrics.jsonl":
                kept = fit_metrics(Path(src).read_text().splitlines(), pipeline)
                (tmp / name).write_text("\n".join(kept) + ("\n" if kept else ""))
            elif name in ("probes.json", "trajectory.json"):  # the trajectory's points are probe summaries
                (tmp / name).write_text(compact_json(Path(src).read_text()) + "\n")
            elif name == "provenance.json":
                prov = _read_json(Path(src)) or {}
                prov["pipeline"] = {**prov.get("pipeline", {}), **pipeline}
                (tmp / name).write_text(json.dumps(prov, indent=2, sort_keys=True) + "\n")
            elif name != "config.json":
                shutil.copyfile(src, tmp / name)
        (tmp / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        crash_point("install")
        atomic_replace_dir(tmp, dest, overwrite=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------- public


def _record(plan: ex.Plan | str, experiment: str, variant: str, cfg: TrainConfig, completed_at: float) -> dict:
    plan = ex.plan(plan)
    return {"config": to_dict(cfg), "hash": config_hash(cfg), "results_version": RESULTS_VERSION,
            "results_key": results_key(plan),
            "profile": plan.profile, "experiment": experiment, "variant": variant,
            "meta": plan.meta(experiment).get(variant, {}), "completed_at": completed_at}


def run_variant_status(profile: str | ex.Plan, experiment: str, variant: str, *, force: bool = False,
                       train: bool = True, overrides: dict | list | None = None, root: str | os.PathLike | None = None,
                       progress: bool = True, device: str | None = None) -> tuple[Path, str]:
    """Bring one variant's results up to date; returns (results folder, status).

    status: ``cached`` (up to date), ``copied`` (same config already finished under another experiment),
    ``trained`` (new), ``retrained`` (config or results version changed), ``forced``, ``stale`` (out of date
    but ``train=False``: kept as is), ``missing`` (none and ``train=False``). Raises RunError on failure after
    writing ``error.txt`` into the results folder, RunPaused (without it) when a time limit stopped training.
    """
    plan = ex.plan(profile)
    profile = plan.profile
    cfg = plan.resolve(experiment, variant)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    h = config_hash(cfg)
    root_p = output_root(root)
    dest = results_dir(profile, experiment, variant, root_p)
    tag = f"[{profile}/{experiment}/{variant}]"
    since = _force_since(force)
    rec = read_record(dest)
    key = results_key(plan)
    if _fresh(rec, h, since, key):
        _log(f"{tag} cached (hash {h})")
        return dest, "cached"
    src = _find_same_config(profile, h, since, root_p, dest, key)
    if src is not None:
        files = {f: src / f for f in RESULT_FILES} | _optional(src)
        srec = read_record(src) or {}
        pipeline = {**(_read_json(src / "provenance.json") or {}).get("pipeline", {}),
                    "copied_from": f"{src.parent.name}/{src.name}"}
        pipeline.update(experiment=experiment, variant=variant)
        _install(files, dest, _record(plan, experiment, variant, cfg, float(srec.get("completed_at", time.time()))),
                 pipeline, link=True)
        _log(f"{tag} copied from {src.parent.name}/{src.name} (identical config, hash {h})")
        return dest, "copied"
    why = None if rec is None else why_stale(rec, h, key)
    if not train:
        if rec is not None:
            _log(f"{tag} stale, kept as is (--no-train): {why}")
            return dest, "stale"
        _log(f"{tag} missing (--no-train): no results under {dest}")
        return dest, "missing"
    run_dir = run_dir_for(profile, cfg, root_p)
    status = "trained" if rec is None else "retrained"
    if since is not None:
        status = "forced"
        if run_dir.exists():
            shutil.rmtree(run_dir)  # forced: start the run over (nothing fresh found above)
    _log(f"{tag} {'training' if why is None else 'retraining: ' + why} in {run_dir} (hash {h})")
    try:
        where = {} if device in (None, "auto") else {"device": device}
        times = _execute(plan, cfg, run_dir, root_p, progress, device, {**plan.probe_settings(), **where},
                         {**plan.eval_settings(cfg), **where})
        done = time.time()
        pipeline = {"results_version": RESULTS_VERSION, "profile": profile, "experiment": experiment,
                    "variant": variant, "completed_at": done, "run_dir": str(Path("runs") / profile / h),
                    "probe_settings": plan.probe_settings(), "eval_settings": plan.eval_settings(cfg),
                    **{k: round(v, 3) for k, v in times.items()}}
        files = {f: run_dir / f for f in RESULT_FILES if f != "config.json"} | _optional(run_dir)
        _install(files, dest, _record(plan, experiment, variant, cfg, done), pipeline)
        if not plan.scale.keep_checkpoints:
            from ...train import delete_checkpoints

            delete_checkpoints(run_dir)
    except RunPaused as e:
        (dest / "error.txt").unlink(missing_ok=True)  # an earlier failure's record: this run is healthy
        _log(f"{tag} {e}")
        raise
    except Exception as e:  # one failed variant must not stop the sweep: record it and report
        tb = traceback.format_exc()
        atomic_write_text(dest / "error.txt", f"{tag} failed at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                                              f"config hash {h}, run directory {run_dir}\n\n{tb}")
        _log(f"{tag} FAILED: {type(e).__name__}: {e} (traceback in {dest / 'error.txt'}){_failure_hint(e)}")
        raise RunError(f"{tag} failed: {type(e).__name__}: {e}") from e
    _log(f"{tag} {status} in {sum(times.values()):.1f}s (" + ", ".join(f"{k} {v:.1f}" for k, v in times.items()) + ")")
    return dest, status


def _failure_hint(e: BaseException) -> str:
    """What to do about a failure the user can fix without reading the traceback ("" for the rest)."""
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return ("; the GPU ran out of memory: if other runs share it (--per-gpu K, or runs started beside this "
                "one), rerun this variant alone (--per-gpu 1); it resumes from its last checkpoint")
    return ""


def run_variant(profile: str, experiment: str, variant: str, force: bool = False, **kw: Any) -> Path:
    """Train+probe+evaluate one variant (cached by config hash); returns its results folder."""
    return run_variant_status(profile, experiment, variant, force=force, **kw)[0]


def run_experiment(profile: str | ex.Plan, experiment: str, force: bool = False, train: bool = True, *,
                   variants: list[str] | None = None, overrides: dict | list | None = None,
                   root: str | os.PathLike | None = None, progress: bool = True, device: str | None = None,
                   raise_on_error: bool = True) -> dict[str, str]:
    """Bring every variant of ``experiment`` up to date, in order; returns {variant: status}.

    A failing variant is recorded (``error.txt``) and the sweep continues; at the end, if any failed, an
    ExperimentError lists them (``raise_on_error=False`` returns the statuses instead: then call
    :func:`raise_for_failures` after plotting what finished).
    """
    plan = ex.plan(profile)
    profile = plan.profile
    names = list(variants or plan.variants(experiment))
    statuses: dict[str, str] = {}
    for name in names:
        try:
            statuses[name] = run_variant_status(plan, experiment, name, force=force, train=train,
                                                overrides=overrides, root=root, progress=progress,
                                                device=device)[1]
        except RunPaused:
            statuses[name] = PAUSED
        except RunError:
            statuses[name] = FAILED
    counts: dict[str, int] = {}
    for st in statuses.values():
        counts[st] = counts.get(st, 0) + 1
    _log(f"[{profile}/{experiment}] " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if raise_on_error:
        raise_for_failures(statuses, f"{profile}/{experiment}")
    return statuses


def raise_for_failures(statuses: dict[str, str], what: str = "") -> None:
    """Raise ExperimentError naming the failed variants, if any."""
    failed = [v for v, s in statuses.items() if s == FAILED]
    if failed:
        raise ExperimentError(f"{what + ': ' if what else ''}{len(failed)} variant(s) failed: {', '.join(failed)} "
                              f"(see error.txt in their results folders)", statuses)


def status(profile: str | ex.Plan, experiment: str, root: str | os.PathLike | None = None) -> dict[str, str]:
    """Per variant, without running anything: ``done``, ``stale``, ``failed``, ``paused`` or ``missing``."""
    plan = ex.plan(profile)
    key = results_key(plan)
    out = {}
    for name, cfg in plan.variants(experiment).items():
        folder = results_dir(plan.profile, experiment, name, root)
        rec = read_record(folder)
        if _fresh(rec, config_hash(cfg), None, key):
            out[name] = "done"
        elif (folder / "error.txt").exists():
            out[name] = FAILED
        elif (_read_json(run_dir_for(plan.profile, cfg, root) / "summary.json") or {}).get("done") is False:
            out[name] = PAUSED  # its training stopped at a checkpoint (time limit): the same command resumes it
        else:
            out[name] = "stale" if rec is not None else "missing"
    return out


def stale_reason(plan: ex.Plan, experiment: str, variant: str, root: str | os.PathLike | None = None,
                 key: dict | None = None) -> str:
    """What makes one variant's recorded result stale, in words (:func:`why_stale`); "" where none is recorded
    or it is current. ``key``: :func:`results_key` of the plan, when the caller has it already."""
    key = results_key(plan) if key is None else key
    rec = read_record(results_dir(plan.profile, experiment, variant, root))
    h = config_hash(plan.resolve(experiment, variant))
    return "" if rec is None or _fresh(rec, h, None, key) else why_stale(rec, h, key)


def stale_results(profile: str, root: str | os.PathLike | None = None) -> dict[str, dict[str, int]]:
    """{why: {experiment: number of variants}} over the profile's results that a rerun would remake (another
    config, code version or probe setting made them): results shown, but not what the current code makes.
    From the records alone (local run folders do not count). Empty for a name that is none of our profiles (a
    results tree written by hand)."""
    if profile not in ex.SCALES:
        return {}
    plan = ex.plan(profile)
    key = results_key(plan)
    out: dict[str, dict[str, int]] = {}
    for e in ex.profile_experiments(profile):
        for v in plan.variants(e):
            why = stale_reason(plan, e, v, root, key)
            if why:
                per = out.setdefault(why, {})
                per[e] = per.get(e, 0) + 1
    return out


def experiments_with_results(profile: str | ex.Plan, root: str | os.PathLike | None = None) -> list[str]:
    """The experiments (and checks) of ``profile`` with at least one variant's results, current or stale: what
    ``--no-train`` can plot."""
    plan = ex.plan(profile)
    return [e for e in plan.scale.experiments
            if any(read_record(results_dir(plan.profile, e, v, root)) is not None for v in plan.variants(e))]


def load_variant(folder: Path, current_hash: str | None = None, key: dict | None = None) -> RunResult | None:
    """The :class:`RunResult` of one results folder ``<experiment>/<variant>`` (see :func:`load_results`), or
    None if incomplete; stale when its hash or results key differs from ``current_hash`` / ``key`` (or its
    RESULTS_VERSION from ours)."""
    from ...train import read_metrics  # torch: only once results are read

    rec = read_record(folder)
    if rec is None:
        return None
    return RunResult(experiment=folder.parent.name, variant=folder.name, config=rec["config"], hash=rec["hash"],
                     meta=rec.get("meta", {}), metrics=read_metrics(folder),
                     probes=_read_json(folder / "probes.json"), eval=_read_json(folder / "eval.json"),
                     summary=_read_json(folder / "summary.json"),
                     provenance=_read_json(folder / "provenance.json"),
                     trajectory=_read_json(folder / "trajectory.json"),
                     stale=(current_hash is not None and rec["hash"] != current_hash)
                     or (key is not None and stored_key(rec) != key) or rec.get("results_version") != RESULTS_VERSION,
                     dir=str(folder))


def load_results(profile: str | ex.Plan, experiment: str, root: str | os.PathLike | None = None,
                 include_stale: bool = True) -> dict[str, RunResult]:
    """{variant: :class:`RunResult`} for the variants with results, in the experiment's order.

    Each result carries the variant's current metadata (labels, paper setting, seed), even when stale (its
    config or results version changed since: plotted with a warning, or skipped with ``include_stale=False``).
    """
    plan = ex.plan(profile)
    profile = plan.profile
    key, metas = results_key(plan), plan.meta(experiment)
    out = {}
    stale = []
    for name, cfg in plan.variants(experiment).items():
        res = load_variant(results_dir(profile, experiment, name, root), config_hash(cfg), key)
        if res is None:
            continue
        res = replace(res, meta=metas[name])  # current labels, even for stale results
        if res.stale:
            stale.append(name)
            if not include_stale:
                continue
        out[name] = res
    if stale:
        print(f"warning: {profile}/{experiment}: results of {', '.join(stale)} are stale (config or results "
              f"version changed); {'shown anyway' if include_stale else 'skipped'}", file=sys.stderr)
    return out
