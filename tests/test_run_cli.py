"""``sparsedepth run``: argument checks, listing, and what it asks the run cache to do (the cache itself is
tested with real runs in test_results.py)."""
from __future__ import annotations

import pytest

from sparsedepth import cli
from sparsedepth import results as R


@pytest.fixture
def calls(monkeypatch, tmp_path) -> list:
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    seen = []

    def fake_run_experiment(profile, experiment, force=False, train=True, *, variants=None, progress=True,
                            device=None, raise_on_error=True, **kw):
        seen.append((profile, experiment, variants, force, device))
        assert raise_on_error is False  # the command reports failures itself, after every experiment ran
        names = variants or ["a", "b"]
        return {v: (R.FAILED if v == "L3" else "trained") for v in names}

    monkeypatch.setattr(R, "run_experiment", fake_run_experiment)
    return seen


def test_runs_each_experiment_in_order(calls):
    assert cli.main(["run", "--profile", "smoke", "depth", "moe", "--device", "cpu", "--quiet"]) == 0
    assert [c[1] for c in calls] == ["depth", "moe"] and all(c[0] == "smoke" and c[4] == "cpu" for c in calls)


def test_all_means_every_experiment(calls):
    from sparsedepth.experiments import EXPERIMENTS

    assert cli.main(["run", "all", "--profile", "smoke", "--quiet"]) == 0
    assert tuple(c[1] for c in calls) == EXPERIMENTS


def test_failed_variant_gives_exit_1(calls, capsys):
    assert cli.main(["run", "depth", "--profile", "smoke", "--variants", "L2,L3", "--force"]) == 1
    assert calls == [("smoke", "depth", ["L2", "L3"], True, None)]
    assert "depth/L3" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["run", "deep"], "unknown experiment.*depth"),
    (["run", "depth", "moe", "--variants", "L2"], "exactly one experiment"),
    (["run", "depth", "--profile", "smoke", "--variants", "L99"], "L99.*valid: L2, L3"),
])
def test_bad_arguments_name_the_fix(calls, argv, match):
    with pytest.raises(SystemExit, match=match):
        cli.main(argv)
    assert not calls


def test_list_prints_status_and_runs_nothing(calls, capsys):
    assert cli.main(["run", "depth", "--profile", "smoke", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "smoke/depth/L2: missing" and len(out) == 4 and not calls
