"""RunResult: every reading the paper layer uses, read from the nested result files through one accessor,
absent or malformed values as None, and results folders loaded into it."""
from __future__ import annotations

import json
import math
from dataclasses import FrozenInstanceError

import pytest

from sparsedepth.paper.pipeline import results as R
from sparsedepth.paper.pipeline.run_result import RunResult, lookup, number


def _run(**kw) -> RunResult:
    base = dict(
        config={"model": {"n_layers": 4, "n_heads": 8, "n_kv_heads": 2}, "optim": {"weight_decay": 0.1},
                "seq_len": 64},
        meta={"label": "L=4", "paper_label": "L=16", "paper_key": 16, "seed": 1},
        metrics=[{"step": 1, "layer_var": [1.0, 2.0], "final_var": 1.1}, {"step": 2, "loss": 3.0},
                 {"step": 3, "layer_var": [1.0, 5.0], "final_var": 1.3}],
        probes={"variance": {"layer_var": [0.5, 0.7], "final_norm_var": 1.2},
                "usefulness": {"score": 0.25, "useful": [True, False, True, False], "mean_ratio": 1.05,
                               "paper_compat": {"mean_ratio": 1.01}},
                "causal": {"score": 0.3}, "permutation": {"score": 0.6},
                "jacobian": {"jacobian_norm": [0.4, "nan?", 0.2]}},
        eval={"perplexity": {"ppl": 42.0}, "mean_acc": 0.4, "tasks": {"a": {"acc": 0.3, "n": 100}, "b": {"acc": 0.5}}},
        summary={"val_ppl": 40.0, "tokens": 1000})
    return RunResult("depth", "L4-seed1", **{**base, **kw})


def test_identity_and_config():
    r = _run()
    assert (r.label, r.paper_label, r.setting, r.seed) == ("L=4", "L=16", 16, 1)
    assert r.config_value("optim.weight_decay") == 0.1 and r.config_value("model.group_size") == 4
    with pytest.raises(KeyError, match="model.n_layer"):
        r.config_value("model.n_layer")
    bare = RunResult("depth", "L4", {})
    assert (bare.label, bare.paper_label, bare.setting, bare.seed) == ("L4", "L4", None, 0)
    with pytest.raises(FrozenInstanceError):
        r.probes = None  # type: ignore[misc]


def test_named_readings():
    r = _run()
    assert r.last_layer_var_series() == [(1, 2.0), (3, 5.0)]
    assert r.postnorm_var_series() == [(1, 1.1), (3, 1.3)]
    assert r.probed_last_layer_var() == 0.7 and r.probed_postnorm_var() == 1.2
    assert r.perplexity() == 42.0 and r.mean_acc() == 0.4 and r.tokens() == 1000
    assert r.task_accuracies() == [(0.3, 100.0), (0.5, None)]
    assert (r.usefulness_fraction(), r.useful_layers(), r.loss_ratio(), r.loss_ratio_compat()) == (0.25, 2, 1.05, 1.01)
    assert (r.causal(), r.permutation()) == (0.3, 0.6)
    assert r.jacobian() == [0.4, None, 0.2]  # a malformed entry is None, not an error
    assert r.probe("usefulness.paper_compat.mean_ratio") == 1.01 and r.probe("no.such.path", "x") == "x"


def test_absent_and_malformed_readings_are_none():
    r = RunResult("depth", "L4", {}, metrics=[{"step": 1, "layer_var": "garbage"}], probes=None,
                  eval={"perplexity": {"ppl": float("nan")}, "mean_acc": "n/a"}, summary={"val_ppl": 7.0})
    assert r.last_layer_var_series() == [] and r.probed_last_layer_var() is None
    assert r.perplexity() == 7.0  # the summary's when the evaluation has none
    assert r.mean_acc() is None and r.task_accuracies() is None
    assert r.usefulness_fraction() is None and r.useful_layers() is None and r.jacobian() is None
    assert number("3") == 3.0 and number(math.inf) is None and number([1]) is None
    assert lookup({"a": {"b": 1}}, "a.b") == 1 and lookup({"a": 1}, "a.b") is None


def test_load_variant_reads_a_results_folder(tmp_path):
    folder = tmp_path / "depth" / "L4"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": {"seq_len": 8}, "hash": "h1",
                                                    "results_version": R.RESULTS_VERSION}))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "layer_var": [1.0, 3.0]}) + "\n")
    for name, body in (("probes.json", {"usefulness": {"score": 0.5}}), ("eval.json", {"perplexity": {"ppl": 9.0}}),
                       ("summary.json", {"done": True}), ("provenance.json", {})):
        (folder / name).write_text(json.dumps(body))
    r = R.load_variant(folder)
    assert r is not None
    assert (r.experiment, r.variant, r.hash) == ("depth", "L4", "h1")
    assert r.last_layer_var_series() == [(1, 3.0)] and r.usefulness_fraction() == 0.5 and r.perplexity() == 9.0
    assert R.load_variant(folder, current_hash="other").stale and not r.stale
