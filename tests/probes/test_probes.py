"""Probes: known answers on exact identity and linear blocks, Jacobian vs autograd, causal alignment, swap
consistency, logit lens, hooks and memory, GQA/MoE suites, bad input, probe_run and the CLI."""
from __future__ import annotations

import gc
import json
import random
import tracemalloc
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsedepth.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from sparsedepth.model import build_model
from sparsedepth.probes import (PROBES, ActivationCollector, ProbeError, as_adapter, attention_sparsity,
                                block_jacobian, causal, jacobian, logit_lens, permutation, probe_run, run_probes,
                                usefulness, weight_density)
from sparsedepth.probes.collector import BlockCall
from sparsedepth.probes.permutation import select_pairs

V, T = 128, 16
SMALL = dict(batch_tokens=64, jacobian_windows=2, jacobian_seq_len=8, attention_windows=2)


def tiny(n_layers: int = 4, init_std: float = 0.02, head_scale: float = 1.0, **kw) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, d_model=32, n_layers=n_layers, n_heads=4, max_seq_len=64, init_std=init_std,
                      **kw)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.head.weight.mul_(head_scale)  # sizeable logits, so the loss reacts to the stream
    return model


def windows(n: int = 8, seq_len: int = T, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (n, seq_len + 1), generator=torch.Generator().manual_seed(seed))


def make_identity(model, layer: int) -> None:
    """Zero the output projections of a block: attention and FFN add exactly 0, so h_{l+1} = h_l."""
    blk = model.blocks[layer]
    with torch.no_grad():
        blk.attn.out.weight.zero_()
        if hasattr(blk.ffn, "w_down"):
            blk.ffn.w_down.zero_()
            if blk.ffn.shared is not None:
                blk.ffn.shared.down.weight.zero_()
        else:
            blk.ffn.down.weight.zero_()


class LinearBlock(nn.Module):
    """A block computing h ↦ h A + c (same call signature and return tuple as model.Block)."""

    def __init__(self, a: torch.Tensor, c: torch.Tensor):
        super().__init__()
        self.a, self.c = nn.Parameter(a), nn.Parameter(c)

    def forward(self, x, cos, sin, telemetry=False):
        return x @ self.a + self.c, x.new_zeros(2), None


def n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def base_loss(model, w) -> float:
    with torch.no_grad():
        return float(model(w[:, :-1], w[:, 1:]).lm_loss)


# --------------------------------------------------------------------------------------------------- identity


@pytest.mark.parametrize("family", ["dense", "moe"])
def test_identity_blocks_have_exact_answers(family):
    kw = dict(n_experts=4, top_k=2, expert_hidden=32) if family == "moe" else {}
    model = tiny(head_scale=20.0, **kw)
    make_identity(model, 1)
    make_identity(model, 2)
    w = windows()
    res = run_probes(model, w, probes=["jacobian", "usefulness", "causal", "permutation", "angular_distance",
                                       "block_influence"], **SMALL)
    j = res["jacobian"]
    for l in (1, 2):
        assert j["jacobian_norm"][l] == pytest.approx(0.0, abs=1e-7)
        assert j["off_diagonal_norm"][l] == pytest.approx(0.0, abs=1e-7)
        assert j["diagonal_mean"][l] == pytest.approx(1.0, abs=1e-7)
        assert j["diagonal_std"][l] == pytest.approx(0.0, abs=1e-7)
        assert j["spectral_norm"][l] == pytest.approx(1.0, abs=1e-6)
        assert res["usefulness"]["loss_ratio"][l] == pytest.approx(1.0, abs=1e-6)
        assert res["usefulness"]["useful"][l] is False
        assert res["usefulness"]["skip"]["loss_ratio"][l] == pytest.approx(1.0, abs=1e-6)  # removal = identity
        assert res["usefulness"]["ridge"][l] == 0.0  # well conditioned: plain normal equations
        assert all(c == 0.0 for c in res["causal"]["matrix"][l])  # no effect on any later layer
        assert res["angular_distance"]["n1"][l] == pytest.approx(0.0, abs=1e-6)
        assert res["block_influence"][l] == pytest.approx(0.0, abs=1e-12)
    assert j["jacobian_norm"][0] > 1e-3  # a real block is not the identity
    assert res["usefulness"]["skip"]["loss_ratio"][0] != pytest.approx(1.0, abs=1e-4)  # ...and removing it shows
    assert res["causal"]["matrix"][0][3] > 0  # ...and skipping it changes later updates
    pairs = {(a, b): p for a, b, p in res["permutation"]["pairs"]}
    assert pairs[(1, 2)] == 0.0  # swapping two identity blocks changes nothing
    assert pairs[(0, 3)] > 0


