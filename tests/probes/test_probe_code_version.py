"""Cached probe results are keyed by ``probes.CODE_VERSION``: a change of the probes' outputs must bump it.

The probes run on a tiny model with fixed weights and windows; the digest of their outputs (floats rounded
to 4 significant digits, timings left out) is recorded here per code version. When the outputs change,
bump ``CODE_VERSION`` in ``sparsedepth/probes/suite.py`` and record the new digest under the new number.
"""
from __future__ import annotations

import hashlib
import json
import math

import torch

from conftest import tiny_config
from sparsedepth.model import build_model
from sparsedepth.probes import CODE_VERSION, run_probes

DIGESTS = {1: "dff446e217cf8bdc"}


def rounded(obj, digits: int = 4):
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def digest(out: dict) -> str:
    kept = {k: v for k, v in out.items() if k not in ("timings", "meta")}
    return hashlib.sha256(json.dumps(rounded(kept), sort_keys=True).encode()).hexdigest()[:16]


def probe_outputs() -> dict:
    torch.manual_seed(0)
    model = build_model(tiny_config(n_layers=3, n_experts=4, top_k=2, expert_hidden=32))
    windows = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(1))
    return run_probes(model, windows, paper_compat=True, jacobian_windows=2, jacobian_seq_len=8,
                      attention_windows=2, tf32=False)


def test_probe_outputs_match_the_digest_of_their_code_version():
    d = digest(probe_outputs())
    assert CODE_VERSION in DIGESTS, f"record the outputs of probes.CODE_VERSION {CODE_VERSION}: DIGESTS[{CODE_VERSION}] = {d!r}"
    assert d == DIGESTS[CODE_VERSION], (
        f"the probes' outputs changed (digest {d}, version {CODE_VERSION} recorded {DIGESTS[CODE_VERSION]}): bump "
        f"CODE_VERSION in sparsedepth/probes/suite.py and record the new digest here, so cached results are re-probed")


def test_the_digest_sees_a_changed_reading():
    out = probe_outputs()
    changed = json.loads(json.dumps(rounded(out)))
    first = next(k for k in changed if k not in ("timings", "meta"))
    changed[first + "_new"] = 1.0  # a new reading, as when a probe gains one
    assert digest(changed) != digest(out)
