"""Decoder: backend agreement, causality, RoPE, MoE routing and aux losses, telemetry, hooks, overfitting."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import FAMILIES, load_script, tiny_config
from sparsedepth.model import build_model
from sparsedepth.model.attention import Attention, apply_rope, rope_cache
from sparsedepth.model.moe import MoEFeedForward

GROUPS = [1, 2, 4, 8]  # with 8 heads: MHA, two GQA sizes, MQA


def _tokens(cfg, bsz=2, seqlen=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (bsz, seqlen), generator=g)


# --- attention backends ------------------------------------------------------------------------------

@pytest.mark.parametrize("g", GROUPS)
def test_backends_agree_on_model_logits(g):
    cfg = tiny_config(d_model=64, n_heads=8, n_kv_heads=8 // g)
    model = build_model(cfg)
    idx = _tokens(cfg)
    with torch.no_grad():
        ref = model(idx).logits
        model.set_attn_backend("math")
        out = model(idx).logits
    assert model.attn_backend == "math"
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("g", GROUPS)
def test_backends_agree_on_attention_module(g):
    cfg = tiny_config(d_model=64, n_heads=8, n_kv_heads=8 // g)
    attn = Attention(cfg)
    with torch.no_grad():  # larger weights than init so the softmax is far from uniform
        attn.qkv.weight.normal_(0, 0.3)
    cos, sin = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta)
    x = torch.randn(2, 20, cfg.d_model)
    results = {}
    for backend in ("sdpa", "math"):
        attn.backend = backend
        xb = x.clone().requires_grad_(True)
        y = attn(xb, cos, sin)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results[backend] = (y.detach(), xb.grad, attn.qkv.weight.grad.clone())
        attn.zero_grad()
    (y, gx, gw), (y_ref, gx_ref, gw_ref) = results["sdpa"], results["math"]
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    # gradients sum many terms (|grad| up to ~3 here): compare them relatively
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gw, gw_ref, atol=1e-5, rtol=1e-4)


def test_xformers_on_cpu_raises_clear_error():
    cfg = tiny_config(attn_backend="xformers")
    with pytest.raises(RuntimeError, match="CUDA.*sdpa"):
        build_model(cfg, "cpu")
    model = build_model(tiny_config())
    with pytest.raises(RuntimeError, match="xformers"):
        model.set_attn_backend("xformers")
    assert model.attn_backend == "sdpa"  # a refused switch leaves the model as it was


def test_unknown_backend_rejected_when_set():
    model = build_model(tiny_config())
    with pytest.raises(ValueError, match="flash.*sdpa"):
        model.set_attn_backend("flash")


@pytest.mark.parametrize("family", ["dense", "moe"])
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_causality(family, backend):
    cfg = tiny_config(**FAMILIES[family], attn_backend=backend)
    model = build_model(cfg)
    idx = _tokens(cfg, bsz=1, seqlen=16)
    t = 9
    changed = idx.clone()
    changed[0, t] = (idx[0, t] + 1) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(idx).logits, model(changed).logits
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=0, rtol=0)
    assert (a[:, t:] - b[:, t:]).abs().amax() > 1e-4  # the change does reach later positions


def test_sequence_longer_than_max_rejected():
    model = build_model(tiny_config(max_seq_len=8))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 9, dtype=torch.long))


# --- RoPE ----------------------------------------------------------------------------------------------

def test_rope_depends_only_on_offset():
    hd, n = 16, 64
    cos, sin = rope_cache(n, hd, 10000.0)
    q, k = torch.randn(hd), torch.randn(hd)

    def rotated(v):  # the same vector placed at every position: [1, n, 1, hd]
        return apply_rope(v.expand(1, n, 1, hd).contiguous(), cos, sin)[0, :, 0]

    rq, rk = rotated(q), rotated(k)
    dots = rq @ rk.T  # dots[m, n] = <R_m q, R_n k>
    for offset in (0, 1, 5, 17):
        diag = torch.diagonal(dots, offset=-offset)  # pairs (m, m - offset)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), atol=1e-4, rtol=1e-5)
    assert (dots[5, 5] - dots[5, 0]).abs() > 1e-3  # different offsets give different scores
    torch.testing.assert_close(rq[0], q)  # position 0 is the identity
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(n))  # rotations keep the norm


# --- MoE -----------------------------------------------------------------------------------------------

def _moe(renormalize=False, shared=0, e=4, k=2, d=32, h=24):
    cfg = tiny_config(d_model=d, n_experts=e, top_k=k, expert_hidden=h, shared_expert_hidden=shared,
                      moe_renormalize=renormalize)
    moe = MoEFeedForward(cfg)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.2)
    return moe


def _naive_moe(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Loop over tokens and their chosen experts: out = sum_{e in topk} p_e * w_down_e(silu(x w_gate_e) * x w_up_e)."""
    rows = []
    for tok in x:
        probs = (tok @ moe.router.weight.T).softmax(-1)
        w, chosen = probs.topk(moe.top_k)
        if moe.renormalize:
            w = w / w.sum()
        out = torch.zeros_like(tok)
        for p, e in zip(w, chosen.tolist()):
            out = out + p * ((F.silu(tok @ moe.w_gate[e]) * (tok @ moe.w_up[e])) @ moe.w_down[e])
        if moe.shared is not None:
            k = moe.top_k
            out = moe.shared(tok) / (k + 1) + out * k / (k + 1)
        rows.append(out)
    return torch.stack(rows)


