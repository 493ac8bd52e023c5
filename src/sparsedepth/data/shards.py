"""Tokenised shards: flat uint16 ``train.bin`` / ``val.bin`` cached per config, and batches drawn from them.

Cache layout: ``<cache_dir>/tokens/<key>/{train.bin, val.bin, meta.json, tokenizer.json}``. The folder is
written under a temporary name and renamed into place, so it either exists complete or not at all.
In multi-process runs let rank 0 call ``prepare_data`` first (then a barrier): the rename keeps concurrent
writers safe, but each would tokenise.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from ..atomic import atomic_replace_dir, atomic_write_json, clean_stale_temps, make_temp_dir, read_json
from ..config import DataConfig
from ..errors import UserError, one_line
from ..faults import crash_point
from .corpus import DataError, fingerprint, load_documents, split_documents
from .tokenizer import check_tokenizer, get_tokenizer, tokenizer_identity

FORMAT_VERSION = 2  # 2: blank documents dropped in every format (1 kept them in .jsonl/.parquet)
_ENCODE_CHUNK = 512  # documents per encode_batch call: parallel enough, bounded memory for Encoding objects


@dataclass
class TokenData:
    """Train / validation token streams (uint16 memmaps, documents joined by EOS) and their tokenizer."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int  # ids are < vocab_size: a model needs an embedding at least this large
    eos_id: int
    tokenizer: Tokenizer
    key: str
    meta: dict[str, Any] = field(default_factory=dict)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor, skip_special_tokens: bool = False) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        elif isinstance(ids, np.ndarray):
            ids = ids.astype(np.int64).tolist()
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)


