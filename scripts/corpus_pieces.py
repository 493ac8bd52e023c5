"""Send a corpus too large for one transfer in document-aligned pieces, then put it back together and verify it.

    python3 scripts/corpus_pieces.py split .data/wiki-en-2019.0[0-2].txt.xz --out .data/pieces --send-mb 60
    # one transfer per folder: .data/pieces/send-0, .data/pieces/send-1, ... (each at most --send-mb MiB)
    python3 scripts/corpus_pieces.py join .data/pieces --out .data      # on the other machine, after the last

``split`` cuts each .txt.xz file's text right after a ``<|endoftext|>`` separator line, so every piece
is a whole-documents corpus of its own and the pieces' texts, in order, are the original text byte for byte.
Each piece is xz-compressed and at most ``--piece-mb`` MiB; the pieces are grouped into ``send-N`` folders of at
most ``--send-mb`` MiB, each with a copy of ``MANIFEST.json``: per source, the SHA-256 of its file and of its
text, and per piece its file, SHA-256, size and documents.

``join`` checks every piece against the manifest, writes each source as the concatenation of its pieces (a
multi-stream .xz, which every xz reader, Python's lzma included, reads as one text) and checks that the text's
SHA-256 equals the original's; nothing is written unless everything matches. The compressed bytes differ from
the original file's (other compression boundaries), the text does not: the loader sees the same documents.
``verify`` runs the same checks without writing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SEPARATOR = b"<|endoftext|>"  # sparsedepth.data.corpus.SEPARATOR, the loader's document separator line
MANIFEST = "MANIFEST.json"
MiB = 1 << 20


class PiecesError(Exception):
    """Something is missing or does not match; the message says what and how to fix it."""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def _documents(path: Path):
    """(bytes, ends_a_document) chunks of the text: each whole document with its separator line, then the rest."""
    chunk: list[bytes] = []
    with lzma.open(path, "rb") as f:
        for line in f:
            chunk.append(line)
            if line.rstrip(b"\r\n") == SEPARATOR:
                yield b"".join(chunk)
                chunk = []
    if chunk:
        yield b"".join(chunk)


def _compress_docs(docs: list[bytes], limit: int) -> list[tuple[bytes, int]]:
    """(xz bytes, documents) of ``docs`` as one piece, or halves of it while a piece is over ``limit`` bytes."""
    packed = lzma.compress(b"".join(docs))
    if len(packed) <= limit:
        return [(packed, len(docs))]
    if len(docs) == 1:
        raise PiecesError(f"one document compresses to {len(packed) / MiB:.1f} MiB, over the {limit / MiB:.1f} MiB "
                          f"piece limit; raise --piece-mb")
    half = len(docs) // 2
    return _compress_docs(docs[:half], limit) + _compress_docs(docs[half:], limit)


def _cut(src: Path, limit: int) -> tuple[dict, list[tuple[str, bytes]]]:
    """One source's manifest entry and its pieces (name, xz bytes), in order."""
    target = limit * 3  # text per piece before compression: Wikipedia text compresses about 3.6x; bigger ones halve
    text_sha, entries, pieces, docs, size = hashlib.sha256(), [], [], [], 0

    def flush() -> None:
        for packed, n in _compress_docs(docs, limit):
            name = f"{src.name[:-len('.txt.xz')]}.part-{len(entries):04d}.txt.xz"  # a corpus file itself
            entries.append({"file": name, "sha256": hashlib.sha256(packed).hexdigest(), "bytes": len(packed),
                            "documents": n})
            pieces.append((name, packed))

    for doc in _documents(src):
        text_sha.update(doc)
        docs.append(doc)
        size += len(doc)
        if size >= target:
            flush()
            docs, size = [], 0
    if docs:
        flush()
    return {"sha256": _sha256_file(src), "text_sha256": text_sha.hexdigest(), "pieces": entries}, pieces


def split(sources: list[Path], out: Path, piece_mb: float, send_mb: float, jobs: int | None = None) -> dict:
    """Write the pieces of ``sources`` into ``out/send-N/`` with the manifest; returns the manifest. The sources
    are cut in parallel (``jobs`` processes, default one per source up to the CPU count; xz compression is the
    whole cost); the result does not depend on ``jobs``."""
    if piece_mb > send_mb:
        raise PiecesError(f"--piece-mb {piece_mb:g} is larger than --send-mb {send_mb:g}; a piece must fit a transfer")
    if out.exists() and any(out.iterdir()):
        raise PiecesError(f"{out} is not empty; remove it or choose another --out")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise PiecesError(f"two sources share a file name ({', '.join(names)}); join writes them by name")
    for src in sources:
        if not src.is_file() or not src.name.endswith(".txt.xz"):
            raise PiecesError(f"{src} is not a .txt.xz file; give the corpus files to split (xz-compress a .txt "
                              f"first)")
    limit = int(piece_mb * MiB)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(sources)))
    if jobs == 1:
        cut = [_cut(src, limit) for src in sources]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            cut = list(pool.map(_cut, sources, [limit] * len(sources)))
    manifest: dict = {"separator": SEPARATOR.decode(),
                      "sources": {src.name: entry for src, (entry, _) in zip(sources, cut)}}
    pieces = [piece for _, source_pieces in cut for piece in source_pieces]
    # group the pieces, in order, into transfers of at most send_mb
    groups: list[list[tuple[str, bytes]]] = [[]]
    for name, packed in pieces:
        if groups[-1] and sum(len(p) for _, p in groups[-1]) + len(packed) > send_mb * MiB - 64 * 1024:
            groups.append([])
        groups[-1].append((name, packed))
    text = json.dumps(manifest, indent=1)
    for i, group in enumerate(groups):
        folder = out / f"send-{i}"
        folder.mkdir(parents=True)
        for name, packed in group:
            (folder / name).write_bytes(packed)
        (folder / MANIFEST).write_text(text)
    return manifest