@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("shared", [0, 16])
def test_moe_matches_naive_per_token(renormalize, shared):
    moe = _moe(renormalize, shared)
    x = torch.randn(2, 11, 32, requires_grad=True)
    out, aux, load = moe(x)
    ref = _naive_moe(moe, x.reshape(-1, 32)).view_as(out)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # backward through the sorted / grouped path equals backward through the loop
    gx, gw = torch.autograd.grad(out.square().sum(), (x, moe.w_down))
    rx, rw = torch.autograd.grad(ref.square().sum(), (x, moe.w_down))
    torch.testing.assert_close(gx, rx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, rw, atol=1e-5, rtol=1e-5)


def test_moe_trials_script_checks_and_times_both_combines(tmp_path):
    """scripts/moe_trials.py: the layer's combine equals the index_add one; every stage gets a time."""
    mt = load_script("moe_trials")
    out = tmp_path / "moe.json"
    assert mt.main(["--device", "cpu", "--d", "16", "--experts", "4", "--top-k", "2", "--hidden", "8",
                    "--tokens", "64", "--train-tokens", "64", "--reps", "1", "--no-compile", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["check"]["out"] < 1e-5 and res["check"]["grad_x"] < 1e-5
    assert set(res["probe"]["stages_ms"]) == {"route", "dispatch", "experts", "combine unpermute",
                                              "combine index_add"}
    for setting in ("probe", "train"):
        assert set(res[setting]["layer_ms"]) == {"unpermute", "index_add"}
        assert min(res[setting]["layer_ms"].values()) > 0 and res[setting]["dense_swiglu_ms"] > 0


def test_moe_routes_each_token_to_exactly_top_k():
    cfg = tiny_config(n_experts=6, top_k=3, expert_hidden=16, n_layers=2)
    model = build_model(cfg)
    seen = []
    for blk in model.blocks:
        blk.ffn.routing.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    idx = _tokens(cfg, bsz=2, seqlen=10)
    with torch.no_grad():
        stats = model(idx, telemetry=True).stats
    assert len(seen) == cfg.n_layers
    for layer, (probs, experts) in enumerate(seen):
        assert probs.shape == (20, 6) and experts.shape == (20, 3)
        torch.testing.assert_close(probs.sum(-1), torch.ones(20))
        assert all(len(set(row)) == 3 for row in experts.tolist())  # k distinct experts per token
        assert torch.equal(experts.sort(-1).values, probs.topk(3).indices.sort(-1).values)
        load = torch.bincount(experts.flatten(), minlength=6).float() / (20 * 3)
        torch.testing.assert_close(stats["expert_load"][layer], load)


def test_moe_aux_losses_on_hand_made_example():
    e, k = 4, 2
    moe = _moe(e=e, k=k, d=2 * e, h=8)
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(e, 2 * e))  # logits = the first E inputs
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0],
                           [0.0, 3.0, 1.0, 0.0],
                           [1.0, 0.0, 0.0, 2.0],
                           [0.5, 0.0, 1.5, 1.0],
                           [0.0, 0.0, 0.2, 0.1]])
    pad = lambda t: torch.cat([t, torch.randn_like(t)], -1)  # noqa: E731
    _, aux, load = moe(pad(logits))
    # by hand: top-2 of each row -> {0,1}, {1,2}, {3,0}, {2,3}, {2,3}
    n_e = torch.tensor([2.0, 2.0, 3.0, 3.0])
    p_bar = logits.softmax(-1).mean(0)
    n = logits.shape[0]
    lb = e / k / n * (n_e * p_bar).sum()
    z = torch.logsumexp(logits, -1).pow(2).mean()
    torch.testing.assert_close(aux, torch.stack([lb, z]))
    torch.testing.assert_close(load, n_e / (n * k))

    _, aux, _ = moe(pad(torch.zeros(7, e)))  # uniform router: lb = 1, z = log(E)^2
    torch.testing.assert_close(aux, torch.tensor([1.0, math.log(e) ** 2]))
    collapsed = torch.tensor([[20.0, 20.0, 0.0, 0.0]]).repeat(6, 1)  # every token to experts 0 and 1
    _, aux, _ = moe(pad(collapsed))
    assert aux[0].item() == pytest.approx(e / k, rel=1e-6)


