"""The notebooks: percent-format sources (jupytext) without outputs, executable end to end.

``test_notebooks_execute`` runs every notebook with papermill at profile "smoke" against a temporary output
root (``SPARSEDEPTH_OUTPUT_ROOT``), so nothing in the checkout changes, and checks that no cell raised and
that every figure (PNG, SVG, CSV) and table (Markdown, CSV) the notebook promises was written. Smoke results
already finished in the checkout (``paper_results/smoke``, and the run directory the probe notebook uses) are
copied in first, so only missing or stale runs train; SPARSEDEPTH_TEST_SEED_ROOT=DIR copies them from another
output root instead, SPARSEDEPTH_TEST_FRESH=1 trains everything.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
PROFILE = "smoke"
PROBE_TAG = "test"

# notebook -> (figures under figures/<profile>/, tables under paper_results/<profile>/tables/)
EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "00_theory": (["theory_variance", "theory_jacobian"], ["theory_summary"]),
    "01_depth": (["depth_last_layer_variance", "depth_jacobian", "depth_scores", "depth_layer_variance",
                  "depth_usefulness_readings"], ["depth_compare", "depth_usefulness_readings", "depth_claims"]),
    "02_weight_decay": (["weight_decay_last_layer_variance", "weight_decay_scores", "weight_decay_weight_density",
                         "weight_decay_official_decay"],
                        ["weight_decay_compare", "weight_decay_official_decay", "weight_decay_claims"]),
    "03_sequence_length": (["seqlen_last_layer_variance", "seqlen_scores", "seqlen_attention"],
                           ["seqlen_compare", "seqlen_claims"]),
    "04_gqa": (["gqa_last_layer_variance", "gqa_scores", "gqa_density"], ["gqa_compare", "gqa_claims"]),
    "05_moe": (["moe_last_layer_variance", "moe_scores", "moe_density", "moe_expert_load"],
               ["moe_compare", "moe_claims"]),
    "06_recipe": (["recipe_ablation", "recipe_last_layer_variance"], ["recipe_compare", "recipe_claims"]),
    "07_summary": (["scorecard"], ["scorecard", "paper_vs_ours", "paper_vs_ours_depth"]),
    "08_probe_a_model": ([f"probe_{PROBE_TAG}_per_layer", f"probe_{PROBE_TAG}_causal"], [f"probe_{PROBE_TAG}_scores"]),
}
SWEEP_PARAMS = {"profile", "force", "device", "train"}
PROBE_PARAMS = {"checkpoint", "profile", "device", "name", "n_windows", "seq_len"}


def test_notebook_sources_are_clean(tmp_path):
    import jupytext  # requirements.txt: a missing notebook stack fails here rather than skipping
    import nbformat
    import papermill

    from sparsedepth.paper.pipeline.reproduce import to_ipynb

    found = sorted(p.stem for p in NB_DIR.glob("*.py"))
    assert found == sorted(EXPECTED), f"notebooks {found} differ from the expected {sorted(EXPECTED)}"
    assert not list(NB_DIR.glob("*.ipynb")), "commit the .py sources only; reproduce converts them"
    for stem in EXPECTED:
        text = (NB_DIR / f"{stem}.py").read_text()
        nb = jupytext.reads(text, fmt="py:percent")
        # canonical: what jupytext writes back (an edit saved from JupyterLab changes only what was edited)
        assert jupytext.writes(nb, fmt="py:percent") == text, f"{stem}.py is not in jupytext's percent format"
        converted = to_ipynb(NB_DIR / f"{stem}.py", tmp_path / f"{stem}.ipynb")
        nb = nbformat.read(str(converted), as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{stem} has outputs committed"
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{stem}: needs exactly one cell tagged 'parameters'"
        declared = set(papermill.inspect_notebook(str(converted)))
        want = PROBE_PARAMS if stem.startswith("08") else SWEEP_PARAMS
        assert want <= declared, f"{stem}: parameters {sorted(declared)} lack {sorted(want - declared)}"
        src = "\n".join(c.source for c in code)
        # notebooks orchestrate and plot: no model, training or metric code of their own
        for banned in ("import torch", "nn.Module", "def forward", "backward("):
            assert banned not in src, f"{stem} contains {banned!r}; move that code into the library"
        assert "sparsedepth" in src


def _seed(root: Path) -> list[str]:
    """Copy finished smoke results of the checkout into the temporary root (see module docstring)."""
    if os.environ.get("SPARSEDEPTH_TEST_FRESH"):
        return []
    source = Path(os.environ.get("SPARSEDEPTH_TEST_SEED_ROOT") or ROOT).resolve()
    copied = []
    src = source / "paper_results" / PROFILE
    if src.is_dir():  # run results only: tables and the theory cache must come from the notebooks under test
        def top(d, names):
            return [n for n in names if n == "tables" or n.endswith(".json")] if Path(d) == src else []

        shutil.copytree(src, root / "paper_results" / PROFILE, ignore=top)
        copied.append(str(src))
    from sparsedepth.paper.spec import experiments
    from sparsedepth.paper.pipeline import results

    variant = list(experiments.variants(PROFILE, "depth"))[-1]
    run = results.run_dir_for(PROFILE, experiments.resolve(PROFILE, "depth", variant), source)
    summary = run / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("done") and (run / "checkpoints").is_dir():
        shutil.copytree(run, root / run.relative_to(source))
        copied.append(str(run))
    return copied


def _errors(path: Path) -> list[str]:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.slow
def test_notebooks_execute(tmp_path, monkeypatch):
    import papermill

    from sparsedepth.paper.pipeline.reproduce import to_ipynb
    root = tmp_path / "root"
    root.mkdir()
    seeded = _seed(root)
    print(f"output root {root}; seeded with: {seeded or 'nothing'}")
    monkeypatch.setenv("SPARSEDEPTH_OUTPUT_ROOT", str(root))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    failures, timings = [], {}
    for stem, (figures, tabs) in EXPECTED.items():
        params = {"profile": PROFILE, "device": "cpu"}
        params.update({"name": PROBE_TAG, "n_windows": 4} if stem.startswith("08") else {"force": False, "train": True})
        out = tmp_path / "executed" / f"{stem}.ipynb"
        out.parent.mkdir(exist_ok=True)
        t0 = time.time()
        try:
            to_ipynb(NB_DIR / f"{stem}.py", out)
            papermill.execute_notebook(str(out), str(out), parameters=params,
                                       kernel_name="python3", cwd=str(NB_DIR), progress_bar=False)
        except Exception as e:  # PapermillExecutionError; the partial notebook is in `out`
            failures.append(f"{stem}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:400]}")
        timings[stem] = round(time.time() - t0, 1)
        if out.exists():
            failures += [f"{stem}: cell raised {err}" for err in _errors(out)]
        for name in figures:
            for ext in ("png", "svg", "csv"):
                p = root / "figures" / PROFILE / f"{name}.{ext}"
                if not (p.is_file() and p.stat().st_size > 0):
                    failures.append(f"{stem}: figure file {p.relative_to(root)} missing or empty")
        for name in tabs:
            for ext in ("md", "csv"):
                p = root / "paper_results" / PROFILE / "tables" / f"{name}.{ext}"
                if not (p.is_file() and p.stat().st_size > 0):
                    failures.append(f"{stem}: table file {p.relative_to(root)} missing or empty")
    if not (root / "paper_results" / PROFILE / "RESULTS.md").is_file():
        failures.append("07_summary: no results page paper_results/<profile>/RESULTS.md")
    print("notebook seconds:", timings, file=sys.stderr)
    assert not failures, "\n".join(failures)
