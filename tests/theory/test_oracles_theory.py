"""The theory module against independent oracles: every measured column of the simulator against a float64
autograd reference from the same random draws, the closed forms against the docstring's formulas with their
expectations integrated on a grid, summarize on hand-made rows, and the argument checks' messages (the
variance growth is checked against the closed form, at a tolerance of the growth, in test_theory.py)."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from sparsedepth.theory import predicted_jacobian_dist, predicted_variance, simulate, summarize


def _stack_grad_norms(density: float, depth: int, d: int, n_tokens: int, n_grad: int, seed: int, s: int,
                      sublayer: str) -> np.ndarray:
    """‖d loss / d(masked effective weights)‖_F per block, loss = Σ_t <u, RMSNorm(x_L,t)>, by autograd in float64.

    Draws the same random numbers as ``simulate`` (its documented common-random-number scheme: x0, u, then per
    block and matrix W then the uniforms of the mask) but computes the stack and its gradient independently."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + s)
    x0 = torch.randn(n_tokens, d, generator=gen)
    u = torch.randn(d, generator=gen)
    u = (u / u.norm()).double()
    shapes = [(d, d)] if sublayer == "linear" else [(4 * d, d), (d, 4 * d)]
    x = x0[:n_grad].double()
    mats, masks = [], []
    for _ in range(depth):
        block = []
        for o, i in shapes:
            w = torch.randn(o, i, generator=gen) / math.sqrt(i)
            m = torch.rand(o, i, generator=gen) < density
            a = torch.where(m, w, 0.0).double().requires_grad_()
            block.append(a)
            masks.append(m)
        mats.append(block)
        z = x / x.pow(2).mean(-1, keepdim=True).sqrt()
        h = z @ block[0].T
        if len(block) == 2:
            h = torch.relu(h) @ block[1].T
        x = x + h
    loss = (x / x.pow(2).mean(-1, keepdim=True).sqrt() @ u).sum()
    flat = [a for block in mats for a in block]
    grads = torch.autograd.grad(loss, flat)
    per = [(g * m).pow(2).sum() for g, m in zip(grads, masks)]
    k = len(shapes)
    return np.array([float(sum(per[l * k:(l + 1) * k]).sqrt()) for l in range(depth)])


@pytest.mark.parametrize("sublayer", ["linear", "mlp"])
def test_grad_norm_matches_autograd_on_a_small_stack(sublayer):
    kw = dict(depth=4, d_model=16, n_tokens=12, n_grad_tokens=5, seed=2)
    rows = simulate(densities=0.5, sublayer=sublayer, n_seeds=1, n_jac_tokens=0, **kw)
    ref = _stack_grad_norms(0.5, 4, 16, 12, 5, seed=2, s=0, sublayer=sublayer)
    got = np.array([r["grad_norm"] for r in rows])
    assert np.allclose(got, ref, rtol=1e-4), (got, ref)
    assert np.allclose([r["grad_ratio"] for r in rows], ref / ref[0], rtol=1e-4)  # one seed: a plain ratio



def _normal_mean(f, var: float) -> float:
    """E[f(h)], h ~ N(0, var), by the trapezoid rule on a fine grid (independent of the simulator's quadrature)."""
    sd = math.sqrt(var)
    h = np.linspace(-14 * sd, 14 * sd, 20_001)  # the trapezoid rule is spectrally accurate for these integrands
    pdf = np.exp(-h * h / (2 * var)) / math.sqrt(2 * math.pi * var)
    return float(np.trapezoid(f(h) * pdf, h))


def _phi_cdf(h: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))


