"""Passage corpora: every common on-disk format read into one memory-mapped, id-addressable collection.

Retrieval corpora run from a few thousand to tens of millions of passages (DPR's Wikipedia split is
21M), so a corpus is never a Python list of dicts. Files are streamed in chunks into an Arrow file
that ``datasets`` memory-maps; only the id list and an id -> position map live in RAM. Bad records
fail loudly with the file, the line and the field, because a silently skipped or mangled passage
shows up much later as an unexplainable retrieval miss.
"""
from __future__ import annotations

import atexit
import contextlib
import csv
import gzip
import hashlib
import json
import logging
import operator
import os
import re
import shutil
import sys
import tempfile
import weakref
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import datasets
import pyarrow as pa

from atlas_kit.storage import pid_alive

__all__ = ["Passage", "Passages", "load_passages", "passage_text", "FORMATS"]

log = logging.getLogger(__name__)

FORMATS = ("auto", "atlas", "dpr", "beir", "contents", "arrow", "json")
COLUMNS = ("id", "title", "text", "metadata")
_SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])
_CHUNK = 10_000  # rows per Arrow record batch while streaming a file
_BATCH = 2_000  # rows per batched read when iterating a collection
_PROGRESS_MIN_BYTES = 16 << 20  # files smaller than this load in well under a second: no bar
# field names that carry the passage itself; in metadata they are nested under "metadata" on export
_RESERVED = frozenset({"id", "_id", "title", "text", "contents", "metadata"})

Row = tuple[str, str, str, dict]  # (id, title, text, metadata)


@dataclass(frozen=True)
class Passage:
    """One passage. ``metadata`` keeps every extra field of the source record (url, date, ...)."""

    id: str
    title: str
    text: str
    metadata: dict = field(default_factory=dict)


def passage_text(p: Passage | Any, with_title: bool = True) -> str:
    """The text a dense/sparse retriever embeds: ``"title text"`` (Atlas/Contriever convention).

    The title is left out when it is empty or ``with_title`` is false. Works for any object with
    ``.title`` and ``.text`` (Passage, index hits, ...), so every retriever embeds identical strings.
    """
    title = getattr(p, "title", "") or ""
    return f"{title} {p.text}" if with_title and title else p.text


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence ``datasets``' own per-operation progress bars (noise for small, fast operations)."""
    was_enabled = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _features() -> datasets.Features:
    return datasets.Features({c: datasets.Value("string") for c in COLUMNS})


def _dump_meta(meta: dict) -> str | None:
    # default=str: metadata from an HF dataset may hold dates or numpy scalars; keep them readable
    return json.dumps(meta, ensure_ascii=False, default=str) if meta else None


def _passages_from_columns(ids: list, titles: list, texts: list, metas: list) -> list[Passage]:
    return [
        Passage(pid, title or "", text or "", json.loads(meta) if meta else {})
        for pid, title, text, meta in zip(ids, titles, texts, metas)
    ]


def _passages_from_table(table: pa.Table) -> list[Passage]:
    return _passages_from_columns(*(table.column(c).to_pylist() for c in COLUMNS))


