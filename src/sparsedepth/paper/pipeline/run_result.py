"""One variant's results as a typed object: :class:`RunResult`, what ``results.load_results`` returns.

The files of a results folder (config, metrics.jsonl, probes.json, eval.json, summary.json, provenance.json,
and trajectory.json where the run was probed along training) are nested dicts; the paper layer reads them only
through the accessors here, so every key path of those files is spelled once. Accessors return None where a
reading is absent or not a finite number (older results, a probe that was skipped), never raise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping


def number(x: Any) -> float | None:
    """``x`` as a finite float; None for anything else (absent, NaN, text, a list)."""
    if isinstance(x, bool):
        return float(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def lookup(d: Any, path: str, default: Any = None) -> Any:
    """The value at a dotted ``path`` of nested dicts (``"usefulness.paper_compat.mean_ratio"``); ``default``
    where any step is missing."""
    for key in path.split("."):
        if not isinstance(d, Mapping) or key not in d:
            return default
        d = d[key]
    return d


def along_series(trajectory: Mapping | None) -> list[dict]:
    """A trajectory's points on one footing, in step order: where the points before the last used cheaper
    settings (its ``along``), the last point's own ``along`` reading (the final weights probed with those
    settings) stands in for the final probes, and a last point without one (written before it was taken) is
    left out; where every point used the same settings, all points. The final probes themselves are the
    results' probes.json."""
    points = sorted((trajectory or {}).get("points", []), key=lambda p: p["step"])
    if not points or not (trajectory or {}).get("along") or not points[-1].get("final"):
        return points
    *before, last = points
    if "along" not in last:
        return before
    head = {k: last[k] for k in ("step", "tokens", "val_loss", "source") if k in last}
    return before + [{**head, **last["along"], "final": False}]


