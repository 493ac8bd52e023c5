"""`sparsedepth probe RUN_DIR` (a training run) or `sparsedepth probe --hf PATH` (a local HF model folder)."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError, one_line
from .adapters import ProbeError
from .suite import PROBES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", help="run directory (writes RUN_DIR/probes.json); with --hf, the "
                        "folder to write probes.json into (default: the model folder)")
    parser.add_argument("--hf", metavar="PATH", help="probe a local Hugging Face causal-LM folder (model + tokenizer)")
    parser.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated subset of {','.join(PROBES)}")
    parser.add_argument("--n-windows", type=int, default=16, help="held-out windows (default 16)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="tokens per window (default: the run's training length; 256 with --hf)")
    parser.add_argument("--paper-compat", action="store_true",
                        help="also report the official code's usefulness variant (transposed replacement)")
    parser.add_argument("--max-pairs", type=int, default=None,
                        help="permutation: evaluate a seeded systematic sample of this many pairs (each first "
                             "layer keeps its share)")
    parser.add_argument("--jacobian-windows", type=int, default=4)
    parser.add_argument("--jacobian-seq-len", type=int, default=128)
    parser.add_argument("--jacobian-layers", default=None, help="comma-separated layer indices (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="window and pair selection seed")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--out", default="probes.json", help="output file name")
    parser.add_argument("--trajectory", action="store_true",
                        help="probe every checkpoint the run kept (checkpoints/step-N, probe-step-N) into "
                             "RUN_DIR/trajectory.json, keeping the points already there")
    parser.add_argument("--quiet", action="store_true")


def _summary(res: dict) -> str:
    lines = []
    for key in ("usefulness", "causal", "permutation"):
        if key in res:
            score = res[key]["score"]  # null where undefined (a 1-layer model), with a reason
            shown = f"{score:.4f}" if score is not None else f"null ({res[key]['reason']})"
            lines.append(f"{key:12s} score {shown}")
    if "jacobian" in res and "mean_jacobian_norm" in res["jacobian"]:
        lines.append(f"jacobian     mean ||J-I||_F/d {res['jacobian']['mean_jacobian_norm']:.5f}")
    if "variance" in res:
        lines.append(f"variance     last layer {res['variance']['layer_var'][-1]:.4g}")
    lines.append("timings      " + ", ".join(f"{k} {v:.1f}s" for k, v in res.get("timings", {}).items()))
    return "\n".join(lines)


def _layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ProbeError(f"--jacobian-layers must be comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .suite import probe_hf, probe_run

    try:
        opts = dict(n_windows=args.n_windows, probes=args.probes, paper_compat=args.paper_compat, seed=args.seed,
                    device=args.device, progress=not args.quiet, max_pairs=args.max_pairs,
                    jacobian_windows=args.jacobian_windows, jacobian_seq_len=args.jacobian_seq_len,
                    jacobian_layers=_layers(args.jacobian_layers))
        if args.hf:
            folder = Path(args.run_dir) if args.run_dir else Path(args.hf)
            out = folder / args.out
            res = probe_hf(args.hf, out=out, seq_len=args.seq_len or 256, **opts)
        else:
            if not args.run_dir:
                print("sparsedepth probe: give a RUN_DIR or --hf PATH", file=sys.stderr)
                return 2
            if args.trajectory:
                from .trajectory import TRAJECTORY, probe_checkpoints

                traj = probe_checkpoints(args.run_dir, seq_len=args.seq_len, **opts)
                print(json.dumps({"written": str(Path(args.run_dir) / TRAJECTORY),
                                  "steps": [p["step"] for p in traj["points"]]}))
                return 0
            out = Path(args.run_dir) / args.out
            res = probe_run(args.run_dir, seq_len=args.seq_len, out=args.out, **opts)
    except (UserError, ValueError, FileNotFoundError) as e:  # ProbeError, CheckpointError, DataError, ...
        print(f"sparsedepth probe: {one_line(e)}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(_summary(res))
    print(json.dumps({"written": str(out)}))
    return 0
