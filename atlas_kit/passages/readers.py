"""Reading passage files: format detection, the per-format line readers, and :func:`load_passages`.

Files are streamed record by record into Arrow (:meth:`Passages.from_rows`), so a corpus larger than
memory loads in bounded memory. Bad records fail loudly with the file, the line and the field.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import json
import logging
import os
import re
import sys
import weakref
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import datasets

from atlas_kit.passages.collection import Passages
from atlas_kit.passages.records import Row, check_row, detect_schema, record_to_row

__all__ = ["FORMATS", "load_passages"]

log = logging.getLogger(__name__)

FORMATS = ("auto", "atlas", "dpr", "beir", "contents", "arrow", "json")
_PROGRESS_MIN_BYTES = 16 << 20  # files smaller than this load in well under a second: no bar


# ---------------------------------------------------------------------- file readers
# Each reader yields (line number, row); line numbers make every error point at the culprit.
def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")


def _inner_suffix(path: Path) -> str:
    """The format-bearing suffix: ``psgs_w100.tsv.gz`` -> ``.tsv``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _first_char(path: Path) -> str:
    """First non-blank character of the file (after a BOM): tells a JSON list from JSON lines."""
    with _open_binary(path) as f:
        head = f.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return head[:1]


def _iter_jsonl(path: Path, schema: str) -> Iterator[tuple[int, Row]]:
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: invalid JSON (not UTF-8: {e.reason})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            if schema == "auto":
                schema = detect_schema(rec)
            yield lineno, record_to_row(rec, schema, where)


def _iter_json_list(path: Path, schema: str) -> Iterator[tuple[int, Row]]:
    """A ``[{...}, {...}]`` file, decoded one record at a time (never a list of every record).

    The text itself has to be read whole (JSON has no record boundaries to stream on), but a JSON
    list is a small-corpus format; big corpora come as jsonl or tsv. The records are decoded by the
    standard library (``json.JSONDecoder.raw_decode``); only the walk over the list is written here,
    because ``json.load`` would hold every record as a dict at once and its errors carry no record
    line, and neither ``datasets`` (``load_dataset("json")``: no line or field in its errors) nor
    ``Dataset.from_generator`` (it writes rows, it does not parse) reports where a bad record is.
    """
    with _open_binary(path) as f:
        try:
            doc = f.read().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:1: invalid JSON (not UTF-8: {e.reason})") from None
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\r\n]*")
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += doc.count("\n", counted, pos)
        counted = pos
        return line

    def fail(pos: int, what: str) -> ValueError:
        return ValueError(f"{path}:{line_at(pos)}: invalid JSON ({what})")

    pos = ws.match(doc, 0).end()
    if pos >= len(doc) or doc[pos] != "[":
        raise fail(pos, "expected a list of passage records")
    pos = ws.match(doc, pos + 1).end()
    if doc.startswith("]", pos):
        return
    while True:
        start = pos
        try:
            rec, pos = decoder.raw_decode(doc, pos)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        lineno = line_at(start)
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        if schema == "auto":
            schema = detect_schema(rec)
        yield lineno, record_to_row(rec, schema, where)
        pos = ws.match(doc, pos).end()
        if doc.startswith("]", pos):
            if doc[ws.match(doc, pos + 1).end():]:
                raise fail(ws.match(doc, pos + 1).end(), "extra data after the list")
            return
        if not doc.startswith(",", pos):
            raise fail(pos, "expected ',' or ']' between records")
        pos = ws.match(doc, pos + 1).end()


_DPR_HEADER = ["id", "text", "title"]


def _iter_tsv(path: Path) -> Iterator[tuple[int, Row]]:
    """DPR tsv ``id<TAB>text<TAB>title``; the header row is optional.

    One record per physical line (DPR's passages hold no newlines), so a stray ``"`` can never
    swallow the lines after it and every error names the right line. A field may be quoted as DPR
    writes it (``"a ""b"" c"``, csv style) and a ``"`` inside a field is an ordinary character;
    a field that *starts* with ``"`` but is not a complete quoted field is an error naming the
    line, rather than a guess. A header is recognised when its first row names the columns
    (``id``, ``text``[, ``title``] in any order); further named columns become metadata under their
    names, unnamed ones ``col3``, ``col4``...
    """
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default 128 KiB cap rejects long passages
    names = list(_DPR_HEADER)
    first = True
    with _open_binary(path) as raw:
        for lineno, data in enumerate(raw, 1):
            if lineno == 1 and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            try:
                line = data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 (byte {e.start + 1} of the line: {e.reason})") from None
            if not line.strip():
                continue
            try:
                cols = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_MINIMAL, strict=True))
            except csv.Error as e:
                raise ValueError(
                    f"{path}:{lineno}: malformed tsv ({e}): a field starting with '\"' must be one complete quoted "
                    "field, as DPR writes it (\"...\" with inner quotes doubled)") from None
            if first:
                first = False
                header = [c.strip().lower() for c in cols]
                if "id" in header and "text" in header and len(set(header)) == len(header):
                    names = [c.strip() for c in cols]
                    names = [n.lower() if n.lower() in _DPR_HEADER else n for n in names]
                    continue
            if len(cols) < len(names):
                raise ValueError(
                    f"{path}:{lineno}: expected {len(names)} tab-separated columns ({', '.join(names)}), got {len(cols)}"
                )
            rec = dict(zip(names, cols))
            pid, title, text, _ = check_row(rec["id"], rec.get("title"), rec["text"], f"{path}:{lineno}")
            meta = {k: v for k, v in rec.items() if k not in _DPR_HEADER}
            meta.update((f"col{i}", v) for i, v in enumerate(cols[len(names):], len(names)))
            yield lineno, (pid, title, text, meta)