@dataclass(frozen=True)
class RunResult:
    """The results of one variant of an experiment: its config, the per-step telemetry (``metrics``, the
    rows of metrics.jsonl), probes, evaluation, summary and provenance, plus the variant's metadata
    (``meta``: label, paper_label, paper_key, value, seed, kept, ...) and whether its config or results key
    changed since (``stale``)."""
    experiment: str
    variant: str
    config: dict
    meta: dict = field(default_factory=dict)
    metrics: list = field(default_factory=list)
    probes: dict | None = None
    eval: dict | None = None
    summary: dict | None = None
    provenance: dict | None = None
    hash: str = ""
    stale: bool = False
    dir: str = ""
    trajectory: dict | None = None  # trajectory.json: the run probed along training (None: not probed so)

    # ----------------------------------------------------------------------------------------- identity
    @property
    def label(self) -> str:
        """The display label of the variant (e.g. ``L=12``); the variant name when it has none."""
        return str(self.meta.get("label", self.variant))

    @property
    def paper_label(self) -> str:
        """The paper's setting this variant stands for (e.g. ``L=16``); its own label when the same."""
        return str(self.meta.get("paper_label", self.label))

    @property
    def setting(self) -> Any:
        """The paper setting (``paper_key``) this variant reproduces; seeds of one setting share it."""
        return self.meta.get("paper_key")

    @property
    def seed(self) -> int:
        return int(self.meta.get("seed", 0))

    def config_value(self, key: str) -> Any:
        """A dotted config key, e.g. ``"model.n_layers"``; ``"model.group_size"`` (heads per KV head) is
        derived. Raises KeyError naming the key when the config has none."""
        if key == "model.group_size":
            m = self.config.get("model", {})
            return m["n_heads"] // (m.get("n_kv_heads") or m["n_heads"])
        value = lookup(self.config, key, default=KeyError)
        if value is KeyError:
            raise KeyError(f"config has no key {key!r}; keys look like 'model.n_layers', 'optim.weight_decay', "
                           f"'seq_len'")
        return value

    # ------------------------------------------------------------------------------- along training
    def points(self) -> list[dict]:
        """The trajectory's points (step, tokens, val_loss and the probes' summaries) on one footing
        (:func:`along_series`), in step order; [] when the run was not probed along training."""
        return along_series(self.trajectory)

    def at_point(self, point: dict) -> "RunResult":
        """This run as probed at one trajectory point: its readings rebuilt in probes.json's key paths (every
        accessor below then reads the point), perplexity from the point's validation loss, no telemetry (so
        the variance readings are the point's probe readings) and no evaluation. Useful-layer flags use the
        final probes' threshold."""
        u, v = point.get("usefulness"), point.get("variance")
        probes: dict = {}
        if v:
            probes["variance"] = {"layer_var": v.get("layer_var"), "final_norm_var": v.get("final_norm_var"),
                                  "max_abs": v.get("max_abs")}
        if u:
            threshold = number(self.probe("usefulness.threshold"))
            probes["usefulness"] = _usefulness_reading(u, threshold)
            for kind in ("paper_compat", "skip"):
                if kind in u:
                    probes["usefulness"][kind] = _usefulness_reading(u[kind], threshold)
        if point.get("jacobian"):
            probes["jacobian"] = {"jacobian_norm": point["jacobian"].get("per_layer"),
                                  "mean_jacobian_norm": point["jacobian"].get("mean")}
        for name in ("causal", "permutation", "angular_distance", "block_influence"):
            if name in point:
                probes[name] = point[name]
        loss = number(point.get("val_loss"))
        summary = {"step": point.get("step"), "tokens": point.get("tokens"),
                   "val_ppl": math.exp(loss) if loss is not None else None}
        return replace(self, metrics=[], probes=probes, eval=None, summary=summary, trajectory=None)

    # --------------------------------------------------------------------------------- generic reading
    def probe(self, path: str, default: Any = None) -> Any:
        """A value of probes.json by dotted path, e.g. ``"sparsity.expert.load"``."""
        return lookup(self.probes, path, default)

    def telemetry(self, key: str) -> list[tuple[Any, Any]]:
        """(step, value) of every metrics row that logged ``key``, in step order."""
        return [(r.get("step"), r[key]) for r in self.metrics if key in r]

    # ------------------------------------------------------------------------------ last-layer variance
    def last_layer_var_series(self) -> list[tuple[Any, Any]]:
        """(step, variance of the raw residual stream h_L, ``layer_var[-1]``) over training."""
        return [(s, v[-1]) for s, v in self.telemetry("layer_var") if isinstance(v, list) and v]

    def postnorm_var_series(self) -> list[tuple[Any, Any]]:
        """(step, variance of N_f(h_L), the final norm's output: ``final_var``, the official code's log)."""
        return self.telemetry("final_var")

    def final_gain(self) -> float | None:
        """The final RMSNorm's mean |g| at the last telemetry row that logged it (``final_gain``): what scales
        N_f(h_L) whatever h_L does."""
        rows = self.telemetry("final_gain")
        return number(rows[-1][1]) if rows else None

    def probed_last_layer_var(self) -> Any:
        """The probes' variance of h_L (``variance.layer_var[-1]``): the fallback without telemetry."""
        lv = self.probe("variance.layer_var")
        return lv[-1] if isinstance(lv, list) and lv else None

    def probed_postnorm_var(self) -> Any:
        """The probes' variance after the final norm (``variance.final_norm_var``)."""
        return self.probe("variance.final_norm_var")

    # --------------------------------------------------------------------------------- evaluation
    def perplexity(self) -> float | None:
        """Held-out perplexity of the evaluation; the training summary's ``val_ppl`` as a fallback."""
        ppl = number(lookup(self.eval, "perplexity.ppl"))
        return ppl if ppl is not None else number(lookup(self.summary, "val_ppl"))

    def mean_acc(self) -> float | None:
        """The unweighted mean zero-shot accuracy over tasks as evaluated (a fraction, or points in older
        results)."""
        return number(lookup(self.eval, "mean_acc"))

    def task_accuracies(self) -> list[tuple[float | None, float | None]] | None:
        """(accuracy, items) of every zero-shot task; None without per-task results."""
        tasks = lookup(self.eval, "tasks")
        if not isinstance(tasks, Mapping) or not tasks:
            return None
        return [(number(lookup(t, "acc")), number(lookup(t, "n"))) for t in tasks.values()]

    def tokens(self) -> Any:
        """Training tokens (the summary's ``tokens``)."""
        return lookup(self.summary, "tokens")

    # ------------------------------------------------------------------------------------ probes
    def usefulness_fraction(self) -> float | None:
        """The fraction of useful layers (loss ratio above the threshold), the paper's usefulness score."""
        return number(self.probe("usefulness.score"))

    def useful_layers(self) -> int | None:
        """How many layers are useful; None without the per-layer flags."""
        useful = self.probe("usefulness.useful")
        return sum(bool(u) for u in useful) if isinstance(useful, list) else None

    def loss_ratio(self) -> float | None:
        """The mean per-layer loss ratio of the fixed usefulness probe."""
        return number(self.probe("usefulness.mean_ratio"))

    def loss_ratio_compat(self) -> float | None:
        """The mean per-layer loss ratio of the ``paper_compat`` usefulness probe (the official code's)."""
        return number(self.probe("usefulness.paper_compat.mean_ratio"))

    def causal(self) -> float | None:
        return number(self.probe("causal.score"))

    def permutation(self) -> float | None:
        return number(self.probe("permutation.score"))

    def jacobian(self) -> list[float | None] | None:
        """||J - I||_F / d per layer (``jacobian.jacobian_norm``); entries that are not numbers are None."""
        jac = self.probe("jacobian.jacobian_norm")
        return [number(x) for x in jac] if isinstance(jac, list) else None


def _usefulness_reading(u: Mapping, threshold: float | None) -> dict:
    """A trajectory point's usefulness summary in probes.json's keys (``mean_ratio``; ``useful`` flags where a
    threshold is known)."""
    ratio = [number(r) for r in u.get("loss_ratio") or []]
    out = {"score": u.get("score"), "loss_ratio": ratio,
           "mean_ratio": sum(ratio) / len(ratio) if ratio and None not in ratio else None}
    if threshold is not None and ratio and None not in ratio:
        out["useful"] = [r > threshold for r in ratio]
    return out
