"""The paper's qualitative claims, checked against our results; and paper-vs-ours tables.

Each claim is a :class:`Check` with the numbers it compared and a status: ``pass``, ``fail``,
``inconclusive`` (the comparison cannot decide: gaps within noise, or a degenerate usefulness score) or
``missing`` (a needed result or metric is absent; never an exception). The same checks run on the paper's
own numbers (:func:`paper_checks`), which all pass: that is what "reproduced" means here.

Rules (written into each check's ``rule``):
- "grows / falls with X": Spearman rank correlation rho between X and the metric, rho >= +0.8 (grows) or
  rho <= -0.8 (falls); with four points that allows at most one adjacent swap. Ties count against the claim
  (a constant metric has no rank correlation and fails).
- "A lowers / raises M versus B": M(A) < M(B) / M(A) > M(B), strictly, for every pair named (a tie fails:
  the paper's differences are all strict). Mean zero-shot accuracy carries a standard error (each task's
  binomial error, :func:`acc_standard_error`): a gap under NOISE_Z = 2 standard errors of the difference
  decides nothing, so a claim is inconclusive when it has such a gap and no clearly contrary one.
- last-layer variance = the raw residual output variance of the last block, mean over tokens of the
  variance across the hidden dimension (paper-spec 1.1; our ``layer_var[-1]``), at the end of training
  (``variance_end``) and its maximum over training (``variance_peak``). The paper's figures show the
  post-final-norm statistic of the official code; both rise and fall together in our runs.
- several seeds of one setting (the gpu depth sweep): every rule applies to the seed means; ``ours`` shows
  each mean with its range across seeds, ``[min–max, n=seeds]``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..spec import experiments as ex
from ..spec import reported as paper

RHO = 0.8
STATUSES = ("pass", "fail", "inconclusive", "missing")
PPL_TOLERANCE = 0.01  # "equal or better PPL" allows 1 % (GQA removes K/V parameters)
ACC_METRIC = "mean_acc"  # unweighted mean zero-shot accuracy over tasks (paper-spec 3.7)
# A gap smaller than NOISE_Z standard errors of the difference decides nothing: the pair is "within noise"
# and a claim whose pairs are all passing or within noise is inconclusive (about 95 % two-sided).
NOISE_Z = 2.0


@dataclass
class Check:
    id: str
    experiment: str
    claim: str
    rule: str
    status: str = "missing"  # pass | fail | inconclusive | missing
    ours: str = ""
    paper: str = ""
    detail: str = ""
    values: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------ metric extraction


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def last_layer_variance(result: dict) -> tuple[float | None, float | None]:
    """(end, peak) of the last block's raw output variance over training; probes' value as a fallback."""
    series = [r["layer_var"][-1] for r in result.get("metrics") or [] if isinstance(r.get("layer_var"), list)
              and r["layer_var"]]
    series = [v for v in (_num(x) for x in series) if v is not None]
    if series:
        return series[-1], max(series)
    lv = _get(result.get("probes"), "variance", "layer_var")
    v = _num(lv[-1]) if isinstance(lv, list) and lv else None
    return v, v


def inner_layers(values: list[float]) -> list[float]:
    """Layers 1 ... L-2, as the paper's Jacobian figure shows; all layers when L < 5 (nothing would be left)."""
    return list(values[1:-1]) if len(values) >= 5 else list(values)


def metrics_of(result: dict) -> dict[str, Any]:
    """The numbers the claims use, from one load_results entry (None where absent)."""
    end, peak = last_layer_variance(result)
    ppl = _num(_get(result.get("eval"), "perplexity", "ppl"))
    if ppl is None:
        ppl = _num(_get(result.get("summary"), "val_ppl"))
    acc = _num(_get(result.get("eval"), ACC_METRIC))
    jac = _get(result.get("probes"), "jacobian", "jacobian_norm")
    jac = [_num(x) for x in jac] if isinstance(jac, list) else None
    return {"variance_end": end, "variance_peak": peak, "ppl": ppl,
            "usefulness": _num(_get(result.get("probes"), "usefulness", "score")),
            "useful_layers": _useful_layers(result),
            "causal": _num(_get(result.get("probes"), "causal", "score")),
            "permutation": _num(_get(result.get("probes"), "permutation", "score")),
            "jacobian": inner_layers(jac) if jac and None not in jac else None,
            "acc": None if acc is None else 100 * acc if acc <= 1 else acc, "acc_se": acc_standard_error(result)}


