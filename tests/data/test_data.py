"""Data pipeline: corpus readers, BPE, cached shards, deterministic batches and every DataError case."""
from __future__ import annotations

import json
import lzma
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    import sparsedepth  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from sparsedepth.config import DataConfig
from sparsedepth.data import (DataError, TokenData, get_batch, load_documents, prepare_data, split_documents,
                              train_bpe, val_windows)
from sparsedepth.data import shards

SEP = "\n<|endoftext|>\n"


def make_docs(n: int) -> list[str]:
    rng = np.random.default_rng(n)
    words = ["depth", "sparsity", "layer", "norm", "the", "of", "expert", "attention", "café", "naïve", "数据"]
    return [f"Document {i}.\n" + " ".join(rng.choice(words, size=20 + i % 7)) + f"\nEnd {i}." for i in range(n)]


def write_txt(path: Path, docs: list[str]) -> Path:
    text = SEP.join(docs) + "\n"
    if path.name.endswith(".xz"):
        path.write_bytes(lzma.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def cfg_for(tmp_path: Path, corpus: str | Path, **kw) -> DataConfig:
    kw.setdefault("vocab_size", 300)
    return DataConfig(corpus=str(corpus), cache_dir=str(tmp_path / "cache"), **kw)


def split_at_eos(data: TokenData, tokens: np.ndarray) -> list[str]:
    ends = np.flatnonzero(tokens == data.eos_id)
    assert len(ends) and ends[-1] == len(tokens) - 1, "every document must end with EOS"
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [data.decode(tokens[s:e]) for s, e in zip(starts, ends)]


# ---------------------------------------------------------------- tokenizer and shards

def test_bpe_round_trip():
    tok = train_bpe(make_docs(30), vocab_size=300, progress=False)
    assert tok.token_to_id("<|endoftext|>") == 0
    for text in ["Hello world", "  leading spaces\n\n\ttabs  ", "naïve café 数据 🙂 ∑x²", "UPPER_case-123!?"]:
        assert tok.decode(tok.encode(text).ids) == text


def test_shard_round_trip(tmp_path):
    docs = ["First document.\nTwo lines.", "Second one, with ünïcödé.", "Third\n\nhas a blank line."]
    data = prepare_data(cfg_for(tmp_path, write_txt(tmp_path / "c.txt", docs)), progress=False)
    assert data.train.dtype == np.uint16 and data.eos_id == 0
    val_idx = data.meta["val_doc_indices"]
    train_docs = [d for i, d in enumerate(docs) if i not in val_idx]
    assert data.meta["n_docs"] == {"train": 2, "val": 1}
    assert split_at_eos(data, data.train) == train_docs
    assert data.decode(data.train) == "".join(d + "<|endoftext|>" for d in train_docs)
    assert split_at_eos(data, data.val) == [docs[i] for i in val_idx]
    assert data.meta["n_tokens"]["train"] == len(data.train)


def test_split_disjoint_and_complete(tmp_path):
    docs = make_docs(40)
    data = prepare_data(cfg_for(tmp_path, write_txt(tmp_path / "c.txt.xz", docs), val_fraction=0.2), progress=False)
    train, val = split_at_eos(data, data.train), split_at_eos(data, data.val)
    assert len(val) == 8 and len(train) == 32
    assert not set(train) & set(val) and set(train) | set(val) == set(docs)
    tr, va = split_documents(1000, 0.05, seed=1)
    assert len(va) == 50 and not set(tr) & set(va) and len(set(tr) | set(va)) == 1000
    assert split_documents(2, 0.01, 0)[1].size == 1  # at least one validation document


def test_cache_reused(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, write_txt(tmp_path / "c.txt", make_docs(20)))
    first = prepare_data(cfg, progress=False)
    bin_path = Path(first.train.filename)
    mtime = bin_path.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("re-tokenised despite a cache hit")

    monkeypatch.setattr(shards, "_tokenize", boom)
    monkeypatch.setattr(shards, "load_documents", boom)
    second = prepare_data(cfg, progress=False)  # boom proves the cache hit; no wall-clock bound (it flakes)
    assert bin_path.stat().st_mtime_ns == mtime and second.key == first.key
    assert np.array_equal(second.train, first.train) and isinstance(second.train, np.memmap)
    assert not [p for p in bin_path.parent.parent.iterdir() if ".tmp-" in p.name]  # no leftovers
    assert shards.cache_key(cfg_for(tmp_path, cfg.corpus, vocab_size=320)) != first.key
    assert shards.cache_key(cfg_for(tmp_path, cfg.corpus, split_seed=7)) != first.key


def test_killed_run_leaves_no_cache(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, write_txt(tmp_path / "c.txt", make_docs(6)))
    real = shards._tokenize

    def dies_on_val(tok, docs, eos, path, desc, progress):
        real(tok, docs, eos, path, desc, progress)
        if desc == "val":
            raise KeyboardInterrupt

    monkeypatch.setattr(shards, "_tokenize", dies_on_val)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg, progress=False)
    assert list((tmp_path / "cache" / "tokens").iterdir()) == []  # neither a half cache nor a temp folder
    monkeypatch.setattr(shards, "_tokenize", real)
    assert prepare_data(cfg, progress=False).meta["n_docs"]["train"] == 5


