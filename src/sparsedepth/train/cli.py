"""``sparsedepth train``: train one experiment variant, or a config file, into a run directory.

    sparsedepth train --profile smoke --experiment depth --variant L4
    sparsedepth train --config my.yaml --set optim.lr=3e-4 --set steps=200 --run-dir runs/mine
    torchrun --nproc_per_node 8 -m sparsedepth.cli train --profile gpu --experiment moe --variant E8
    torchrun --nproc_per_node 8 -m sparsedepth.cli train --config scripts/paper_scale/moe-7b-1b.yaml  # FSDP
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from .. import catalog
from ..config import ConfigError, TrainConfig, apply_overrides, config_hash, from_dict
from ..errors import UserError, one_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("what to train (a profile/experiment/variant, or --config)")
    src.add_argument("--profile", help="scale profile: smoke, cpu or gpu")
    src.add_argument("--experiment", help="experiment name (see `sparsedepth list`)")
    src.add_argument("--variant", help="variant of the experiment")
    src.add_argument("--config", type=Path, help="YAML or JSON file with a nested config dict (as to_dict writes)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set optim.lr=3e-4 (repeatable)")
    parser.add_argument("--run-dir", type=Path,
                        help="output folder (default runs/<profile>/<experiment>/<variant> or runs/custom/<hash>)")
    parser.add_argument("--stop-at-step", type=int, metavar="K",
                        help="stop after step K with a checkpoint (the schedule still plans for all steps)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to run (overrides config device)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--wandb", action="store_true",
                        help="log to Weights & Biases (offline into RUN_DIR/wandb; `wandb sync` uploads), as "
                             "SPARSEDEPTH_WANDB=1 does; the config and its hash stay the same")


def load_config_file(path: Path) -> TrainConfig:
    """A TrainConfig from a YAML/JSON file; a ``{"config": ...}`` wrapper (a run's config.json) is accepted."""
    if not path.is_file():
        raise ConfigError(f"--config {str(path)!r} does not exist")
    import yaml

    try:
        text = path.read_bytes().decode("utf-8")
        d = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ConfigError(f"--config {str(path)!r} is not valid UTF-8 {kind} ({one_line(e)}); fix the file") from e
    if not isinstance(d, dict):
        raise ConfigError(f"--config {str(path)!r} must hold a mapping of config keys, got {type(d).__name__}")
    if set(d) == {"config", "hash"}:
        d = d["config"]
    return from_dict(_exponents_to_float(d))


def _exponents_to_float(v):
    """YAML 1.1 reads ``3e-4`` (an exponent without a dot) as a string; make such strings floats."""
    if isinstance(v, dict):
        return {k: _exponents_to_float(x) for k, x in v.items()}
    if isinstance(v, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", v):
        return float(v)
    return v


def resolve_args(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """The config and run directory that the arguments name."""
    named = [args.profile, args.experiment, args.variant]
    if args.config and any(named):
        raise ConfigError("give either --config or --profile/--experiment/--variant, not both")
    if args.config:
        cfg = load_config_file(args.config)
    elif all(named):
        cfg = catalog.get().resolve(args.profile, args.experiment, args.variant)
    else:
        raise ConfigError("name what to train: --profile P --experiment E --variant V, or --config FILE")
    if args.overrides:
        cfg = apply_overrides(cfg, args.overrides)
    if args.run_dir:
        run_dir = args.run_dir
    elif args.config:
        run_dir = Path("runs") / "custom" / config_hash(cfg)
    else:
        run_dir = Path("runs") / args.profile / args.experiment / args.variant
    return cfg, run_dir


def run(args: argparse.Namespace) -> int:
    from . import train  # torch is imported only when a command actually trains
    from .telemetry import WANDB_ENV

    if args.wandb:
        os.environ[WANDB_ENV] = "1"
    try:
        cfg, run_dir = resolve_args(args)
        print(f"run dir: {run_dir}", flush=True)
        summary = train(cfg, run_dir, stop_at_step=args.stop_at_step, progress=not args.no_progress,
                        device=args.device)
    except UserError as e:  # ConfigError, DataError, CheckpointError, RunDirBusyError, ...
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0
