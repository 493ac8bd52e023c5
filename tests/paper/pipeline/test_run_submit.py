"""``sparsedepth run --submit``: one batch job per distinct config through submitit, into the same run cache."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from sparsedepth import cli
from sparsedepth.config import config_hash
from sparsedepth.paper.pipeline import results as R
from sparsedepth.paper.pipeline import run_submit
from sparsedepth.paper.spec import experiments as ex

pytest.importorskip("submitit")


@pytest.fixture
def calls(monkeypatch, tmp_path) -> list:
    """What the jobs ask of the run cache (the cache itself is tested in test_results.py)."""
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    monkeypatch.delenv(R.FORCE_ENV, raising=False)
    seen = []

    def fake_run_experiment(profile, experiment, force=False, train=True, *, variants=None, **kw):
        (variant,) = variants
        seen.append((experiment, variant, train, os.environ[R.ROOT_ENV]))
        return {variant: R.FAILED if variant == "L6" else "trained" if train else "copied"}

    monkeypatch.setattr(R, "run_experiment", fake_run_experiment)
    return seen


def submit(tmp_path, *items: str, cluster: str = "debug", extra=()) -> int:
    return cli.main(["run", "--profile", "smoke", *items, "--submit", cluster, "--device", "cpu",
                     "--jobs-dir", str(tmp_path / "jobs"), *extra])


def test_one_job_per_config_whose_copies_follow_its_training(calls, tmp_path, capsys):
    # depth/L3 and gqa/G1 share a config: one job trains it and installs the other
    assert submit(tmp_path, "depth/L2", "depth/L3", "gqa/G1", extra=["--wait"]) == 0
    out = capsys.readouterr().out
    assert out.count("submitted job") == 2 and "smoke depth/L3, gqa/G1" in out
    assert [c[:2] for c in calls] == [("depth", "L2"), ("depth", "L3"), ("gqa", "G1")]
    assert all(c[3] == str(tmp_path) for c in calls)  # the submitting checkout's cache


def test_a_failed_variant_fails_its_job_and_the_command(calls, tmp_path, capsys):
    assert submit(tmp_path, "depth/L6", "depth/L2", extra=["--wait"]) == 1
    assert "depth/L6" in capsys.readouterr().err and ("depth", "L2", True, str(tmp_path)) in calls


def test_without_wait_the_jobs_are_only_queued(calls, tmp_path, capsys):
    assert submit(tmp_path, "depth/L2") == 0
    assert "1 job(s) on debug" in capsys.readouterr().out and not calls  # debug jobs run when waited for


def test_done_configs_are_copied_here_without_a_job(calls, tmp_path, capsys, monkeypatch):
    done = config_hash(ex.resolve("smoke", "depth", "L3"))
    real_status = R.status
    monkeypatch.setattr(R, "status", lambda plan, e, root=None: {
        v: "done" if (e, v) == ("depth", "L3") else st for v, st in real_status(plan, e, root).items()})
    assert config_hash(ex.resolve("smoke", "gqa", "G1")) == done
    assert submit(tmp_path, "depth/L3", "gqa/G1") == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert calls == [("gqa", "G1", False, str(tmp_path))]


def test_a_multi_gpu_job_trains_under_torchrun_first(calls, tmp_path):
    ran = []

    def fake_run(cmd, cwd):
        ran.append((cmd, cwd))
        return subprocess.CompletedProcess(cmd, 0)

    statuses = run_submit.run_job("smoke", [("depth", "L2")], str(tmp_path), None, None, 4, run=fake_run)
    (cmd, cwd), = ran
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m"]
    run_dir = R.run_dir_for("smoke", ex.resolve("smoke", "depth", "L2"), tmp_path)
    assert cmd[cmd.index("--run-dir") + 1] == str(run_dir) and cwd == str(tmp_path)
    assert statuses == {"depth/L2": "trained"}  # the cache then finds the run finished and probes it
    with pytest.raises(RuntimeError, match="torchrun training exited with 3"):
        run_submit.run_job("smoke", [("depth", "L2")], str(tmp_path), None, None, 2,
                           run=lambda cmd, cwd: subprocess.CompletedProcess(cmd, 3))


@pytest.mark.parametrize("extra, match", [
    (["--gpus", "2"], "--submit and --gpus N do not combine"),
    (["--slurm", "partition"], "--slurm expects KEY=VALUE"),
    (["--force", "--gpus-per-job", "2"], "--force with --gpus-per-job above 1"),
    (["--gpus-per-job", "0"], "at least 1"),
])
def test_bad_options_name_the_fix(calls, tmp_path, extra, match):
    with pytest.raises(SystemExit, match=match):
        submit(tmp_path, "depth/L2", extra=extra)
    assert not calls


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SPARSEDEPTH_TEST_SUBMITIT"),
                    reason="about 20 s on 2 busy cores (a real smoke run in a submitit local job); "
                           "set SPARSEDEPTH_TEST_SUBMITIT=1 to run it")
def test_local_executor_trains_a_smoke_variant_into_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    assert submit(tmp_path, "depth/L2", cluster="local", extra=["--wait"]) == 0
    assert R.status("smoke", "depth")["L2"] == "done"
    prov = json.loads((R.results_dir("smoke", "depth", "L2", tmp_path) / "provenance.json").read_text())
    assert prov["pipeline"]["experiment"] == "depth"
    assert submit(tmp_path, "depth/L2", cluster="local") == 0  # up to date: nothing to submit
    assert "nothing to submit" in capsys.readouterr().out


def test_job_options_reach_submitit(tmp_path):
    import argparse

    args = argparse.Namespace(slurm=["mem_gb=200", "cpus_per_task=16", "partition=gpu"], submit="local",
                              device="cpu", gpus_per_job=8, timeout_min=60)
    params = run_submit.make_executor(args, tmp_path / "%j")._executor.parameters
    # shared options as they are (the SLURM-only partition is for the slurm executor); no GPU for --device cpu
    assert params["mem_gb"] == 200 and params["cpus_per_task"] == 16 and params["gpus_per_node"] == 0
    assert "partition" not in params and params["timeout_min"] == 60


def test_slurm_options_are_prefixed_for_its_executor(tmp_path, monkeypatch):
    import argparse

    import submitit

    seen = {}

    class Recorder:
        def __init__(self, folder, cluster):
            seen.update(folder=folder, cluster=cluster)

        def update_parameters(self, **kw):
            seen.update(kw)

    monkeypatch.setattr(submitit, "AutoExecutor", Recorder)
    args = argparse.Namespace(slurm=["partition=gpu", "mem_gb=500", "account=me"], submit="slurm", device=None,
                              gpus_per_job=8, timeout_min=1440)
    run_submit.make_executor(args, tmp_path / "%j")
    assert seen["cluster"] == "slurm" and seen["gpus_per_node"] == 8 and seen["mem_gb"] == 500
    assert seen["slurm_partition"] == "gpu" and seen["slurm_account"] == "me"