def acc_standard_error(result: dict) -> float | None:
    """Standard error (percentage points) of the unweighted task mean of zero-shot accuracy: each task's
    binomial error sqrt(p (1 - p) / n), combined as for a mean of independent tasks. None without per-task
    counts (older results, the paper's rows)."""
    tasks = _get(result.get("eval"), "tasks")
    if not isinstance(tasks, dict) or not tasks:
        return None
    var = 0.0
    for t in tasks.values():
        p, n = _num(_get(t, "acc")), _num(_get(t, "n"))
        if p is None or not n or n <= 0:
            return None
        var += p * (1 - p) / n
    return 100 * math.sqrt(var) / len(tasks)


def _useful_layers(result: dict) -> int | None:
    """How many layers the usefulness probe found useful (None without probes)."""
    useful = _get(result.get("probes"), "usefulness", "useful")
    return sum(bool(u) for u in useful) if isinstance(useful, list) else None


# Scalar metrics whose range across seeds is reported (``spread``) where a setting has several seeds.
SPREAD_METRICS = ("variance_end", "variance_peak", "ppl", "usefulness", "causal", "permutation", "acc",
                  "jacobian_mean")


def _jacobian_mean(curve: list[float] | None) -> float | None:
    return sum(curve) / len(curve) if curve else None


def mean_over_seeds(runs: list[dict]) -> tuple[dict[str, Any], dict[str, tuple]]:
    """Metrics (``metrics_of``) of several seeds of one setting -> (means, spread).

    Each metric is the mean over the seeds that have it (None when none has); the per-layer Jacobian is the
    layer-wise mean (None when the curves differ in length: then they are not seeds of one depth, and the
    claims report the Jacobian missing rather than average unlike layers). ``spread[m] = (min, max, n)``
    over those seeds for every metric in SPREAD_METRICS (``jacobian_mean`` from each seed's own mean curve),
    ``(None, None, 0)`` when no seed has it."""
    means: dict[str, Any] = {}
    for m in dict.fromkeys(k for r in runs for k in r):
        vals = [r[m] for r in runs if r.get(m) is not None]
        if m == "jacobian":
            same = vals and len({len(v) for v in vals}) == 1
            means[m] = [sum(col) / len(col) for col in zip(*vals)] if same else None
        else:
            means[m] = sum(vals) / len(vals) if vals else None
    spread = {}
    for m in SPREAD_METRICS:
        vals = [_jacobian_mean(r.get("jacobian")) if m == "jacobian_mean" else r.get(m) for r in runs]
        vals = [v for v in vals if v is not None]
        spread[m] = (min(vals), max(vals), len(vals)) if vals else (None, None, 0)
    return means, spread


def our_rows(profile: str, experiment: str, results: dict[str, dict] | None) -> list[dict]:
    """One row per paper setting (``paper_key``), in the experiment's order (missing results give None
    metrics): name (the setting's first variant), label, key (paper value), x (ours), present, seeds (how
    many of its variants have results) and the metrics of :func:`metrics_of`.

    A setting with several variants (the depth sweep's seeds) is aggregated by :func:`mean_over_seeds`: the
    metrics are seed means, so every claim and table uses the mean, and ``spread`` holds each metric's
    (min, max, n). A single-variant setting has no ``spread`` and the metrics of its one run."""
    metas = ex.variant_meta(profile, experiment)
    results = results or {}
    settings: dict[Any, list[str]] = {}
    for name, meta in metas.items():
        settings.setdefault(meta["paper_key"], []).append(name)
    rows = []
    for key, names in settings.items():
        meta = metas[names[0]]
        runs = [metrics_of(results[n]) for n in names if n in results]
        row = {"name": names[0], "label": meta["label"], "key": key, "x": meta["value"], "kept": meta.get("kept"),
               "present": bool(runs), "seeds": len(runs)}
        if len(names) == 1:
            row.update(runs[0] if runs else {})
        else:
            means, row["spread"] = mean_over_seeds(runs)
            row.update(means)
        rows.append(row)
    return rows


def setting_row(profile: str, experiment: str, results: dict[str, dict] | None, key: Any) -> dict | None:
    """Our row (:func:`our_rows`: seed means where several seeds ran) of the paper setting ``key``; None
    when no variant of it has results."""
    return next((r for r in our_rows(profile, experiment, results) if r["key"] == key and r["present"]), None)


