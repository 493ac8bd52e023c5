"""`sparsedepth --help` must not import the heavy libraries (measured by the modules loaded, not by time)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "numpy", "pandas", "wandb", "papermill", "nbconvert", "datasets", "transformers", "tokenizers")

PROBE = """
import contextlib, io, json, sys
from sparsedepth.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        code = main(["--help"])
    except SystemExit as e:  # argparse exits after printing the help
        code = e.code
print(json.dumps({"code": code, "help": out.getvalue(), "loaded": sorted(sys.modules)}))
"""


def test_top_level_help_imports_no_heavy_module():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    rep = json.loads(res.stdout.splitlines()[-1])
    assert rep["code"] == 0
    for name in ("train", "probe", "eval", "reproduce"):  # every subcommand is still listed
        assert name in rep["help"]
    loaded = {m.split(".")[0] for m in rep["loaded"]}
    assert not loaded & set(HEAVY), f"--help imported {sorted(loaded & set(HEAVY))}"
