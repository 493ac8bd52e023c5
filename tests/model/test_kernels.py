"""``ModelConfig.kernels``: the Triton kernels' switch. Their arithmetic is checked where Triton runs
(``scripts/kernel_trials.py``, on CUDA or in Triton's CPU interpreter); here, what every machine must get right:
the setting's validation, its hash, and that a model which cannot run them computes exactly torch's code."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from conftest import FAMILIES, tiny_config
from sparsedepth.paper.spec import experiments as ex
from sparsedepth.config import ConfigError, ModelConfig, apply_overrides, config_hash, to_dict
from sparsedepth.model import build_model
from sparsedepth.model import kernels as kern


def test_unknown_kernels_rejected():
    with pytest.raises(ConfigError, match=r"kernels: must be one of \('torch', 'triton'\), got 'cuda'"):
        ModelConfig(kernels="cuda")
    with pytest.raises(ValueError, match="kernels must be one of"):
        kern.resolve("fast", "cpu")


def test_kernels_leave_the_hash_as_before():
    """Results hashed before the setting existed stay cached, whichever kernels a profile now trains with."""
    cfg = ex.resolve("gpu", "depth", "L24")
    assert cfg.model.kernels == "triton" and ex.resolve("cpu", "depth", "L4").model.kernels == "torch"
    d = to_dict(cfg)
    del d["model"]["kernels"]
    assert config_hash(cfg) == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    assert config_hash(apply_overrides(cfg, {"model.kernels": "torch"})) == config_hash(cfg)
    assert config_hash(apply_overrides(cfg, {"model.n_layers": 8})) != config_hash(cfg)


@pytest.mark.parametrize("family", ["dense", "moe"])
def test_triton_setting_without_cuda_runs_torch_code(family):
    torch.manual_seed(0)
    ref = build_model(tiny_config(**FAMILIES[family]), "cpu")
    model = build_model(tiny_config(**FAMILIES[family], kernels="triton"), "cpu")
    model.load_state_dict(ref.state_dict())
    assert model.kernels == ref.kernels == "torch"
    idx = torch.randint(0, ref.cfg.vocab_size, (2, 16))
    a, b = ref(idx, idx), model(idx, idx)
    assert a.logits is not None and torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)


def test_references_are_the_models_code():
    """The kernels' fallbacks (and their check's reference) are what SwiGLU and the head computed before."""
    torch.manual_seed(0)
    h, hn = torch.randn(4, 10), torch.randn(4, 6)
    w, t = torch.randn(7, 6), torch.randint(0, 7, (4,))
    value, gate = h.chunk(2, dim=-1)
    assert torch.equal(kern.swiglu(h), torch.nn.functional.silu(gate) * value)
    expected = torch.nn.functional.cross_entropy(hn @ w.t(), t)
    assert torch.allclose(kern.linear_cross_entropy(hn, w, t), expected)
