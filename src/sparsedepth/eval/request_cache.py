"""Tokenised zero-shot requests kept on disk, so that every run with the same tokenizer does not encode the
same 74,560 requests again (8.5 s on two CPU cores, 12 s on one: a third of a gpu-profile run's evaluation).

The cache file is named by a SHA-256 of the tokenizer's full JSON, the EOS id and every request's text, so a
changed task file, row limit or tokenizer reads as a miss, never as stale tokens. A damaged file is a miss
too (encoded again and rewritten atomically): the cache can only save time, never change a score.
"""
from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..atomic import atomic_write_bytes

TokenRequests = list[tuple[list[int], list[int]]]
FORMAT = b"sparsedepth-eval-requests-1"


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """The full serialisation of a ``tokenizers.Tokenizer`` (or a TokenData's); None for other tokenizers,
    whose requests are then not cached."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    to_str = getattr(tok, "to_str", None)
    return to_str() if callable(to_str) else None


def request_key(fingerprint: str, eos_id: int | None, requests: Sequence[tuple[str, str]]) -> str:
    h = hashlib.sha256(FORMAT + b"\0" + fingerprint.encode() + b"\0" + str(eos_id).encode())
    for context, continuation in requests:
        h.update(b"\0" + context.encode() + b"\1" + continuation.encode())
    return h.hexdigest()


def _pack(token_reqs: TokenRequests) -> bytes:
    parts = {}
    for side, i in (("ctx", 0), ("cont", 1)):
        seqs = [r[i] for r in token_reqs]
        parts[f"{side}_off"] = np.cumsum([0] + [len(s) for s in seqs], dtype=np.int64)
        parts[f"{side}_ids"] = np.fromiter((t for s in seqs for t in s), dtype=np.int32,
                                           count=int(parts[f"{side}_off"][-1]))
    buf = io.BytesIO()
    np.savez(buf, **parts)
    return buf.getvalue()


def _unpack(path: Path, n: int) -> TokenRequests:
    with np.load(path) as z:
        sides = []
        for side in ("ctx", "cont"):
            off, ids = z[f"{side}_off"].tolist(), z[f"{side}_ids"].tolist()
            if len(off) != n + 1 or off[-1] != len(ids):
                raise ValueError(f"{side}: {len(off) - 1} requests and {len(ids)} tokens, expected {n} requests")
            sides.append([ids[a:b] for a, b in zip(off[:-1], off[1:])])
    return list(zip(*sides)) if n else []


def cached_encode(requests: Sequence[tuple[str, str]], tokenizer: Any, eos_id: int | None,
                  encode_all: Callable[[], TokenRequests], cache_dir: str | Path | None) -> TokenRequests:
    """``encode_all()`` (the requests' (context ids, continuation ids)), read from ``cache_dir`` when an
    earlier call stored the same requests under the same tokenizer, stored there otherwise. No ``cache_dir``
    or a tokenizer without a serialisation: plain ``encode_all()``."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    if cache_dir is None or fingerprint is None:
        return encode_all()
    path = Path(cache_dir) / f"{request_key(fingerprint, eos_id, requests)}.npz"
    if path.exists():
        try:
            return _unpack(path, len(requests))
        except Exception as e:  # damaged or foreign file: encode again and replace it
            print(f"warning: eval request cache {str(path)!r} is unreadable ({type(e).__name__}); encoding again",
                  file=sys.stderr)
    token_reqs = encode_all()
    try:
        atomic_write_bytes(path, _pack(token_reqs))
    except OSError as e:  # a read-only or full disk costs the next run the encoding, nothing else
        print(f"warning: could not write the eval request cache {str(path)!r}: {e}", file=sys.stderr)
    return token_reqs
