"""Run cache: real tiny smoke runs (train + probe + eval) trained once, reused, forced, invalidated, failing."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
import torch

from sparsedepth.paper.spec import experiments as ex
from sparsedepth.paper.pipeline import results as R
from sparsedepth.config import config_hash


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add contention
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def overrides(tmp_path_factory) -> dict:
    """Smoke configs cut further: 2 steps, a 60-document corpus and a token cache shared by every test."""
    cache = tmp_path_factory.mktemp("cache")
    return {"steps": 2, "optim.warmup_steps": 1, "telemetry_interval": 1, "log_interval": 1, "data.max_docs": 60,
            "data.vocab_size": 300, "model.vocab_size": 300, "data.cache_dir": str(cache), "device": "cpu"}


@pytest.fixture(autouse=True)
def _tiny_settings(monkeypatch):
    small = dataclasses.replace(ex.SCALES["smoke"], probe={"n_windows": 2, "seq_len": 32},
                                eval={"limit": 2, "tasks": ["arc_easy", "piqa"], "ppl_windows": 2})
    monkeypatch.setitem(ex.SCALES, "smoke", small)
    monkeypatch.delenv(R.FORCE_ENV, raising=False)


@pytest.fixture
def counted(monkeypatch) -> dict:
    """Counts the trainings that really ran (the trainer returns at once for a finished run)."""
    calls = {"train": 0, "probes": 0, "eval": 0, "fail_layers": set()}
    real_train, real_probe, real_eval = R._train_run, R._probe_run, R._eval_run

    def train(cfg, run_dir, progress, device, root):
        if cfg.model.n_layers in calls["fail_layers"]:
            raise RuntimeError(f"injected failure for L={cfg.model.n_layers}")
        done = (run_dir / "summary.json").exists() and json.loads((run_dir / "summary.json").read_text())["done"]
        calls["train"] += not done
        return real_train(cfg, run_dir, False, device, root)

    def probe(run_dir, kw, root):
        calls["probes"] += 1
        return real_probe(run_dir, kw, root)

    def evaluate(run_dir, kw, root):
        calls["eval"] += 1
        return real_eval(run_dir, kw, root)

    monkeypatch.setattr(R, "_train_run", train)
    monkeypatch.setattr(R, "_probe_run", probe)
    monkeypatch.setattr(R, "_eval_run", evaluate)
    return calls


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_train_once_then_cached_copied_forced_and_stale(tmp_path, overrides, counted, capsys):
    kw = dict(root=tmp_path, overrides=overrides, progress=False)
    dest, st = R.run_variant_status("smoke", "depth", "L3", **kw)
    assert st == "trained" and counted["train"] == 1 and counted["probes"] == 1 and counted["eval"] == 1
    assert sorted(p.name for p in dest.iterdir()) == sorted(R.RESULT_FILES)
    rec = json.loads((dest / "config.json").read_text())
    assert rec["results_version"] == R.RESULTS_VERSION and rec["meta"]["paper_key"] == 16
    assert (tmp_path / "runs" / "smoke" / rec["hash"] / "checkpoints").is_dir()
    before = _mtimes(dest)

    # a second call neither trains nor rewrites anything
    assert R.run_variant_status("smoke", "depth", "L3", **kw)[1] == "cached"
    assert counted["train"] == 1 and counted["probes"] == 1 and _mtimes(dest) == before

    # the same config under another experiment is copied, not retrained
    dest2, st = R.run_variant_status("smoke", "weight_decay", "wd0.1", **kw)
    assert st == "copied" and counted["train"] == 1
    rec2 = json.loads((dest2 / "config.json").read_text())
    assert rec2["hash"] == rec["hash"] and rec2["experiment"] == "weight_decay" and rec2["meta"]["value"] == 0.1
    assert json.loads((dest2 / "provenance.json").read_text())["pipeline"]["copied_from"] == "depth/L3"
    # stored once: the copy's data files are relative links to the trained folder's, its records its own
    shared = [f for f in R.SHARED_FILES if (dest / f).exists()]
    assert shared and all((dest2 / f).is_symlink() and not Path(os.readlink(dest2 / f)).is_absolute() for f in shared)
    assert not (dest2 / "config.json").is_symlink() and not (dest2 / "provenance.json").is_symlink()
    assert R.linked_source(dest2) == dest.resolve() and R.linked_source(dest) is None
    assert R.load_variant(dest2).probes == R.load_variant(dest).probes

    # force retrains once per force: a shared run is not retrained again by the next experiment
    os.environ[R.FORCE_ENV] = repr(time.time())
    try:
        assert R.run_variant_status("smoke", "depth", "L3", force=True, **kw)[1] == "forced"
        assert counted["train"] == 2
        assert R.run_variant_status("smoke", "gqa", "G1", force=True, **kw)[1] == "copied"
        assert counted["train"] == 2
    finally:
        del os.environ[R.FORCE_ENV]
    assert _mtimes(dest) != before

    # a changed config is stale: kept with --no-train, retrained otherwise (and said so)
    changed = {**overrides, "seed": 1}
    assert R.run_variant_status("smoke", "depth", "L3", root=tmp_path, overrides=changed, train=False)[1] == "stale"
    capsys.readouterr()
    dest3, st = R.run_variant_status("smoke", "depth", "L3", root=tmp_path, overrides=changed, progress=False)
    assert st == "retrained" and counted["train"] == 3
    assert "config changed" in capsys.readouterr().out
    assert json.loads((dest3 / "config.json").read_text())["hash"] != rec["hash"]
    # the copies' links now reach another config's results: they are no longer results of their own config
    assert R.read_record(dest2) is None
    assert R.run_variant_status("smoke", "weight_decay", "wd0.1", **kw, train=False)[1] == "missing"


def test_a_copy_falls_back_to_files_where_links_are_not_allowed(tmp_path, overrides, counted, monkeypatch):
    kw = dict(root=tmp_path, overrides=overrides, progress=False)
    dest, _ = R.run_variant_status("smoke", "depth", "L3", **kw)

    def refuse(*args, **kwargs):
        raise OSError("symbolic links are not allowed here")

    monkeypatch.setattr(os, "symlink", refuse)
    dest2, st = R.run_variant_status("smoke", "weight_decay", "wd0.1", **kw)
    assert st == "copied" and counted["train"] == 1 and R.linked_source(dest2) is None
    assert not any(p.is_symlink() for p in dest2.iterdir()) and R.read_record(dest2) is not None
    assert R.load_variant(dest2).probes == R.load_variant(dest).probes


def test_results_version_bump_reprobes_without_retraining(tmp_path, overrides, counted, monkeypatch):
    kw = dict(root=tmp_path, overrides=overrides, progress=False)
    dest, _ = R.run_variant_status("smoke", "depth", "L2", **kw)
    run_dir = tmp_path / "runs" / "smoke" / json.loads((dest / "config.json").read_text())["hash"]
    metrics_mtime = (run_dir / "metrics.jsonl").stat().st_mtime_ns
    monkeypatch.setattr(R, "RESULTS_VERSION", R.RESULTS_VERSION + 1)
    assert R.run_variant_status("smoke", "depth", "L2", **kw)[1] == "retrained"
    assert counted["train"] == 1 and counted["probes"] == 2 and counted["eval"] == 2
    assert (run_dir / "metrics.jsonl").stat().st_mtime_ns == metrics_mtime  # training was not redone
    assert json.loads((dest / "config.json").read_text())["results_version"] == R.RESULTS_VERSION
    # changed probe settings also mean re-probing (and say so), still without retraining
    more = dataclasses.replace(ex.SCALES["smoke"], probe={"n_windows": 3, "seq_len": 32})
    monkeypatch.setitem(ex.SCALES, "smoke", more)
    assert R.run_variant_status("smoke", "depth", "L2", **kw)[1] == "retrained"
    assert counted["train"] == 1 and counted["probes"] == 3
    assert R.load_variant(dest).probes["meta"]["n_windows"] == 3
    assert R.run_variant_status("smoke", "depth", "L2", **kw)[1] == "cached"


def test_out_of_memory_failure_says_to_rerun_alone(tmp_path, overrides, monkeypatch, capsys):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.14 GiB")
    monkeypatch.setattr(R, "_train_run", oom)
    with pytest.raises(R.RunError, match="OutOfMemoryError"):
        R.run_variant_status("smoke", "depth", "L2", root=tmp_path, overrides=overrides, progress=False)
    out = capsys.readouterr()
    assert "rerun this variant alone (--per-gpu 1)" in out.out + out.err
    assert R.status("smoke", "depth", root=tmp_path)["L2"] == "failed"


def test_failing_variant_does_not_stop_the_sweep(tmp_path, overrides, counted):
    counted["fail_layers"] = {3}
    kw = dict(root=tmp_path, overrides=overrides, progress=False, variants=["L2", "L3", "L4"])
    with pytest.raises(R.ExperimentError, match="1 variant\\(s\\) failed: L3") as err:
        R.run_experiment("smoke", "depth", **kw)
    assert err.value.statuses == {"L2": "trained", "L3": "failed", "L4": "trained"}
    error = (tmp_path / "paper_results" / "smoke" / "depth" / "L3" / "error.txt").read_text()
    assert "injected failure for L=3" in error and "Traceback" in error
    # without overrides the hashes differ, so status() reports by folder content
    assert R.status("smoke", "depth", root=tmp_path)["L3"] == "failed"
    # the next sweep retries only the failed variant, and a success clears error.txt
    counted["fail_layers"] = set()
    statuses = R.run_experiment("smoke", "depth", **kw)
    assert statuses == {"L2": "cached", "L3": "trained", "L4": "cached"}
    assert not (tmp_path / "paper_results" / "smoke" / "depth" / "L3" / "error.txt").exists()


def test_load_results_gives_run_results(tmp_path, overrides, counted):
    R.run_experiment("smoke", "moe", variants=["moe-small"], root=tmp_path, overrides=overrides, progress=False)
    res = R.load_results("smoke", "moe", root=tmp_path)
    assert list(res) == ["moe-small"]
    r = res["moe-small"]
    assert (r.experiment, r.variant, r.seed, r.label) == ("moe", "moe-small", 0, r.meta["label"])
    assert r.config["model"]["n_experts"] == 8 and r.meta["pair"] == "dense-small"
    assert r.stale  # stored hash (with test overrides) differs from the profile's own config
    assert len(r.metrics) == 2 and len(r.metrics[-1]["layer_var"]) == 3 and "expert_load" in r.metrics[-1]
    assert "usefulness" in r.probes and r.eval["tasks"].keys() == {"arc_easy", "piqa"}
    assert r.summary["done"] and r.provenance["pipeline"]["train_s"] > 0
    assert r.last_layer_var_series()[-1] == (2, r.metrics[-1]["layer_var"][-1])
    assert r.perplexity() == r.eval["perplexity"]["ppl"] and r.usefulness_fraction() == r.probes["usefulness"]["score"]
    assert R.load_results("smoke", "moe", root=tmp_path, include_stale=False) == {}
    assert R.run_variant_status("smoke", "moe", "dense-small", root=tmp_path, train=False)[1] == "missing"
    # the results page's count of results a rerun would remake: this one, and why (missing ones do not count)
    (why, per), = R.stale_results("smoke", tmp_path).items()
    assert why.startswith("config changed (hash ") and per == {"moe": 1}
    assert why == R.stale_reason(ex.plan("smoke"), "moe", "moe-small", tmp_path)
    assert R.stale_results("not-a-profile", tmp_path) == {}


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, overrides, counted):
    from sparsedepth.config import apply_overrides
    from sparsedepth.train import train

    cfg = apply_overrides(ex.resolve("smoke", "depth", "L2"), {**overrides, "steps": 4, "ckpt_interval": 1})
    run_dir = tmp_path / "runs" / "smoke" / config_hash(cfg)
    train(cfg, run_dir, stop_at_step=2, progress=False)  # interrupted after step 2
    dest, st = R.run_variant_status("smoke", "depth", "L2", root=tmp_path, progress=False,
                                    overrides={**overrides, "steps": 4, "ckpt_interval": 1})
    assert st == "trained"
    steps = [r["step"] for r in R.load_variant(dest).metrics]
    assert steps == [1, 2, 3, 4]  # resumed at step 3, not restarted


def test_gpu_profile_refuses_to_train_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(R.RunError, match="needs a CUDA GPU"):
        R.run_variant("gpu", "depth", "L12", root=tmp_path)
    assert "--no-train" in (tmp_path / "paper_results" / "gpu" / "depth" / "L12" / "error.txt").read_text()


def test_large_metrics_are_downsampled():
    lines = [json.dumps({"step": i, "loss": 1.0, "layer_var": [0.5] * 64}) for i in range(1, 5001)]
    lines[1234] = json.dumps({"step": 1235, "val_loss": 2.0})
    kept, k = R.downsample_metrics(lines, limit=200_000)
    assert k > 1 and sum(len(x) + 1 for x in kept) <= 200_000
    assert kept[0] == lines[0] and kept[-1] == lines[-1] and lines[1234] in kept
    assert R.downsample_metrics(lines[:10])[1] == 1


def test_bulky_metrics_are_thinned_before_rows():
    lines = [json.dumps({"step": i, "layer_var": [0.5] * 4, "expert_load": [[0.125] * 8] * 4}) for i in range(100)]
    kept, kb = R.thin_bulky_metrics(lines, limit=8_000)
    assert kb > 1 and len(kept) == len(lines) and sum(len(x) + 1 for x in kept) <= 8_000
    rows = [json.loads(x) for x in kept]
    assert all(r["layer_var"] == [0.5] * 4 for r in rows)  # every row keeps its curves
    assert "expert_load" in rows[-1] and "expert_load" in rows[0]  # the figure reads the last
    assert sum("expert_load" in r for r in rows) < len(rows)
    pipeline = {}
    fitted = R.fit_metrics(lines, pipeline, limit=8_000)
    assert pipeline["bulky_metrics_thinned"]["every"]["expert_load"] > 1 and "metrics_downsampled" not in pipeline
    again = R.fit_metrics(fitted, dict(pipeline), limit=8_000)  # a second pass over a fitted file drops nothing
    assert again == fitted
    assert R.thin_bulky_metrics(lines[:3])[1] == 1  # under the limit: untouched


def test_unread_telemetry_is_thinned_before_any_row_and_its_record_stays_true(monkeypatch):
    """Sublayer telemetry (read by no table or figure) goes on every k-th row with the expert loads; the record
    says, per field, how often each is kept, also over a file an earlier pass thinned with other fields."""
    row = {"layer_var": [1.5] * 8, "final_var": 2.5, "attn_var": [0.25] * 8, "layer_grad_norm": [0.5] * 8,
           "expert_load": [[0.125] * 8] * 8}
    lines = [json.dumps({"step": i, **row}) for i in range(64)]
    monkeypatch.setattr(R, "BULKY_METRICS", ("expert_load",))  # an earlier pass: only the expert loads
    pipeline = {}
    earlier = R.fit_metrics(lines, pipeline, limit=len("".join(lines)) // 2)
    every = pipeline["bulky_metrics_thinned"]["every"]
    assert set(every) == {"expert_load"} and every["expert_load"] > 1
    monkeypatch.undo()
    fitted = R.fit_metrics(earlier, pipeline, limit=R._size(earlier) * 2 // 3)
    rows = [json.loads(x) for x in fitted]
    assert len(rows) == 64 and all(r["layer_var"] == [1.5] * 8 and r["final_var"] == 2.5 for r in rows)
    assert "metrics_downsampled" not in pipeline and "expert_load" in rows[-1] and "attn_var" in rows[-1]
    every = pipeline["bulky_metrics_thinned"]["every"]
    for f in ("attn_var", "layer_grad_norm", "expert_load"):
        assert every[f] == round(64 / sum(f in r for r in rows)) and every[f] > 1
    assert every["expert_load"] >= every["attn_var"]


def test_committed_metrics_rows_keep_four_digits_where_nothing_reads_more():
    lines = [json.dumps({"step": 4600, "loss": 3.0339870452880859, "tokens": 301465600, "val_loss": float("nan"),
                         "layer_var": [0.01256851, 88.715531], "final_var": 2.4963821,
                         "ffn_var": [0.01256851, 88.715531], "tokens_per_s": 621115.047})]
    pipeline = {}
    fitted = R.fit_metrics(lines, pipeline)
    row = json.loads(fitted[0])
    assert R.METRICS_DIGITS == 4 and pipeline["metrics_digits"] == 4
    assert row["loss"] == 3.034 and row["ffn_var"] == [0.01257, 88.72] and row["tokens_per_s"] == 621100
    # what claims and tables read keeps 6 digits: N_f(h_L) gaps between runs are 0.5 %
    assert row["layer_var"] == [0.0125685, 88.7155] and row["final_var"] == 2.49638
    assert row["step"] == 4600 and row["tokens"] == 301465600  # integers (steps, token counts) stay exact
    again = {}
    assert R.fit_metrics(fitted, again) == fitted and again == {}  # a second pass: nothing to round
    spaced = json.dumps({"step": 1, "loss": 3.034, "layer_var": [0.5, 1.25]})  # json.dumps' spaces, short floats
    record = {}
    assert R.fit_metrics([spaced], record) == ['{"step":1,"loss":3.034,"layer_var":[0.5,1.25]}'] and record == {}


def test_committed_metrics_and_probes_are_compact():
    row = {"step": 10, "loss": 9.917455673217773, "lr": 0.00013333333333333334, "nonfinite": True,
           "layer_var": [0.021327432245016098, 18.234664916992188], "note": "x", "val_loss": float("nan")}
    line = json.dumps(row)
    out = R.compact_json(line)
    back = json.loads(out)
    assert back["loss"] == 9.91746 and back["lr"] == 0.000133333 and back["layer_var"] == [0.0213274, 18.2347]
    assert back["step"] == 10 and back["nonfinite"] is True and back["note"] == "x" and back["val_loss"] != back["val_loss"]
    assert len(out) < 0.7 * len(line) and " " not in out
    assert R.compact_json("not json {") == "not json {"
    nested = json.dumps({"permutation": {"matrix": [[0.47818607771237254, 1.0]]}}, indent=2)
    assert R.compact_json(nested) == '{"permutation":{"matrix":[[0.478186,1.0]]}}'


def test_output_root_rule(tmp_path, monkeypatch):
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    assert R.output_root() == tmp_path.resolve()
    assert R.results_dir("cpu", "gqa", "G2") == tmp_path.resolve() / "paper_results" / "cpu" / "gqa" / "G2"
    assert R.output_root(tmp_path / "x") == (tmp_path / "x").resolve()


# ------------------------------------------------------------------------------- the reproduce driver

NAMES = ["00_theory", "01_depth", "02_weight_decay", "03_sequence_length", "04_gqa", "05_moe", "06_recipe",
         "07_summary", "08_probe_a_model"]


def _notebook(path, code: list[str], params: str | None = 'profile = "smoke"\nforce = False\ntrain = True'):
    """A percent-format notebook source, as in notebooks/."""
    import jupytext
    import nbformat

    nb = nbformat.v4.new_notebook()
    if params is not None:
        cell = nbformat.v4.new_code_cell(params)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(c) for c in code]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, str(path), fmt="py:percent")


def test_reproduce_selects_notebooks_by_name(tmp_path):
    from sparsedepth.paper.pipeline import reproduce as rp

    paths = [tmp_path / f"{n}.py" for n in NAMES]
    pick = lambda *only: [p.stem for p in rp.select(paths, list(only))]  # noqa: E731
    assert pick() == NAMES
    assert pick("depth") == ["01_depth"] and pick("seqlen") == ["03_sequence_length"]
    assert pick("summary", "theory") == ["00_theory", "07_summary"]  # notebook order, not argument order
    assert pick("05") == ["05_moe"] and pick("weight_decay") == ["02_weight_decay"] and pick("probe") == [NAMES[-1]]
    for target in ("theory", "depth", "weight_decay", "seqlen", "gqa", "moe", "recipe", "summary"):  # make targets
        assert len(pick(target)) == 1
    with pytest.raises(ValueError, match="choose from: theory, depth"):
        pick("depht")
    _notebook(paths[-1], [], params='profile = "smoke"\nrun = "x"')
    converted = rp.to_ipynb(paths[-1], tmp_path / "out" / f"{paths[-1].stem}.ipynb")
    assert rp.parameters_for(converted, {"profile": "gpu", "force": True, "device": "auto"}) == {}


def test_reproduce_leaves_out_the_notebooks_of_sweeps_a_rung_does_not_run(tmp_path):
    from sparsedepth.paper.pipeline import reproduce as rp

    paths = [tmp_path / f"{n}.py" for n in NAMES]
    kept, left = rp.for_profile(paths, "gpu-long")
    assert [p.stem for p in kept] == ["01_depth", "02_weight_decay", "07_summary", NAMES[-1]]
    assert [p.stem for p in left] == ["00_theory", "03_sequence_length", "04_gqa", "05_moe", "06_recipe"]
    assert [p.stem for p in rp.for_profile(paths, "gpu-wide")[0]] == ["01_depth", "07_summary", NAMES[-1]]
    assert rp.for_profile(paths, "gpu") == (paths, [])


def test_figures_at_a_profile_with_nothing_run_run_no_notebook(tmp_path, capsys, monkeypatch):
    """--no-train leaves out the sweeps without results, and runs nothing at a profile without any (exit 0)."""
    from sparsedepth.cli import main
    from sparsedepth.paper.pipeline import reproduce as rp

    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    paths = [tmp_path / f"{n}.py" for n in NAMES]
    kept, left = rp.plottable(paths, "gpu-long")
    assert kept is None and left == paths
    folder = R.results_dir("gpu-long", "depth", "L12", tmp_path)
    folder.mkdir(parents=True)
    for f in R.RESULT_FILES:
        (folder / f).write_text("{}")
    (folder / "config.json").write_text(json.dumps({"hash": "h"}))
    (folder / "summary.json").write_text(json.dumps({"done": True}))
    assert R.experiments_with_results("gpu-long", tmp_path) == ["depth"]
    kept, left = rp.plottable(paths, "gpu-long")
    assert [p.stem for p in left] == ["02_weight_decay", "03_sequence_length", "04_gqa", "05_moe", "06_recipe"]
    assert "01_depth" in [p.stem for p in kept] and "07_summary" in [p.stem for p in kept]
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_depth.py", ["raise ValueError('must not run')"])
    assert main(["reproduce", "--profile", "gpu-wide", "--notebooks", str(nbs), "--no-train", "--quiet"]) == 0
    assert "nothing has been run at profile gpu-wide" in capsys.readouterr().out
    from sparsedepth.paper.report import results_page

    assert results_page.main(["--profile", "gpu-wide"]) == 0
    assert "no results at profile gpu-wide yet" in capsys.readouterr().out


def test_reproduce_runs_every_notebook_and_reports_failures(tmp_path, capsys, monkeypatch):
    import nbformat

    from sparsedepth.cli import main

    monkeypatch.delenv(R.ROOT_ENV, raising=False)  # restored afterwards: reproduce exports both variables

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_depth.py",
              ["import os\nprint('ran', profile, force, train, os.environ['SPARSEDEPTH_FORCE_SINCE'])"])
    _notebook(nbs / "02_broken.py", ["raise ValueError('boom')", "print('never')"])
    _notebook(nbs / "03_after.py", ["print('after', profile)"], params=None)
    out = tmp_path / "out"
    rc = main(["reproduce", "--profile", "cpu", "--notebooks", str(nbs), "--out", str(out), "--force", "--no-train",
               "--quiet"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "02_broken  failed" in text and "01_depth   ok" in text and "03_after   ok" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{e}" for n in ("01_depth", "02_broken", "03_after")
                                                         for e in ("ipynb", "html"))
    first = (out / "01_depth.ipynb").read_text()
    assert "ran cpu True False" in first  # parameters injected
    broken = nbformat.read(str(out / "02_broken.ipynb"), as_version=4).cells
    assert broken[-2].outputs[0]["ename"] == "ValueError" and not broken[-1].outputs  # kept as far as it ran
    assert "boom" in (out / "02_broken.html").read_text()
    assert "after cpu" in (out / "03_after.ipynb").read_text()  # the next notebook still ran
    assert main(["reproduce", "--notebooks", str(nbs), "--only", "after", "--list"]) == 0
    assert capsys.readouterr().out.strip() == "03_after.py  (--only after)"
    assert main(["reproduce", "--notebooks", str(nbs), "--only", "nope"]) == 2


def test_reproduce_trains_the_chosen_notebooks_variants_in_parallel_first(tmp_path, capsys, monkeypatch):
    from sparsedepth.paper.pipeline import reproduce as rp
    from sparsedepth.paper.pipeline import run_cli
    from sparsedepth.paper.pipeline import run_parallel as rpar
    from sparsedepth.cli import main

    monkeypatch.delenv(R.ROOT_ENV, raising=False)
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for name in ("00_theory", "01_depth", "03_sequence_length"):
        _notebook(nbs / f"{name}.py", ["print('plotted')"])
    assert rp.experiments_of(sorted(nbs.glob("*.py"))) == ["depth", "seqlen"]
    seen = []
    monkeypatch.setattr(run_cli, "train_in_parallel", lambda args, pairs: seen.append((args, pairs)) or 0)
    monkeypatch.setattr(rpar, "_cuda_count", lambda: 0)
    monkeypatch.setattr(rpar.os, "cpu_count", lambda: 3)
    argv = ["reproduce", "--profile", "smoke", "--notebooks", str(nbs), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 0 and not seen  # auto: smoke runs are too short to gain from processes
    assert main(argv + ["--jobs", "3"]) == 0
    ((args, pairs),) = seen
    assert args.gpus == 3 and args.profile == "smoke" and args.device is None and not args.force
    assert pairs == run_cli.parse_items("smoke", ["depth", "seqlen"])
    assert main(argv + ["--jobs", "1"]) == 0 and main(argv + ["--jobs", "3", "--no-train"]) == 0 and len(seen) == 1
    assert rp.jobs_for(rp_args("cpu")) == 3  # cpu runs use one thread: one job per core
    assert main(argv + ["--jobs", "0"]) == 2 and "--jobs must be a positive integer or auto" in capsys.readouterr().err


def rp_args(profile: str, jobs: str = "auto"):
    import argparse

    return argparse.Namespace(profile=profile, jobs=jobs, device="auto")


def test_auto_jobs_one_per_gpu_or_per_core_for_single_thread_runs(monkeypatch):
    from sparsedepth.paper.pipeline import run_parallel as rpar

    monkeypatch.setattr(rpar.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(rpar, "_cuda_count", lambda: 0)
    assert rpar.auto_jobs(1, None) == rpar.MAX_CPU_JOBS and rpar.auto_jobs(None, None) == 1
    monkeypatch.setattr(rpar, "_cuda_count", lambda: 2)
    assert rpar.auto_jobs(None, None) == 2 and rpar.auto_jobs(1, "cuda") == 2
    assert rpar.auto_jobs(1, "cpu") == rpar.MAX_CPU_JOBS  # CPU runs on a GPU machine: cores, not GPUs


def test_run_force_trains_a_shared_config_once(tmp_path, capsys, monkeypatch):
    """``sparsedepth run --force`` one variant after another: the config depth/L3 shares with weight_decay/wd0.1
    is forced once, and the second variant is installed as its copy, not retrained."""
    from sparsedepth.cli import main

    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    monkeypatch.delenv(R.FORCE_ENV, raising=False)  # restored afterwards: --force exports it for the command
    assert main(["run", "--profile", "smoke", "depth/L3", "weight_decay/wd0.1", "--force", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "[smoke/depth/L3] forced" in out and "[smoke/weight_decay/wd0.1] copied from depth/L3" in out


def test_results_key_holds_the_probe_and_evaluation_code_versions(monkeypatch):
    import sparsedepth.eval
    import sparsedepth.probes

    for mod in (sparsedepth.probes, sparsedepth.eval):
        monkeypatch.setattr(mod, "CODE_VERSION", 1)
    key = R.results_key("smoke")
    assert key["code"] == {"probes": 1, "eval": 1}
    # records written before the versions were part of the key hold their version-1 outputs
    legacy = {"hash": "h", "results_key": {k: v for k, v in key.items() if k != "code"}}
    assert R._fresh(legacy, "h", None, key)
    monkeypatch.setattr(sparsedepth.probes, "CODE_VERSION", 2)  # the probes' outputs changed
    newer = R.results_key("smoke")
    assert newer["code"] == {"probes": 2, "eval": 1}
    assert not R._fresh(legacy, "h", None, newer) and not R._fresh({"hash": "h", "results_key": key}, "h", None, newer)


def test_runs_leave_the_working_directory_alone(tmp_path, monkeypatch, overrides):
    """Training, probing and evaluating take their relative data paths from the output root, not a chdir."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "out"
    relative_cache = {k: v for k, v in overrides.items() if k != "data.cache_dir"}  # the default, .cache/...
    _, status = R.run_variant_status("smoke", "depth", "L2", root=root, overrides=relative_cache, progress=False)
    assert status == "trained" and Path.cwd() == tmp_path
    assert not (tmp_path / ".cache").exists() and (root / ".cache" / "sparsedepth" / "tokens").is_dir()