def _paper_label(experiment: str, key: Any) -> str:
    prefix = {"depth": "L=", "weight_decay": "λ=", "seqlen": "T=", "gqa": "G="}.get(experiment, "")
    return f"{prefix}{key:g}" if isinstance(key, (int, float)) else f"{prefix}{key}"


def paper_rows(experiment: str) -> list[dict]:
    """The paper's rows in the same shape as :func:`our_rows`."""
    jac = paper.PAPER[experiment].get("jacobian", {})
    rows = []
    for key, r in paper.rows(experiment).items():
        rows.append({"name": str(key), "label": r.get("label") or _paper_label(experiment, key), "key": key,
                     "x": key if isinstance(key, (int, float)) else key, "kept": r.get("kept"), "present": True,
                     "variance_end": r.get("variance_end"), "variance_peak": r.get("variance_peak"),
                     "ppl": r.get("ppl"), "usefulness": r.get("usefulness"), "causal": r.get("causal"),
                     "permutation": r.get("permutation"), "jacobian": jac.get(key), "acc": r.get("acc")})
    return rows


# ------------------------------------------------------------------------------------------ statistics


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when undefined (n < 2 or a constant)."""
    if len(xs) != len(ys) or len(xs) < 2:
        return None
    rx, ry = _ranks(list(xs)), _ranks(list(ys))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):  # a per-layer curve: first and last layer
        return f"{v[0]:.3g}→{v[-1]:.3g} ({len(v)} layers)" if v else "[]"
    return str(v)


def _with_spread(r: dict, metric: str) -> str:
    """``_fmt`` of one row's metric, plus its range across seeds where the setting has several."""
    text = _fmt(r.get(metric))
    lo, hi, n = r.get("spread", {}).get(metric, (None, None, 0))
    if not n:
        return text
    return text + (f" [{_fmt(lo)}–{_fmt(hi)}, n={n}]" if n > 1 else " [n=1]")


def _series(rows: list[dict], metric: str) -> str:
    return ", ".join(f"{r['label']}: {_with_spread(r, metric)}" for r in rows)


def _missing(rows: list[dict], metric: str) -> list[str]:
    return [r["name"] for r in rows if r.get(metric) is None]


# ------------------------------------------------------------------------------------------------ checks


def _trend(rows: list[dict], metric: str, sign: int) -> tuple[str, str, dict]:
    """Status, text and values of "metric grows (sign=+1) / falls (-1) with x"."""
    if len(rows) < 2:
        return "missing", "fewer than two variants", {}
    miss = _missing(rows, metric)
    if miss:
        return "missing", f"no {metric} for {', '.join(miss)}", {}
    rho = spearman([float(r["x"]) for r in rows], [float(r[metric]) for r in rows])
    vals = {"rho": rho}
    if rho is None:
        return "fail", f"{metric} does not change", vals
    return ("pass" if sign * rho >= RHO else "fail"), f"Spearman rho = {rho:+.2f}", vals


def _pairs(pairs: list[tuple[dict, dict]], metric: str, better: Callable[[float, float], bool],
           rel: str) -> tuple[str, str, dict]:
    """Status of ``better(M(a), M(b))`` for every (a, b) pair. Where both rows carry a standard error
    (``<metric>_se``), a gap under NOISE_Z standard errors of the difference counts neither way: fail if some
    pair is clearly wrong, pass if every pair is clearly right, otherwise inconclusive."""
    if not pairs:
        return "missing", "no pairs to compare", {}
    miss = sorted({r["name"] for a, b in pairs for r in (a, b) if r.get(metric) is None})
    if miss:
        return "missing", f"no {metric} for {', '.join(miss)}", {}
    parts, ok, noisy = [], True, False
    for a, b in pairs:
        va, vb = float(a[metric]), float(b[metric])
        good = better(va, vb)
        text = f"{a['label']} {_fmt(va)} {rel if good else 'NOT ' + rel} {b['label']} {_fmt(vb)}"
        se_a, se_b = a.get(f"{metric}_se"), b.get(f"{metric}_se")
        if se_a is not None and se_b is not None and abs(va - vb) < NOISE_Z * math.hypot(se_a, se_b):
            noisy = True
            text += f" (within noise: gap {abs(va - vb):.2g} < {NOISE_Z:g} x {math.hypot(se_a, se_b):.2g} s.e.)"
        else:
            ok &= good
        parts.append(text)
    status = "fail" if not ok else "inconclusive" if noisy else "pass"
    return status, "; ".join(parts), {}


def _by_key(rows: list[dict]) -> dict[Any, dict]:
    return {r["key"]: r for r in rows}


