"""Probe metrics against answers worked out by hand, away from the identity block.

Identity blocks give many wrong formulas the right answer (cos = 1 makes 1 − cos, (1 − cos)/2 and 1 − cos² all
0); here every block moves the stream, so each formula must be the documented one:
- angular distance and block influence on blocks that output fixed vectors at known angles;
- the Jacobian summaries on hand-made non-symmetric matrices with singular values found by hand;
- a nonlinear block (|x|) that no linear map can replace: usefulness must flag it, and its Jacobian is
  diag(E sign x), counted from the windows.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsedepth.config import ModelConfig
from sparsedepth.model import build_model
from sparsedepth.probes import (angular_distance, block_influence, causal, jacobian, layer_variance,
                                usefulness, weight_density)
from sparsedepth.probes.sparsity import HIST_EDGES
from sparsedepth.probes.usefulness import solve_linear
from sparsedepth.probes.jacobian import jacobian_metrics


class ConstBlock(nn.Module):
    """Outputs the same vector for every token (same call signature as model.Block)."""

    def __init__(self, v: torch.Tensor):
        super().__init__()
        self.v = nn.Parameter(v)

    def forward(self, x, cos, sin, telemetry=False):
        return self.v.expand_as(x) + 0 * x, x.new_zeros(2), None


class AbsBlock(nn.Module):
    """h ↦ |h|: nonlinear, and with sign-symmetric inputs uncorrelated with its input (best linear map: a constant)."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))  # the probes find the device from a block's parameters

    def forward(self, x, cos, sin, telemetry=False):
        return x.abs() * self.gain, x.new_zeros(2), None


class PassBlock(AbsBlock):
    def forward(self, x, cos, sin, telemetry=False):
        return x * self.gain, x.new_zeros(2), None


def _model(blocks: list[nn.Module], vocab: int = 16, d: int = 32) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, d_model=d, n_layers=len(blocks), n_heads=4, max_seq_len=64)
    model = build_model(cfg).eval()
    model.blocks = nn.ModuleList(blocks)
    return model


def _unit(*xs: float, d: int = 32) -> torch.Tensor:
    v = torch.zeros(d)
    v[: len(xs)] = torch.tensor(xs)
    return v


# ------------------------------------------------------------------------------------ angles on fixed vectors

# h_1 = a, h_2 = b, h_3 = c for every token: cos(a, b) = 1/√2, cos(b, c) = −1/√2, cos(a, c) = −1
A, B, C = _unit(1.0), _unit(1.0, 1.0), _unit(-1.0)


def test_angular_distance_on_fixed_vectors():
    model = _model([ConstBlock(A), ConstBlock(B), ConstBlock(C)])
    w = torch.randint(0, 16, (3, 9), generator=torch.Generator().manual_seed(0))
    res = angular_distance(model, w, batch_tokens=64)
    # d = arccos(cos)/π: 45° -> 1/4, 135° -> 3/4, 180° -> 1
    assert res["n1"][1:] == pytest.approx([0.25, 0.75], abs=1e-12)
    m = res["matrix"]
    assert m[1][3] == pytest.approx(1.0, abs=1e-7) and m[3][1] == pytest.approx(1.0, abs=1e-7)
    assert m[1][2] == pytest.approx(0.25, abs=1e-12) and m[2][3] == pytest.approx(0.75, abs=1e-12)
    assert res["n_windows"] == 3


class ShiftBlock(nn.Module):
    """h ↦ h + c: the angle it turns a token's stream by depends on that token's embedding."""

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.c = nn.Parameter(c)

    def forward(self, x, cos, sin, telemetry=False):
        return x + self.c, x.new_zeros(2), None


def test_angular_distance_reads_the_last_token_of_every_window():
    model = _model([ShiftBlock(torch.full((32,), 0.05))])
    w = torch.randint(0, 16, (4, 9), generator=torch.Generator().manual_seed(1))
    res = angular_distance(model, w, batch_tokens=8)  # one window per micro-batch
    with torch.no_grad():
        e = model.embed(w[:, -2]).double()  # the last input position of each window
        expect = torch.arccos(torch.cosine_similarity(e, e + 0.05, dim=-1)).mean() / math.pi
    assert res["n1"][0] == pytest.approx(float(expect), rel=1e-6)  # float32 streams
    assert res["matrix"][0][0] == 0.0 and res["matrix"][1][1] == 0.0 and res["n_windows"] == 4