def cache_key(cfg: DataConfig) -> str:
    """Hash of everything that determines the shards; computed without reading the corpus text."""
    parts = {
        "format": FORMAT_VERSION,
        "corpus": fingerprint(cfg.corpus),
        "tokenizer": tokenizer_identity(cfg.tokenizer),
        "vocab_size": cfg.vocab_size,
        "max_docs": cfg.max_docs,
        "val_fraction": cfg.val_fraction,
        "split_seed": cfg.split_seed,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _tokenize(tok: Tokenizer, docs: list[str], eos: int, path: Path, desc: str, progress: bool) -> int:
    """Encode ``docs`` (EOS after each) straight into a uint16 file; returns the token count."""
    from tqdm.auto import tqdm

    # encode_batch_fast skips offset tracking (not needed here); older tokenizers only have encode_batch
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    n = 0
    with open(path, "wb") as f, tqdm(total=len(docs), desc=f"tokenizing {desc}", unit="doc",
                                     disable=not progress) as bar:
        for i in range(0, len(docs), _ENCODE_CHUNK):
            encs = encode(docs[i:i + _ENCODE_CHUNK], add_special_tokens=False)
            arr = np.array(list(chain.from_iterable(e.ids + [eos] for e in encs)), dtype=np.uint16)
            arr.tofile(f)
            n += arr.size
            bar.update(len(encs))
            crash_point("tokenize")
    return n


def _load_cached(folder: Path) -> TokenData:
    """The cached shards of ``folder``; DataError when a file is missing, damaged or of the wrong length."""
    try:
        meta = read_json(folder / "meta.json", "")
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        splits = {}
        for split in ("train", "val"):
            path = folder / f"{split}.bin"
            if path.stat().st_size != 2 * meta["n_tokens"][split]:
                raise DataError(f"{path.name} holds {path.stat().st_size} bytes, meta.json says "
                                f"{meta['n_tokens'][split]} uint16 tokens")
            splits[split] = np.memmap(path, dtype=np.uint16, mode="r")
        return TokenData(splits["train"], splits["val"], meta["vocab_size"], meta["eos_id"], tok, meta["key"], meta)
    except UserError:
        raise
    except Exception as e:  # a truncated tokenizer.json, a missing key, a missing file, ...
        raise DataError(f"{type(e).__name__}: {one_line(e)[:200]}") from e


def _load_or_discard(folder: Path) -> TokenData | None:
    """The cache in ``folder``; a damaged one is moved aside and removed (it is rebuilt from the corpus)."""
    try:
        return _load_cached(folder)
    except UserError as e:
        print(f"warning: token cache {str(folder)!r} is damaged ({one_line(e)}); rebuilding it", file=sys.stderr,
              flush=True)
        aside = make_temp_dir(folder.parent, prefix=f".{folder.name}.tmp-")
        os.replace(folder, aside / folder.name)  # one rename: other readers never see half a folder
        shutil.rmtree(aside, ignore_errors=True)
        return None


def at_root(cfg: DataConfig, root: str | os.PathLike | None) -> DataConfig:
    """``cfg`` with a relative corpus path and cache folder taken relative to ``root`` (None: as they are, so
    relative to the current folder). Config files name paths relative to the project, wherever a program runs."""
    if root is None:
        return cfg

    def under(path: str) -> str:
        p = Path(path).expanduser()
        return path if p.is_absolute() else str(Path(root) / p)

    local = cfg.corpus != "embedded" and not cfg.corpus.startswith("hf:")
    return dataclasses.replace(cfg, corpus=under(cfg.corpus) if local else cfg.corpus, cache_dir=under(cfg.cache_dir))


def prepare_data(cfg: DataConfig, progress: bool = True, root: str | os.PathLike | None = None) -> TokenData:
    """Load, split, tokenise and cache the corpus of ``cfg``; a cached config loads as memmaps at once.
    Relative paths of ``cfg`` are taken relative to ``root`` (see :func:`at_root`)."""
    cfg = at_root(cfg, root)
    key = cache_key(cfg)
    root = Path(cfg.cache_dir) / "tokens"
    folder = root / key
    clean_stale_temps(root)  # left by a tokenisation that was killed
    if folder.is_dir() and (data := _load_or_discard(folder)) is not None:
        return data

    t0 = time.perf_counter()
    docs = load_documents(cfg.corpus, cfg.max_docs, cache_dir=os.path.join(cfg.cache_dir, "datasets"))
    train_idx, val_idx = split_documents(len(docs), cfg.val_fraction, cfg.split_seed)
    train_docs, val_docs = [docs[i] for i in train_idx], [docs[i] for i in val_idx]
    t_load = time.perf_counter()
    tok = get_tokenizer(cfg.tokenizer, cfg.vocab_size, train_docs, cfg.cache_dir, progress)  # train split only
    vocab_size, eos = check_tokenizer(tok, cfg.tokenizer)
    t_tok = time.perf_counter()

    tmp = make_temp_dir(root, prefix=f".{key}.tmp-")
    try:
        n_train = _tokenize(tok, train_docs, eos, tmp / "train.bin", "train", progress)
        n_val = _tokenize(tok, val_docs, eos, tmp / "val.bin", "val", progress)
        tok.save(str(tmp / "tokenizer.json"))
        train_bytes = sum(len(d.encode("utf-8")) for d in train_docs)
        meta = {
            "format": FORMAT_VERSION,
            "key": key,
            "corpus": cfg.corpus,
            "corpus_fingerprint": fingerprint(cfg.corpus),
            "tokenizer": cfg.tokenizer,
            "vocab_size": vocab_size,
            "requested_vocab_size": cfg.vocab_size,
            "eos_id": eos,
            "max_docs": cfg.max_docs,
            "val_fraction": cfg.val_fraction,
            "split_seed": cfg.split_seed,
            "n_docs": {"train": len(train_docs), "val": len(val_docs)},
            "n_tokens": {"train": n_train, "val": n_val},
            "train_bytes_per_token": round(train_bytes / max(n_train, 1), 3),
            "val_doc_indices": val_idx.tolist(),  # into load_documents(corpus, max_docs); train = the rest
            "seconds": {"load": round(t_load - t0, 2), "tokenizer": round(t_tok - t_load, 2),
                        "encode": round(time.perf_counter() - t_tok, 2)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(tmp / "meta.json", meta)
        atomic_replace_dir(tmp, folder)  # False = another process finished first; its copy is identical
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _load_cached(folder)


def _too_short(tokens: np.ndarray, seq_len: int, what: str) -> DataError:
    name = getattr(tokens, "filename", None)
    where = f" ({name})" if name else ""
    return DataError(f"{what}: seq_len={seq_len} needs {seq_len + 1} tokens but the split{where} has only "
                     f"{len(tokens)} tokens; use a shorter seq_len, a larger val_fraction, or more documents "
                     f"(max_docs)")


def get_batch(tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, step: int, rank: int = 0,
              world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x and targets y (x shifted by one), int64 [batch_size // world_size, seq_len].

    Window starts for the whole global batch come from ``default_rng([seed, step])`` and rank r takes rows
    r*B/W:(r+1)*B/W, so a batch depends only on (seed, step): resumed and distributed runs see the same data.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"get_batch: rank {rank} must be in [0, world_size={world_size})")
    if batch_size % world_size:
        raise DataError(f"get_batch: batch_size {batch_size} is not divisible by world_size {world_size}; "
                        f"use a multiple of {world_size}")
    if seq_len + 1 > len(tokens):
        raise _too_short(tokens, seq_len, "get_batch")
    starts = np.random.default_rng([seed, step]).integers(0, len(tokens) - seq_len, size=batch_size)
    per = batch_size // world_size
    starts = starts[rank * per:(rank + 1) * per]
    buf = torch.from_numpy(tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64))
    return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()


def val_windows(tokens: np.ndarray, seq_len: int, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` fixed held-out windows, int64 [n, seq_len + 1] (inputs = [:, :-1], targets = [:, 1:]).

    Non-overlapping (a seeded choice of distinct aligned slots) when the split holds n windows, otherwise
    seeded random offsets, so a tiny validation split still evaluates.
    """
    if seq_len + 1 > len(tokens):
        raise _too_short(tokens, seq_len, "val_windows")
    width = seq_len + 1
    rng = np.random.default_rng(seed)
    slots = len(tokens) // width
    if slots >= n:
        starts = np.sort(rng.choice(slots, size=n, replace=False)) * width
    else:
        starts = rng.integers(0, len(tokens) - seq_len, size=n)
    return torch.from_numpy(tokens[starts[:, None] + np.arange(width)].astype(np.int64))