def _recipe_parents(rows: list[dict]) -> list[tuple[dict, dict]]:
    """(step, parent) for every step after the baseline: the parent is the last kept step before it."""
    out, parent = [], None
    for r in rows:
        if parent is not None:
            out.append((r, parent))
        if r.get("kept"):
            parent = r
    return out


def _jacobian_index(rows: list[dict]) -> tuple[str, str, dict]:
    miss = _missing(rows, "jacobian")
    if miss:
        return "missing", f"no Jacobian for {', '.join(miss)}", {}
    rhos = {}
    for r in rows:
        j = r["jacobian"]
        rhos[r["label"]] = spearman(list(range(len(j))), j) if len(j) >= 3 else None
    usable = {k: v for k, v in rhos.items() if v is not None}
    if not usable:
        return "missing", "too few layers for a trend", {}
    ok = all(v < 0 for v in usable.values())
    text = "rho(layer, ||J-I||): " + ", ".join(f"{k} {v:+.2f}" for k, v in usable.items())
    return ("pass" if ok else "fail"), text, {}


def _mean_jacobian(rows: list[dict]) -> list[dict]:
    return [{**r, "jacobian_mean": _jacobian_mean(r.get("jacobian"))} for r in rows]


CLAIMS: list[tuple[str, str, str, str]] = [
    ("depth.variance", "depth", "last-layer variance grows with depth", "rho(L, variance_end) >= +0.8"),
    ("depth.usefulness", "depth", "usefulness falls with depth", "rho(L, usefulness) <= -0.8"),
    ("depth.permutation", "depth", "permutation score falls with depth", "rho(L, permutation) <= -0.8"),
    ("depth.causal", "depth", "causal score falls with depth", "rho(L, causal) <= -0.8"),
    ("depth.jacobian_index", "depth", "||J - I|| falls with layer index", "rho(layer, ||J-I||) < 0 at every depth"),
    ("depth.jacobian_depth", "depth", "||J - I|| is lower for deeper models", "rho(L, mean ||J-I||) <= -0.8"),
    ("weight_decay.variance", "weight_decay", "λ=0.1 lowers last-layer variance versus λ=0",
     "variance_end(0.1) < variance_end(0)"),
    ("weight_decay.ppl", "weight_decay", "λ=0.1 gives the lowest perplexity of the sweep",
     "ppl(0.1) < every other λ"),
    ("weight_decay.usefulness", "weight_decay", "λ=0.1 gives the highest usefulness of the sweep",
     "usefulness(0.1) > every other λ"),
    ("weight_decay.collapse", "weight_decay", "λ=3 is worse than λ=0.1", "ppl(3) > ppl(0.1)"),
    ("seqlen.variance", "seqlen", "longer context lowers last-layer variance", "rho(T, variance_end) <= -0.8"),
    ("seqlen.usefulness", "seqlen", "usefulness rises with context up to T=4096",
     "rho(T, usefulness) >= +0.8 for T <= 4096"),
    ("gqa.variance", "gqa", "G > 1 lowers last-layer variance", "variance_end(G) < variance_end(1) for every G > 1"),
    ("gqa.usefulness", "gqa", "G > 1 raises usefulness", "usefulness(G) > usefulness(1) for every G > 1"),
    ("gqa.ppl", "gqa", "G > 1 keeps perplexity (within 1 %)", "ppl(G) <= 1.01 ppl(1) for every G > 1"),
    ("moe.variance", "moe", "MoE lowers last-layer variance versus dense",
     "variance_end(MoE) < variance_end(dense), both sizes"),
    ("moe.ppl", "moe", "MoE lowers perplexity versus dense (equal active parameters)",
     "ppl(MoE) < ppl(dense), both sizes"),
    ("moe.usefulness", "moe", "MoE raises usefulness", "usefulness(MoE) > usefulness(dense), both sizes"),
    ("recipe.kept", "recipe", "each kept recipe step raises average accuracy", "acc(step) > acc(last kept step)"),
    ("recipe.rejected", "recipe", "each rejected step does not", "acc(step) < acc(last kept step)"),
    ("recipe.gain", "recipe", "the full recipe beats the L=32 baseline", "acc(+MoE) > acc(baseline)"),
    ("recipe.usefulness", "recipe", "the full recipe raises usefulness", "usefulness(+MoE) > usefulness(baseline)"),
]


