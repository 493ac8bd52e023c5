"""The gpu rungs beside the gpu profile: gpu-long (tokens) and gpu-wide (width), each with probes along training."""
from __future__ import annotations

import dataclasses

import pytest

from sparsedepth import cli
from sparsedepth.config import config_hash
from sparsedepth.paper.spec import experiments as ex


def test_gpu_long_trains_300m_tokens_on_the_three_shards_for_depth_and_three_decays():
    s = ex.scale("gpu-long")
    assert s.experiments == ("depth", "weight_decay")
    depth, wd = ex.variants("gpu-long", "depth"), ex.variants("gpu-long", "weight_decay")
    assert [c.model.n_layers for c in depth.values()] == [12, 16, 24, 32]
    assert [c.optim.weight_decay for c in wd.values()] == [0.0, 0.1, 1.0]
    gpu = ex.resolve("gpu", "depth", "L16")
    for cfg in [*depth.values(), *wd.values()]:
        assert cfg.steps * cfg.tokens_per_step >= 300_000_000
        assert cfg.data.corpus == ".data/wiki-en-2019.0[0-2].txt.xz"
        assert (cfg.model.d_model, cfg.seq_len, cfg.batch_size, cfg.optim.lr) == \
            (gpu.model.d_model, gpu.seq_len, gpu.batch_size, gpu.optim.lr)  # the gpu scale, only longer
    assert ex.resolve("gpu-long", "weight_decay", "wd0.1") == depth["L16"]  # trained once
    assert len(ex.unique_runs("gpu-long")) == 6


def test_gpu_wide_is_the_gpu_depth_sweep_at_d1024():
    wide, gpu = ex.variants("gpu-wide", "depth"), ex.variants("gpu", "depth")
    assert ex.scale("gpu-wide").experiments == ("depth",) and list(wide) == ["L12", "L16", "L24", "L32"]
    for name, cfg in wide.items():
        assert (cfg.model.d_model, cfg.model.n_heads, cfg.model.head_dim) == (1024, 16, 64)
        assert cfg.steps * cfg.tokens_per_step == gpu[name].steps * gpu[name].tokens_per_step
        assert cfg.data == gpu[name].data and cfg.model.n_layers == gpu[name].model.n_layers


@pytest.mark.parametrize("profile", ["gpu-long", "gpu-wide"])
def test_rungs_probe_along_training_without_changing_what_trains(profile):
    s = ex.scale(profile)
    for e in s.experiments:
        for cfg in ex.variants(profile, e).values():
            assert cfg.probe_points == 8 and cfg.probe == ex.probe_settings(profile)  # last point = probes.json
            # the same cheaper probes before the last point; gpu-wide's d=1024 Jacobian gets one window
            assert cfg.probe_along == {**ex.TRAJECTORY_ALONG,
                                       **({"jacobian_windows": 1} if profile == "gpu-wide" else {})}
            plain = dataclasses.replace(cfg, probe_points=0, probe={}, probe_along={})
            assert config_hash(plain) == config_hash(cfg)
    for e in set(ex.EXPERIMENTS) - set(s.experiments):  # the sweeps a rung does not run have no variants
        assert ex.variants(profile, e) == {}


@pytest.mark.parametrize("profile", ["gpu-long", "gpu-wide"])
def test_list_and_run_list_show_only_the_rungs_sweeps(profile, capsys, tmp_path, monkeypatch):
    from sparsedepth.paper.pipeline import results as R

    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    assert cli.main(["list", "--profile", profile]) == 0
    out = capsys.readouterr().out
    assert "== depth ==" in out and "== gqa ==" not in out and "H200 GPU-hours" in out
    assert cli.main(["run", "--profile", profile, "all", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.split("/")[1] in ex.scale(profile).experiments for line in lines[:-1])
    assert f"{profile}/depth/L32: missing (about" in "\n".join(lines) and lines[-1].startswith("to train: about")
    assert cli.main(["list"]) == 0
    assert f"  {profile} (not in this profile)" in capsys.readouterr().out