def test_block_influence_on_fixed_vectors():
    model = _model([ConstBlock(A), ConstBlock(B), ConstBlock(C)])
    w = torch.randint(0, 16, (3, 9), generator=torch.Generator().manual_seed(0))
    bi = block_influence(model, w, batch_tokens=64)
    # BI = 1 − cos: 1 − 1/√2 and 1 + 1/√2 (not 1 − cos², which is 1/2 for both)
    assert bi[1:] == pytest.approx([1 - 2 ** -0.5, 1 + 2 ** -0.5], abs=1e-12)


def test_layer_variance_on_fixed_vectors():
    model = _model([ConstBlock(A), ConstBlock(B), ConstBlock(C)])
    w = torch.randint(0, 16, (3, 9), generator=torch.Generator().manual_seed(0))
    res = layer_variance(model, w, batch_tokens=64)
    # unbiased variance across d of k ones (signs aside) and d − k zeros: k (d − k) / (d (d − 1))
    var = lambda k, d=32: k * (d - k) / (d * (d - 1))  # noqa: E731
    assert res["layer_var"] == pytest.approx([var(1), var(2), var(1)], rel=1e-6)
    # the final norm (gain 1) rescales h_3 = −e_0 to RMS 1: −√32 e_0, variance 32 · var(1) = 1
    assert res["final_norm_var"] == pytest.approx(1.0, rel=1e-4)  # up to the norm's eps
    assert res["n_tokens"] == 3 * 8
    with torch.no_grad():  # h_0: the embedding rows of the input tokens
        assert res["embed_var"] == pytest.approx(float(model.embed(w[:, :-1]).var(-1).mean()), rel=1e-6)


# ------------------------------------------------------------------------------------ causal (skip) score