def _evaluate(cid: str, rows: list[dict]) -> tuple[str, str, dict, str]:
    """(status, detail, values, metric shown) of claim ``cid`` on one experiment's rows."""
    lt = lambda a, b: a < b  # noqa: E731
    gt = lambda a, b: a > b  # noqa: E731
    k = _by_key(rows)
    if cid == "depth.variance":
        return (*_trend(rows, "variance_end", +1), "variance_end")
    if cid in ("depth.usefulness", "depth.permutation", "depth.causal"):
        m = cid.split(".")[1]
        return (*_trend(rows, m, -1), m)
    if cid == "depth.jacobian_index":
        return (*_jacobian_index(rows), "jacobian")
    if cid == "depth.jacobian_depth":
        return (*_trend(_mean_jacobian(rows), "jacobian_mean", -1), "jacobian_mean")
    if cid.startswith("weight_decay."):
        if 0.1 not in k:
            return "missing", "no λ=0.1 variant", {}, "ppl"
        best = k[0.1]
        others = [r for r in rows if r is not best]
        if cid == "weight_decay.variance":
            return (*_pairs([(best, k[0.0])] if 0.0 in k else [], "variance_end", lt, "<"), "variance_end")
        if cid == "weight_decay.ppl":
            return (*_pairs([(best, r) for r in others], "ppl", lt, "<"), "ppl")
        if cid == "weight_decay.usefulness":
            return (*_pairs([(best, r) for r in others], "usefulness", gt, ">"), "usefulness")
        return (*_pairs([(k[3.0], best)] if 3.0 in k else [], "ppl", gt, ">"), "ppl")
    if cid == "seqlen.variance":
        return (*_trend(rows, "variance_end", -1), "variance_end")
    if cid == "seqlen.usefulness":
        return (*_trend([r for r in rows if float(r["key"]) <= 4096], "usefulness", +1), "usefulness")
    if cid.startswith("gqa."):
        g1 = k.get(1)
        pairs = [(r, g1) for r in rows if r is not g1] if g1 else []
        if cid == "gqa.variance":
            return (*_pairs(pairs, "variance_end", lt, "<"), "variance_end")
        if cid == "gqa.usefulness":
            return (*_pairs(pairs, "usefulness", gt, ">"), "usefulness")
        return (*_pairs(pairs, "ppl", lambda a, b: a <= b * (1 + PPL_TOLERANCE), "<= 1.01 x"), "ppl")
    if cid.startswith("moe."):
        pairs = [(k[f"moe-{s}"], k[f"dense-{s}"]) for s in ("small", "large") if f"moe-{s}" in k and f"dense-{s}" in k]
        m = cid.split(".")[1]
        m = "variance_end" if m == "variance" else m
        return (*_pairs(pairs, m, gt if m == "usefulness" else lt, ">" if m == "usefulness" else "<"), m)
    if cid.startswith("recipe."):
        steps = _recipe_parents(rows)
        if cid == "recipe.kept":
            return (*_pairs([(s, p) for s, p in steps if s.get("kept")], "acc", gt, ">"), "acc")
        if cid == "recipe.rejected":
            return (*_pairs([(s, p) for s, p in steps if s.get("kept") is False], "acc", lt, "<"), "acc")
        kept = [r for r in rows if r.get("kept")]
        pair = [(kept[-1], kept[0])] if len(kept) >= 2 else []
        m = "acc" if cid == "recipe.gain" else "usefulness"
        return (*_pairs(pair, m, gt, ">"), m)
    raise KeyError(f"unknown claim {cid!r}")


def run_checks(rows_of: Callable[[str], list[dict]]) -> list[Check]:
    """Evaluate every claim on the rows ``rows_of(experiment)`` gives."""
    out = []
    cache: dict[str, list[dict]] = {}
    for cid, exp, claim, rule in CLAIMS:
        if exp not in cache:
            cache[exp] = rows_of(exp)
        rows = cache[exp]
        try:
            status, detail, values, metric = _evaluate(cid, rows)
        except (KeyError, TypeError, ValueError) as e:  # malformed results: report, never crash
            status, detail, values, metric = "missing", f"{type(e).__name__}: {e}", {}, ""
        shown = _mean_jacobian([r for r in rows if r.get("present")])
        if metric == "usefulness" and status in ("pass", "fail") and _degenerate_usefulness(shown):
            status, detail = "inconclusive", (f"at most one useful layer in every variant, so the score is only "
                                              f"1/L or 0 and its trend says nothing of depth use ({detail})")
        out.append(Check(cid, exp, claim, rule, status, _series(shown, metric) if metric else "", "", detail, values))
    return out