def _block_reference(rho: float, l: int, d: int, d_ff: int, sublayer: str, act: str, stds: list[float],
                     lns: bool, compensate: bool) -> tuple[float, float]:
    """(c_l, E||J_F P||^2 g^2) written from the module docstring's formulas, expectations by the grid above."""
    k = 1.0 if compensate else rho
    g2 = 1.0 / (l + 1) if lns else 1.0
    if sublayer == "linear":
        return k * stds[0] ** 2 * d * g2, g2 * k * stds[0] ** 2 * d * (d - 1)
    s1, s2 = stds[0] ** 2, stds[1] ** 2
    vh = k * s1 * d * g2
    if act == "relu":
        # E[relu(h)^2] = var/2 and E[relu'(h)^2] = 1/2 for symmetric h
        return k * s2 * d_ff * vh / 2, g2 * k * s2 * d * d_ff * k * s1 * (d - 1) / 2
    dgelu = lambda h: _phi_cdf(h) + h * np.exp(-h * h / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    c = k * s2 * d_ff * _normal_mean(lambda h: (h * _phi_cdf(h)) ** 2, vh)
    row = _normal_mean(lambda h: dgelu(h) ** 2, vh) * k * s1 * d - _normal_mean(lambda h: (dgelu(h) * h) ** 2,
                                                                                vh) / (g2 * d)
    return c, g2 * k * s2 * d * d_ff * row


@pytest.mark.parametrize("sublayer, act, lns, compensate", [
    ("linear", "relu", False, False), ("mlp", "relu", True, False), ("mlp", "gelu", False, True),
    ("mlp", "gelu", True, False),
])
def test_predictions_against_the_docstring_formulas(sublayer, act, lns, compensate):
    """predicted_variance / predicted_jacobian_dist at sigma0 != 1, an explicit d_ff and sigma_w (or fan-in)."""
    d, d_ff, depth, sigma0, rho = 12, 20, 5, 1.5, 0.4
    for sigma_w in (None, 0.3):
        stds = ([sigma_w] * 2 if sigma_w else [1 / math.sqrt(d), 1 / math.sqrt(d_ff)])[:1 if sublayer == "linear"
                                                                                       else 2]
        kw = dict(d_model=d, d_ff=d_ff, sublayer=sublayer, act=act, sigma_w=sigma_w, sigma0=sigma0, lns=lns,
                  compensate=compensate)
        v, want_v, want_j = sigma0 ** 2, [], []
        for l in range(depth):
            c, j2 = _block_reference(rho, l, d, d_ff, sublayer, act, stds, lns, compensate)
            want_j.append(math.sqrt(j2 / v) / d)  # r^2 ≈ the variance entering block l
            v += c
            want_v.append(v)
        assert np.allclose(predicted_variance(rho, depth, **kw), want_v, rtol=1e-6), (sigma_w, kw)
        assert np.allclose(predicted_jacobian_dist(rho, depth, **kw), want_j, rtol=1e-6), (sigma_w, kw)
    # d_ff defaults to 4 d_model (with an explicit sigma_w: under fan-in init d_ff cancels out of c_l)
    kw = dict(d_model=d, sublayer=sublayer, act=act, sigma_w=0.3)
    assert np.allclose(predicted_variance(rho, depth, **kw), predicted_variance(rho, depth, d_ff=4 * d, **kw))
    if sublayer == "mlp":
        assert not np.allclose(predicted_variance(rho, depth, **kw), predicted_variance(rho, depth, d_ff=5 * d, **kw))


def _reference_rows(cfg: dict):
    """Every measured column of ``simulate(**cfg)`` from the same random draws (x0, u, then per block and matrix
    W and the mask's uniforms, shared by all densities, in cfg's dtype), computed token by token in float64 with
    autograd."""
    d, d_ff, depth, dtype = cfg["d_model"], cfg["d_ff"], cfg["depth"], cfg["dtype"]
    n_jac, n_grad, lns = cfg["n_jac_tokens"], cfg["n_grad_tokens"], cfg["lns"]
    actf = torch.relu if cfg["act"] == "relu" else torch.nn.functional.gelu
    shapes = [(d, d)] if cfg["sublayer"] == "linear" else [(d_ff, d), (d, d_ff)]
    stds = [cfg["sigma_w"] or 1 / math.sqrt(i) for _, i in shapes]
    R, n_seeds = len(cfg["densities"]), cfg["n_seeds"]
    var, jac, lng, gn = (np.zeros((n_seeds, R, depth)) for _ in range(4))
    for s in range(n_seeds):
        gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + s)
        x0 = torch.randn(cfg["n_tokens"], d, generator=gen, dtype=dtype) * cfg["sigma0"]
        u = torch.randn(d, generator=gen, dtype=dtype)
        u = (u / u.norm()).double()
        draws = [[(torch.randn(o, i, generator=gen, dtype=dtype) * std, torch.rand(o, i, generator=gen, dtype=dtype))
                  for (o, i), std in zip(shapes, stds)] for _ in range(depth)]
        for ri, rho in enumerate(cfg["densities"]):
            scale = 1 / math.sqrt(rho) if cfg["compensate"] else 1.0
            blocks = [[torch.where(un < torch.tensor(rho, dtype=dtype), w, 0.0).double() * scale
                       for w, un in block] for block in draws]

            def branch(x, mats, gain):
                z = gain * x / x.pow(2).mean(-1, keepdim=True).sqrt()
                h = z @ mats[0].T
                return actf(h) @ mats[1].T if len(mats) == 2 else h

            x = x0.double()
            for l, mats in enumerate(blocks):
                gain = 1 / math.sqrt(l + 1) if lns else 1.0
                jac[s, ri, l] = np.mean([float(torch.autograd.functional.jacobian(
                    lambda t: branch(t, mats, gain), x[t]).norm()) / d for t in range(n_jac)])
                lng[s, ri, l] = float((1 / x.pow(2).mean(-1).sqrt()).mean())
                x = x + branch(x, mats, gain)
                var[s, ri, l] = float(x.var(-1, unbiased=True).mean())
            params = [a.clone().requires_grad_() for mats in blocks for a in mats]
            x = x0[:n_grad].double()
            k = len(shapes)
            for l in range(depth):
                x = x + branch(x, params[l * k:(l + 1) * k], 1 / math.sqrt(l + 1) if lns else 1.0)
            loss = (x / x.pow(2).mean(-1, keepdim=True).sqrt() @ u).sum()
            grads = torch.autograd.grad(loss, params)
            sq = [float((g * (p != 0)).pow(2).sum()) for g, p in zip(grads, params)]
            gn[s, ri] = np.sqrt([sum(sq[l * k:(l + 1) * k]) for l in range(depth)])
    return var, jac, lng, gn


