"""Reading a pretraining corpus into a list of documents, and splitting it into train / validation.

Sources: "embedded" (the Wikipedia sample shipped in this package), a local file or folder (.txt /
.txt.xz with ``<|endoftext|>`` separator lines; .jsonl / .json (also gzipped) / .csv / .parquet / .arrow
with a "text" field; or a ``datasets.save_to_disk`` folder of a Dataset or DatasetDict), or
``hf:NAME[:config]`` for a hub dataset when online. Every format goes through one document filter
(``keep_documents``): a document is a string that is not blank, whatever file it came from.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import lzma
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UserError, one_line

# The hub is unreachable on our machines: default to offline so `datasets` never waits on the network.
# A user with internet sets HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 before running.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

EMBEDDED = Path(__file__).resolve().parent / "corpus" / "wiki-sample.txt.xz"
SEPARATOR = "<|endoftext|>"
DEFAULT_DATASETS_CACHE = os.path.join(".cache", "sparsedepth", "datasets")
_TEXT_SUFFIXES = (".txt", ".txt.xz")
_DATASETS_SUFFIXES = {".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json", ".csv": "csv",
                      ".parquet": "parquet", ".arrow": "arrow"}
_SUPPORTED = ".txt, .txt.xz, .jsonl, .json, .jsonl.gz, .json.gz, .csv, .parquet, .arrow"


class DataError(UserError, ValueError):
    """Bad data input; the message names the file (or setting) and how to fix it."""


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(_TEXT_SUFFIXES):
        return "text"
    return next((kind for suffix, kind in _DATASETS_SUFFIXES.items() if name.endswith(suffix)), None)


def _is_saved_dataset(path: Path) -> bool:
    """A ``save_to_disk`` folder: of a Dataset (state.json + dataset_info.json) or a DatasetDict."""
    return path.is_dir() and ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()
                              or (path / "dataset_dict.json").is_file())


def keep_documents(values, where: str) -> Iterator[str]:
    """The documents among ``values`` (one per row or separator-delimited block of ``where``): non-blank
    strings. A value that is not a string is an error naming its row, never silently text."""
    for row, v in enumerate(values):
        if not isinstance(v, str):
            if v is None:
                continue  # a missing value (an empty CSV cell, JSON null) is an empty document
            raise DataError(f"corpus {where!r}: row {row} has a 'text' value of type {type(v).__name__} "
                            f"({str(v)[:40]!r}), not a string; make every 'text' value a string")
        if v.strip():
            yield v


def resolve_files(source: str) -> list[Path]:
    """The corpus files behind a local ``source``: a file, every supported file under a folder, or the files a
    glob pattern names (``.data/wiki-en-2019.0[0-2].txt.xz``), sorted so their documents come in one order."""
    path = EMBEDDED if source == "embedded" else Path(source).expanduser()
    if not path.exists() and any(c in source for c in "*?["):
        matches = sorted(Path(m) for m in glob.glob(str(path)))
        if not matches:
            raise DataError(f"corpus pattern {source!r} matches no file; check the folder and names, or pass an "
                            f"existing file or folder")
        return [f for m in matches for f in resolve_files(str(m))]
    if not path.exists():
        raise DataError(f"corpus {str(path)!r} does not exist; pass an existing file or folder ({_SUPPORTED}), "
                        f"'embedded', or hf:NAME")
    if path.is_file() or _is_saved_dataset(path):
        if path.is_file() and _suffix_kind(path) is None:
            raise DataError(f"corpus {str(path)!r}: unknown file type; supported are .txt, .txt.xz (documents "
                            f"separated by a '{SEPARATOR}' line) and {_SUPPORTED.split(', ', 2)[2]} ('text' field)")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and _suffix_kind(p) and not p.name.startswith("."))
    if not files:
        raise DataError(f"corpus folder {str(path)!r} holds no {_SUPPORTED} files; add some or point corpus at "
                        f"a file")
    return files


def fingerprint(source: str) -> str:
    """A cheap identity of the corpus for cache keys: the content hash of the (6.7 MB) embedded sample,
    path + size + mtime of local files (hashing GBs on every start would defeat the cache), the name for hf:."""
    if source.startswith("hf:"):
        return source
    if source == "embedded":
        return "embedded:" + hashlib.sha256(EMBEDDED.read_bytes()).hexdigest()
    parts = []
    for f in resolve_files(source):
        st = f.stat()
        parts.append(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _iter_text_docs(path: Path) -> Iterator[str]:
    """Documents of a .txt / .txt.xz file, split on lines holding only the separator.

    Read directly (lzma + binary lines) rather than with datasets' "text" loader: that one splits only by
    line, paragraph or whole file, not on a separator line. Reading bytes also lets a UTF-8 error report
    its exact byte offset and line, and lets max_docs stop early on a large shard.
    """
    opener = lzma.open if path.name.lower().endswith(".xz") else open
    sep = SEPARATOR.encode()
    try:
        with opener(path, "rb") as f:
            lines: list[bytes] = []
            offset = doc_offset = 0
            lineno = doc_line = 1
            for line in f:
                if line.rstrip(b"\r\n") == sep:
                    yield _decode_doc(lines, path, doc_offset, doc_line)
                    lines = []
                    doc_offset, doc_line = offset + len(line), lineno + 1
                else:
                    lines.append(line)
                offset += len(line)
                lineno += 1
            yield _decode_doc(lines, path, doc_offset, doc_line)
    except lzma.LZMAError as e:
        raise DataError(f"corpus {str(path)!r} is not a valid xz file ({e}); recompress it with `xz` or "
                        f"drop the .xz suffix") from e


def _decode_doc(lines: list[bytes], path: Path, offset: int, lineno: int) -> str:
    raw = b"".join(lines)
    nul = raw.find(b"\0")
    if nul >= 0:  # no text encoding has NUL bytes: re-encoding advice would be wrong for a binary file
        raise DataError(f"corpus {str(path)!r} is a binary file, not text (a NUL byte at byte offset "
                        f"{offset + nul}); point corpus at a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = lineno + raw.count(b"\n", 0, e.start)
        where = "decompressed " if path.name.lower().endswith(".xz") else ""
        raise DataError(f"corpus {str(path)!r} is not valid UTF-8: byte {raw[e.start:e.start + 1]!r} at "
                        f"{where}byte offset {offset + e.start} (line {line}); re-encode the file as UTF-8 "
                        f"(e.g. `iconv -f latin1 -t utf-8`)") from e
    # the newline before a separator line belongs to the separator ("\n<|endoftext|>\n")
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


class _LogCapture(logging.Handler):
    """Holds what `datasets` logs while reading, in place of its own output: its json reader logs the row a
    parse error happened in, then raises a different error without it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[_LogCapture]:
    """No `datasets` progress bars or log lines while a corpus is read; its errors are captured."""
    import datasets

    lib = logging.getLogger("datasets")
    handlers, capture = lib.handlers[:], _LogCapture()
    bars = datasets.is_progress_bar_enabled()
    lib.handlers = [capture]
    datasets.disable_progress_bars()
    try:
        yield capture
    finally:
        lib.handlers = handlers
        if bars:
            datasets.enable_progress_bars()