def _degenerate_usefulness(rows: list[dict]) -> bool:
    """True when no variant has more than one useful layer: at small scale replacing a layer by its linear fit
    rarely raises the loss past the threshold, and a score of 1/L then "falls with depth" by arithmetic alone.
    (Seed means may be fractional; the paper's rows carry no count and are never degenerate.)"""
    counts = [r.get("useful_layers") for r in rows]
    return bool(counts) and all(c is not None and c <= 1 for c in counts)


def paper_checks() -> list[Check]:
    """The claims evaluated on the paper's own numbers (all pass)."""
    return run_checks(paper_rows)


def checks(profile: str, results: dict[str, dict[str, dict]] | None = None, root: Any = None) -> list[Check]:
    """The claims on our results at ``profile`` (``results``: {experiment: load_results(...)}, loaded when
    None), each with the paper's numbers beside ours."""
    if results is None:
        from ..pipeline.results import load_results

        results = {e: load_results(profile, e, root=root) for e in ex.EXPERIMENTS}
    out = run_checks(lambda e: our_rows(profile, e, results.get(e)))
    ref = {c.id: c for c in paper_checks()}
    for c in out:
        p = ref[c.id]
        c.paper = p.ours + (f" ({p.detail})" if p.detail.startswith("Spearman") else "")
    return out


# --------------------------------------------------------------------------------------- data frames


def scorecard(profile: str, results: dict[str, dict[str, dict]] | None = None, root: Any = None):
    """The claims scorecard as a pandas DataFrame: id, experiment, claim, rule, status, ours, paper, detail."""
    import pandas as pd

    rows = [{k: v for k, v in asdict(c).items() if k != "values"} for c in checks(profile, results, root)]
    return pd.DataFrame(rows, columns=["id", "experiment", "claim", "rule", "status", "ours", "paper", "detail"])


def counts(df) -> dict[str, int]:
    """{"pass": n, "fail": n, "inconclusive": n, "missing": n} of a scorecard DataFrame."""
    return {s: int((df["status"] == s).sum()) for s in STATUSES}


TABLE_METRICS = {
    "depth": ["usefulness", "causal", "permutation", "variance_peak", "variance_end", "jacobian_mean", "ppl"],
    "weight_decay": ["ppl", "usefulness", "variance_peak", "variance_end"],
    "seqlen": ["ppl", "usefulness", "variance_peak", "variance_end"],
    "gqa": ["ppl", "usefulness", "variance_peak", "variance_end"],
    "moe": ["ppl", "usefulness", "variance_peak", "variance_end"],
    "recipe": ["acc", "usefulness", "ppl"],
}


def compare(profile: str, experiment: str, results: dict[str, dict] | None = None, root: Any = None):
    """Paper-vs-ours table of one experiment: a row per paper setting, ``paper_<metric>`` beside ``ours_<metric>``.

    Where the profile runs several seeds of a setting (:func:`our_rows`), ``ours_<metric>`` is the seed mean,
    followed by ``ours_<metric>_min`` / ``ours_<metric>_max``, and a ``seeds`` column counts the seeds with
    results; ``variant`` names the seed-0 run. Paper values marked approximate in :mod:`sparsedepth.paper`
    were read off figures. Absolute values are not comparable across scales (PPL depends on tokenizer and
    data, variance on width); the trends are.
    """
    import pandas as pd

    if results is None:
        from ..pipeline.results import load_results

        results = load_results(profile, experiment, root=root)
    ours = _mean_jacobian(our_rows(profile, experiment, results))
    theirs = {r["key"]: r for r in _mean_jacobian(paper_rows(experiment))}
    metas = ex.variant_meta(profile, experiment)
    seeded = any("spread" in r for r in ours)  # decided by the definition, so columns do not depend on progress
    table = []
    for r in ours:
        p = theirs.get(r["key"], {})
        row = {"variant": r["name"], "ours": r["label"], "paper": metas[r["name"]]["paper_label"]}
        if seeded:
            row["seeds"] = r["seeds"]
        if experiment == "recipe":
            row["kept"] = r["kept"]
        for m in TABLE_METRICS[experiment]:
            row[f"paper_{m}"] = p.get(m)
            row[f"ours_{m}"] = r.get(m)
            if seeded:
                lo, hi, _ = r.get("spread", {}).get(m, (r.get(m), r.get(m), 0))
                row[f"ours_{m}_min"], row[f"ours_{m}_max"] = lo, hi
        table.append(row)
    return pd.DataFrame(table)
