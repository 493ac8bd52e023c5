"""Cached probe results are keyed by ``probes.CODE_VERSION``: a change of the probes' outputs must bump it.

The probes run on a tiny model with fixed weights and windows; the digest of their outputs (floats rounded
to 4 significant digits, timings left out) is recorded here per code version. When the outputs change,
bump ``CODE_VERSION`` in ``sparsedepth/probes/suite.py`` and record the new digest under the new number.
"""
from __future__ import annotations

import torch

from conftest import output_digest, tiny_config
from sparsedepth.model import build_model
from sparsedepth.probes import CODE_VERSION, run_probes

DIGESTS = {1: "dff446e217cf8bdc", 2: "54fe40931f48fe76"}


def digest(out: dict) -> str:
    """Of the readings only: timings vary, and meta names the settings and the torch version."""
    return output_digest({k: v for k, v in out.items() if k not in ("timings", "meta")})


def probe_outputs() -> dict:
    torch.manual_seed(0)
    model = build_model(tiny_config(n_layers=3, n_experts=4, top_k=2, expert_hidden=32))
    windows = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(1))
    return run_probes(model, windows, paper_compat=True, jacobian_windows=2, jacobian_seq_len=8,
                      attention_windows=2, tf32=False)


def test_probe_outputs_match_the_digest_of_their_code_version():
    d = digest(probe_outputs())
    assert CODE_VERSION in DIGESTS, f"record probes.CODE_VERSION's outputs: DIGESTS[{CODE_VERSION}] = {d!r}"
    assert d == DIGESTS[CODE_VERSION], (
        f"the probes' outputs changed (digest {d}, version {CODE_VERSION} recorded {DIGESTS[CODE_VERSION]}): bump "
        f"CODE_VERSION in sparsedepth/probes/suite.py and record the new digest here, so cached results are re-probed")


def test_the_digest_sees_a_changed_reading():
    out = probe_outputs()
    changed = {**out, "sparsity": {**out["sparsity"], "new_reading": 0.5}}  # as when a probe gains a reading
    assert digest(changed) != digest(out)
    nudged = {**out, "variance": {**out["variance"]}}
    key = next(k for k, v in out["variance"].items() if isinstance(v, list) and v and isinstance(v[0], float))
    nudged["variance"][key] = [v * 1.01 for v in out["variance"][key]]  # a changed definition
    assert digest(nudged) != digest(out)