# --------------------------------------------------------------------------------------------------- linear


def test_linear_block_is_replaced_exactly_and_paper_compat_transposes():
    model = tiny(init_std=0.1, head_scale=5.0)
    d = 32
    g = torch.Generator().manual_seed(1)
    a = torch.eye(d) + 0.5 * torch.randn(d, d, generator=g) / d ** 0.5  # far from symmetric
    c = 0.1 * torch.randn(d, generator=g)
    model.blocks[1] = LinearBlock(a, c)
    w = windows(12)
    res = usefulness(model, w, paper_compat=True, batch_tokens=64)
    assert res["loss_ratio"][1] == pytest.approx(1.0, abs=1e-5)
    assert res["r2"][1] == pytest.approx(1.0, abs=1e-6)
    assert res["base_loss"] == pytest.approx(base_loss(model, w), rel=1e-6)
    compat = res["paper_compat"]["loss_ratio"][1]
    assert abs(compat - 1.0) > 1e-3, "the official x @ W^T replacement must differ for a non-symmetric map"
    # the Jacobian of h -> h A + c is A^T (J[i, j] = dY_i / dX_j), with no cross-position terms
    jac = jacobian(model, w, n_windows=2, seq_len=8, layers=[1], return_matrices=True)
    assert torch.allclose(torch.tensor(jac["matrices"][1], dtype=torch.float64), a.T.double(), atol=1e-5)
    assert jac["jacobian_norm"][0] is None  # not probed


def test_ridge_fallback_when_tokens_are_fewer_than_dimensions():
    model = tiny()
    res = usefulness(model, windows(1, seq_len=8))  # 8 tokens, d = 32: singular covariance
    assert all(r > 0 for r in res["ridge"])
    assert all(torch.isfinite(torch.tensor(res["loss_ratio"])))


# --------------------------------------------------------------------------------------------------- jacobian


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 2}, {"n_experts": 4, "top_k": 2, "expert_hidden": 32}])
def test_jacobian_matches_autograd_and_finite_differences(kw):
    model = tiny(init_std=0.2, **kw)
    model.set_attn_backend("math")
    blk = model.blocks[1]
    x = torch.randn(2, 6, 32)
    call = BlockCall((model.rope_cos, model.rope_sin), {})
    j = block_jacobian(blk, call, x, chunk_size=5) / x[..., 0].numel()

    def f(inp):
        return blk(inp, model.rope_cos, model.rope_sin)[0]

    full = torch.autograd.functional.jacobian(f, x)  # [B, T, d, B, T, d]
    ref = full.sum(dim=(0, 1, 3, 4)) / x[..., 0].numel()  # Σ_{b,t,t'} dY[b,t,i]/dX[b,t',j] / (B T)
    assert torch.allclose(j.float(), ref, atol=1e-5)
    assert full[0, 0, :, 0, 3].abs().max() == 0  # causal: position 0 never depends on position 3
    assert full[:, 3, :, :, 0].abs().max() > 0  # ...but later positions depend on earlier ones (kept in J)
    col, eps = 7, 1e-2
    e = torch.zeros(32)
    e[col] = eps
    with torch.no_grad():
        fd = (f(x + e) - f(x - e)).sum(dim=(0, 1)) / (2 * eps * x[..., 0].numel())
    assert torch.allclose(j[:, col].float(), fd, atol=2e-3)