class ScaleBlock(nn.Module):
    """h ↦ (1 + a) h: its update a·h scales with its input, so skipping an earlier block rescales it."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x, cos, sin, telemetry=False):
        return x * (1 + self.a), x.new_zeros(2), None


def test_causal_score_on_scaling_blocks():
    a = (1.0, 0.5, 3.0)
    model = _model([ScaleBlock(v) for v in a])
    w = torch.randint(0, 16, (4, 9), generator=torch.Generator().manual_seed(0))
    res = causal(model, w, batch_tokens=8)  # four micro-batches
    # skipping block s divides every later stream, hence every later update, by 1 + a_s: C[s, l] = a_s / (1 + a_s)
    c = [[0.0, 0.5, 0.5], [0.0, 0.0, 1 / 3], [0.0, 0.0, 0.0]]
    assert res["matrix"] == [pytest.approx(row, abs=1e-6) for row in c]
    assert res["per_layer"] == pytest.approx([0.5, 1 / 3, 0.0], abs=1e-6)
    assert res["score"] == pytest.approx((0.5 + 1 / 3) / 2, abs=1e-6)  # over the skippable layers 0 and 1
    assert res["score_upper_mean"] == pytest.approx(4 / 9, abs=1e-6)  # (1/2 + 1/2 + 1/3) / 3
    h0 = model.embed(w[:, :-1]).norm(dim=-1).mean().item()
    assert res["update_norm"] == pytest.approx([1.0 * h0, 0.5 * 2 * h0, 3.0 * 3 * h0], rel=1e-5)  # a_l ||h_l||
    assert res["n_tokens"] == 32


# ------------------------------------------------------------------------------------ Jacobian summaries


def test_jacobian_metrics_on_a_hand_made_matrix():
    j = torch.tensor([[2.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    m = jacobian_metrics(j)
    # JᵀJ = [[4, 2], [2, 2]]: eigenvalues 3 ± √5, so σ_max = √(3 + √5) (‖J‖_F/√d would be √3)
    assert m["spectral_norm"] == pytest.approx(math.sqrt(3 + math.sqrt(5)), rel=1e-12)
    assert m["frobenius_norm"] == pytest.approx(math.sqrt(6), rel=1e-12)
    # J − I = [[1, 1], [0, 0]]: ‖·‖_F = √2, σ_max = √2, RMS entry √2 / 2
    assert m["jacobian_norm"] == pytest.approx(math.sqrt(2) / 2, rel=1e-12)
    assert m["deviation_spectral_norm"] == pytest.approx(math.sqrt(2), rel=1e-12)
    assert m["off_diagonal_norm"] == pytest.approx(1 / math.sqrt(2), rel=1e-12)  # one nonzero of d² − d = 2
    assert m["diagonal_mean"] == pytest.approx(1.5, rel=1e-12)
    assert m["diagonal_std"] == pytest.approx(1 / math.sqrt(2), rel=1e-12)  # unbiased std of (2, 1)


def test_jacobian_metrics_on_a_rotation_and_a_scaling():
    th = 0.3
    rot = torch.tensor([[math.cos(th), -math.sin(th), 0.0], [math.sin(th), math.cos(th), 0.0], [0.0, 0.0, 1.0]],
                       dtype=torch.float64)
    m = jacobian_metrics(rot)
    assert m["spectral_norm"] == pytest.approx(1.0, rel=1e-12)  # orthogonal: every σ = 1, while ‖J‖_F = √3
    assert m["frobenius_norm"] == pytest.approx(math.sqrt(3), rel=1e-12)
    # R − I: the 2x2 block (cos θ − 1, −sin θ; sin θ, cos θ − 1) is √(2 − 2cos θ) times a rotation
    dev = math.sqrt(2 - 2 * math.cos(th))
    assert m["deviation_spectral_norm"] == pytest.approx(dev, rel=1e-12)
    assert m["jacobian_norm"] == pytest.approx(math.sqrt(2) * dev / 3, rel=1e-12)
    assert m["off_diagonal_norm"] == pytest.approx(math.sqrt(2) * math.sin(th) / math.sqrt(6), rel=1e-12)
    one = jacobian_metrics(torch.tensor([[3.0]], dtype=torch.float64))  # d = 1: no off-diagonal, no spread
    assert (one["off_diagonal_norm"], one["diagonal_std"], one["jacobian_norm"]) == (0.0, 0.0, 2.0)
    s = jacobian_metrics(torch.diag(torch.tensor([3.0, 1.0, 1.0, 1.0])))
    assert s["spectral_norm"] == pytest.approx(3.0) and s["deviation_spectral_norm"] == pytest.approx(2.0)
    assert s["diagonal_std"] == pytest.approx(1.0)  # unbiased std of (3, 1, 1, 1)


# ------------------------------------------------------------------------------------ weight density


def _sparse_signs(shape: tuple[int, int], q: float, seed: int) -> torch.Tensor:
    """A fraction q of the entries ±1 in equal numbers (mean exactly 0), the rest 0, in random places."""
    n = shape[0] * shape[1]
    nz = int(n * q)
    flat = torch.zeros(n)
    flat[:nz] = torch.tensor([1.0, -1.0]).repeat(nz // 2)
    return flat[torch.randperm(n, generator=torch.Generator().manual_seed(seed))].view(shape)


def test_weight_density_on_hand_made_matrices():
    model = build_model(ModelConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=4, max_seq_len=64))
    density = {"attn.qkv.weight": 0.5, "attn.out.weight": 0.25, "ffn.up.weight": 1.0, "ffn.down.weight": 0.125}
    sizes = {}
    with torch.no_grad():
        for i, (name, q) in enumerate(density.items()):
            p = model.blocks[0].get_parameter(name)
            p.copy_(_sparse_signs(tuple(p.shape), q, seed=i))
            sizes[name] = p.numel()
    wd = weight_density(model)
    kinds = {"attn_qkv": 0.5, "attn_out": 0.25, "ffn_in": 1.0, "ffn_out": 0.125}
    for tau in ("0.1", "0.5"):  # a nonzero entry sits at |w|/std = 1/√(q n/(n−1)) > 0.5, a zero at 0
        assert {k: wd["per_kind"][k][tau][0] for k in kinds} == pytest.approx(kinds, abs=1e-12)
        assert wd["per_matrix"]["attn.out.weight"][tau][0] == pytest.approx(0.25, abs=1e-12)
        pooled = sum(density[n] * sizes[n] for n in density) / sum(sizes.values())
        assert wd["per_layer"][tau][0] == pytest.approx(pooled, abs=1e-12)
    # histogram of |w|/std: zeros in bin 0, each matrix's nonzeros in the bin of 1/√(q n/(n−1))
    expect = [0.0] * (len(HIST_EDGES) - 1)
    total = sum(sizes.values())
    for name, q in density.items():
        n = sizes[name]
        v = 1 / math.sqrt(q * n / (n - 1))
        expect[int(v // 0.25)] += q * n / total
        expect[0] += (1 - q) * n / total
    assert wd["hist"]["per_layer"][0] == pytest.approx(expect, abs=1e-12)
    # layer 1 keeps its Gaussian init: near the Gaussian reference
    assert wd["per_layer"]["0.5"][1] == pytest.approx(wd["gaussian_reference"]["0.5"], abs=0.02)


def test_weight_density_pools_the_matrices_of_a_kind():
    """MoE: ffn_in holds w_gate and w_up (each [E, d, h], one std per expert); the kind pools both."""
    model = build_model(ModelConfig(vocab_size=16, d_model=32, n_layers=1, n_heads=4, max_seq_len=64,
                                    n_experts=4, top_k=2, expert_hidden=16))
    ffn = model.blocks[0].ffn
    with torch.no_grad():
        ffn.w_gate.copy_(_sparse_signs((4 * 32, 16), 0.5, seed=0).view(4, 32, 16))
        ffn.w_up.copy_(_sparse_signs((4 * 32, 16), 1.0, seed=1).view(4, 32, 16))
    wd = weight_density(model)
    # every nonzero stays above 0.5 std whatever its expert's share of nonzeros: (0.5 n + 1.0 n) / 2n
    assert wd["per_kind"]["ffn_in"]["0.5"][0] == pytest.approx(0.75, abs=1e-12)
    assert wd["per_matrix"]["ffn.w_gate"]["0.1"][0] == pytest.approx(0.5, abs=1e-12)


# ------------------------------------------------------------------------------------ a useful nonlinear block

K = 8  # token v sits on axis v % K with sign + (v < K) or − (v ≥ K)


def _sign_windows(n: int, T: int, seed: int = 0) -> torch.Tensor:
    """Next token: the next axis (deterministic) with a random sign, so |h| predicts it and h does not linearly."""
    g = torch.Generator().manual_seed(seed)
    w = torch.empty(n, T + 1, dtype=torch.long)
    w[:, 0] = torch.randint(0, 2 * K, (n,), generator=g)
    for t in range(T):
        w[:, t + 1] = (w[:, t] % K + 1) % K + K * torch.randint(0, 2, (n,), generator=g)
    return w


def _abs_model() -> nn.Module:
    model = _model([AbsBlock(), PassBlock()])
    with torch.no_grad():
        emb = torch.zeros(2 * K, 32)
        for v in range(2 * K):
            emb[v, v % K] = 1.0 if v < K else -1.0
        model.embed.weight.copy_(emb)
        head = torch.zeros(2 * K, 32)
        for v in range(2 * K):  # both successors of axis a score high when the stream points along +a
            head[v, (v % K - 1) % K] = 1.0
        model.head.weight.copy_(head)
    return model


def _sums(x: torch.Tensor, y: torch.Tensor):
    return x.shape[0], x.sum(0), y.sum(0), x.T @ x, x.T @ y


def test_solve_linear_on_a_hand_made_fit():
    x = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    w_true = torch.tensor([[2.0, 0.0, 1.0], [-1.0, 3.0, 0.5]], dtype=torch.float64)
    b_true = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    w, b, lam, cond = solve_linear(*_sums(x, x @ w_true + b_true))
    assert torch.allclose(w, w_true, atol=1e-12) and torch.allclose(b, b_true, atol=1e-12) and lam == 0.0
    # Cov(x) = [[1, 1/2], [1/2, 1/2]]; Jacobi-scaled: off-diagonal 1/√2, eigenvalues 1 ± 1/√2
    assert cond == pytest.approx(3 + 2 * math.sqrt(2), rel=1e-12)
    # a repeated column makes the covariance singular: the ridge takes over (condition number infinite, or
    # astronomically large where rounding leaves the smallest eigenvalue a hair above 0)
    xs = torch.cat([x, x[:, :1]], 1)
    w, b, lam, cond = solve_linear(*_sums(xs, x @ w_true + b_true))
    assert lam > 0 and cond > 1e12
    assert torch.allclose(xs @ w + b, x @ w_true + b_true, atol=1e-6)  # still reproduces the map on the data


def test_nonlinear_block_is_useful_and_its_jacobian_is_the_mean_sign():
    model, w = _abs_model(), _sign_windows(16, 16)
    res = usefulness(model, w, batch_tokens=128)
    # base: two successors at logit √32 ≈ 5.66 -> loss ≈ log 2; replaced by a constant -> uniform, log 16
    assert res["base_loss"] == pytest.approx(math.log(2 + 14 * math.exp(-math.sqrt(32))), rel=1e-4)
    assert res["loss_ratio"][0] > 3.0
    assert res["useful"] == [True, False]
    assert res["score"] == pytest.approx(0.5)
    assert res["loss_ratio"][1] == pytest.approx(1.0, abs=1e-6)
    assert res["r2"][0] < 0.2  # |h| is nearly uncorrelated with h here
    assert "paper_compat" not in res  # only on request
    base = res["base_loss"]
    assert res["loss_increase"] == pytest.approx([v - base for v in res["loss"]], rel=1e-12)
    assert res["loss"] == pytest.approx([r * base for r in res["loss_ratio"]], rel=1e-12)
    assert res["mean_ratio"] == pytest.approx(sum(res["loss_ratio"]) / 2, rel=1e-12)
    strict = usefulness(model, w, batch_tokens=128, threshold=2 * res["loss_ratio"][0])
    assert strict["useful"] == [False, False] and strict["threshold"] == 2 * res["loss_ratio"][0]
    # d|x|/dx = diag(sign x): J of block 0 is diag(E_t sign h_t) over the axes, 0 elsewhere
    # four micro-batches of 8 tokens: J is the mean over all of them, not the last one's
    jac = jacobian(model, w, n_windows=4, seq_len=8, batch_tokens=8, return_matrices=True)
    tok = w[:4, :8].reshape(-1)
    expect = torch.zeros(32, dtype=torch.float64)
    for a in range(K):
        expect[a] = ((tok == a).sum() - (tok == a + K).sum()).double() / tok.numel()
    assert torch.allclose(torch.tensor(jac["matrices"][0], dtype=torch.float64), torch.diag(expect), atol=1e-12)
    assert torch.allclose(torch.tensor(jac["matrices"][1], dtype=torch.float64), torch.eye(32, dtype=torch.float64))
    assert jac["diagonal_mean"][0] == pytest.approx(float(expect.mean()), abs=1e-12)
    assert jac["mean_diagonal_mean"] == pytest.approx((float(expect.mean()) + 1) / 2, abs=1e-12)  # over both layers
    assert jac["n_tokens"] == 32 and jac["layers"] == [0, 1]
    with pytest.raises(ValueError, match=r"layers must be in \[0, 1\], got \[2\]"):
        jacobian(model, w, layers=[2])
    with pytest.raises(ValueError, match="n_windows and seq_len must be >= 1"):
        jacobian(model, w, seq_len=0)


# ------------------------------------------------------------------------------------ permutation aggregates


def test_permutation_aggregates_from_its_pairs():
    """score, stderr, matrix and the official weighted variant, recomputed from the three pairs of a 3-layer model."""
    from sparsedepth.probes import permutation

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=16, d_model=32, n_layers=3, n_heads=4, max_seq_len=64,
                                    init_std=0.2)).eval()
    w = torch.randint(0, 16, (4, 9), generator=torch.Generator().manual_seed(0))
    res = permutation(model, w, batch_tokens=8)
    p = {(i, j): v for i, j, v in res["pairs"]}
    assert sorted(p) == [(0, 1), (0, 2), (1, 2)] and len(set(p.values())) == 3
    vals = list(p.values())
    mean = sum(vals) / 3
    assert res["score"] == pytest.approx(mean, rel=1e-12)
    assert res["stderr"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in vals) / 2) / math.sqrt(3), rel=1e-12)
    assert res["matrix"] == [[0.0, p[0, 1], p[0, 2]], [p[0, 1], 0.0, p[1, 2]], [p[0, 2], p[1, 2], 0.0]]
    per_layer = [(p[0, 1] + p[0, 2]) / 2, 0.9 * (p[0, 1] + p[1, 2]) / 2, 0.81 * (p[0, 2] + p[1, 2]) / 2]
    assert res["weighted"] == pytest.approx(sum(per_layer) / 3, rel=1e-12)
    # each pair's P = |L − L_swap| / L from the losses it reports
    for (i, j), v in zip(p, res["swapped_loss"]):
        assert p[i, j] == pytest.approx(abs(res["base_loss"] - v) / res["base_loss"], rel=1e-12)
