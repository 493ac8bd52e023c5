"""Variance propagation in random pre-LN residual stacks with Bernoulli-masked weights.

**Status: our reconstruction of the paper's claim (paper-spec §4.2), not the paper's theorem.** The paper
(arXiv 2603.15389) states that smaller mask density slows variance growth with depth, assuming the mask is
independent of the weights; no formula was available, so the model and the closed forms below are ours.

Model (per token, hidden size d, blocks l = 0..L-1, row ``layer = l + 1`` describes block l's output):

    x_{l+1} = x_l + F_l(z_l),   z_l = g_l * x_l / rms(x_l),   rms(x) = sqrt(mean_i x_i^2)   (RMSNorm, no gain)
    g_l = 1 (plain pre-LN) or 1/sqrt(l+1) (LayerNorm Scaling, Sun et al. 2025, spec §4.1)
    F_l(z) = A z                      ("linear")
    F_l(z) = A2 act(A1 z)             ("mlp", act = relu | gelu, d_ff hidden units)
    A = s * (M ⊙ W),  W_ij ~ N(0, sigma^2),  M_ij ~ Bernoulli(rho) independent of W (the paper's assumption),
    s = 1, or s = 1/sqrt(rho) for the density-compensated control.
    x_0 ~ N(0, sigma0^2) iid.

Derivation. Let k = rho (k = 1 with compensation) be the variance factor of one masked matrix:
E[A_ij] = 0, E[A_ij^2] = k sigma^2. Block l's weights are independent of x_l (they act only on later
layers), so E[<x_l, F_l>] = 0 and the per-token variances add exactly in expectation:

    E var(x_{l+1}) = E var(x_l) + c_l,   c_l = E var_i(F_l(z_l)).

Given z (and A1 for the MLP), the rows of the last matrix are iid with zero mean, so F's coordinates are iid
with zero mean and the unbiased per-token variance (the trainer's statistic, spec §1.1) has expectation
E[F_i^2]. With ||z||^2 = g_l^2 d:

    linear:     c_l = k sigma^2 d g_l^2                                   (∝ rho)
    mlp, relu:  h = A1 z has E[h_k^2] = k sigma1^2 d g_l^2 and E[relu(h)^2] = E[h^2]/2 (any symmetric h), so
                c_l = k^2 sigma1^2 sigma2^2 d d_ff g_l^2 / 2             (∝ rho^2: two masked matrices)
    mlp, gelu:  c_l = k sigma2^2 d_ff E[gelu(h)^2], h ~ N(0, k sigma1^2 d g_l^2) (CLT over the d inputs)

    =>  sigma^2_L = sigma0^2 + sum_{l<L} c_l        (additive regime; slope ∝ rho or rho^2, log-growth with LNS)

c_l does not depend on sigma^2_l (the norm fixes the sublayer's input scale), so pre-LN stacks sit exactly in
spec §4.2's additive regime; its multiplicative regime would need sublayers fed the un-normalised stream.

The 1/sqrt(rho) compensation sets k = 1, so every density reproduces the dense curve: the effect is the mask's
variance reduction, nothing else.

Jacobian. d z/d x = (g_l / r) P with r = rms(x_l), P = I - x̂ x̂^T, so J_l - I = J_F P g_l / r. Over block l's
weights (independent of x_l):

    linear:     E||J_l - I||_F^2 = g_l^2 k sigma^2 d (d-1) / r^2
    mlp, relu:  E||J_l - I||_F^2 = g_l^2 k^2 sigma1^2 sigma2^2 d d_ff (d-1) / (2 r^2)
    (gelu: E[gelu'(h)^2] k sigma1^2 d - E[gelu'(h)^2 h^2] / (g_l^2 d) replaces k sigma1^2 (d-1)/2)

and we predict ||J_l - I||_F / d ≈ sqrt(E||J_l - I||_F^2) / d with r^2 ≈ sigma^2_l. Equivalently
||J_l - I||_F^2 / (d-1) ≈ c_l / sigma^2_l (linear, relu): the block's distance from identity is its injected
variance relative to the stream it is added to. The LN derivative (1/r) does grow as rho falls, as spec §4.2
says, but J_F shrinks by sqrt(k) per masked matrix. Writing c_l = rho^p c (p = 1 linear, 2 relu MLP) and
sigma^2_l = sigma0^2 + l rho^p c, c_l / sigma^2_l = 1 / (sigma0^2 / (rho^p c) + l), which *increases* with
rho. So in this model sparsity makes deep blocks *closer* to identity at random init (rho-independent once
l rho^p c >> sigma0^2): the last clause of spec §4.2 ("Jacobians further from I") does not follow from the
mask-variance mechanism alone.

Statistic: ``variance`` is the trainer's per-token unbiased variance across d, averaged over tokens (spec §1.1),
taken on the residual stream at every layer (the trainer's last-layer entry is the final norm's output instead).

Simulation choices: densities share the same W, x_0 and uniform draws U with masks M = (U < rho) nested
(common random numbers) — each density's mask is still independent of W, and comparisons across densities
are much less noisy. Jacobians are those of the residual branch only (J - I directly, no cancellation against
the identity): torch.func derivatives of the norm and the activation, composed with the weights by the chain
rule (checked against jacrev of the whole branch in the tests).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch.func import grad, jacrev, vmap

__all__ = ["simulate", "predicted_variance", "predicted_jacobian_dist", "summarize", "weight_stds"]

Sublayer = Literal["linear", "mlp"]
Act = Literal["relu", "gelu"]

# Tiny eps keeps ||RMSNorm(x)||^2 = d to ~1e-8 relative, which the closed forms assume.
_EPS = 1e-10
_ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": torch.relu, "gelu": torch.nn.functional.gelu}


def _check(densities: Sequence[float], depth: int, d_model: int, d_ff: int | None, sublayer: str, act: str,
           sigma_w: float | None, sigma0: float, n_seeds: int = 1, n_tokens: int = 2) -> None:
    if len(densities) == 0:
        raise ValueError("density: need at least one value")
    for r in densities:
        if isinstance(r, bool) or not (isinstance(r, numbers.Real) and 0.0 < float(r) <= 1.0):
            raise ValueError(f"density must lie in (0, 1], got {r!r}")
    for name, val, lo in (("depth", depth, 1), ("d_model", d_model, 2), ("n_seeds", n_seeds, 1),
                          ("n_tokens", n_tokens, 1)):
        if not isinstance(val, int) or val < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {val!r}")
    if d_ff is not None and (not isinstance(d_ff, int) or d_ff < 1):
        raise ValueError(f"d_ff must be a positive int, got {d_ff!r}")
    if sublayer not in ("linear", "mlp"):
        raise ValueError(f"sublayer must be 'linear' or 'mlp', got {sublayer!r}")
    if act not in _ACTS:
        raise ValueError(f"act must be one of {sorted(_ACTS)}, got {act!r}")
    if sigma_w is not None and not sigma_w > 0:
        raise ValueError(f"sigma_w must be > 0, got {sigma_w!r}")
    if not sigma0 > 0:
        raise ValueError(f"sigma0 must be > 0, got {sigma0!r}")


def weight_stds(d_model: int, d_ff: int, sublayer: Sublayer, sigma_w: float | None) -> list[float]:
    """Std of each weight matrix. Default (sigma_w=None): 1/sqrt(fan_in) per matrix, so a dense sublayer injects
    O(1) variance per block (1 for linear, 1/2 for the relu MLP) against sigma0^2 = 1 — the growth is visible
    over 64 blocks. (The trainer's 0.02 init at d=256, d_ff=1024 gives c ≈ 0.10 (linear) / 0.021 (relu MLP)
    per dense block: same shape, flatter.)
    A float sigma_w is used for every matrix."""
    fan_ins = [d_model] if sublayer == "linear" else [d_model, d_ff]
    return [sigma_w if sigma_w is not None else 1.0 / math.sqrt(f) for f in fan_ins]


@functools.lru_cache(maxsize=4)
def _hermegauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.hermite_e.hermegauss(n)


def _gauss(f: Callable[[torch.Tensor], torch.Tensor], var: float, n: int = 80) -> float:
    """E[f(h)], h ~ N(0, var), by Gauss-Hermite quadrature (probabilists' nodes)."""
    t, w = _hermegauss(n)
    h = torch.as_tensor(t * math.sqrt(var), dtype=torch.float64)
    return float((f(h).numpy() * w).sum() / math.sqrt(2 * math.pi))


def _block_constants(rho: float, l: int, d: int, d_ff: int, sublayer: Sublayer, act: Act, stds: list[float],
                     lns: bool, compensate: bool) -> tuple[float, float]:
    """(c_l, E||J_F P||_F^2 * g_l^2) for block l (0-based); see module docstring."""
    k = 1.0 if compensate else rho
    g2 = 1.0 / (l + 1) if lns else 1.0
    if sublayer == "linear":
        s2 = stds[0] ** 2
        return k * s2 * d * g2, g2 * k * s2 * d * (d - 1)
    s1, s2 = stds[0] ** 2, stds[1] ** 2
    vh = k * s1 * d * g2  # variance of each pre-activation
    if act == "relu":
        return k * s2 * d_ff * vh / 2, g2 * k * s2 * d * d_ff * k * s1 * (d - 1) / 2
    gelu = torch.nn.functional.gelu
    dgelu = lambda h: torch.special.ndtr(h) + h * torch.exp(-h * h / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    c = k * s2 * d_ff * _gauss(lambda h: gelu(h) ** 2, vh)
    row = _gauss(lambda h: dgelu(h) ** 2, vh) * k * s1 * d - _gauss(lambda h: (dgelu(h) * h) ** 2, vh) / (g2 * d)
    return c, g2 * k * s2 * d * d_ff * row


def _predict(density: float, depth: int, d_model: int, d_ff: int | None, sublayer: Sublayer, act: Act,
             sigma_w: float | None, sigma0: float, lns: bool, compensate: bool) -> tuple[np.ndarray, np.ndarray]:
    _check([density], depth, d_model, d_ff, sublayer, act, sigma_w, sigma0)
    dff = d_ff if d_ff is not None else 4 * d_model
    stds = weight_stds(d_model, dff, sublayer, sigma_w)
    var, jac = np.empty(depth), np.empty(depth)
    v = sigma0 ** 2
    for l in range(depth):
        c, j2 = _block_constants(density, l, d_model, dff, sublayer, act, stds, lns, compensate)
        jac[l] = math.sqrt(j2 / v) / d_model  # r^2 ≈ sigma^2_l, the variance entering block l
        v += c
        var[l] = v
    return var, jac


def predicted_variance(density: float, depth: int, *, d_model: int = 256, d_ff: int | None = None,
                       sublayer: Sublayer = "mlp", act: Act = "relu", sigma_w: float | None = None,
                       sigma0: float = 1.0, lns: bool = False, compensate: bool = False) -> np.ndarray:
    """Closed-form E var(x_l) for layers l = 1..depth: sigma0^2 + sum_{j<l} c_j (module docstring).
    Exact in expectation for linear and relu; gelu uses a Gaussian pre-activation (CLT)."""
    return _predict(density, depth, d_model, d_ff, sublayer, act, sigma_w, sigma0, lns, compensate)[0]


def predicted_jacobian_dist(density: float, depth: int, *, d_model: int = 256, d_ff: int | None = None,
                            sublayer: Sublayer = "mlp", act: Act = "relu", sigma_w: float | None = None,
                            sigma0: float = 1.0, lns: bool = False, compensate: bool = False) -> np.ndarray:
    """Predicted ||J_l - I||_F / d for blocks producing layers 1..depth: sqrt(E||J_F P||^2 g^2 / sigma^2_{l-1}) / d
    (∝ sqrt(k) per masked matrix / sigma_{l-1}; see module docstring)."""
    return _predict(density, depth, d_model, d_ff, sublayer, act, sigma_w, sigma0, lns, compensate)[1]


def _branch(x: torch.Tensor, ws: Sequence[torch.Tensor], gain: float, act: Callable) -> torch.Tensor:
    """F(g * RMSNorm(x)); works for one token (d,) with ws (out, in) and for batches (R, n, d) with ws (R, out, in)."""
    z = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + _EPS) * gain
    h = z @ ws[0].transpose(-1, -2)
    if len(ws) == 2:
        h = act(h) @ ws[1].transpose(-1, -2)
    return h


def _branch_jacobian(x: torch.Tensor, ws: Sequence[torch.Tensor], gain: float, act: Act) -> torch.Tensor:
    """d F(g RMSNorm(x)) / dx = J_l - I for tokens x (R, n, d), weights (R, out, in) -> (R, n, d, d).

    The nonlinear pieces (the norm's d x d Jacobian, act') come from torch.func; they are composed with the
    weight matrices by the chain rule, which costs half of jacrev on the whole branch (jacrev pushes an identity
    through the last matrix). tests/test_theory.py checks it against jacrev of the whole branch."""
    norm = lambda xt: xt * torch.rsqrt(xt.pow(2).mean() + _EPS) * gain  # noqa: E731
    jn = vmap(vmap(jacrev(norm)))(x)  # (R, n, d, d)
    pre = _branch(x, ws[:1], gain, _ACTS[act])  # (R, n, out) first matrix applied
    jf = ws[0].unsqueeze(1)  # (R, 1, out, d)
    if len(ws) == 2:
        dact = vmap(grad(_ACTS[act]))(pre.reshape(-1)).reshape(pre.shape)  # act'(h) per unit
        jf = (ws[1].unsqueeze(1) * dact.unsqueeze(-2)) @ jf  # A2 diag(act') A1
    return jf @ jn


def simulate(densities: Sequence[float] | float = (1.0, 0.5, 0.25, 0.125), depth: int = 64, d_model: int = 256,
             n_tokens: int = 512, sublayer: Sublayer = "mlp", sigma_w: float | None = None, n_seeds: int = 3,
             seed: int = 0, lns: bool = False, compensate: bool = False, *, d_ff: int | None = None,
             act: Act = "relu", sigma0: float = 1.0, n_jac_tokens: int = 2, n_grad_tokens: int = 32,
             dtype: torch.dtype = torch.float32) -> list[dict]:
    """Simulate random masked pre-LN stacks; one row per (density, layer), layer = 1..depth.

    Row keys: density, layer; variance (mean over tokens of the unbiased per-token variance across d of x_layer,
    the trainer's statistic, mean over seeds), variance_std (over seeds), variance_pred; jacobian_dist
    (||J - I||_F / d of the block producing x_layer, mean over n_jac_tokens tokens and seeds), jacobian_dist_pred;
    ln_grad_scale (1/rms of the block's input: the LN derivative's scale); grad_norm (Frobenius norm of
    d loss / d(effective unmasked weights) of the block, loss = sum_t <u, RMSNorm(x_L,t)> for a fixed random unit
    u over n_grad_tokens tokens) and grad_ratio (grad_norm / grad_norm of layer 1, per seed, then mean).
    sigma_w=None: 1/sqrt(fan_in) per matrix (see weight_stds). d_ff defaults to 4 * d_model.
    n_jac_tokens / n_grad_tokens <= 0 skip those quantities (NaN). Cost is dominated by the (R, n_tokens, d) x
    (d, d_ff) matmuls: the defaults took ~18 s of one core (linear sublayer ~4 s) on a busy 2-core box;
    n_tokens barely matters for accuracy (the noise comes from the weights), and n_tokens=128 cuts the forward 4x.
    """
    if isinstance(densities, numbers.Real):
        densities = [densities]
    _check(list(densities), depth, d_model, d_ff, sublayer, act, sigma_w, sigma0, n_seeds, n_tokens)
    densities = [float(r) for r in densities]
    dff = d_ff if d_ff is not None else 4 * d_model
    stds = weight_stds(d_model, dff, sublayer, sigma_w)
    shapes = [(d_model, d_model)] if sublayer == "linear" else [(dff, d_model), (d_model, dff)]
    actf = _ACTS[act]
    R, d = len(densities), d_model
    rho = torch.tensor(densities, dtype=dtype)[:, None, None]
    scale = rho.rsqrt() if compensate else torch.ones_like(rho)
    nj, ng = min(n_jac_tokens, n_tokens), min(n_grad_tokens, n_tokens)

    var = np.zeros((n_seeds, R, depth))
    jac = np.full((n_seeds, R, depth), np.nan)  # stays NaN when n_jac_tokens == 0 (skipped)
    lng = np.zeros((n_seeds, R, depth))
    gn = np.zeros((n_seeds, R, depth))
    for s in range(n_seeds):
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + s)
        x0 = torch.randn(n_tokens, d, generator=gen, dtype=dtype) * sigma0
        u = torch.randn(d, generator=gen, dtype=dtype)
        u = u / u.norm()
        x = x0.expand(R, n_tokens, d).clone()
        xg = x[:, :ng].clone()  # grad pass re-runs these tokens with autograd (rows are independent)
        for l in range(depth):
            gain = 1.0 / math.sqrt(l + 1) if lns else 1.0
            ws = []
            for (o, i), std in zip(shapes, stds):
                w = torch.randn(o, i, generator=gen, dtype=dtype) * std
                m = torch.rand(o, i, generator=gen, dtype=dtype) < rho  # nested masks across densities
                ws.append(torch.where(m, w * scale, 0.0))
            if nj > 0:
                J = _branch_jacobian(x[:, :nj], ws, gain, act)  # (R, nj, d, d) = J - I exactly
                jac[s, :, l] = (J.flatten(-2).norm(dim=-1) / d).mean(-1).double().numpy()
            lng[s, :, l] = torch.rsqrt(x.pow(2).mean(-1) + _EPS).mean(-1).double().numpy()
            with torch.no_grad():
                x = x + _branch(x, ws, gain, actf)
            var[s, :, l] = x.var(-1, unbiased=True).mean(-1).double().numpy()
            if ng > 0:
                for w in ws:
                    w.requires_grad_()
                    # Reduce each weight gradient to its norm as soon as it exists and drop it, so only the
                    # graph (not a second copy of every weight) is held. Only unmasked entries are parameters;
                    # W is Gaussian, so w != 0 is exactly the mask.
                    def _hook(p: torch.Tensor, s: int = s, l: int = l) -> None:
                        gn[s, :, l] += (p.grad * (p != 0)).pow(2).sum((-1, -2)).double().numpy()
                        p.grad = None
                    w.register_post_accumulate_grad_hook(_hook)
                xg = xg + _branch(xg, ws, gain, actf)
            del ws
        if ng > 0:
            out = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + _EPS)
            (out * u).sum().backward()
            del out, xg
    gn = np.sqrt(gn) if ng > 0 else np.full_like(gn, np.nan)
    ratio = gn / np.where(gn[:, :, :1] > 0, gn[:, :, :1], np.nan)

    rows: list[dict] = []
    for ri, r in enumerate(densities):
        vp, jp = _predict(r, depth, d, d_ff, sublayer, act, sigma_w, sigma0, lns, compensate)
        for l in range(depth):
            rows.append({
                "density": r, "layer": l + 1,
                "variance": float(var[:, ri, l].mean()),
                "variance_std": float(var[:, ri, l].std(ddof=1)) if n_seeds > 1 else 0.0,
                "variance_pred": float(vp[l]),
                "jacobian_dist": float(jac[:, ri, l].mean()), "jacobian_dist_pred": float(jp[l]),
                "ln_grad_scale": float(lng[:, ri, l].mean()),
                "grad_norm": float(gn[:, ri, l].mean()), "grad_ratio": float(ratio[:, ri, l].mean()),
            })
    return rows