# --------------------------------------------------------------------------------------------------- causal


def test_causal_matrix_is_aligned_with_a_hooked_skip():
    model = tiny(init_std=0.1)
    make_identity(model, 2)
    w = windows(4)
    res = causal(model, w, batch_tokens=10 ** 6)
    c = torch.tensor(res["matrix"])
    assert torch.all(c[2] == 0)
    assert torch.all(torch.tril(c) == 0)
    # reference: a full forward with an identity forward hook on block s, streams from the collector
    ad = as_adapter(model)
    base = next(iter(ActivationCollector(ad, w, batch_tokens=10 ** 6))).streams
    for s in (0, 1):
        with ad.substitute(s, lambda x, out: x):
            skip = next(iter(ActivationCollector(ad, w, batch_tokens=10 ** 6, check=False))).streams
        assert torch.equal(skip[s + 1], base[s])
        for l in range(s + 1, 4):
            dd = ((skip[l + 1] - skip[l]) - (base[l + 1] - base[l])).norm(dim=-1).mean()
            den = (base[l + 1] - base[l]).norm(dim=-1).mean()
            ref = float(dd / den) if den >= 1e-8 else 0.0  # identity block 2 has no update: 0 by convention
            assert c[s, l].item() == pytest.approx(ref, rel=1e-4, abs=1e-7)
    per = res["per_layer"]
    assert res["score"] == pytest.approx(sum(per[:3]) / 3)
    assert res["score_upper_mean"] == pytest.approx(float(c[torch.triu(torch.ones(4, 4), 1).bool()].mean()))


# --------------------------------------------------------------------------------------------------- permutation


def test_permutation_matches_module_swap_and_restores_parameters():
    model = tiny(init_std=0.1, head_scale=5.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    w = windows(4)
    res = permutation(model, w)
    assert res["n_pairs"] == 6 and len(res["pairs"]) == 6
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} not restored"
    l0 = base_loss(model, w)
    for i, j, p in res["pairs"][:3]:
        blocks = model.blocks
        blocks[i], blocks[j] = blocks[j], blocks[i]
        try:
            ls = base_loss(model, w)
        finally:
            blocks[i], blocks[j] = blocks[j], blocks[i]
        assert p == pytest.approx(abs(l0 - ls) / l0, rel=1e-4, abs=1e-7)
    sub = permutation(model, w, max_pairs=3, seed=1)
    assert sub["n_pairs"] == 3 and sub["stderr"] >= 0
    assert sub["pairs"] == permutation(model, w, max_pairs=3, seed=1)["pairs"]


def test_a_pair_sample_keeps_every_first_layers_share():
    """64 of L=32's 496 pairs: the 31 pairs with the first layer (each far costlier than the rest in a trained
    model) get their share, 4, whatever the seed; the sample is distinct, ordered and seeded."""
    for seed in range(5):
        pairs = select_pairs(32, 64, seed)
        assert len(set(pairs)) == 64 and pairs == sorted(pairs) and all(a < b for a, b in pairs)
        for l1 in range(31):
            share = (31 - l1) * 64 / 496
            assert abs(sum(a == l1 for a, _ in pairs) - share) <= 1
    assert select_pairs(32, 64, 0) != select_pairs(32, 64, 1) and select_pairs(32, 64, 2) == select_pairs(32, 64, 2)
    assert len(select_pairs(4, 99)) == 6
    with pytest.raises(ValueError, match="max_pairs"):
        select_pairs(4, 0)


# --------------------------------------------------------------------------------------------------- logit lens


