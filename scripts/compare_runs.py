"""Compare two runs of one config step by step (training loss, validation loss, last-layer variance), by their
final readings (perplexity, accuracy, the probes' scores) and, where both were probed along training
(``trajectory.json``), point by point with each run's trend in log tokens.

    PYTHONPATH=src python scripts/compare_runs.py paper_results/gpu/weight_decay/wd0.1 paper_results/gpu/seqlen/T1024
    PYTHONPATH=src python scripts/compare_runs.py paper_results/gpu-long/depth/L12 \
        paper_results/gpu-long/seed-check/depth-L12-seed1 --setting paper_results/gpu-long/depth/L16

For an implementation change that should not change what is trained (``model.kernels``, a new MoE path,
another machine): the same config and seed should track the reference within bf16 rounding, far
inside the gap between two seeds (``paper_results/gpu/depth/L16`` against ``L16-seed1``). For a second seed,
``--setting`` names a run of another setting (the next depth, say): its gap to the reference is printed beside
the seed gap, so a reader sees whether a setting's effect stands clear of the seed noise. Each argument is a run
directory or a result folder holding ``metrics.jsonl`` (a run directory without evaluation gives the probes'
readings alone).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIELDS = (("loss", "train loss"), ("val_loss", "val loss"), ("layer_var", "last-layer variance"))


def load_metrics(folder: Path) -> dict[int, dict]:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; pass a run directory or a result folder with metrics.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["step"]: r for r in rows if "step" in r}


def _value(row: dict, key: str) -> float | None:
    v = row.get(key)
    return v[-1] if isinstance(v, list) and v else v if isinstance(v, (int, float)) else None


def compare(a: dict[int, dict], b: dict[int, dict]) -> dict[str, dict]:
    """Per field: the steps both runs logged it, the values and the largest relative difference."""
    out = {}
    for key, label in FIELDS:
        pairs = [(s, _value(a[s], key), _value(b[s], key)) for s in sorted(a.keys() & b.keys())]
        pairs = [(s, x, y) for s, x, y in pairs if x is not None and y is not None]
        rel = [abs(x - y) / max(abs(x), 1e-12) for _, x, y in pairs]
        out[label] = {"steps": pairs, "max_rel_diff": max(rel) if rel else None,
                      "end_rel_diff": rel[-1] if rel else None}
    return out


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def readings(folder: Path) -> dict[str, float]:
    """The scorecard's scalar readings of a result folder, or of a run directory with probes.json (not
    evaluated: no accuracy, and perplexity is the training's validation one); empty for a run directory
    without probes."""
    from sparsedepth.paper.pipeline.results import load_variant
    from sparsedepth.paper.pipeline.run_result import RunResult
    from sparsedepth.paper.analysis.frame import readings

    res = load_variant(folder)
    if res is None:
        rec, probes = _read_json(folder / "config.json"), _read_json(folder / "probes.json")
        if not isinstance(rec, dict) or "config" not in rec or not isinstance(probes, dict):
            return {}
        from sparsedepth.train import read_metrics

        res = RunResult(experiment="", variant=folder.name, config=rec["config"], hash=rec.get("hash", ""),
                        metrics=read_metrics(folder), probes=probes, summary=_read_json(folder / "summary.json"),
                        dir=str(folder))
    m = readings(res)  # jacobian_mean among them
    return {k: v for k, v in m.items() if isinstance(v, (int, float)) and k != "useful_layers" and v is not None}


def trend_targets(reference: Path) -> dict[str, float]:
    """statistic -> what the figures extrapolate its trend to for the reference's setting (the paper's value,
    the usefulness threshold); empty unless the reference is a result folder of a sweep."""
    from sparsedepth.paper.pipeline.results import load_variant
    from sparsedepth.paper.report.trajectories import sweep_targets

    res = load_variant(reference)
    if res is None:
        return {}
    targets = sweep_targets(res.experiment, {res.variant: res})
    out = {stat: t.get(res.label) if isinstance(t, dict) else t for stat, t in targets.items()}
    return {stat: t for stat, t in out.items() if t is not None}


def trajectory_gaps(reference: Path, other: Path, setting: Path | None = None,
                    targets: dict[str, float] | None = None) -> list[dict]:
    """Per statistic of the trajectories (the points on one footing, matched by training tokens): the points
    both runs hold, the largest absolute gap ``other - reference`` and the gap at the last of them, each run's
    least-squares slope per decade of tokens on those points (with its standard error), and, with ``setting``,
    on the points all three hold: the gap ``setting - reference`` at the last of them and at how many points
    it is larger than the gap between the two runs (``clear``, of ``shared``). With ``targets`` ({statistic:
    value}), where each run's trend reaches the value (``reaches_reference``, ``reaches_other``: a token count
    in words, "…, passed" inside the points, "never"). Empty unless both runs have a trajectory.json."""
    from sparsedepth.paper.analysis.trend import crossing, trend
    from sparsedepth.paper.report.trajectories import STATISTICS, trajectory_frame

    runs = {"reference": reference, "other": other, **({"setting": setting} if setting else {})}
    if not all((p / "trajectory.json").is_file() for p in runs.values()):
        return []
    frame = trajectory_frame(runs)
    table = frame[frame.basis == "along"].pivot_table(index=["statistic", "tokens"], columns="setting",
                                                      values="value")
    out = []
    for stat in [s for s in STATISTICS if s in table.index.get_level_values(0)]:
        t = table.loc[stat].dropna(subset=["reference", "other"])
        if len(t) < 2:
            continue
        gap = t["other"] - t["reference"]
        row = {"statistic": stat, "points": len(t), "tokens": [int(x) for x in t.index],
               "max_gap": float(gap.abs().max()), "last_gap": float(gap.iloc[-1])}
        for name in ("reference", "other"):
            tr = trend(t.index, t[name], (targets or {}).get(stat))
            row[f"slope_{name}"], row[f"slope_se_{name}"] = tr["slope_per_decade"], tr["slope_se"]
            row[f"reaches_{name}"] = crossing(tr)
        if "setting" in t:
            all3 = t.dropna(subset=["setting"])
            setting_gap, seed_gap = all3["setting"] - all3["reference"], all3["other"] - all3["reference"]
            row["setting_gap"] = float(setting_gap.iloc[-1]) if len(all3) else None
            row["clear"], row["shared"] = int((setting_gap.abs() > seed_gap.abs()).sum()), len(all3)
        out.append(row)
    return out


def trajectory_figure(runs: dict[str, Path], path: Path, statistics: list[str],
                      targets: dict[str, dict[str, float]]) -> None:
    """``statistics`` of the runs' trajectories against training tokens, a panel each (the figures' own chart:
    measured lines, dashed trends in log tokens; ``targets`` {run name: {statistic: value}}: one value for
    every run drawn as a rule, the paper's per setting as diamonds at its token count), written as a PNG."""
    import io

    import altair as alt

    from sparsedepth.atomic import atomic_write_bytes
    from sparsedepth.paper.report.plots import recompress
    from sparsedepth.paper.report.trajectories import (LOG_Y, PAPER_TOKENS, STATISTICS, trajectory_chart,
                                                       trajectory_frame)

    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown:
        raise SystemExit(f"--statistics: unknown {unknown}; choose from {', '.join(STATISTICS)}")
    frame = trajectory_frame(runs)
    panels = []
    for stat in [s for s in statistics if s in set(frame.statistic)]:
        goal = {name: targets[name][stat] for name in runs if stat in targets.get(name, {})}
        if len(goal) == len(runs) and len(set(goal.values())) == 1:  # one target for every run: a rule
            value = next(iter(goal.values()))
            panels.append(trajectory_chart(frame, stat, target=value, target_label=f"target {value:g}",
                                           log_y=stat in LOG_Y, order=list(runs)))
        else:
            panels.append(trajectory_chart(frame, stat, target=goal or None, log_y=stat in LOG_Y, order=list(runs),
                                           target_tokens=PAPER_TOKENS if goal else None,
                                           target_label="the paper" if goal else None))
    if not panels:
        raise SystemExit(f"--figure: the trajectories hold none of {statistics}")
    png = io.BytesIO()
    alt.concat(*panels, columns=3).save(png, format="png")
    atomic_write_bytes(path, recompress(png.getvalue()))


