"""Cached evaluations are keyed by ``eval.CODE_VERSION``: a change of the evaluation's outputs must bump it.

Perplexity and the zero-shot scoring run on a tiny model with fixed weights, windows and requests; the
digest of their outputs (floats rounded to 4 significant digits) is recorded here per code version. When the
outputs change, bump ``CODE_VERSION`` in ``sparsedepth/eval/__init__.py`` and record the new digest.
"""
from __future__ import annotations

import torch

from conftest import output_digest, tiny_config
from sparsedepth.eval import CODE_VERSION, MCDoc, mc_metrics, perplexity, score_tokens
from sparsedepth.model import build_model

DIGESTS = {1: "4820ad1239628839"}


def eval_outputs() -> dict:
    torch.manual_seed(0)
    model = build_model(tiny_config(n_layers=2))
    gen = torch.Generator().manual_seed(1)
    windows = torch.randint(0, 64, (4, 17), generator=gen)
    requests = [(torch.randint(0, 64, (n,), generator=gen).tolist(),
                 torch.randint(0, 64, (m,), generator=gen).tolist()) for n, m in ((5, 1), (7, 3), (3, 4), (9, 2))]
    scores = score_tokens(model, requests, batch_size=2)
    docs = [MCDoc("t", ("c",) * 2, (" ab", " abcd"), (2, 5), gold=1),
            MCDoc("t", ("c",) * 2, (" a", " bc"), (2, 3), gold=0)]
    return {"perplexity": perplexity(model, windows, batch_size=2), "scores": scores,
            "mc": mc_metrics(docs, [ll for ll, _ in scores])}


def test_eval_outputs_match_the_digest_of_their_code_version():
    d = output_digest(eval_outputs())
    assert CODE_VERSION in DIGESTS, f"record eval.CODE_VERSION's outputs: DIGESTS[{CODE_VERSION}] = {d!r}"
    assert d == DIGESTS[CODE_VERSION], (
        f"the evaluation's outputs changed (digest {d}, version {CODE_VERSION} recorded {DIGESTS[CODE_VERSION]}): "
        f"bump CODE_VERSION in sparsedepth/eval/__init__.py and record the new digest here, so cached results are "
        f"re-evaluated")