def test_logit_lens_decodes_each_layers_own_stream():
    model = tiny(init_std=0.1, head_scale=5.0)
    w = windows(4)
    res = logit_lens(model, w, batch_tokens=32)
    assert res["loss"][-1] == pytest.approx(base_loss(model, w), rel=1e-6)
    with torch.no_grad():
        h = model.embed(w[:, :-1])
        for l, blk in enumerate(model.blocks):
            h = blk(h, model.rope_cos, model.rope_sin)[0]
            ref = F.cross_entropy(model.head(model.norm(h)).flatten(0, 1), w[:, 1:].flatten())
            assert res["loss"][l] == pytest.approx(float(ref), rel=1e-5)


# --------------------------------------------------------------------------------------------------- variance


def test_variance_matches_training_telemetry():
    model = tiny(init_std=0.1)
    w = windows(4)
    res = run_probes(model, w, probes="variance", batch_tokens=10 ** 6)["variance"]
    with torch.no_grad():
        stats = model(w[:, :-1], telemetry=True).stats
    assert torch.allclose(torch.tensor(res["layer_var"], dtype=torch.float64), stats["out_var"].double(), rtol=1e-5)
    assert res["final_norm_var"] == pytest.approx(float(stats["final_var"]), rel=1e-5)


def test_largest_activation_per_layer_over_micro_batches():
    model = tiny(init_std=0.1)
    w = windows(4)
    outs = []
    # a block returns (h, stats)
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(float(o[0].abs().max()))) for b in model.blocks]
    with torch.no_grad():
        model(w[:, :-1])
    for h in hooks:
        h.remove()
    res = run_probes(model, w, probes="variance", batch_tokens=8)["variance"]  # several micro-batches
    assert res["max_abs"] == pytest.approx(outs, rel=1e-6)


# --------------------------------------------------------------------------------------------------- hooks, memory


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some lazy torch objects warns about deprecations
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_no_hooks_or_tensors_left_behind():
    model = tiny(n_layers=3, n_experts=4, top_k=2, expert_hidden=32)
    w = windows(4)
    hooks = n_hooks(model)
    run_probes(model, w, **SMALL)  # warm-up: lazy imports, caches
    tensors = _live_tensors()
    tracemalloc.start()
    snap = tracemalloc.take_snapshot()
    for _ in range(2):
        run_probes(model, w, **SMALL)
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(snap, "filename"))
    tracemalloc.stop()
    assert n_hooks(model) == hooks
    assert _live_tensors() <= tensors
    assert grown < 512 * 1024, f"python memory grew by {grown} bytes over two probe runs"
    assert model.attn_backend == "sdpa"  # math backend switched back

    # an error inside a probe pass still removes every hook
    def boom(*a, **k):
        raise RuntimeError("boom")

    model.blocks[1].ffn.forward = boom
    with pytest.raises(RuntimeError, match="boom"):
        run_probes(model, w, **SMALL)
    assert n_hooks(model) == hooks


# --------------------------------------------------------------------------------------------------- suites


def test_suite_runs_torch_code_on_a_model_set_to_the_triton_kernels(monkeypatch):
    """The probes switch the hand-written kernels off while they run and back on after."""
    model = tiny(n_layers=3)
    # as on CUDA with Triton: set_kernels keeps "triton", and the hand-written activation would run
    monkeypatch.setattr("sparsedepth.model.kernels.resolve", lambda name, device: name)

    def called(h):
        raise RuntimeError("hand-written kernel called")

    monkeypatch.setattr("sparsedepth.model.kernels.swiglu_triton", called)
    model.set_kernels("triton")
    with pytest.raises(RuntimeError, match="hand-written kernel called"):
        model(windows(1)[:, :-1])
    res = run_probes(model, windows(2), probes=("jacobian", "usefulness"), **SMALL)
    assert model.kernels == "triton"
    model.set_kernels("torch")
    ref = run_probes(model, windows(2), probes=("jacobian", "usefulness"), **SMALL)
    for probe in ("jacobian", "usefulness"):  # the same numbers as the plain torch model
        assert {k: v for k, v in res[probe].items() if k != "timings"} == \
               {k: v for k, v in ref[probe].items() if k != "timings"}