def _g(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path)
    ap.add_argument("other", type=Path)
    ap.add_argument("--setting", type=Path, default=None,
                    help="a run of another setting, whose gap to the reference is printed for scale")
    ap.add_argument("--figure", type=Path, default=None,
                    help="draw the trajectories of the runs (with --setting: all three) to this PNG")
    ap.add_argument("--names", default=None, help="comma-separated names of the runs in the figure "
                                                  "(default: the folder names)")
    ap.add_argument("--statistics", default="last_layer_var,loss_ratio,loss_ratio_paper_compat,jacobian,causal,"
                    "permutation", help="comma-separated statistics of the figure (default: %(default)s)")
    args = ap.parse_args(argv)
    folders = [args.reference, args.other] + ([args.setting] if args.setting else [])
    names = [n.strip() for n in args.names.split(",")] if args.names else [f.name for f in folders]
    if len(names) != len(folders) or len(set(names)) != len(names):
        raise SystemExit(f"--names: give {len(folders)} distinct names, one per run; got {names}")
    res = compare(load_metrics(args.reference), load_metrics(args.other))
    for label, r in res.items():
        if not r["steps"]:
            print(f"{label}: no common steps")
            continue
        print(f"{label}: {len(r['steps'])} common steps, largest relative difference {r['max_rel_diff']:.2e}, "
              f"at the last common step {r['end_rel_diff']:.2e}")
        for s, x, y in r["steps"][-3:]:
            print(f"  step {s:>6}: {x:.6g}  vs  {y:.6g}")
    a, b = readings(args.reference), readings(args.other)
    for key in [k for k in a if k in b and not k.endswith("_se")]:
        rel = f", relative {abs(a[key] - b[key]) / abs(a[key]):.2e}" if a[key] else ""
        se = f" (standard errors {a[f'{key}_se']:.2g}, {b[f'{key}_se']:.2g})" if f"{key}_se" in a and f"{key}_se" in b else ""
        print(f"{key}: {a[key]:.6g}  vs  {b[key]:.6g}, difference {b[key] - a[key]:+.3g}{rel}{se}")
    targets = trend_targets(args.reference)
    gaps = trajectory_gaps(args.reference, args.other, args.setting, targets)
    if gaps:
        print("\nalong training (points on one footing; gap = other - reference; slope per decade of tokens):")
        head = f"{'statistic':<24} {'points':>6} {'largest gap':>11} {'last gap':>9} {'slope ref':>16} {'slope other':>16}"
        print(head + (f" {'setting gap':>11} {'clear of it':>11}" if args.setting else ""))
        for r in gaps:
            slopes = [f"{_g(r[f'slope_{n}'])} ± {_g(r[f'slope_se_{n}'])}" for n in ("reference", "other")]
            line = (f"{r['statistic']:<24} {r['points']:>6} {_g(r['max_gap']):>11} {_g(r['last_gap']):>9} "
                    f"{slopes[0]:>16} {slopes[1]:>16}")
            clear = f"{r['clear']}/{r['shared']}" if "clear" in r else "—"
            print(line + (f" {_g(r.get('setting_gap')):>11} {clear:>11}" if args.setting else ""))
        reach = [r for r in gaps if r["statistic"] in targets]
        if reach:
            print("\nwhere each run's trend reaches the reference setting's target (the paper's value; the loss "
                  "ratios: the useful threshold):")
            for r in reach:
                print(f"{r['statistic']:<24} target {targets[r['statistic']]:.4g}: {r['reaches_reference']}  vs  "
                      f"{r['reaches_other']}")
    if args.figure:
        # the second run is another seed of the reference's setting: the same targets
        own = [targets, targets] + ([trend_targets(args.setting)] if args.setting else [])
        trajectory_figure(dict(zip(names, folders)), args.figure,
                          [s.strip() for s in args.statistics.split(",") if s.strip()], dict(zip(names, own)))
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
