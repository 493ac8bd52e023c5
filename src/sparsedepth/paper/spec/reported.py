"""The paper's reported numbers (paper-spec section 3) as data.

``PAPER[experiment]["rows"]`` maps the paper's swept value (the ``paper_key`` of
``experiments.variant_meta``) to that row's numbers. Table values are the project page's; figure values
(variance peaks and ends, Jacobian curves, recipe usefulness) were read off the published PNGs and are
approximate (the comment above each experiment names its sources). ``None`` = not reported. The claims
the paper makes from these numbers are defined in :mod:`sparsedepth.paper.analysis.scorecard` (``CLAIMS``).

Keys of a row: ``ppl`` (validation perplexity), ``usefulness`` (fraction of useful layers), ``causal``,
``permutation`` (depth only), ``variance_peak`` / ``variance_end`` (last-layer variance during training,
read from the figure; the official statistic is the post-final-norm output, paper-spec 1.1), ``acc``
(recipe: average downstream accuracy), ``kept`` (recipe).
"""
from __future__ import annotations

from typing import Any

PAPER: dict[str, dict[str, Any]] = {
    "depth": {
        # from scores_comparison.png, final_layer_variance.png, jacobian_depth_comparison.png (paper-spec 3.1)
        # setup: d=2048, T=1024, 5B tokens, ~19k steps [inferred]
        "rows": {
            12: {"causal": 0.355, "permutation": 0.985, "usefulness": 1.000, "useful_layers": 12,
                 "variance_peak": 1.6e3, "variance_end": 400.0},
            16: {"causal": 0.336, "permutation": 0.713, "usefulness": 0.813, "useful_layers": 13,
                 "variance_peak": 2.7e3, "variance_end": 600.0},
            24: {"causal": 0.289, "permutation": 0.438, "usefulness": 0.625, "useful_layers": 15,
                 "variance_peak": 5.2e3, "variance_end": 830.0},
            32: {"causal": 0.259, "permutation": 0.306, "usefulness": 0.562, "useful_layers": 18,
                 "variance_peak": 1.0e4, "variance_end": 1.25e3},
        },
        # ||J - I||_F / d per layer, layers 1 ... L-2 (layer 0 and L-1 are not plotted), +-0.0003.
        "jacobian": {
            12: [.0142, .0137, .0132, .0100, .0105, .0095, .0087, .0092, .0079, .0066],
            16: [.0125, .0115, .0129, .0119, .0102, .0086, .0089, .0082, .0077, .0066, .0065, .0054, .0046, .0044],
            24: [.0100, .0103, .0089, .0088, .0078, .0073, .0075, .0069, .0062, .0066, .0062, .0057, .0057, .0054,
                 .0047, .0042, .0038, .0036, .0034, .0026, .0023, .0027],
            32: [.0075, .0084, .0085, .0074, .0061, .0061, .0064, .0058, .0054, .0065, .0057, .0051, .0051, .0050,
                 .0048, .0042, .0046, .0042, .0041, .0037, .0035, .0030, .0029, .0027, .0025, .0022, .0019, .0018,
                 .0018, .0021],
        },
    },
    "weight_decay": {
        # from table and WD.png (paper-spec 3.2)
        # setup: L=16 dense, ~9.5k steps
        "rows": {
            0.0: {"ppl": 15.63, "usefulness": 0.75, "variance_peak": 355.0, "variance_end": 320.0},
            0.01: {"ppl": 15.20, "usefulness": 0.75, "variance_peak": 325.0, "variance_end": 285.0},
            0.1: {"ppl": 14.83, "usefulness": 0.81, "variance_peak": 175.0, "variance_end": 115.0},
            1.0: {"ppl": 15.55, "usefulness": 0.69, "variance_peak": 100.0, "variance_end": 0.0},
            3.0: {"ppl": 773.42, "usefulness": 0.63, "variance_peak": None, "variance_end": 0.0},
        },
    },
    "seqlen": {
        # from table and Length.png (paper-spec 3.3)
        # setup: L=16 dense, ~2.4k steps
        "rows": {
            256: {"ppl": 18.51, "usefulness": 0.69, "variance_peak": None, "variance_end": 2.8e4},
            512: {"ppl": 15.71, "usefulness": 0.75, "variance_peak": None, "variance_end": 7.5e3},
            1024: {"ppl": 14.77, "usefulness": 0.75, "variance_peak": None, "variance_end": 2.6e3},
            2048: {"ppl": 14.51, "usefulness": 0.81, "variance_peak": None, "variance_end": 1.35e3},
            4096: {"ppl": 14.52, "usefulness": 0.81, "variance_peak": None, "variance_end": 720.0},
            8192: {"ppl": 16.30, "usefulness": 0.75, "variance_peak": 110.0, "variance_end": 70.0},
        },
    },
    "gqa": {
        # from table and GQA.png (paper-spec 3.4)
        # setup: L=16, d=2048, 16 heads, ~4.8k steps, T=4096 [inferred]
        "rows": {
            1: {"ppl": 14.52, "usefulness": 0.81, "variance_peak": 345.0, "variance_end": 220.0},
            4: {"ppl": 14.50, "usefulness": 0.87, "variance_peak": 240.0, "variance_end": 122.0},
            16: {"ppl": 14.47, "usefulness": 0.87, "variance_peak": 200.0, "variance_end": 102.0},
        },
    },
    "moe": {
        # from table, MoE-400M.png and MoE-1B.png (paper-spec 3.5)
        # setup: ~4.8k steps; top-k/E = 1/8 in both MoEs
        "rows": {
            "dense-small": {"label": "Dense-400M", "ppl": 17.56, "usefulness": 0.87, "variance_peak": 152.0,
                            "variance_end": 103.0},
            "moe-small": {"label": "MoE-2B/400M", "ppl": 15.89, "usefulness": 0.94, "variance_peak": 23.0,
                          "variance_end": 15.0},
            "dense-large": {"label": "Dense-1B", "ppl": 14.52, "usefulness": 0.81, "variance_peak": 345.0,
                            "variance_end": 220.0},
            "moe-large": {"label": "MoE-7B/1B", "ppl": 13.82, "usefulness": 0.94, "variance_peak": 120.0,
                          "variance_end": 73.0},
        },
    },
    "recipe": {
        # from assets/leading.png (paper-spec 3.6); usefulness read from star positions (+-0.005)
        # setup: 32-layer ~1.2B dense baseline; rejected steps are not carried forward
        "reference": {"label": "L=16 reference", "acc": 40.1, "usefulness": 0.75, "useful_layers": 12},
        "rows": {
            "baseline": {"acc": 39.5, "usefulness": 0.53, "useful_layers": 17, "kept": True},
            "+T4096": {"acc": 40.0, "usefulness": 0.59, "useful_layers": 19, "kept": True},
            "+T8192": {"acc": 39.5, "usefulness": 0.53, "useful_layers": 17, "kept": False},
            "+wd0.3": {"acc": 41.4, "usefulness": 0.625, "useful_layers": 20, "kept": True},
            "+wd0.6": {"acc": 41.0, "usefulness": 0.625, "useful_layers": 20, "kept": False},
            "+wd1.0": {"acc": 38.5, "usefulness": 0.53, "useful_layers": 17, "kept": False},
            "+G2": {"acc": 42.1, "usefulness": 0.66, "useful_layers": 21, "kept": True},
            "+MoE": {"acc": 44.1, "usefulness": 0.75, "useful_layers": 24, "kept": True},
        },
    },
}


def rows(experiment: str) -> dict[Any, dict]:
    """The paper's rows of ``experiment`` keyed by paper value (a KeyError names the valid experiments)."""
    if experiment not in PAPER:
        raise KeyError(f"the paper reports no experiment {experiment!r}; known: {', '.join(PAPER)}")
    return PAPER[experiment]["rows"]


def value(experiment: str, key: Any, metric: str) -> float | None:
    """One reported number, or None when the paper does not report it."""
    return rows(experiment).get(key, {}).get(metric)