@pytest.mark.parametrize("family", ["gqa", "moe", "lns"])
def test_whole_suite_on_each_family(family):
    kw = {"gqa": dict(n_kv_heads=2), "moe": dict(n_experts=4, top_k=2, expert_hidden=32),
          "lns": dict(layernorm_scaling=True)}[family]
    model = tiny(n_layers=3, **kw)
    model.train()
    res = run_probes(model, windows(4), paper_compat=True, max_pairs=2, **SMALL)
    assert model.training  # mode restored
    assert set(PROBES) <= set(res) and set(PROBES) <= set(res["timings"])
    L = 3
    for key in ("jacobian_norm", "off_diagonal_norm", "diagonal_mean", "diagonal_std", "spectral_norm"):
        assert len(res["jacobian"][key]) == L
    assert len(res["usefulness"]["paper_compat"]["loss_ratio"]) == L
    assert res["permutation"]["n_pairs"] == 2
    assert len(res["angular_distance"]["matrix"]) == L + 1 and len(res["block_influence"]) == L
    sp = res["sparsity"]
    att = sp["attention"]
    assert len(att["entropy_per_head"]) == L and len(att["entropy_per_head"][0]) == 4
    assert all(0 < s <= 1 + 1e-6 for s in att["support"]) and all(e >= 0 for e in att["entropy"])
    assert set(sp["weight_density"]["per_kind"]) >= {"attn_qkv", "attn_out", "ffn_in", "ffn_out"}
    json.dumps(res)  # JSON-ready
    if family == "gqa":
        assert sp["nominal_density"]["kv"] == 0.5 and sp["nominal_density"]["group_size"] == 2
        assert "skipped" in sp["expert"]
    if family == "moe":
        ex = sp["expert"]
        assert sp["nominal_density"]["experts"] == 0.5
        for row, lb, used in zip(ex["load"], ex["load_balance"], ex["used_fraction"]):
            assert sum(row) == pytest.approx(1.0) and 0 <= lb <= 1 and 0 < used <= 1
        assert "router" in sp["weight_density"]["per_kind"]


def test_attention_entropy_known_answers():
    model = tiny(n_layers=2)
    with torch.no_grad():  # zero queries and keys: uniform attention over the t+1 visible keys
        for blk in model.blocks:
            blk.attn.qkv.weight[:64].zero_()
    att = attention_sparsity(model, windows(2), n_windows=2)
    expected = sum(torch.log(torch.arange(1, T + 1, dtype=torch.float64))) / T
    assert att["entropy"][0] == pytest.approx(float(expected), rel=1e-5)
    assert att["support"][0] == pytest.approx(1.0, rel=1e-5)
    assert model.attn_backend == "sdpa"


def test_weight_density_known_answers():
    model = tiny(n_layers=2, init_std=0.02)
    with torch.no_grad():
        model.blocks[0].attn.out.weight.zero_()
    wd = weight_density(model)
    assert wd["per_kind"]["attn_out"]["0.1"][0] == 0.0
    assert wd["per_matrix"]["attn.out.weight"]["0.5"] == [0.0, wd["per_kind"]["attn_out"]["0.5"][1]]
    ref = wd["gaussian_reference"]
    assert wd["per_kind"]["attn_qkv"]["0.1"][1] == pytest.approx(ref["0.1"], abs=0.02)
    assert wd["per_kind"]["ffn_in"]["0.5"][1] == pytest.approx(ref["0.5"], abs=0.02)
    for row in wd["hist"]["per_layer"]:
        assert sum(row) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error():
    model = tiny(n_layers=2)
    with pytest.raises(ProbeError, match=r"\[n_windows, seq_len \+ 1\]"):
        run_probes(model, torch.zeros(17, dtype=torch.long))
    with pytest.raises(ProbeError, match=r"\[n_windows, seq_len \+ 1\]"):
        run_probes(model, torch.zeros(0, 9, dtype=torch.long))
    with pytest.raises(ProbeError, match="vocabulary"):
        run_probes(model, torch.full((2, 9), V, dtype=torch.long))
    with pytest.raises(ProbeError, match="unknown probe"):
        run_probes(model, windows(2), probes="variance,jacobain")
    with pytest.raises(ProbeError, match="cannot probe"):
        as_adapter(nn.Linear(2, 2))
    with pytest.raises(ProbeError, match="not a run directory"):
        probe_run("definitely-not-a-run-dir")


