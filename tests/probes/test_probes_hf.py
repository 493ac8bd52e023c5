"""Probes on Hugging Face causal LMs (tiny random Llama, GPT-2 and OLMo-2 built from configs, no download)."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from sparsedepth.probes import PROBES, as_adapter, block_jacobian, run_probes  # noqa: E402
from sparsedepth.probes.collector import ActivationCollector  # noqa: E402

V, T = 128, 16
SMALL = dict(batch_tokens=64, jacobian_windows=2, jacobian_seq_len=8, attention_windows=2, max_pairs=3)


def build(family: str, vocab: int = V):
    torch.manual_seed(0)
    if family == "llama":
        cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                       num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=64,
                                       bos_token_id=0, eos_token_id=1, pad_token_id=None)
        return transformers.LlamaForCausalLM(cfg).eval()
    if family == "gpt2":
        cfg = transformers.GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=vocab, n_positions=64, bos_token_id=0,
                                      eos_token_id=1)
        return transformers.GPT2LMHeadModel(cfg).eval()
    cfg = transformers.Olmo2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                   vocab_size=vocab, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
                                   pad_token_id=None)
    return transformers.Olmo2ForCausalLM(cfg).eval()


def windows(n: int = 4) -> torch.Tensor:
    return torch.randint(0, V, (n, T + 1), generator=torch.Generator().manual_seed(0))


def hf_loss(model, w) -> float:
    """The model's own loss: HF shifts labels inside, so the full window is both input and label."""
    with torch.no_grad():
        return float(model(input_ids=w, labels=w).loss)


def make_identity(model, family: str, layer: int) -> None:
    """Zero the attention and MLP output projections of one decoder layer: an exact identity."""
    with torch.no_grad():
        if family == "gpt2":
            blk = model.transformer.h[layer]
            for lin in (blk.attn.c_proj, blk.mlp.c_proj):
                lin.weight.zero_()
                lin.bias.zero_()
        else:
            blk = model.model.layers[layer]
            blk.self_attn.o_proj.weight.zero_()
            blk.mlp.down_proj.weight.zero_()


@pytest.mark.parametrize("family", ["llama", "gpt2", "olmo2"])
def test_whole_suite_runs_on_hf_models(family):
    model = build(family)
    impl = model.config._attn_implementation
    w = windows()
    res = run_probes(model, w, paper_compat=True, **SMALL)
    assert set(PROBES) <= set(res)
    assert res["meta"]["model"]["adapter"] == "hf"
    assert len(res["jacobian"]["jacobian_norm"]) == 3 and len(res["causal"]["matrix"]) == 3
    assert res["logit_lens"]["loss"][-1] == pytest.approx(hf_loss(model, w), rel=1e-5)
    assert res["usefulness"]["base_loss"] == pytest.approx(hf_loss(model, w), rel=1e-5)
    att = res["sparsity"]["attention"]
    assert "skipped" not in att, att  # every family here returns eager attention weights (output_attentions)
    assert len(att["entropy"]) == 3 and all(0 < s <= 1 + 1e-6 for s in att["support"])
    assert set(res["sparsity"]["weight_density"]["per_kind"]) == {"attn_qkv", "attn_out", "ffn_in", "ffn_out"}
    assert model.config._attn_implementation == impl  # eager switched back
    # transformers installs its own output-capturing hooks once (for output_attentions); ours never remain
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    run_probes(model, w, probes=["variance", "sparsity"], **SMALL)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    json.dumps(res)
    if family == "llama":
        assert res["sparsity"]["nominal_density"]["kv"] == 0.5


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_identity_layer_known_answers_on_hf(family):
    model = build(family)
    make_identity(model, family, 1)
    res = run_probes(model, windows(8), probes=["jacobian", "usefulness", "causal"], **SMALL)
    assert res["jacobian"]["jacobian_norm"][1] == pytest.approx(0.0, abs=1e-7)
    assert res["jacobian"]["diagonal_mean"][1] == pytest.approx(1.0, abs=1e-7)
    assert res["usefulness"]["loss_ratio"][1] == pytest.approx(1.0, abs=1e-6)
    assert all(c == 0.0 for c in res["causal"]["matrix"][1])
    assert res["jacobian"]["jacobian_norm"][0] > 1e-4


def test_hf_jacobian_matches_autograd():
    model = build("llama")
    ad = as_adapter(model)
    w = windows(2)[:, :7]
    with ad.attention_mode("eager"):
        batch = next(iter(ActivationCollector(ad, w)))
        blk, call, x = model.model.layers[1], batch.calls[1], batch.streams[1]
        j = block_jacobian(blk, call, x, chunk_size=8) / x[..., 0].numel()
        full = torch.autograd.functional.jacobian(lambda inp: call(blk, inp), x)
    ref = full.sum(dim=(0, 1, 3, 4)) / x[..., 0].numel()
    assert torch.allclose(j.float(), ref, atol=1e-5)


def test_probe_hf_folder_via_cli(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from sparsedepth.cli import main

    model = build("llama", vocab=320)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the cat sat on the mat", "a dog ran in the park"] * 20, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")
    assert len(fast) <= 320
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    out = tmp_path / "out"
    rc = main(["probe", str(out), "--hf", str(folder), "--probes", "variance,logit_lens,permutation", "--n-windows",
               "2", "--seq-len", "16", "--device", "cpu", "--quiet"])
    assert rc == 0
    res = json.loads((out / "probes.json").read_text())
    assert set(res) >= {"variance", "logit_lens", "permutation", "timings", "meta"}
    assert res["meta"]["source"] == "hf" and res["meta"]["seq_len"] == 16
    assert main(["probe", "--hf", str(tmp_path / "missing"), "--quiet"]) == 2