@pytest.mark.parametrize("scaling", ["mean", "sum", "compound"])
def test_aux_layer_weights(scaling):
    cfg = tiny_config(n_layers=3, n_experts=4, top_k=2, expert_hidden=16, moe_aux_scaling=scaling,
                      lb_loss_weight=0.5, z_loss_weight=0.25)
    model = build_model(cfg)
    assert (cfg.lb_loss_weight, cfg.z_loss_weight) == (0.5, 0.25)  # building never rescales the config
    idx = _tokens(cfg, seqlen=12)
    out = model(idx[:, :-1], idx[:, 1:])
    L = cfg.n_layers
    per_layer = {"mean": [1 / L] * L, "sum": [1.0] * L, "compound": [L ** -(i + 1) for i in range(L)]}[scaling]
    expect = sum(w * (0.5 * out.aux_loss[i, 0] + 0.25 * out.aux_loss[i, 1]) for i, w in enumerate(per_layer))
    torch.testing.assert_close(out.loss - out.lm_loss, expect)
    assert out.aux_loss.shape == (L, 2)


def test_dense_model_has_no_aux_loss():
    model = build_model(tiny_config())
    idx = _tokens(model.cfg)
    out = model(idx[:, :-1], idx[:, 1:])
    assert torch.equal(out.loss, out.lm_loss) and not out.aux_loss.any()


# --- telemetry and hooks -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["dense", "moe"])
def test_telemetry_matches_hooks(family):
    cfg = tiny_config(**FAMILIES[family], n_layers=3)
    model = build_model(cfg)
    got = {"out": [], "attn": [], "ffn": [], "final": []}
    for blk in model.blocks:
        blk.register_forward_hook(lambda m, a, o: got["out"].append(o[0]))
        blk.attn.register_forward_hook(lambda m, a, o: got["attn"].append(o))
        blk.ffn.register_forward_hook(lambda m, a, o: got["ffn"].append(o[0] if isinstance(o, tuple) else o))
    model.norm.register_forward_hook(lambda m, a, o: got["final"].append(o))
    with torch.no_grad():
        stats = model(_tokens(cfg), telemetry=True).stats
    var = lambda t: t.double().var(-1, unbiased=True).mean().float()  # noqa: E731
    norm = lambda t: t.double().norm(dim=-1).mean().float()  # noqa: E731
    L = cfg.n_layers
    for key in ("out_var", "attn_var", "ffn_var", "attn_norm", "ffn_norm"):
        assert stats[key].shape == (L,) and stats[key].dtype == torch.float32
    torch.testing.assert_close(stats["out_var"], torch.stack([var(h) for h in got["out"]]))
    torch.testing.assert_close(stats["attn_var"], torch.stack([var(h) for h in got["attn"]]))
    torch.testing.assert_close(stats["ffn_var"], torch.stack([var(h) for h in got["ffn"]]))
    torch.testing.assert_close(stats["attn_norm"], torch.stack([norm(h) for h in got["attn"]]))
    torch.testing.assert_close(stats["ffn_norm"], torch.stack([norm(h) for h in got["ffn"]]))
    torch.testing.assert_close(stats["final_var"], var(got["final"][0]))
    if cfg.is_moe:
        assert stats["expert_load"].shape == (L, cfg.n_experts)
        torch.testing.assert_close(stats["expert_load"].sum(-1), torch.ones(L))
    else:
        assert "expert_load" not in stats
    assert model(_tokens(cfg)).stats is None  # off unless asked