# --------------------------------------------------------------------------------------------------- runs, CLI


WORDS = "the of and a to in is was for on that with as by at from his her it an were are which this be".split()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run (synthetic corpus, 4 steps)."""
    from sparsedepth.train import train

    root = tmp_path_factory.mktemp("probe-run")
    rng = random.Random(0)
    vocab = WORDS + [f"w{i}" for i in range(150)]
    docs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(40, 200))) for _ in range(60)]
    (root / "corpus.txt").write_text("\n<|endoftext|>\n".join(docs))
    data = DataConfig(corpus=str(root / "corpus.txt"), vocab_size=300, cache_dir=str(root / "cache"))
    cfg = TrainConfig(model=ModelConfig(vocab_size=512, d_model=32, n_layers=3, n_heads=2, max_seq_len=64),
                      optim=OptimConfig(lr=3e-3, warmup_steps=1), data=data, seq_len=32, batch_size=4, steps=4,
                      log_interval=2, telemetry_interval=0, device="cpu")
    train(cfg, root / "run", progress=False)
    return root / "run"


def test_probe_run_writes_probes_json(run_dir):
    res = probe_run(run_dir, n_windows=4, seq_len=16, probes=("variance", "usefulness", "permutation"),
                    paper_compat=True, batch_tokens=32)
    on_disk = json.loads((run_dir / "probes.json").read_text())
    assert on_disk["usefulness"]["score"] == res["usefulness"]["score"]
    assert "paper_compat" in on_disk["usefulness"]
    assert on_disk["meta"]["split"] == "val" and on_disk["meta"]["seq_len"] == 16
    assert len(on_disk["variance"]["layer_var"]) == 3
    again = probe_run(run_dir, n_windows=4, seq_len=16, probes=("variance",), out="again.json")
    assert again["variance"] == res["variance"]  # fixed seed, same held-out windows


def test_probe_run_reads_attention_also_at_the_training_context(run_dir):
    short = probe_run(run_dir, n_windows=2, seq_len=16, probes=("sparsity",), out="short.json",
                      attention_windows=2)["sparsity"]
    assert short["attention"]["seq_len"] == 16 and short["attention_train_T"]["seq_len"] == 32  # the run's T
    assert short["attention"]["support"] != short["attention_train_T"]["support"]
    own = probe_run(run_dir, n_windows=2, seq_len=32, probes=("sparsity",), out="own.json",
                    attention_windows=2)["sparsity"]
    assert own["attention_train_T"] == own["attention"]  # one reading when the probe windows are the run's T
    assert own["attention"]["support"] == short["attention_train_T"]["support"]  # same windows, same seed


def test_cli_probe(run_dir, capsys):
    from sparsedepth.cli import main

    rc = main(["probe", str(run_dir), "--probes", "causal,logit_lens", "--n-windows", "2", "--seq-len", "16",
               "--out", "cli.json", "--quiet"])
    assert rc == 0
    res = json.loads((run_dir / "cli.json").read_text())
    assert set(res) >= {"causal", "logit_lens", "timings", "meta"} and "jacobian" not in res
    assert main(["probe", str(run_dir), "--probes", "nope", "--quiet"]) == 2
    assert "unknown probe" in capsys.readouterr().err