def _read_manifest(folder: Path) -> dict:
    copies = sorted(folder.rglob(MANIFEST))
    if not copies:
        raise PiecesError(f"no {MANIFEST} under {folder}; send the send-N folders that `split` wrote")
    texts = {c.read_text() for c in copies}
    if len(texts) != 1:
        raise PiecesError(f"the {MANIFEST} copies under {folder} differ: pieces of two splits are mixed; send the "
                          f"folders of one split only")
    return json.loads(texts.pop())


def _check(folder: Path) -> dict[str, list[Path]]:
    """Every source's piece files, in order, each checked against the manifest (size and SHA-256)."""
    manifest = _read_manifest(folder)
    found = {p.name: p for p in folder.rglob("*.part-*.txt.xz")}
    problems, out = [], {}
    for src, entry in manifest["sources"].items():
        paths = []
        for piece in entry["pieces"]:
            path = found.get(piece["file"])
            if path is None:
                problems.append(f"{piece['file']} is missing")
            elif path.stat().st_size != piece["bytes"] or _sha256_file(path) != piece["sha256"]:
                problems.append(f"{piece['file']} does not match its SHA-256 (damaged in transfer; send it again)")
            else:
                paths.append(path)
        out[src] = paths
    if problems:
        raise PiecesError(f"{len(problems)} piece(s) not ready under {folder}: " + "; ".join(problems[:5]))
    return out


def join(folder: Path, out: Path, write: bool = True) -> dict[str, str]:
    """Check the pieces under ``folder`` and (``write``) put each source back as ``out/<name>``; returns
    {name: text SHA-256}. A source is written only when its text matches the original's SHA-256."""
    manifest = _read_manifest(folder)
    result = {}
    for src, paths in _check(folder).items():
        want = manifest["sources"][src]["text_sha256"]
        text_sha = hashlib.sha256()
        for p in paths:
            with lzma.open(p, "rb") as f:
                for block in iter(lambda: f.read(MiB), b""):
                    text_sha.update(block)
        if text_sha.hexdigest() != want:
            raise PiecesError(f"{src}: the pieces' text has SHA-256 {text_sha.hexdigest()[:12]}..., the original "
                              f"{want[:12]}...; split the original again")
        if write:
            out.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{src}.")
            try:
                with os.fdopen(fd, "wb") as f:
                    for p in paths:
                        f.write(p.read_bytes())
                os.replace(tmp, out / src)  # atomic: a reader never sees half a corpus file
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        result[src] = text_sha.hexdigest()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split", help="cut corpus files into document-aligned pieces grouped for transfer")
    s.add_argument("sources", nargs="+", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--piece-mb", type=float, default=16.0, help="largest piece in MiB (default 16)")
    s.add_argument("--send-mb", type=float, default=60.0, help="largest transfer folder in MiB (default 60)")
    s.add_argument("--jobs", type=int, default=None, help="processes cutting sources at once (default: one per "
                                                           "source, up to the CPU count)")
    j = sub.add_parser("join", help="check the pieces and write the corpus files back")
    j.add_argument("folder", type=Path)
    j.add_argument("--out", type=Path, required=True)
    v = sub.add_parser("verify", help="check the pieces and their text against the manifest, write nothing")
    v.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "split":
            manifest = split(args.sources, args.out, args.piece_mb, args.send_mb, args.jobs)
            for folder in sorted(args.out.glob("send-*")):
                size = sum(p.stat().st_size for p in folder.iterdir())
                print(f"{folder}: {len(list(folder.glob('*.xz')))} pieces, {size / MiB:.1f} MiB")
            print(f"{sum(len(e['pieces']) for e in manifest['sources'].values())} pieces of "
                  f"{len(manifest['sources'])} file(s); send each send-N folder, then run `join`")
        else:
            for name, sha in join(args.folder, getattr(args, "out", None), write=args.cmd == "join").items():
                print(f"{name}: text SHA-256 {sha} matches the original" + (" (written)" if args.cmd == "join" else ""))
    except PiecesError as e:
        print(f"corpus_pieces: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
