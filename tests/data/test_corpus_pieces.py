"""scripts/corpus_pieces.py: a corpus split into document-aligned pieces for transfer and put back together."""
from __future__ import annotations

import lzma
import random

import pytest

from conftest import load_script
from sparsedepth.data import load_documents

pieces = load_script("corpus_pieces")
KiB = 1024


def shard(path, n_docs: int, seed: int) -> list[str]:
    """A .txt.xz of random-letter documents (they compress little, so a few KiB make several pieces)."""
    rng = random.Random(seed)
    docs = [f"doc {seed}.{i}\n" + "".join(rng.choice("abcdefgh \n") for _ in range(rng.randint(200, 2000)))
            for i in range(n_docs)]
    path.write_bytes(lzma.compress("\n<|endoftext|>\n".join(docs).encode()))
    return docs


def test_split_send_join_gives_the_same_documents_and_text(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    files = [src / f"wiki.{i:02d}.txt.xz" for i in range(3)]
    for i, f in enumerate(files):
        shard(f, 40, i)
    out = tmp_path / "pieces"
    manifest = pieces.split(files, out, piece_mb=8 / 1024, send_mb=24 / 1024)
    sends = sorted(out.glob("send-*"))
    assert len(sends) > 1
    for folder in sends:  # every transfer under its limit, each with the manifest
        assert sum(p.stat().st_size for p in folder.glob("*.xz")) <= 24 * KiB and (folder / "MANIFEST.json").is_file()
    for f in files:
        entries = manifest["sources"][f.name]["pieces"]
        assert len(entries) > 1 and all(e["bytes"] <= 8 * KiB for e in entries)
        # each piece is a corpus of whole documents, and in order they are the source's documents
        got = [d for e in entries for d in load_documents(str(next(out.rglob(e["file"]))))]
        assert got == load_documents(str(f))
    assert pieces.main(["verify", str(out)]) == 0
    back = tmp_path / "back"
    assert set(pieces.join(out, back)) == {f.name for f in files}
    for f in files:
        assert load_documents(str(back / f.name)) == load_documents(str(f))
        assert lzma.decompress((back / f.name).read_bytes()) == lzma.decompress(f.read_bytes())


def test_a_damaged_or_missing_piece_is_named_and_nothing_is_written(tmp_path, capsys):
    f = tmp_path / "c.txt.xz"
    shard(f, 30, 7)
    out = tmp_path / "pieces"
    pieces.split([f], out, piece_mb=8 / 1024, send_mb=60)
    first = sorted(out.rglob("*.part-*.txt.xz"))[0]
    first.write_bytes(first.read_bytes()[:-1] + b"\0")
    assert pieces.main(["join", str(out), "--out", str(tmp_path / "back")]) == 2
    assert "c.part-0000.txt.xz does not match its SHA-256" in capsys.readouterr().err
    assert not (tmp_path / "back").exists()
    first.unlink()
    with pytest.raises(pieces.PiecesError, match="c.part-0000.txt.xz is missing"):
        pieces.join(out, tmp_path / "back", write=False)
    with pytest.raises(pieces.PiecesError, match="is not empty"):
        pieces.split([f], out, piece_mb=8 / 1024, send_mb=60)


def test_sources_cut_in_parallel_give_the_same_pieces(tmp_path):
    files = [tmp_path / f"wiki.{i:02d}.txt.xz" for i in range(3)]
    for i, f in enumerate(files):
        shard(f, 30, i)
    one = pieces.split(files, tmp_path / "one", piece_mb=8 / 1024, send_mb=24 / 1024, jobs=1)
    three = pieces.split(files, tmp_path / "three", piece_mb=8 / 1024, send_mb=24 / 1024, jobs=3)
    assert one == three
    got = {p.relative_to(tmp_path / "three"): p.read_bytes() for p in (tmp_path / "three").rglob("*") if p.is_file()}
    assert got == {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*") if p.is_file()}
