"""``sparsedepth run``: argument parsing, listing, the time budget, and what it asks the run cache to do (the
cache itself is tested with real runs in test_results.py)."""
from __future__ import annotations

import json
import re

import pytest

from sparsedepth import cli
from sparsedepth.paper.pipeline import run_cli, run_parallel
from sparsedepth.paper.spec import experiments as ex
from sparsedepth.paper.pipeline import results as R


@pytest.fixture
def calls(monkeypatch, tmp_path) -> list:
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    monkeypatch.delenv(R.FORCE_ENV, raising=False)  # restored afterwards: --force exports it
    seen = []

    def fake_run_experiment(profile, experiment, force=False, train=True, *, variants=None, progress=True,
                            device=None, raise_on_error=True, **kw):
        assert raise_on_error is False  # the command reports failures itself, after every variant ran
        (variant,) = variants
        seen.append((ex.plan(profile).profile, experiment, variant, force, device))  # the command passes a Plan
        return {variant: R.FAILED if force and variant == "L3" else "trained"}  # an injected failure

    monkeypatch.setattr(R, "run_experiment", fake_run_experiment)
    return seen


def test_items_keep_their_order_and_expand_experiments(calls):
    assert cli.main(["run", "--profile", "smoke", "moe/moe-small", "depth", "--device", "cpu", "--quiet"]) == 0
    assert [c[1:3] for c in calls] == [("moe", "moe-small")] + [("depth", v) for v in ex.variants("smoke", "depth")]
    assert all(c[0] == "smoke" and c[4] == "cpu" for c in calls)


def test_all_means_every_variant_once():
    pairs = run_cli.parse_items("smoke", ["depth/L2", "all"])
    assert pairs[0] == ("depth", "L2") and len(pairs) == len(set(pairs))
    assert {e for e, _ in pairs} == set(ex.EXPERIMENTS)  # the paper's experiments: no check of ours


def test_checks_run_by_name():
    pairs = run_cli.parse_items("smoke", ["weight_decay_official", "weight_decay_official/wd3"])
    assert pairs == [("weight_decay_official", v) for v in ex.variants("smoke", "weight_decay_official")]


def test_failed_variant_gives_exit_1(calls, capsys):
    assert cli.main(["run", "depth/L2", "depth/L3", "--profile", "smoke", "--force"]) == 1
    assert [c[2:4] for c in calls] == [("L2", True), ("L3", True)]
    assert "depth/L3" in capsys.readouterr().err


@pytest.mark.parametrize("items, match", [
    (["deep"], "unknown experiment 'deep'.*depth"),
    (["depth/L99"], "L99.*valid: L2, L3"),
    (["all/L2"], "unknown experiment 'all'"),
])
def test_bad_items_name_the_fix(calls, items, match):
    with pytest.raises(SystemExit, match=match):
        cli.main(["run", "--profile", "smoke", *items])
    assert not calls