def test_block_hook_can_replace_output():
    model = build_model(tiny_config(n_layers=3))
    idx = _tokens(model.cfg)
    handles = [blk.register_forward_hook(lambda m, a, o: (a[0],) + tuple(o[1:])) for blk in model.blocks]
    with torch.no_grad():
        skipped = model(idx).logits  # every block replaced by the identity
        expect = model.head(model.norm(model.embed(idx)))
    torch.testing.assert_close(skipped, expect)
    for h in handles:
        h.remove()
    with torch.no_grad():
        assert not torch.allclose(model(idx).logits, expect)


def test_math_backend_exposes_causal_attention_probs():
    model = build_model(tiny_config(attn_backend="math"))
    probs = []
    model.blocks[1].attn.probs.register_forward_hook(lambda m, a, o: probs.append(o))
    with torch.no_grad():
        model(_tokens(model.cfg, bsz=2, seqlen=7))
    p = probs[0]
    assert p.shape == (2, 4, 7, 7)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 4, 7))
    assert not p.triu(1).any()


# --- parameter counts and FLOPs ----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, {"n_kv_heads": 1}, {"n_kv_heads": 2, "ffn_hidden": 40},
                                       {"n_experts": 4, "top_k": 2, "expert_hidden": 24},
                                       {"n_experts": 4, "top_k": 1, "shared_expert_hidden": 16}])
def test_param_counts_match_model(overrides):
    cfg = tiny_config(n_layers=3, **overrides)
    model = build_model(cfg)
    counts = cfg.param_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    emb = model.embed.weight.numel() + model.head.weight.numel()
    assert counts["non_embedding"] == counts["total"] - emb
    idle = 0
    if cfg.is_moe:  # experts a token does not use
        moe = model.blocks[0].ffn
        idle = cfg.n_layers * (cfg.n_experts - cfg.top_k) * (moe.w_gate[0].numel() + moe.w_up[0].numel()
                                                               + moe.w_down[0].numel())
    assert counts["active"] == counts["total"] - idle
    assert counts["active_non_embedding"] == counts["active"] - emb


def test_flops_per_token():
    cfg = tiny_config()
    f = cfg.flops_per_token(32)
    d, L, V = cfg.d_model, cfg.n_layers, cfg.vocab_size
    matmul = L * (4 * d * d + 3 * d * cfg.ffn_hidden) + V * d
    assert f == pytest.approx(6 * matmul + 6 * L * 32 * d, rel=0.01)  # norm gains are the only slack
    assert cfg.flops_per_token() == cfg.flops_per_token(cfg.max_seq_len) > 0
    assert tiny_config(n_layers=4).flops_per_token(32) > f
    assert cfg.flops_per_token(64) > f
    moe = tiny_config(n_experts=8, top_k=2, expert_hidden=32)
    assert moe.flops_per_token(32) < tiny_config(n_experts=8, top_k=4, expert_hidden=32).flops_per_token(32)


# --- every family learns -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_overfits_one_batch(family):
    cfg = tiny_config(**FAMILIES[family])
    model = build_model(cfg)
    idx = _tokens(cfg, bsz=4, seqlen=17, seed=1)
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = last = None
    for step in range(200):
        out = model(x, y)
        last = out.lm_loss.item()
        first = last if first is None else first
        if last < 0.2:
            break
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    assert first > 3.5  # about log(64) at init
    assert last < 0.2, f"{family}: loss {last:.3f} after {step + 1} steps"


def test_cudnn_backend_needs_cuda():
    with pytest.raises(RuntimeError, match="cudnn.*CUDA.*sdpa"):
        build_model(tiny_config(attn_backend="cudnn"), "cpu")


def test_regional_compile_matches_eager():
    """compile_regions (the trainer's default compile) gives the eager losses, gradients and telemetry, and
    keeps parameter names, on a model with every special path: GQA, MoE with a shared expert."""
    cfg = tiny_config(**FAMILIES["moe"], n_kv_heads=2, shared_expert_hidden=16)
    eager = build_model(cfg)
    compiled = build_model(cfg)
    compiled.load_state_dict(eager.state_dict())
    keys = list(compiled.state_dict())
    compiled.compile_regions()
    assert list(compiled.state_dict()) == keys
    x = torch.randint(0, cfg.vocab_size, (2, 12))
    outs = []
    for model in (eager, compiled):
        out = model(x, x, telemetry=True)
        out.loss.backward()
        outs.append((out, {n: p.grad for n, p in model.named_parameters()}))
    (a, ga), (b, gb) = outs
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-5)
    for k in a.stats:
        torch.testing.assert_close(b.stats[k], a.stats[k], atol=1e-5, rtol=1e-4)
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], atol=1e-5, rtol=1e-4)
