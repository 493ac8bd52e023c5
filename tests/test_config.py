"""Config validation (errors name the field), overrides, dict round trips and hashing."""
from __future__ import annotations

import json

import pytest

from sparsedepth.config import (ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, apply_overrides,
                                config_hash, from_dict, to_dict, valid_keys)


@pytest.mark.parametrize("kwargs, field", [
    ({"d_model": 64, "n_heads": 6}, "n_heads"),  # heads must divide d_model
    ({"d_model": 36, "n_heads": 12}, "n_heads"),  # head_dim 3 is odd: RoPE rotates pairs
    ({"n_heads": 8, "n_kv_heads": 3}, "n_kv_heads"),
    ({"n_experts": 4, "top_k": 5}, "top_k"),
    ({"n_experts": 4, "top_k": 0}, "top_k"),
    ({"attn_backend": "flash"}, "attn_backend"),
    ({"moe_aux_scaling": "per_block"}, "moe_aux_scaling"),
    ({"n_layers": 0}, "n_layers"),
    ({"n_experts": -1}, "n_experts"),
    ({"init_std": 0.0}, "init_std"),
])
def test_model_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        ModelConfig(**kwargs)


def test_error_messages_say_what_is_wrong():
    with pytest.raises(ConfigError, match=r"64 % 6"):
        ModelConfig(d_model=64, n_heads=6)
    with pytest.raises(ConfigError, match=r"n_experts \(4\)"):
        ModelConfig(n_experts=4, top_k=5)
    with pytest.raises(ConfigError, match="sdpa"):  # lists the valid backends
        ModelConfig(attn_backend="flash")


@pytest.mark.parametrize("make, field", [
    (lambda: OptimConfig(lr=0), "lr"),
    (lambda: OptimConfig(betas=(0.9, 1.0)), "betas"),
    (lambda: OptimConfig(alpha_f=2), "alpha_f"),
    (lambda: DataConfig(vocab_size=70000), "vocab_size"),
    (lambda: DataConfig(val_fraction=0), "val_fraction"),
    (lambda: TrainConfig(seq_len=2048), "seq_len"),  # default model.max_seq_len is 1024
    (lambda: TrainConfig(batch_size=16, micro_batch_size=5), "micro_batch_size"),
    (lambda: TrainConfig(device="tpu"), "device"),
    (lambda: TrainConfig(log_interval=0), "log_interval"),
])
def test_other_config_errors_name_the_field(make, field):
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        make()


def test_derived_defaults():
    m = ModelConfig(d_model=64, n_heads=4)
    assert (m.n_kv_heads, m.ffn_hidden, m.expert_hidden, m.group_size, m.head_dim) == (4, 256, None, 1, 16)
    moe = ModelConfig(d_model=64, n_heads=4, n_kv_heads=1, n_experts=8, top_k=2)
    assert (moe.expert_hidden, moe.group_size, moe.is_moe) == (256, 4, True)


def test_unknown_override_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        apply_overrides(TrainConfig(), ["model.n_layer=8"])
    msg = str(err.value)
    assert "model.n_layer" in msg and "model.n_layers" in msg and "optim.weight_decay" in msg
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(TrainConfig(), ["model.n_layers"])


def test_override_values_are_parsed_and_validated():
    cfg = apply_overrides(TrainConfig(), ["model.n_layers=8", "optim.lr=3e-4", "optim.weight_decay=0.3",
                                          "compile=true", "model.attn_backend=math", "data.max_docs=null"])
    assert cfg.model.n_layers == 8 and isinstance(cfg.model.n_layers, int)
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)  # YAML 1.1 alone would give "3e-4"
    assert cfg.optim.weight_decay == 0.3 and cfg.compile is True and cfg.model.attn_backend == "math"
    assert cfg.data.max_docs is None
    with pytest.raises(ConfigError, match="^model.n_kv_heads:"):  # the same validation, named as the user wrote it
        apply_overrides(TrainConfig(), {"model.n_kv_heads": 3})
    with pytest.raises(ConfigError, match="^optim.lr:"):
        from_dict({"optim": {"lr": -1}})
    base = TrainConfig()
    apply_overrides(base, {"model.n_layers": 4})
    assert base.model.n_layers == 16  # the input config is left alone