def test_list_prints_status_and_runs_nothing(calls, capsys):
    assert cli.main(["run", "depth", "--profile", "smoke", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "smoke/depth/L2: missing" and len(out) == 4 and not calls


def _fake_finished(tmp_path, profile: str, experiment: str, variant: str, wall_s: float, train_s: float,
                   probes_s: float, eval_s: float) -> None:
    """A finished results folder with the timing fields the estimate reads."""
    cfg = ex.resolve(profile, experiment, variant)
    folder = R.results_dir(profile, experiment, variant, tmp_path)
    folder.mkdir(parents=True)
    record = R._record(profile, experiment, variant, cfg, 0.0)
    files = {"config.json": record, "summary.json": {"done": True, "wall_s": wall_s, "tokens": cfg.steps * cfg.tokens_per_step},
             "provenance.json": {"pipeline": {"train_s": train_s, "probes_s": probes_s, "eval_s": eval_s}},
             "probes.json": {}, "eval.json": {}}
    for name, obj in files.items():
        (folder / name).write_text(json.dumps(obj))
    (folder / "metrics.jsonl").write_text("")


def test_estimate_scales_with_flops_and_depth(calls, tmp_path):
    _fake_finished(tmp_path, "smoke", "depth", "L2", wall_s=10.0, train_s=14.0, probes_s=4.0, eval_s=2.0)
    finished = run_cli._finished("smoke")
    (f,) = finished
    assert f["setup_s"] == pytest.approx(6.0) and f["probes_per_layer2"] == pytest.approx(1.0)
    l2, l6 = (ex.resolve("smoke", "depth", v) for v in ("L2", "L6"))
    assert run_cli.estimate_seconds(l2, finished) == pytest.approx(run_cli.MARGIN * (10 + 6 + 4))
    flops = lambda c: c.steps * c.tokens_per_step * c.model.flops_per_token(c.seq_len)  # noqa: E731
    expect = run_cli.MARGIN * (10 * flops(l6) / flops(l2) + 6 + 36)
    assert run_cli.estimate_seconds(l6, finished) == pytest.approx(expect)
    assert run_cli.estimate_seconds(l2, []) is None
    moe = ex.resolve("smoke", "moe", "moe-small")  # no MoE has finished: the dense rate, slowed by the guess
    assert moe.model.is_moe
    train_s = 10 * flops(moe) / flops(l2) / run_cli.MOE_RATE_GUESS
    expect = run_cli.MARGIN * (train_s + 6 + moe.model.n_layers ** 2)
    assert run_cli.estimate_seconds(moe, finished) == pytest.approx(expect)


def test_a_run_resumed_across_invocations_gives_its_rate_but_no_setup_time(calls, tmp_path):
    # the last invocation trained 40 s of a run whose training segments took 100 s in all
    _fake_finished(tmp_path, "smoke", "depth", "L2", wall_s=100.0, train_s=40.0, probes_s=0.0, eval_s=5.0)
    (f,) = run_cli._finished("smoke")
    assert f["setup_s"] is None
    l2 = ex.resolve("smoke", "depth", "L2")
    assert run_cli.estimate_seconds(l2, [f]) == pytest.approx(run_cli.MARGIN * 100.0)


def test_budget_starts_only_what_fits(calls, tmp_path, capsys):
    _fake_finished(tmp_path, "smoke", "depth", "L2", wall_s=10.0, train_s=14.0, probes_s=4.0, eval_s=2.0)
    # L2 is done (the fake runner is never asked); L3 needs about 26 s; L6 about twice that
    assert cli.main(["run", "depth/L2", "depth/L6", "depth/L3", "--profile", "smoke", "--budget-s", "40"]) == 0
    assert [c[2] for c in calls] == ["L2", "L3"]  # L2 is asked (the cache skips it), L6 does not fit
    assert "depth/L6" in capsys.readouterr().out


def test_a_paused_run_is_budgeted_for_the_steps_it_has_left(calls, tmp_path, capsys):
    _fake_finished(tmp_path, "smoke", "depth", "L2", wall_s=10.0, train_s=14.0, probes_s=4.0, eval_s=2.0)
    l6 = ex.resolve("smoke", "depth", "L6")
    finished = run_cli._finished("smoke")
    whole = run_cli.estimate_seconds(l6, finished)
    step = l6.steps * 7 // 8
    (R.run_dir_for("smoke", l6) / "checkpoints" / f"step-{step:08d}").mkdir(parents=True)
    assert run_cli.checkpoint_step("smoke", l6) == step
    left = run_cli.estimate_seconds(l6, finished, step)
    fixed = run_cli.estimate_seconds(l6, finished, l6.steps)  # setup, probes and evaluation: not scaled
    assert left - fixed == pytest.approx((whole - fixed) * (l6.steps - step) / l6.steps)
    budget = f"{(left + whole) / 2:.1f}"  # enough for the rest, not for the whole run
    assert cli.main(["run", "depth/L6", "--profile", "smoke", "--list"]) == 0
    assert f"{l6.steps - step} of {l6.steps} steps left" in capsys.readouterr().out
    assert cli.main(["run", "depth/L6", "--profile", "smoke", "--budget-s", budget]) == 0
    assert [c[2] for c in calls] == ["L6"]  # resumed: only its last eighth is trained


class _FakeChild:
    """A child process that exits with ``rc`` once the fake clock reaches ``end``."""

    def __init__(self, clock: list, end: float, rc: int):
        self.clock, self.end, self.rc = clock, end, rc

    def poll(self):
        return self.rc if self.clock[0] >= self.end else None

    def terminate(self):
        self.end = self.clock[0]

    def wait(self, timeout=None):
        return self.rc


def test_parallel_schedule_fills_every_gpu_in_priority_order_within_the_budget():
    clock = [0.0]
    est = {("a", "1"): 50.0, ("a", "2"): 50.0, ("b", "1"): 30.0, ("b", "2"): 100.0, ("c", "1"): 10.0}
    started = []

    def launch(pair, slot):
        started.append((pair, slot, clock[0]))
        return _FakeChild(clock, clock[0] + est[pair], rc=1 if pair == ("b", "1") else 0)

    def tick(seconds):
        clock[0] += seconds

    failed, skipped = run_parallel.schedule(list(est), 2, 90.0, est.get, launch, log=lambda m: None,
                                            clock=lambda: clock[0], sleep=tick, poll_s=5.0)
    # a1 and a2 start together; at t=50 both GPUs free up with 40 s left: b1 (30 s) fits, b2 (100 s) never
    # does, c1 (10 s) takes the other GPU; c1 and b1 end before the budget and nothing else fits
    assert started == [(("a", "1"), 0, 0.0), (("a", "2"), 1, 0.0), (("b", "1"), 0, 50.0), (("c", "1"), 1, 50.0)]
    assert failed == ["b/1"] and skipped == ["b/2"]
    # the dry run that --list --gpus prints makes the same decisions
    rows, skipped = run_parallel.simulate(list(est), 2, 90.0, est.get)
    assert [(slot, pair, start) for slot, pair, start, _ in rows] == [(s, p, t) for p, s, t in started]
    assert skipped == ["b/2"]


def test_list_with_gpus_prints_a_plan(calls, tmp_path, capsys):
    _fake_finished(tmp_path, "smoke", "depth", "L2", wall_s=10.0, train_s=14.0, probes_s=4.0, eval_s=2.0)
    assert cli.main(["run", "depth", "--profile", "smoke", "--list", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "plan for 2 jobs at a time (one per GPU):" in out and "job 0:" in out and "job 1:" in out and "depth/L2\n" not in out
    assert not calls


def test_parallel_run_trains_each_config_once_and_copies_the_rest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    # depth/L3 and gqa/G1 share a config: one child trains it, the last pass copies it
    assert cli.main(["run", "--profile", "smoke", "depth/L2", "depth/L3", "gqa/G1", "--gpus", "2",
                     "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "[job 0] start depth/L2" in out and "[job 1] start depth/L3" in out and "start gqa/G1" not in out
    for exp, var in (("depth", "L2"), ("depth", "L3"), ("gqa", "G1")):
        assert R.status("smoke", exp)[var] == "done"
    prov = json.loads((R.results_dir("smoke", "gqa", "G1", tmp_path) / "provenance.json").read_text())
    assert prov["pipeline"]["copied_from"] == "depth/L3"


def test_runs_sharing_a_gpu_grow_their_memory_pools_in_expandable_segments():
    """Only sharing runs get the allocator setting, and a user's own PYTORCH_CUDA_ALLOC_CONF is kept."""
    assert run_parallel.sharing_env(1, {}) == {}
    assert run_parallel.sharing_env(3, {}) == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert run_parallel.sharing_env(3, {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}) == {}


def test_per_gpu_shares_each_gpu_and_budgets_the_worst_case(calls, tmp_path, capsys):
    """--per-gpu K: K jobs per GPU (slots 0..K-1 on the first), each estimated at K times one run's time."""
    assert [run_parallel.gpu_of_slot(s, 3, ["4", "5"]) for s in range(6)] == ["4", "4", "4", "5", "5", "5"]
    _fake_finished(tmp_path, "smoke", "depth", "L2", wall_s=10.0, train_s=14.0, probes_s=4.0, eval_s=2.0)
    assert cli.main(["run", "depth", "--profile", "smoke", "--list", "--per-gpu", "2"]) == 0
    one = capsys.readouterr().out
    assert "plan for 2 jobs at a time (2 sharing each GPU):" in one
    assert cli.main(["run", "depth", "--profile", "smoke", "--list", "--gpus", "2"]) == 0
    two = capsys.readouterr().out
    last_end = lambda out: max(float(m) for m in re.findall(r"job \d+:\s+[\d.]+-\s*([\d.]+) s", out))  # noqa: E731
    assert last_end(one) == pytest.approx(2 * last_end(two), abs=1.0)  # shared: twice the time of one per GPU
    with pytest.raises(SystemExit, match="--per-gpu must be at least 1"):
        cli.main(["run", "--profile", "smoke", "depth/L2", "--per-gpu", "0"])
    assert not calls


def test_more_gpus_than_visible_is_refused_with_the_count(monkeypatch):
    monkeypatch.setattr(run_parallel, "_cuda_count", lambda: 1)
    with pytest.raises(SystemExit, match="--gpus 3 but .* visible"):
        cli.main(["run", "--profile", "smoke", "depth/L2", "--gpus", "3"])
    with pytest.raises(SystemExit, match="at least 1"):
        cli.main(["run", "--profile", "smoke", "depth/L2", "--gpus", "0"])


def test_an_interrupted_schedule_terminates_its_children():
    clock, children = [0.0], []

    def launch(pair, slot):
        children.append(_FakeChild(clock, 100.0, rc=0))
        return children[-1]

    def interrupted(_):
        raise KeyboardInterrupt  # what SIGTERM becomes (SystemExit) behaves the same

    with pytest.raises(KeyboardInterrupt):
        run_parallel.schedule([("a", "1"), ("a", "2"), ("a", "3")], 2, None, lambda p: None, launch,
                              log=lambda m: None, clock=lambda: clock[0], sleep=interrupted)
    assert len(children) == 2 and all(c.end == 0.0 for c in children)  # both running children were stopped


def test_parallel_progress_lines_give_a_time_left_no_shorter_than_the_longest_run():
    clock, logs = [0.0], []
    est = {("a", "1"): 600.0, ("a", "2"): 300.0, ("b", "1"): 900.0}

    def tick(seconds):
        clock[0] += seconds

    run_parallel.schedule(list(est), 2, None, est.get, lambda p, s: _FakeChild(clock, clock[0] + est[p], rc=0),
                          log=logs.append, clock=lambda: clock[0], sleep=tick, poll_s=10.0)
    done = [line for line in logs if " done " in line]
    # at 300 s b/1 (900 s) has just to start: 15 min left, not (600 - 300 + 900) / 2 = 10
    assert done[0].endswith("300 s elapsed, about 15 min left")
    assert done[1].endswith("600 s elapsed, about 10 min left") and done[2].endswith("1200 s elapsed")


def test_stop_after_s_pauses_real_runs_and_the_same_command_resumes_them(tmp_path, monkeypatch, capsys):
    """Smoke runs stopped by the time limit are paused (exit 3, checkpoint kept, not installed), and the same
    command without the limit finishes them from there; once the time is up nothing more starts."""
    from sparsedepth.train import loop

    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    monkeypatch.setenv(loop.STOP_AT_ENV, "")  # empty: no deadline; the command exports its own, undone afterwards
    cmd = ["run", "--profile", "smoke", "depth/L2", "depth/L3", "--device", "cpu", "--quiet"]
    with monkeypatch.context() as m:
        m.setattr(loop, "stop_time_from_env", lambda: 0.0)  # every training finds its time up at once
        assert cli.main(cmd + ["--stop-after-s", "3600"]) == 3
    assert "paused at a checkpoint: depth/L2, depth/L3; resume with the same command" in capsys.readouterr().out
    cfg = ex.resolve("smoke", "depth", "L2")
    run_dir = R.run_dir_for("smoke", cfg, tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 1
    assert R.status("smoke", "depth")["L2"] == R.PAUSED  # not failed: no error.txt, the run dir is resumable
    assert not (R.results_dir("smoke", "depth", "L2", tmp_path) / "error.txt").exists()
    assert cli.main(cmd + ["--stop-after-s", "1e-6"]) == 3  # up before the first variant: nothing starts
    assert "not started (budget or time limit): depth/L2, depth/L3" in capsys.readouterr().out
    monkeypatch.setenv(loop.STOP_AT_ENV, "")  # exported by the command for its children
    assert cli.main(cmd) == 0
    assert R.status("smoke", "depth")["L2"] == "done"
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == cfg.steps
    with pytest.raises(SystemExit, match="--stop-after-s must be positive"):
        cli.main(cmd + ["--stop-after-s", "0"])