BASE = dict(densities=(1.0, 0.5), depth=3, d_model=6, d_ff=10, n_tokens=7, n_jac_tokens=2, n_grad_tokens=3, seed=1,
            n_seeds=2, sublayer="linear", act="relu", lns=False, compensate=False, sigma0=1.7, sigma_w=None,
            dtype=torch.float32)


@pytest.mark.parametrize("changes, rel", [
    (dict(), 1e-4),
    (dict(sublayer="mlp", lns=True, compensate=True, sigma_w=0.5, n_jac_tokens=1, n_grad_tokens=1), 1e-4),
    (dict(sublayer="mlp", act="gelu", n_seeds=1, dtype=torch.float64), 1e-9),
])
def test_simulate_rows_against_a_float64_reference(changes, rel):
    """All measured columns, over two densities and one or two seeds, at sigma0 != 1 and d_ff != 4 d; one token
    is enough for the Jacobian and the gradient; float64 draws its own random numbers."""
    cfg = {**BASE, **changes}
    rows = simulate(**cfg)
    var, jac, lng, gn = _reference_rows(cfg)
    dens, depth = cfg["densities"], cfg["depth"]
    assert [(r["density"], r["layer"]) for r in rows] == [(rho, l) for rho in dens for l in range(1, depth + 1)]
    for row in rows:
        ri, l = dens.index(row["density"]), row["layer"] - 1
        want = {"variance": var[:, ri, l].mean(), "jacobian_dist": jac[:, ri, l].mean(),
                "ln_grad_scale": lng[:, ri, l].mean(), "grad_norm": gn[:, ri, l].mean(),
                "grad_ratio": (gn[:, ri, l] / gn[:, ri, 0]).mean()}
        want["variance_std"] = var[:, ri, l].std(ddof=1) if cfg["n_seeds"] > 1 else 0.0
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=rel, abs=1e-12), (key, row["density"], row["layer"])
        kw = {k: cfg[k] for k in ("d_model", "d_ff", "sublayer", "act", "sigma0", "sigma_w", "lns", "compensate")}
        assert row["variance_pred"] == pytest.approx(predicted_variance(row["density"], depth, **kw)[l], rel=1e-9)
        assert row["jacobian_dist_pred"] == pytest.approx(predicted_jacobian_dist(row["density"], depth, **kw)[l],
                                                          rel=1e-9)