def _load_with_datasets(path: Path, kind: str, cache_dir: str, max_docs: int | None) -> list[str]:
    with _quiet_datasets() as log:
        try:
            ds = _open_dataset(path, kind, cache_dir)
        except Exception as e:  # datasets raises many types (ArrowInvalid, DatasetGenerationError, ...)
            cause = _root_cause(e)  # "An error occurred while generating the dataset" hides the row
            detail = log.messages[-1] if log.messages else f"{type(cause).__name__}: {one_line(cause)}"
            raise DataError(f"corpus {str(path)!r} could not be read as {kind}: {one_line(detail)[:300]}; "
                            f"check the file is valid UTF-8 {kind} with a 'text' field holding strings") from e
    if "text" not in ds.column_names:
        raise DataError(f"corpus {str(path)!r} has no 'text' field (columns: {ds.column_names}); rename the "
                        f"document column to 'text'")
    docs = []
    rows = (t for batch in ds.iter(batch_size=4096) for t in batch["text"])  # lazy: max_docs stops early
    for d in keep_documents(rows, str(path)):
        if max_docs is not None and len(docs) >= max_docs:
            break
        docs.append(d)
    return docs


def _open_dataset(path: Path, kind: str, cache_dir: str):
    import datasets

    if _is_saved_dataset(path):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        return ds
    return datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=cache_dir)


def _root_cause(e: BaseException) -> BaseException:
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    return e


def _load_hub(name: str, cache_dir: str, max_docs: int | None) -> list[str]:
    offline = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
               if os.environ.get(v, "1").upper() in ("1", "ON", "YES", "TRUE")]
    if offline:
        raise DataError(f"corpus 'hf:{name}' needs the Hugging Face hub but {' and '.join(offline)} is set (the "
                        f"default here); to go online run with HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0, or use a "
                        f"local file / 'embedded'")
    import datasets

    repo, _, config = name.partition(":")
    split = "train" if max_docs is None else f"train[:{max_docs}]"
    try:
        ds = datasets.load_dataset(repo, config or None, split=split, cache_dir=cache_dir)
    except Exception as e:
        raise DataError(f"corpus 'hf:{name}' could not be loaded: {type(e).__name__}: {e}; check the dataset "
                        f"name, config and your network") from e
    if "text" not in ds.column_names:
        raise DataError(f"corpus 'hf:{name}' has no 'text' column (columns: {ds.column_names})")
    return list(keep_documents(ds["text"], f"hf:{name}"))


def load_documents(source: str, max_docs: int | None = None, cache_dir: str | None = None) -> list[str]:
    """Documents (non-empty strings) of ``source``; only the first ``max_docs`` if given.

    ``cache_dir`` is where `datasets` keeps its Arrow conversions (default ``.cache/sparsedepth/datasets``
    under the working folder, never ``~/.cache``).
    """
    cache_dir = cache_dir or DEFAULT_DATASETS_CACHE
    if source.startswith("hf:"):
        docs = _load_hub(source[3:], cache_dir, max_docs)
        files: list[Path] = []
    else:
        files = resolve_files(source)
        docs = []
        for f in files:
            room = None if max_docs is None else max_docs - len(docs)
            if room is not None and room <= 0:
                break
            kind = "arrow" if _is_saved_dataset(f) else _suffix_kind(f)
            if kind == "text":
                for d in keep_documents(_iter_text_docs(f), str(f)):
                    docs.append(d)
                    if max_docs is not None and len(docs) >= max_docs:
                        break
            else:
                docs.extend(_load_with_datasets(f, kind, cache_dir, room))
    if not docs:
        where = source if not files else ", ".join(str(f) for f in files[:3])
        raise DataError(f"corpus {where!r} is empty (no non-blank documents); add text to it or choose another corpus")
    return docs[:max_docs] if max_docs is not None else docs


def split_documents(n_docs: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train / validation document indices (each sorted, so corpus order is kept).

    Split at the document level so no validation text leaks into training; at least one document each.
    """
    if n_docs < 2:
        raise DataError(f"the corpus has {n_docs} document(s) but a train/validation split needs at least 2; "
                        f"separate documents with a line holding only '{SEPARATOR}' or use more data")
    n_val = min(max(1, round(n_docs * val_fraction)), n_docs - 1)
    perm = np.random.default_rng(seed).permutation(n_docs)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