def summarize(rows: Sequence[dict]) -> dict[float, dict[str, float]]:
    """Per density: final variance (and prediction), fitted linear growth slope of variance vs layer and
    log-log growth exponent, mean jacobian_dist / ln_grad_scale over the last quarter of layers, the largest
    relative |variance - prediction|, and the final layer's grad_ratio."""
    out: dict[float, dict[str, float]] = {}
    for r in sorted({row["density"] for row in rows}, reverse=True):
        rs = sorted((row for row in rows if row["density"] == r), key=lambda row: row["layer"])
        L = np.array([row["layer"] for row in rs], dtype=float)
        v = np.array([row["variance"] for row in rs])
        vp = np.array([row["variance_pred"] for row in rs])
        deep = rs[len(rs) - max(1, len(rs) // 4):]
        out[r] = {
            "final_variance": float(v[-1]), "final_variance_pred": float(vp[-1]),
            "growth_slope": float(np.polyfit(L, v, 1)[0]) if len(L) > 1 else float("nan"),
            "growth_exponent": float(np.polyfit(np.log(L), np.log(v), 1)[0]) if len(L) > 1 else float("nan"),
            "deep_jacobian_dist": float(np.mean([row["jacobian_dist"] for row in deep])),
            "deep_jacobian_dist_pred": float(np.mean([row["jacobian_dist_pred"] for row in deep])),
            "deep_ln_grad_scale": float(np.mean([row["ln_grad_scale"] for row in deep])),
            "max_rel_err_variance": float(np.max(np.abs(v - vp) / vp)),
            "final_grad_ratio": float(rs[-1]["grad_ratio"]),
        }
    return out