# ---------------------------------------------------------------- batches

def test_batches_deterministic():
    tokens = np.arange(5000, dtype=np.uint16)
    x, y = get_batch(tokens, seq_len=16, batch_size=8, seed=3, step=5)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)
    x2, y2 = get_batch(tokens, 16, 8, seed=3, step=5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, get_batch(tokens, 16, 8, seed=3, step=6)[0])
    assert not torch.equal(x, get_batch(tokens, 16, 8, seed=4, step=5)[0])
    # the final token is reachable and never overrun
    xs = get_batch(np.arange(18, dtype=np.uint16), 16, 64, seed=0, step=0)[1]
    assert xs.max().item() == 17


def test_rank_slices_concatenate():
    tokens = np.arange(10_000, dtype=np.uint16)
    full = get_batch(tokens, 32, 12, seed=1, step=9)
    for world in (2, 3, 4):
        parts = [get_batch(tokens, 32, 12, seed=1, step=9, rank=r, world_size=world) for r in range(world)]
        assert all(p[0].shape == (12 // world, 32) for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), full[0])
        assert torch.equal(torch.cat([p[1] for p in parts]), full[1])
    with pytest.raises(DataError, match="not divisible by world_size 5"):
        get_batch(tokens, 32, 12, seed=1, step=0, rank=0, world_size=5)


def test_val_windows():
    tokens = np.arange(1000, dtype=np.uint16)
    w = val_windows(tokens, seq_len=9, n=20, seed=0)
    assert w.shape == (20, 10) and w.dtype == torch.int64
    starts = w[:, 0].numpy()
    assert np.all(starts % 10 == 0) and len(set(starts)) == 20  # aligned, distinct: non-overlapping
    assert torch.equal(w, val_windows(tokens, 9, 20, seed=0))
    assert val_windows(tokens[:50], 9, 20).shape == (20, 10)  # short split: random offsets


# ---------------------------------------------------------------- errors

def test_error_missing_and_unknown(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt.*does not exist"):
        load_documents(str(tmp_path / "nope.txt"))
    (tmp_path / "c.docx").write_text("x")
    with pytest.raises(DataError, match=r"c\.docx.*unknown file type.*\.jsonl"):
        load_documents(str(tmp_path / "c.docx"))
    with pytest.raises(DataError, match=r"gone\.json.*does not exist.*gpt-neox"):
        prepare_data(cfg_for(tmp_path, "embedded", tokenizer=str(tmp_path / "gone.json")), progress=False)


def test_error_empty(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n<|endoftext|>\n\n")
    with pytest.raises(DataError, match=r"empty\.txt.*empty"):
        load_documents(str(tmp_path / "empty.txt"))
    (tmp_path / "one.txt").write_text("a single document without separators")
    with pytest.raises(DataError, match="at least 2"):
        prepare_data(cfg_for(tmp_path, tmp_path / "one.txt"), progress=False)


def test_error_non_utf8(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good doc\n<|endoftext|>\nline one\ncaf\xe9 latin-1\n")
    with pytest.raises(DataError, match=r"bad\.txt.*UTF-8.*byte offset 35 \(line 4\).*iconv"):
        load_documents(str(bad))
    assert load_documents(str(bad), max_docs=1) == ["good doc"]  # lazily read: stops before the bad bytes


def test_error_vocab_too_large(tmp_path):
    from tokenizers import Tokenizer, models

    vocab = {"<|endoftext|>": 0, "[UNK]": 1, **{f"t{i}": i + 2 for i in range(70_000)}}
    path = tmp_path / "huge.json"
    Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")).save(str(path))
    corpus = write_txt(tmp_path / "c.txt", make_docs(5))
    with pytest.raises(DataError, match=r"huge\.json.*70002 ids.*65536"):
        prepare_data(cfg_for(tmp_path, corpus, tokenizer=str(path)), progress=False)


def test_error_seq_len_longer_than_val(tmp_path):
    data = prepare_data(cfg_for(tmp_path, write_txt(tmp_path / "c.txt", make_docs(10))), progress=False)
    n = len(data.val)
    msg = rf"seq_len={n} needs {n + 1} tokens.*val\.bin\) has only {n} tokens.*val_fraction"
    with pytest.raises(DataError, match=msg):
        val_windows(data.val, seq_len=n, n=4)
    with pytest.raises(DataError, match=rf"seq_len={n}"):
        get_batch(data.val, seq_len=n, batch_size=2, seed=0, step=0)
    assert val_windows(data.val, seq_len=n - 1, n=2).shape == (2, n)


def test_error_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"hf:some/dataset.*HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0"):
        load_documents("hf:some/dataset:cfg")


# ---------------------------------------------------------------- other formats and sources

def test_jsonl_parquet_arrow_and_folder(tmp_path):
    pytest.importorskip("datasets")  # optional dependency: only the jsonl/json/parquet/arrow/hf readers need it
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = make_docs(6)
    cache = str(tmp_path / "dscache")
    jl = tmp_path / "c.jsonl"
    jl.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
    assert load_documents(str(jl), cache_dir=cache) == docs
    assert load_documents(str(jl), max_docs=2, cache_dir=cache) == docs[:2]
    pq.write_table(pa.table({"text": docs}), tmp_path / "c.parquet")
    assert load_documents(str(tmp_path / "c.parquet"), cache_dir=cache) == docs
    with pa.OSFile(str(tmp_path / "c.arrow"), "wb") as f, pa.ipc.new_stream(f, pa.schema([("text", pa.string())])) as w:
        w.write_table(pa.table({"text": docs}))
    assert load_documents(str(tmp_path / "c.arrow"), cache_dir=cache) == docs
    pq.write_table(pa.table({"body": docs}), tmp_path / "nofield.parquet")
    with pytest.raises(DataError, match=r"nofield\.parquet.*no 'text' field"):
        load_documents(str(tmp_path / "nofield.parquet"), cache_dir=cache)
    folder = tmp_path / "folder"
    folder.mkdir()
    write_txt(folder / "a.txt", docs[:3])
    write_txt(folder / "b.txt.xz", docs[3:])
    assert load_documents(str(folder)) == docs
    assert load_documents(str(folder), max_docs=4) == docs[:4]
    assert any(Path(cache).iterdir())


def test_embedded_small(tmp_path):
    data = prepare_data(cfg_for(tmp_path, "embedded", vocab_size=512, max_docs=200), progress=False)
    assert data.meta["n_docs"] == {"train": 190, "val": 10}
    assert data.vocab_size == 512 and int(data.train.max()) < 512
    assert data.meta["n_tokens"]["val"] > 1000
    text = "The EP was self-released on 9 May 2011."
    assert data.decode(data.encode(text)) == text
    assert val_windows(data.val, 64, 8).shape == (8, 65)


def test_packaged_tokenizer(tmp_path):
    docs = make_docs(8)
    data = prepare_data(cfg_for(tmp_path, write_txt(tmp_path / "c.txt", docs), tokenizer="gpt-neox"), progress=False)
    assert data.eos_id == 0 and data.vocab_size == 50280
    assert set(split_at_eos(data, data.train)) | set(split_at_eos(data, data.val)) == set(docs)
    assert not (tmp_path / "cache" / "tokenizers").exists()  # nothing trained


def test_relative_data_paths_start_at_the_given_root(tmp_path):
    from sparsedepth.data import at_root

    cfg = DataConfig(corpus=".data/corpus.txt.xz", cache_dir=".cache/sparsedepth")
    rooted = at_root(cfg, tmp_path)
    assert rooted.corpus == str(tmp_path / ".data/corpus.txt.xz")
    assert rooted.cache_dir == str(tmp_path / ".cache/sparsedepth")
    assert at_root(cfg, None) is cfg  # no root: relative to the current folder, as before
    for named in ("embedded", "hf:wikitext"):  # names, not paths
        assert at_root(DataConfig(corpus=named), tmp_path).corpus == named
    absolute = DataConfig(corpus=str(tmp_path / "c.txt"), cache_dir=str(tmp_path / "cache"))
    assert at_root(absolute, tmp_path / "elsewhere") == absolute


def test_glob_pattern_reads_the_files_it_names_in_order(tmp_path):
    """A corpus of several shards given as one pattern (the gpu-long rung's three Wikipedia shards)."""
    docs = make_docs(9)
    for i in (2, 0, 1):  # written out of order: the documents still come in the sorted files' order
        write_txt(tmp_path / f"shard.{i:02d}.txt.xz", docs[3 * i:3 * i + 3])
    write_txt(tmp_path / "shard.03.txt.xz", ["not named by the pattern"])
    assert load_documents(str(tmp_path / "shard.0[0-2].txt.xz")) == docs
    assert load_documents(str(tmp_path / "shard.*.txt.xz"))[-1] == "not named by the pattern"
    with pytest.raises(DataError, match=r"pattern .*matches no file"):
        load_documents(str(tmp_path / "other.0[0-2].txt.xz"))
    data = prepare_data(cfg_for(tmp_path, tmp_path / "shard.0[0-2].txt.xz"), progress=False)
    assert sorted(split_at_eos(data, np.concatenate([data.train, data.val]))) == sorted(docs)