def test_wandb_scores_are_a_no_op_without_wandb(tmp_path):
    """The last stage of every run: with W&B off it must import its helpers and do nothing."""
    cfg = ex.resolve("smoke", "depth", "L2")
    assert not cfg.wandb
    R._wandb_scores(cfg, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_run_probed_along_training_keeps_its_last_point_as_the_final_probes(tmp_path, monkeypatch):
    """A profile with probe points (the gpu rungs) installs trajectory.json, and its final probes are the last
    point's (same weights, settings and windows), not a second probing of the same checkpoint."""
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    monkeypatch.setitem(ex.SCALES, "smoke", dataclasses.replace(ex.SCALES["smoke"], probe_points=3,
                                                                probe_along=ex.TRAJECTORY_ALONG))
    monkeypatch.setattr(R, "_probe_run", lambda *a: pytest.fail("probed the final checkpoint a second time"))
    dest, status = R.run_variant_status("smoke", "depth", "L2", device="cpu", progress=False)
    assert status == "trained" and (dest / "trajectory.json").is_file()
    last = json.loads((dest / "trajectory.json").read_text())["points"][-1]
    probes = json.loads((dest / "probes.json").read_text())
    assert last["step"] == ex.resolve("smoke", "depth", "L2").steps
    from sparsedepth.probes.trajectory import summarize

    def flat(node, path=""):
        if isinstance(node, dict):
            return {k: v for key in sorted(node) for k, v in flat(node[key], f"{path}/{key}").items()}
        if isinstance(node, list):
            return {k: v for i, x in enumerate(node) for k, v in flat(x, f"{path}/{i}").items()}
        return {path: node}

    stats = flat(summarize(probes))  # the installed copy keeps 6 significant digits
    assert stats and flat({k: last[k] for k in summarize(probes)}) == pytest.approx(stats, rel=1e-5, abs=1e-9)
    assert (dest / "trajectory.json").read_text().count("\n") == 1  # installed compact, as probes.json


def test_why_stale_names_what_changed():
    key = R.results_key("smoke")
    rec = {"hash": "abc", "results_version": R.RESULTS_VERSION, "results_key": key}
    assert R.why_stale(rec, "abc", key) == "forced"  # nothing differs
    assert R.why_stale(rec, "def", key) == "config changed (hash abc -> def)"
    old = json.loads(json.dumps(key))
    old["code"]["probes"] = key["code"]["probes"] - 1
    old["probe"]["n_windows"] = key["probe"].get("n_windows", 0) + 1
    why = R.why_stale({**rec, "results_key": old}, "abc", key)
    assert f"probes code version {key['code']['probes'] - 1} -> {key['code']['probes']}" in why
    assert "probe settings changed (n_windows)" in why and "eval" not in why
    legacy = {k: v for k, v in key.items() if k != "code"}  # written before the code versions were in the key
    expected = "; ".join(f"{name} code version {R.LEGACY_CODE[name]} -> {v}" for name, v in key["code"].items()
                         if R.LEGACY_CODE[name] != v)
    assert R.why_stale({**rec, "results_key": legacy}, "abc", key) == (expected or "forced")
    bumped = R.why_stale({**rec, "results_version": 0}, "abc", key)
    assert bumped.startswith(f"results version 0 -> {R.RESULTS_VERSION}")


def test_fit_metrics_script_brings_an_installed_run_under_the_limit(tmp_path, monkeypatch, capsys):
    from conftest import load_script

    fit = load_script("fit_metrics")
    run = tmp_path / "moe" / "moe-large"
    run.mkdir(parents=True)
    rows = [{"step": i, "loss": 1.0, "layer_var": [1.0] * 8, "expert_load": [[0.125] * 64] * 8} for i in range(60)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "provenance.json").write_text(json.dumps({"pipeline": {"eval_s": 1.0}}))
    copy = tmp_path / "moe" / "a-copy"  # a copied variant (found first): its data files link to the trained folder's
    copy.mkdir()
    (copy / "metrics.jsonl").symlink_to(Path("..") / "moe-large" / "metrics.jsonl")
    (copy / "provenance.json").write_text(json.dumps({"pipeline": {"copied_from": "moe/moe-large"}}))
    monkeypatch.setattr(fit, "fit_metrics", lambda lines, p: R.fit_metrics(lines, p, limit=20_000))
    assert fit.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "moe-large:" in out and "a-copy: records of moe-large" in out
    assert (copy / "metrics.jsonl").is_symlink() and (copy / "metrics.jsonl").stat().st_size <= 20_000
    copy_prov = json.loads((copy / "provenance.json").read_text())["pipeline"]
    assert copy_prov["copied_from"] == "moe/moe-large"
    assert copy_prov["bulky_metrics_thinned"] == json.loads((run / "provenance.json").read_text())["pipeline"][
        "bulky_metrics_thinned"]
    kept = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in kept] == list(range(60)) and "expert_load" in kept[-1]
    assert (run / "metrics.jsonl").stat().st_size <= 20_000
    prov = json.loads((run / "provenance.json").read_text())["pipeline"]
    assert prov["eval_s"] == 1.0 and prov["bulky_metrics_thinned"]["every"]["expert_load"] > 1
    before = (run / "metrics.jsonl").read_text()
    assert fit.main([str(tmp_path)]) == 0 and (run / "metrics.jsonl").read_text() == before  # a second pass: no-op
    with pytest.raises(SystemExit):
        fit.main([str(tmp_path / "nowhere")])