@contextlib.contextmanager
def _gzip_errors(path: Path) -> Iterator[None]:
    """A truncated or corrupt ``.gz`` becomes an error that names the file."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({e or type(e).__name__})") from None


_loaded: "weakref.WeakValueDictionary[tuple, Passages]" = weakref.WeakValueDictionary()


def load_passages(source: str | os.PathLike | datasets.Dataset | Passages, format: str = "auto") -> Passages:
    """Load a passage corpus from any supported format into a memory-mapped :class:`Passages`.

    ``format``: ``"atlas"`` jsonl ``{"id","title","text"}`` (extra fields kept as metadata),
    ``"dpr"`` tsv ``id<TAB>text<TAB>title`` (header optional), ``"beir"`` ``corpus.jsonl``
    ``{"_id","title","text"}``, ``"contents"`` (Pyserini/FlashRAG ``{"id","contents"}``, title = first
    line), ``"json"`` (a list of such records), ``"arrow"`` (a :meth:`Passages.save` folder), or
    ``"auto"``: by extension (``.tsv`` -> dpr, folder -> arrow, ``.jsonl``/``.json`` -> the first
    record's keys); ``.gz`` files are read transparently. An HF ``datasets.Dataset`` is accepted too.

    Loading the same unchanged file again in one process returns the same collection instead of
    re-reading it. Malformed input raises ``ValueError("{path}:{line}: ...")``.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown passage format {format!r} (known: {', '.join(FORMATS)})")
    if isinstance(source, Passages):
        return source
    if isinstance(source, datasets.Dataset):
        return Passages.from_dataset(source)
    if isinstance(source, datasets.DatasetDict):
        raise ValueError(f"got a DatasetDict with splits {list(source)}; pass one split (e.g. ds['train'])")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"passage file not found: {path}")
    if path.is_dir():
        if format in ("auto", "beir") and not (path / "state.json").exists() and (path / "corpus.jsonl").is_file():
            return load_passages(path / "corpus.jsonl", format)  # a BEIR dataset folder
        if format not in ("auto", "arrow"):
            raise ValueError(f"{path} is a folder; format {format!r} reads a file")
        return Passages.load(path)
    if format == "arrow" or (format == "auto" and path.suffix.lower() == ".arrow"):
        # a single Arrow file in ``datasets``' stream format
        return Passages.from_dataset(datasets.Dataset.from_file(str(path), in_memory=False), str(path))
    stat = path.stat()
    if stat.st_size == 0:
        raise ValueError(f"{path}: no passages found (empty file)")
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, format)
    cached = _loaded.get(key)
    if cached is not None:
        return cached
    suffix = _inner_suffix(path)
    if format == "dpr" or (format == "auto" and suffix == ".tsv"):
        rows = _iter_tsv(path)
    else:
        schema = format if format in ("atlas", "beir", "contents") else "auto"
        with _gzip_errors(path):
            first = _first_char(path)
        if first == "[":
            rows = _iter_json_list(path, schema)
        elif first == "{" or format != "auto":
            rows = _iter_jsonl(path, schema)
        elif first == "":
            raise ValueError(f"{path}: no passages found (empty file)")
        else:
            raise ValueError(
                f"{path}: cannot tell the passage format (not JSON; name a DPR file *.tsv or pass format='dpr')"
            )
    with _gzip_errors(path):
        passages = Passages.from_rows(rows, str(path), lambda n: f"{path}:{n}", "line",
                                    stat.st_size >= _PROGRESS_MIN_BYTES)
    _loaded[key] = passages
    log.info("loaded %d passages from %s", len(passages), path)
    return passages
