"""Tokenizers: a byte-level BPE trained on the training split, or a given ``tokenizer.json``.

Either way the end-of-document token is ``<|endoftext|>`` and every id must fit a uint16 shard.
"""
from __future__ import annotations

import hashlib
import lzma
import os
import sys
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..atomic import atomic_write_text
from .corpus import SEPARATOR, DataError

EOS_TOKEN = SEPARATOR
UINT16_LIMIT = 65536


def docs_hash(docs: Sequence[str]) -> str:
    """Content hash of a document list (order and boundaries included)."""
    h = hashlib.sha256()
    for d in docs:
        b = d.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


# Tokenizers shipped inside the package (xz-compressed tokenizer.json), by name.
PACKAGED = {"gpt-neox": Path(__file__).parent / "tokenizers" / "gpt-neox-20b.json.xz"}


def tokenizer_identity(spec: str) -> str:
    """Cache-key identity of a tokenizer spec: "bpe", or the content hash of a tokenizer.json."""
    if spec == "bpe":
        return "bpe"
    return "file:" + hashlib.sha256(_tokenizer_path(spec).read_bytes()).hexdigest()


def _tokenizer_path(spec: str) -> Path:
    path = PACKAGED.get(spec) or Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"tokenizer {str(path)!r} does not exist; use tokenizer: bpe to train one, "
                        f"{' or '.join(repr(k) for k in PACKAGED)} for a packaged one, or a path to a tokenizer.json")
    return path


def id_space(tok: Tokenizer) -> int:
    """One more than the largest token id (what an embedding table must cover)."""
    return max(max(tok.get_vocab(with_added_tokens=True).values()) + 1, tok.get_vocab_size(with_added_tokens=True))


def check_tokenizer(tok: Tokenizer, where: str) -> tuple[int, int]:
    """(vocab size, EOS id), raising DataError if ids overflow uint16 or there is no ``<|endoftext|>``."""
    size = id_space(tok)
    if size > UINT16_LIMIT:
        raise DataError(f"tokenizer {where!r} has {size} ids, more than the {UINT16_LIMIT} a uint16 shard holds; "
                        f"use a smaller vocabulary (tokenizer: bpe with vocab_size <= 65536)")
    eos = tok.token_to_id(EOS_TOKEN)
    if eos is None:
        raise DataError(f"tokenizer {where!r} has no {EOS_TOKEN!r} token to end documents with; add it as a "
                        f"special token or use tokenizer: bpe")
    return size, eos


def load_tokenizer_file(spec: str) -> Tokenizer:
    path = _tokenizer_path(spec)
    try:
        if path.suffix == ".xz":
            tok = Tokenizer.from_str(lzma.decompress(path.read_bytes()).decode("utf-8"))
        else:
            tok = Tokenizer.from_file(str(path))
    except Exception as e:
        raise DataError(f"tokenizer {str(path)!r} is not a valid tokenizer.json ({e}); pass a file saved by "
                        f"the `tokenizers` library") from e
    check_tokenizer(tok, str(path))
    return tok


def train_bpe(docs: Sequence[str], vocab_size: int, progress: bool = True) -> Tokenizer:
    """Byte-level BPE (GPT-2 style, exact round trip) with ``<|endoftext|>`` as id 0."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],  # listed first, so it gets id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text stays encodable
        show_progress=progress,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    return tok


def get_tokenizer(spec: str, vocab_size: int, train_docs: Sequence[str], cache_dir: str | os.PathLike,
                  progress: bool = True) -> Tokenizer:
    """The tokenizer of a DataConfig: a cached/trained BPE for "bpe" (keyed by train-split hash and vocab
    size under ``cache_dir/tokenizers``), else the tokenizer.json at ``spec``."""
    if spec != "bpe":
        return load_tokenizer_file(spec)
    key = hashlib.sha256(f"{docs_hash(train_docs)}|{vocab_size}".encode()).hexdigest()[:16]
    path = Path(cache_dir) / "tokenizers" / f"bpe-{vocab_size}-{key}.json"
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as e:  # a damaged cache file: train again (same documents, same tokenizer)
            print(f"warning: cached tokenizer {str(path)!r} is damaged ({type(e).__name__}); retraining it",
                  file=sys.stderr, flush=True)
    tok = train_bpe(train_docs, vocab_size, progress)
    check_tokenizer(tok, "bpe")
    atomic_write_text(path, tok.to_str())
    return tok