def test_overrides_rederive_derived_fields():
    base = TrainConfig()  # n_heads 8 -> n_kv_heads 8; d_model 512 -> ffn_hidden 2048
    cfg = apply_overrides(base, {"model.n_heads": 16})
    assert cfg.model.n_kv_heads == 16
    cfg = apply_overrides(base, {"model.n_heads": 16, "model.n_kv_heads": 4})
    assert cfg.model.n_kv_heads == 4
    gqa = apply_overrides(base, {"model.n_kv_heads": 2})
    assert apply_overrides(gqa, {"model.n_heads": 16}).model.n_kv_heads == 2  # explicit choice kept
    cfg = apply_overrides(base, {"model.d_model": 256})
    assert cfg.model.ffn_hidden == 1024
    wide = apply_overrides(base, {"model.ffn_hidden": 3000})
    assert apply_overrides(wide, {"model.d_model": 256}).model.ffn_hidden == 3000
    moe = apply_overrides(base, {"model.n_experts": 8, "model.top_k": 2})
    assert moe.model.expert_hidden == 2048
    assert apply_overrides(moe, {"model.d_model": 256}).model.expert_hidden == 1024
    assert apply_overrides(moe, {"model.ffn_hidden": 512}).model.expert_hidden == 512
    cfg = apply_overrides(TrainConfig(batch_size=16), {"batch_size": 64})
    assert cfg.micro_batch_size == 64
    cfg = apply_overrides(TrainConfig(batch_size=16, micro_batch_size=4), {"batch_size": 64})
    assert cfg.micro_batch_size == 4


def test_dict_round_trip_and_hash():
    cfg = TrainConfig(model=ModelConfig(n_layers=4, n_experts=4, top_k=2), optim=OptimConfig(betas=(0.8, 0.9)))
    d = json.loads(json.dumps(to_dict(cfg)))  # through JSON: tuples become lists
    back = from_dict(d)
    assert back == cfg and isinstance(back.optim.betas, tuple)
    assert config_hash(back) == config_hash(cfg)
    assert config_hash(apply_overrides(cfg, {"seed": 1})) != config_hash(cfg)
    assert len(config_hash(cfg)) == 12


def test_from_dict_rejects_unknown_nested_keys():
    d = to_dict(TrainConfig())
    d["model"]["n_layer"] = 3
    with pytest.raises(ConfigError, match=r"model\.n_layer.*valid keys.*model\.n_layers"):
        from_dict(d)
    d = to_dict(TrainConfig())
    d["stepz"] = 3
    with pytest.raises(ConfigError, match="stepz"):
        from_dict(d)


def test_valid_keys_cover_every_field():
    keys = valid_keys()
    assert "model.n_kv_heads" in keys and "optim.lr" in keys and "data.corpus" in keys and "steps" in keys
    assert "model" not in keys and len(keys) == len(set(keys))


@pytest.mark.parametrize("value, mode", [(False, None), (True, "blocks"), ("blocks", "blocks"), ("model", "model")])
def test_compile_modes(value, mode):
    assert TrainConfig(compile=value).compile_mode == mode


def test_unknown_compile_mode_names_the_choices():
    with pytest.raises(ConfigError, match=r"^compile:.*'blocks'.*'model'"):
        TrainConfig(compile="fullgraph")


def test_bf16_autocast_follows_dtype_and_device():
    """The trainer and the trajectory's validation loss share this rule (auto: bf16 on CUDA only)."""
    assert TrainConfig().uses_bf16("cuda") and not TrainConfig().uses_bf16("cpu")
    assert not TrainConfig(dtype="float32").uses_bf16("cuda")
    assert TrainConfig(dtype="bfloat16").uses_bf16("cpu")