def test_summarize_on_hand_made_rows():
    """Two densities over layers 1..8, given shuffled. Density 1: variance 3 L^2, so the least-squares slope is
    3 (sum L^3 - 4.5 sum L^2) / sum (L - 4.5)^2 = 3 (1296 - 918) / 42 = 27 and the log-log exponent 2; density
    1/2: variance 2 L (slope 2, exponent 1). The last quarter is layers 7 and 8."""
    rows = []
    for rho, var in ((1.0, lambda L: 3.0 * L * L), (0.5, lambda L: 2.0 * L)):
        for L in range(1, 9):
            pred = {3: 25.0, 8: 200.0}.get(L, var(L)) if rho == 1.0 else var(L) * 1.01
            rows.append({"density": rho, "layer": L, "variance": var(L), "variance_pred": pred,
                         "jacobian_dist": 0.1 * L, "jacobian_dist_pred": 0.2 * L, "ln_grad_scale": 1 / L,
                         "grad_ratio": L + 0.5 * rho})
    random.Random(0).shuffle(rows)
    s = summarize(rows)
    assert list(s) == [1.0, 0.5]
    assert s[1.0] == pytest.approx({
        "final_variance": 192.0, "final_variance_pred": 200.0, "growth_slope": 27.0, "growth_exponent": 2.0,
        "deep_jacobian_dist": 0.75, "deep_jacobian_dist_pred": 1.5, "deep_ln_grad_scale": (1 / 7 + 1 / 8) / 2,
        "max_rel_err_variance": 2 / 25, "final_grad_ratio": 8.5})
    assert s[0.5] == pytest.approx({
        "final_variance": 16.0, "final_variance_pred": 16.16, "growth_slope": 2.0, "growth_exponent": 1.0,
        "deep_jacobian_dist": 0.75, "deep_jacobian_dist_pred": 1.5, "deep_ln_grad_scale": (1 / 7 + 1 / 8) / 2,
        "max_rel_err_variance": 0.01 / 1.01, "final_grad_ratio": 8.25})
    # three layers: the last quarter is still one layer; one layer: no slope or exponent
    three = summarize([r for r in rows if r["density"] == 0.5 and r["layer"] <= 3])[0.5]
    assert three["deep_jacobian_dist"] == pytest.approx(0.3) and three["growth_slope"] == pytest.approx(2.0)
    two = summarize([r for r in rows if r["density"] == 0.5 and r["layer"] <= 2])[0.5]
    assert two["growth_slope"] == pytest.approx(2.0) and two["growth_exponent"] == pytest.approx(1.0)
    one = summarize([r for r in rows if r["density"] == 0.5 and r["layer"] == 1])[0.5]
    assert math.isnan(one["growth_slope"]) and math.isnan(one["growth_exponent"])
    assert one["final_variance"] == 2.0 and one["deep_ln_grad_scale"] == 1.0


@pytest.mark.parametrize("kwargs", [dict(d_model=2), dict(densities=(1.0,)), dict(n_tokens=1, n_jac_tokens=1),
                                    dict(d_ff=1, sublayer="mlp"), dict(sigma_w=1e-3), dict(sigma0=1e-3)])
def test_smallest_valid_arguments_run(kwargs):
    rows = simulate(**{"densities": (0.5,), "depth": 1, "d_model": 4, "n_tokens": 2, "n_seeds": 1,
                       "sublayer": "linear", **kwargs})
    assert len(rows) == 1 and rows[0]["variance"] > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(densities=(True,)), "density must lie in (0, 1], got True"),
    (dict(densities=("0.5",)), "density must lie in (0, 1], got '0.5'"),
    (dict(n_tokens=0), "n_tokens must be an int >= 1, got 0"),
    (dict(d_model=1), "d_model must be an int >= 2, got 1"),
    (dict(n_seeds=1.0), "n_seeds must be an int >= 1, got 1.0"),
    (dict(d_ff=0), "d_ff must be a positive int, got 0"),
    (dict(d_ff=8.0), "d_ff must be a positive int, got 8.0"),
    (dict(sublayer="conv"), "sublayer must be 'linear' or 'mlp', got 'conv'"),
    (dict(act="tanh"), "act must be one of ['gelu', 'relu'], got 'tanh'"),
    (dict(sigma_w=-1.0), "sigma_w must be > 0, got -1.0"),
    (dict(sigma0=0.0), "sigma0 must be > 0, got 0.0"),
    (dict(densities=[]), "density: need at least one value"),
    (dict(depth=0), "depth must be an int >= 1, got 0"),
    (dict(densities=(2.0,)), "density must lie in (0, 1], got 2.0"),
])
def test_bad_arguments_name_the_value(kwargs, message):
    if "n_tokens" not in kwargs and "n_seeds" not in kwargs and "densities" not in kwargs:
        with pytest.raises(ValueError) as err:  # the closed forms check the same arguments
            predicted_variance(0.5, **{"depth": 2, "d_model": 8, **kwargs})
        assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        simulate(**{"depth": 2, "d_model": 8, "n_tokens": 4, **kwargs})
    assert str(err.value) == message