# ---------------------------------------------------------------------- temporary Arrow files
class _TempArrow:
    """Owns one temporary Arrow file; the file is deleted when the last collection using it is gone.

    Every ``Passages`` derived from a loaded file (select, remove, concat) holds a reference, so the
    file outlives the ``Passages`` that created it for as long as anything can still read it (an
    open memory map survives unlinking on POSIX, but pickling a dataset reopens it by path).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        weakref.finalize(self, _unlink_quiet, path)


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


_TMP_PREFIX = "atlas_kit-passages-"
_tmp_root: tuple[int, Path] | None = None


def _temp_root() -> Path:
    """A per-process scratch folder, removed at exit; folders left by killed processes are swept."""
    global _tmp_root
    pid = os.getpid()
    if _tmp_root is not None and _tmp_root[0] == pid and _tmp_root[1].is_dir():
        return _tmp_root[1]
    base = Path(tempfile.gettempdir())
    for stale in base.glob(f"{_TMP_PREFIX}*-*"):
        m = re.fullmatch(rf"{re.escape(_TMP_PREFIX)}(\d+)-.*", stale.name)
        if m and int(m.group(1)) != pid and not pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                if stale.stat().st_uid == os.getuid():
                    shutil.rmtree(stale, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{pid}-"))
    _tmp_root = (pid, root)

    def cleanup() -> None:
        if os.getpid() == pid:  # a forked child must not delete its parent's files
            shutil.rmtree(root, ignore_errors=True)

    atexit.register(cleanup)
    return root


# ---------------------------------------------------------------------- the collection
class Passages(Sequence):
    """An ordered, id-addressable passage collection backed by a ``datasets.Dataset``.

    Columns: id, title, text (strings) and metadata (a JSON string, or null for none), so that
    arbitrary extra fields survive Arrow. Loaded from disk it is memory-mapped: a multi-GB corpus
    costs little RAM. Collections are immutable; select/remove/concat return new ones.
    """

    dataset: datasets.Dataset

    def __init__(self, dataset: datasets.Dataset) -> None:
        dataset = _normalise_dataset(dataset)
        ids: list[str] = []
        pos: dict[str, int] = {}
        for batch in dataset.with_format("arrow").select_columns(["id"]).iter(batch_size=100_000):
            for pid in batch.column("id").to_pylist():
                if pid is None:
                    raise ValueError(f"passage at position {len(ids)} has a null id")
                if pid in pos:
                    raise ValueError(f"duplicate passage id {pid!r} (positions {pos[pid]} and {len(ids)})")
                pos[pid] = len(ids)
                ids.append(pid)
        self._init(dataset, ids, pos, ())

    def _init(self, dataset: datasets.Dataset, ids: list[str], pos: dict[str, int], owners: tuple) -> None:
        self.dataset = dataset
        self._arrow = dataset.with_format("arrow")  # batched reads return pyarrow tables: no per-row dicts
        self._ids = ids
        self._pos = pos
        self._owners = owners  # temporary Arrow files this collection reads from

    @classmethod
    def _trusted(cls, dataset: datasets.Dataset, ids: list[str], pos: dict[str, int] | None = None,
                 owners: tuple = ()) -> "Passages":
        """Construct without re-reading ids when the caller already has them (and checked them)."""
        self = cls.__new__(cls)
        if pos is None:
            pos = {pid: i for i, pid in enumerate(ids)}
        self._init(dataset, ids, pos, owners)
        return self

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, records: Iterable[Passage | dict]) -> "Passages":
        """From Passage objects or dicts with id, title, text[, metadata] (other keys become metadata).

        Builds an in-memory dataset: meant for small corpora, tests and generated data; use
        :func:`load_passages` for files.
        """
        cols: dict[str, list] = {c: [] for c in COLUMNS}
        for i, r in enumerate(records):
            if isinstance(r, Passage):
                pid, title, text, meta = _check_row(r.id, r.title, r.text, f"record {i}")
                meta = dict(r.metadata)
            elif isinstance(r, dict):
                pid, title, text, meta = _record_to_row(r, "atlas", f"record {i}")
            else:
                raise TypeError(f"record {i}: expected a Passage or a dict, got {type(r).__name__}")
            cols["id"].append(pid)
            cols["title"].append(title)
            cols["text"].append(text)
            cols["metadata"].append(_dump_meta(meta))
        return cls(datasets.Dataset.from_dict(cols, features=_features()))

    # ------------------------------------------------------------------ sequence protocol
    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int | slice) -> Passage | list[Passage]:  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(range(*i.indices(len(self))))
        i = operator.index(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"passage position {i} out of range for {n} passages")
        return _passages_from_table(self._arrow[i])[0]

    def __iter__(self) -> Iterator[Passage]:
        for batch in self._arrow.iter(batch_size=_BATCH):
            yield from _passages_from_table(batch)

    def __contains__(self, pid: object) -> bool:
        try:
            return pid in self._pos
        except TypeError:  # unhashable
            return False

    def __repr__(self) -> str:
        return f"Passages(n={len(self)})"

    @property
    def ids(self) -> list[str]:
        """Passage ids in order. The list is shared with the collection: do not modify it."""
        return self._ids

    def position(self, pid: str) -> int:
        try:
            return self._pos[pid]
        except (KeyError, TypeError):
            raise KeyError(f"unknown passage id {pid!r}") from None

    def get(self, pid: str) -> Passage:
        return self[self.position(pid)]  # type: ignore[return-value]

    def _check_positions(self, positions: Iterable[int]) -> list[int]:
        # negative positions are refused (not wrapped): FAISS pads missing results with -1, and
        # silently returning the last passage for them would be a nasty retrieval bug
        out = [operator.index(p) for p in positions]
        n = len(self)
        bad = next((p for p in out if not 0 <= p < n), None)
        if bad is not None:
            raise IndexError(f"passage position {bad} out of range for {n} passages")
        return out

    def take(self, positions: Sequence[int]) -> list[Passage]:
        """Fetch many passages with one Arrow gather (the search hot path). Order is kept."""
        positions = self._check_positions(positions)
        if not positions:
            return []
        return _passages_from_table(self._arrow[positions])

    def texts(self, with_title: bool = True) -> Iterator[str]:
        """Stream :func:`passage_text` of every passage from batched Arrow reads (for indexing)."""
        for batch in self._arrow.select_columns(["title", "text"]).iter(batch_size=_BATCH):
            for title, text in zip(batch.column("title").to_pylist(), batch.column("text").to_pylist()):
                yield f"{title} {text}" if with_title and title else text

    # ------------------------------------------------------------------ derived collections
    def select(self, positions: Sequence[int]) -> "Passages":
        """A new collection of the passages at ``positions`` (in that order; no data is copied)."""
        positions = self._check_positions(positions)
        seen: set[int] = set()
        for p in positions:
            if p in seen:
                raise ValueError(f"duplicate passage id {self._ids[p]!r}: position {p} selected twice")
            seen.add(p)
        ds = self.dataset.select(positions, keep_in_memory=True)  # in-memory indices: no cache files
        return Passages._trusted(ds, [self._ids[p] for p in positions], owners=self._owners)

    def concat(self, other: "Passages") -> "Passages":
        """This collection followed by ``other``; a shared id raises ValueError (ids must stay unique)."""
        dup = next((pid for pid in other.ids if pid in self._pos), None)
        if dup is not None:
            raise ValueError(f"duplicate passage id {dup!r}: it is already in the collection")
        if len(other) == 0:
            return self
        if len(self) == 0:
            return other
        ds = datasets.concatenate_datasets([self.dataset, other.dataset])
        pos = dict(self._pos)
        offset = len(self)
        pos.update((pid, offset + i) for i, pid in enumerate(other.ids))
        return Passages._trusted(ds, self._ids + other.ids, pos, owners=self._owners + other._owners)

    def remove(self, ids: Iterable[str]) -> "Passages":
        """A new collection without ``ids``; an unknown id raises KeyError (it usually means a typo)."""
        drop = {self.position(pid) for pid in ids}
        if not drop:
            return self
        return self.select([i for i in range(len(self)) if i not in drop])

    def checksum(self) -> str:
        """SHA-256 over (id, title, text) in order: identifies corpus content, stable across save/load.

        Each field is length-prefixed so that ("ab", "c") and ("a", "bc") hash differently.
        """
        return self.checksum_state().hexdigest()

    def checksum_state(self, after: Any = None) -> Any:
        """The running SHA-256 of :meth:`checksum`, continued from ``after`` (the state of the
        passages before these, left unchanged), so an append re-hashes only the new passages:
        ``b.checksum_state(a.checksum_state()).hexdigest() == a.concat(b).checksum()``."""
        h = after.copy() if after is not None else hashlib.sha256()
        for batch in self._arrow.select_columns(["id", "title", "text"]).iter(batch_size=_BATCH):
            cols = [batch.column(c).to_pylist() for c in ("id", "title", "text")]
            for pid, title, text in zip(*cols):
                for part in (pid, title or "", text or ""):
                    b = part.encode("utf-8")
                    h.update(len(b).to_bytes(8, "little"))
                    h.update(b)
        return h

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> None:
        """Write an Arrow folder (``datasets.save_to_disk``) into ``folder``.

        The caller creates ``folder`` and publishes it atomically (an index writes a temp folder and
        renames it). ``save_to_disk`` reads through any selection, so nothing is flattened first.
        """
        with quiet_datasets():
            self.dataset.save_to_disk(str(folder))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Passages":
        """Memory-mapped load of a folder written by :meth:`save` (or any ``save_to_disk`` folder)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"passage folder not found: {folder}")
        ds = datasets.load_from_disk(str(folder))
        if isinstance(ds, datasets.DatasetDict):
            if len(ds) != 1:
                raise ValueError(f"{folder}: holds a DatasetDict with splits {list(ds)}; load one split instead")
            ds = next(iter(ds.values()))
        return cls(ds) if _is_native(ds) else _from_hf_dataset(ds, str(folder))

    def to_jsonl(self, path: str | os.PathLike) -> None:
        """Write Atlas jsonl (id, title, text + metadata fields at top level), atomically.

        Metadata keys that would clash with the passage fields are nested under ``"metadata"``,
        which :func:`load_passages` merges back, so export -> load is lossless.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for p in self:
                    rec: dict[str, Any] = {"id": p.id, "title": p.title, "text": p.text}
                    nested = {k: v for k, v in p.metadata.items() if k in _RESERVED}
                    rec.update((k, v) for k, v in p.metadata.items() if k not in _RESERVED)
                    if nested:
                        rec["metadata"] = nested
                    f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            _unlink_quiet(tmp)
            raise


def _is_native(ds: datasets.Dataset) -> bool:
    """Whether ``ds`` already has exactly our string columns (then it is used as is, zero-copy)."""
    feats = ds.features
    names = set(ds.column_names)
    return {"id", "title", "text"} <= names <= set(COLUMNS) and all(
        feats[c] == datasets.Value("string") for c in names
    )


def _normalise_dataset(ds: datasets.Dataset) -> datasets.Dataset:
    """Validate the columns and put them in canonical order (so any two collections concatenate)."""
    if not isinstance(ds, datasets.Dataset):
        raise TypeError(f"Passages wraps a datasets.Dataset, got {type(ds).__name__}")
    missing = [c for c in ("id", "title", "text") if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"passage dataset lacks column(s) {missing} (has {ds.column_names}); "
            "load_passages(dataset) maps _id / contents / extra columns"
        )
    extra = [c for c in ds.column_names if c not in COLUMNS]
    wrong = [c for c in ds.column_names if c in COLUMNS and ds.features[c] != datasets.Value("string")]
    if extra or wrong:
        raise ValueError(
            f"passage dataset has {'extra column(s) ' + str(extra) if extra else ''}"
            f"{' and ' if extra and wrong else ''}{'non-string column(s) ' + str(wrong) if wrong else ''}; "
            "use load_passages(dataset), which converts ids to strings and folds extra columns into metadata"
        )
    if "metadata" not in ds.column_names:
        ds = ds.add_column("metadata", pa.nulls(len(ds), pa.string()))
    if tuple(ds.column_names) != COLUMNS:
        ds = ds.select_columns(list(COLUMNS))
    return ds


# ---------------------------------------------------------------------- record -> row
def _check_row(pid: Any, title: Any, text: Any, where: str, id_key: str = "id", text_key: str = "text") -> Row:
    """Validate one passage's fields: ids are non-blank strings or integers, text a non-blank
    string, title a string or missing (``true`` is never turned into ``"True"``)."""
    if pid is None or pid == "":
        raise ValueError(f"{where}: missing field '{id_key}'")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)):
        raise ValueError(f"{where}: field '{id_key}' must be a string or an integer, got {type(pid).__name__}")
    if isinstance(pid, str) and not pid.strip():
        raise ValueError(f"{where}: field '{id_key}' is blank")
    if text is None:
        raise ValueError(f"{where}: missing field '{text_key}'")
    if not isinstance(text, str):
        raise ValueError(f"{where}: field '{text_key}' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{where}: field '{text_key}' is empty")
    if title is not None and not isinstance(title, str):
        raise ValueError(f"{where}: field 'title' must be a string, got {type(title).__name__}")
    return str(pid), "" if title is None else title, text, {}


def _split_contents(contents: str) -> tuple[str, str]:
    """Pyserini/FlashRAG ``contents``: first line is the title (FlashRAG quotes it), the rest is text.

    Single-line contents (e.g. MS MARCO in Pyserini) are all text: calling the whole passage a title
    would leave nothing to read.
    """
    if "\n" not in contents:
        return "", contents.strip()
    title, _, text = contents.partition("\n")
    title = title.strip()
    if len(title) >= 2 and title[0] == title[-1] == '"':
        title = title[1:-1].strip()
    return title, text.strip()


def _record_to_row(rec: dict[str, Any], schema: str, where: str) -> Row:
    """Map one source record to (id, title, text, metadata) for ``schema`` (atlas / beir / contents).

    Every field that is not part of the passage is kept in metadata; a ``"metadata"`` object
    (BEIR's own field, or what :meth:`Passages.to_jsonl` nests) is merged in rather than nested.
    """
    id_key = "_id" if schema == "beir" else "id"
    if schema == "contents":
        contents = rec.get("contents")
        pid, _, _, _ = _check_row(rec.get(id_key), "", contents, where, id_key, "contents")
        title, text = _split_contents(str(contents))
        used = (id_key, "contents")
    else:
        pid, title, text, _ = _check_row(rec.get(id_key), rec.get("title"), rec.get("text"), where, id_key)
        used = (id_key, "title", "text")
    meta = {k: v for k, v in rec.items() if k not in used}
    nested = meta.get("metadata")
    if isinstance(nested, dict):
        del meta["metadata"]
        meta = {**nested, **meta}
    return pid, title, text, meta


def _detect_schema(rec: dict[str, Any]) -> str:
    """Which JSON record layout this is, from one record's keys."""
    if "contents" in rec and "text" not in rec:
        return "contents"
    if "_id" in rec and "id" not in rec:
        return "beir"
    return "atlas"


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
                schema = _detect_schema(rec)
            yield lineno, _record_to_row(rec, schema, where)


def _iter_json_list(path: Path, schema: str) -> Iterator[tuple[int, Row]]:
    """A ``[{...}, {...}]`` file, decoded one record at a time (never a list of every record).

    The text itself has to be read whole (JSON has no record boundaries to stream on), but a JSON
    list is a small-corpus format; big corpora come as jsonl or tsv.
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
            schema = _detect_schema(rec)
        yield lineno, _record_to_row(rec, schema, where)
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
            pid, title, text, _ = _check_row(rec["id"], rec.get("title"), rec["text"], f"{path}:{lineno}")
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


# ---------------------------------------------------------------------- streaming into Arrow
def _stream_to_arrow(rows: Iterator[tuple[int, Row]], label: str, where: Callable[[int], str], unit: str,
                     show_progress: bool) -> Passages:
    """Write rows chunk by chunk into a temporary Arrow file and memory-map it.

    Only the ids (needed for the id -> position map anyway) are kept in Python; texts go straight to
    Arrow in chunks of ``_CHUNK`` rows. Duplicate ids are caught here, where the line is still known.
    """
    from tqdm.auto import tqdm

    fd, arrow_path = tempfile.mkstemp(prefix="passages-", suffix=".arrow", dir=_temp_root())
    os.close(fd)
    owner = _TempArrow(arrow_path)
    ids: list[str] = []
    pos: dict[str, int] = {}
    lines = array("q")  # source line of each passage, only for "first seen on line N"
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    try:
        with pa.OSFile(arrow_path, "wb") as sink, pa.ipc.new_stream(sink, _SCHEMA) as writer, \
                tqdm(desc=f"reading {label}", unit=" passages", disable=None if show_progress else True) as bar:

            def flush() -> None:
                if cols["id"]:
                    writer.write_batch(pa.record_batch([pa.array(cols[c], pa.string()) for c in COLUMNS], schema=_SCHEMA))
                    bar.update(len(cols["id"]))
                    for c in COLUMNS:
                        cols[c].clear()

            for lineno, (pid, title, text, meta) in rows:
                first = pos.get(pid)
                if first is not None:
                    raise ValueError(f"{where(lineno)}: duplicate passage id {pid!r} (first seen on {unit} {lines[first]})")
                pos[pid] = len(ids)
                ids.append(pid)
                lines.append(lineno)
                cols["id"].append(pid)
                cols["title"].append(title)
                cols["text"].append(text)
                cols["metadata"].append(_dump_meta(meta))
                if len(cols["id"]) >= _CHUNK:
                    flush()
            flush()
    except BaseException:
        _unlink_quiet(arrow_path)
        raise
    if not ids:
        raise ValueError(f"{label}: no passages found (empty file)")
    ds = datasets.Dataset.from_file(arrow_path, in_memory=False)
    return Passages._trusted(ds, ids, pos, owners=(owner,))


def _from_hf_dataset(ds: datasets.Dataset, label: str = "dataset") -> Passages:
    """An HF dataset: used as is when it has our columns, otherwise converted row by row into Arrow."""
    if _is_native(ds):
        return Passages(ds)
    names = set(ds.column_names)
    if "id" not in names and "_id" not in names:
        raise ValueError(f"{label}: no 'id' or '_id' column (columns: {sorted(names)})")
    if "text" not in names and "contents" not in names:
        raise ValueError(f"{label}: no 'text' or 'contents' column (columns: {sorted(names)})")
    schema = "contents" if "text" not in names else ("beir" if "id" not in names else "atlas")

    def rows() -> Iterator[tuple[int, Row]]:
        n = 0
        for batch in ds.iter(batch_size=_CHUNK):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys)):
                yield n, _record_to_row(dict(zip(keys, values)), schema, f"{label} row {n}")
                n += 1

    return _stream_to_arrow(rows(), label, lambda n: f"{label} row {n}", "row", len(ds) > 100_000)


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
        return _from_hf_dataset(source)
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
        return _from_hf_dataset(datasets.Dataset.from_file(str(path), in_memory=False), str(path))
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
        passages = _stream_to_arrow(rows, str(path), lambda n: f"{path}:{n}", "line",
                                    stat.st_size >= _PROGRESS_MIN_BYTES)
    _loaded[key] = passages
    log.info("loaded %d passages from %s", len(passages), path)
    return passages

