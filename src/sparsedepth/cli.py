"""`sparsedepth` command line: a thin wrapper over the library and the paper's reproduction.

This file composes the program: it is the one library module that chooses modules of the paper layer
(:mod:`sparsedepth.paper`), by name only, imported when a command needs them (the catalog of named
experiments, and the ``list``, ``run`` and ``reproduce`` commands), so the library stays importable and
testable without it. Each subcommand lives beside the code it
drives, in a module that provides ``add_arguments(parser)`` and ``run(args) -> int``; this file only
registers them. Modules are imported lazily so that ``--help`` is fast
and a subcommand's heavy imports (datasets, papermill, ...) happen only when it runs.

A ``UserError`` (bad input, a damaged file, a busy run directory) that a subcommand does not report itself
ends as one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from . import catalog
from .errors import UserError, one_line

# The experiment table that `train --profile/--experiment/--variant` and `bench` resolve names through.
CATALOG = "sparsedepth.paper.spec.experiments"
COMMANDS = {
    "list": ("sparsedepth.paper.spec.experiments", "list the paper's experiments and their variants"),
    "train": ("sparsedepth.train.cli", "train one variant (or a --config file) into a run directory"),
    "probe": ("sparsedepth.probes.cli", "run the layer-effectiveness probes on a run directory or checkpoint"),
    "eval": ("sparsedepth.eval.cli", "perplexity and zero-shot accuracy of a run directory"),
    "run": ("sparsedepth.paper.pipeline.run_cli",
            "train, probe and evaluate experiment variants into paper_results (no notebooks)"),
    "bench": ("sparsedepth.bench", "measure tokens/s, MFU, memory, attention backends, probe and scorer times"),
    "reproduce": ("sparsedepth.paper.pipeline.reproduce",
                  "execute the notebooks that regenerate the paper's figures and tables"),
}


def _available() -> dict[str, tuple[str, str]]:
    """The commands whose module is installed, found by file so that no package is imported
    (``importlib.util.find_spec`` would import ``sparsedepth.train`` and with it torch)."""
    root = Path(__file__).resolve().parent

    def installed(module: str) -> bool:
        rel = root.joinpath(*module.split(".")[1:])
        return rel.with_suffix(".py").is_file() or (rel / "__init__.py").is_file()

    return {name: spec for name, spec in COMMANDS.items() if installed(spec[0])}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = _available()
    parser = argparse.ArgumentParser(prog="sparsedepth", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in commands.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        args = parser.parse_args(argv)  # prints help, or the error for an unknown command
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    catalog.use(CATALOG)
    module = importlib.import_module(commands[argv[0]][0])
    cmd_parser = argparse.ArgumentParser(prog=f"sparsedepth {argv[0]}", description=commands[argv[0]][1])
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        print(f"sparsedepth {argv[0]}: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
