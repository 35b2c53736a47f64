"""Passage corpora: reading every common format into one memory-mapped, id-addressable collection.

Corpora for retrieval run from thousands to tens of millions of passages, so a corpus is never a
Python list of dicts: files are streamed in chunks into an Arrow file that ``datasets`` memory-maps,
and only an id -> position map lives in RAM. Bad records fail loudly with the file, line and field.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from atlas_kit.storage import iter_jsonl

__all__ = ["Passage", "Passages", "load_passages", "passage_text", "FORMATS"]

log = logging.getLogger(__name__)

FORMATS = ("auto", "atlas", "dpr", "beir", "contents", "arrow", "json")
COLUMNS = ("id", "title", "text", "metadata")
_SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])
_CHUNK = 10_000


@dataclass(frozen=True)
class Passage:
    """One passage. ``metadata`` keeps every extra field of the source record."""

    id: str
    title: str
    text: str
    metadata: dict = field(default_factory=dict)


def passage_text(p: Any, with_title: bool = True) -> str:
    """What a retriever embeds (and BM25 indexes): ``"title text"``, or the text alone."""
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


def _row_to_passage(row: dict[str, Any]) -> Passage:
    meta = row.get("metadata") or ""
    return Passage(row["id"], row["title"] or "", row["text"], json.loads(meta) if meta else {})


class Passages(Sequence):
    """An ordered, id-addressable passage collection backed by a ``datasets.Dataset``.

    Columns: id, title, text, metadata (a JSON string, so arbitrary extra fields survive Arrow).
    Loaded from disk it is memory-mapped: a multi-GB corpus costs little RAM.
    """

    def __init__(self, dataset: datasets.Dataset) -> None:
        missing = [c for c in ("id", "title", "text") if c not in dataset.column_names]
        if missing:
            raise ValueError(f"passage dataset lacks column(s) {missing} (has {dataset.column_names})")
        if "metadata" not in dataset.column_names:
            dataset = dataset.add_column("metadata", [""] * len(dataset))
        self.dataset = dataset
        self._ids: list[str] = list(dataset["id"])
        self._pos: dict[str, int] = {}
        for i, pid in enumerate(self._ids):
            if pid in self._pos:
                raise ValueError(f"duplicate passage id {pid!r} (rows {self._pos[pid]} and {i})")
            self._pos[pid] = i

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, records: Iterable[Passage | dict]) -> "Passages":
        """From Passage objects or dicts with id, title, text[, metadata]."""
        cols: dict[str, list[str]] = {c: [] for c in COLUMNS}
        for r in records:
            if isinstance(r, Passage):
                pid, title, text, meta = r.id, r.title, r.text, r.metadata
            else:
                pid, title, text = r["id"], r.get("title", ""), r["text"]
                meta = r.get("metadata") or {k: v for k, v in r.items() if k not in ("id", "title", "text")}
            cols["id"].append(str(pid))
            cols["title"].append(title or "")
            cols["text"].append(text)
            cols["metadata"].append(json.dumps(meta, ensure_ascii=False) if meta else "")
        return cls(datasets.Dataset.from_dict(cols, features=_features()))

    # ------------------------------------------------------------------ sequence protocol
    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int | slice) -> Passage | list[Passage]:  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(range(*i.indices(len(self))))
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"passage position {i} out of range (0..{n - 1})")
        return _row_to_passage(self.dataset[int(i)])

    def __iter__(self) -> Iterator[Passage]:
        for batch in self.dataset.iter(batch_size=1000):
            for j in range(len(batch["id"])):
                yield _row_to_passage({c: batch[c][j] for c in COLUMNS})

    def __contains__(self, pid: object) -> bool:
        return pid in self._pos

    def __repr__(self) -> str:
        return f"Passages(n={len(self)})"

    @property
    def ids(self) -> list[str]:
        return self._ids

    def position(self, pid: str) -> int:
        try:
            return self._pos[pid]
        except KeyError:
            raise KeyError(f"unknown passage id {pid!r}") from None

    def get(self, pid: str) -> Passage:
        return self[self.position(pid)]  # type: ignore[return-value]

    def take(self, positions: Iterable[int]) -> list[Passage]:
        """Fetch many passages with one Arrow read (the search hot path)."""
        positions = [int(p) for p in positions]
        if not positions:
            return []
        batch = self.dataset[positions]
        return [_row_to_passage({c: batch[c][j] for c in COLUMNS}) for j in range(len(positions))]

    def texts(self, with_title: bool = True) -> Iterator[str]:
        """Stream the retrieval text of every passage (batched Arrow reads)."""
        for batch in self.dataset.iter(batch_size=1000):
            for title, text in zip(batch["title"], batch["text"]):
                yield f"{title} {text}" if with_title and title else text

    # ------------------------------------------------------------------ derived collections
    def select(self, positions: Iterable[int]) -> "Passages":
        return Passages(self.dataset.select(list(positions)))

    def concat(self, other: "Passages") -> "Passages":
        dup = next((pid for pid in other.ids if pid in self._pos), None)
        if dup is not None:
            raise ValueError(f"duplicate passage id {dup!r}: it is already in the collection")
        return Passages(datasets.concatenate_datasets([self.dataset, other.dataset]))

    def remove(self, ids: Iterable[str]) -> "Passages":
        drop = {self.position(pid) for pid in ids}
        return self.select([i for i in range(len(self)) if i not in drop])

    def checksum(self) -> str:
        """SHA-256 over (id, title, text) in order: identifies the corpus content."""
        h = hashlib.sha256()
        for batch in self.dataset.iter(batch_size=5000):
            for pid, title, text in zip(batch["id"], batch["title"], batch["text"]):
                for part in (pid, title or "", text):
                    b = part.encode("utf-8")
                    h.update(len(b).to_bytes(8, "little"))
                    h.update(b)
        return h.hexdigest()

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> None:
        """Arrow folder (``datasets.save_to_disk``); the caller publishes it atomically."""
        with quiet_datasets():
            self.dataset.flatten_indices().save_to_disk(str(folder))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Passages":
        """Memory-mapped load of a folder written by :meth:`save`."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"passage folder not found: {folder}")
        return cls(datasets.load_from_disk(str(folder)))

    def to_jsonl(self, path: str | os.PathLike) -> None:
        """Write Atlas jsonl (id, title, text + metadata fields), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for p in self:
                    f.write(json.dumps({"id": p.id, "title": p.title, "text": p.text, **p.metadata}, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _features() -> datasets.Features:
    return datasets.Features({c: datasets.Value("string") for c in COLUMNS})


# ---------------------------------------------------------------------- reading files
def _record_to_row(rec: dict[str, Any], fmt: str, where: str) -> tuple[str, str, str, dict]:
    """Map one source record to (id, title, text, metadata) for the given format."""
    if fmt == "contents":
        if "id" not in rec:
            raise ValueError(f"{where}: missing field 'id'")
        if "contents" not in rec:
            raise ValueError(f"{where}: missing field 'contents'")
        title, _, text = str(rec["contents"]).partition("\n")
        title = title.strip()
        if len(title) >= 2 and title[0] == title[-1] == '"':
            title = title[1:-1]
        meta = {k: v for k, v in rec.items() if k not in ("id", "contents")}
        return str(rec["id"]), title, text.strip(), meta
    id_key = "_id" if fmt == "beir" else "id"
    if id_key not in rec:
        raise ValueError(f"{where}: missing field '{id_key}'")
    if "text" not in rec or rec["text"] is None:
        raise ValueError(f"{where}: missing field 'text'")
    meta = {k: v for k, v in rec.items() if k not in (id_key, "title", "text")}
    return str(rec[id_key]), str(rec.get("title") or ""), str(rec["text"]), meta


def _detect_json_format(rec: dict[str, Any]) -> str:
    if "contents" in rec and "text" not in rec:
        return "contents"
    if "_id" in rec and "id" not in rec:
        return "beir"
    return "atlas"


def _iter_jsonl(path: Path, fmt: str) -> Iterator[tuple[int, tuple[str, str, str, dict]]]:
    for lineno, rec in iter_jsonl(path):
        if fmt == "auto":
            fmt = _detect_json_format(rec)
        yield lineno, _record_to_row(rec, fmt, f"{path}:{lineno}")


def _iter_json_list(path: Path, fmt: str) -> Iterator[tuple[int, tuple[str, str, str, dict]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of passage records")
    for i, rec in enumerate(data):
        if fmt in ("auto", "json"):
            fmt = _detect_json_format(rec)
        yield i + 1, _record_to_row(rec, fmt, f"{path}: record {i}")


def _iter_tsv(path: Path) -> Iterator[tuple[int, tuple[str, str, str, dict]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        extra_names: list[str] = []
        for lineno, cols in enumerate(reader, 1):
            if not cols or (len(cols) == 1 and not cols[0].strip()):
                continue
            if lineno == 1 and [c.strip().lower() for c in cols[:3]] == ["id", "text", "title"]:
                extra_names = cols[3:]
                continue
            if len(cols) < 3:
                raise ValueError(f"{path}:{lineno}: expected 3 tab-separated columns (id, text, title), got {len(cols)}")
            meta = {(extra_names[i] if i < len(extra_names) else f"col{i + 3}"): v for i, v in enumerate(cols[3:])}
            yield lineno, (cols[0], cols[2], cols[1], meta)


def _stream_to_arrow(rows: Iterator[tuple[int, tuple[str, str, str, dict]]], source: Path) -> datasets.Dataset:
    """Write rows chunk by chunk into an Arrow file and memory-map it (no all-rows Python list)."""
    from tqdm.auto import tqdm

    tmpdir = Path(tempfile.mkdtemp(prefix="atlas_kit_passages_"))
    arrow_path = tmpdir / "passages.arrow"
    seen: dict[str, int] = {}
    n = 0
    try:
        size = source.stat().st_size
        with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_stream(sink, _SCHEMA) as writer, \
                tqdm(desc=f"read {source.name}", unit="passage", disable=size < 50_000_000) as bar:
            cols: dict[str, list[str]] = {c: [] for c in COLUMNS}

            def flush() -> None:
                if cols["id"]:
                    writer.write_batch(pa.record_batch([pa.array(cols[c], pa.string()) for c in COLUMNS], schema=_SCHEMA))
                    bar.update(len(cols["id"]))
                    for c in COLUMNS:
                        cols[c].clear()

            for lineno, (pid, title, text, meta) in rows:
                if pid in seen:
                    raise ValueError(f"{source}:{lineno}: duplicate passage id {pid!r} (first seen on line {seen[pid]})")
                seen[pid] = lineno
                cols["id"].append(pid)
                cols["title"].append(title)
                cols["text"].append(text)
                cols["metadata"].append(json.dumps(meta, ensure_ascii=False) if meta else "")
                n += 1
                if len(cols["id"]) >= _CHUNK:
                    flush()
            flush()
        if n == 0:
            raise ValueError(f"{source}: no passages found (empty file)")
        ds = datasets.Dataset.from_file(str(arrow_path), in_memory=False)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    # the memory map keeps the data readable after unlinking on POSIX; remove the folder when the
    # dataset is garbage-collected so repeated loads leave no junk behind
    weakref.finalize(ds, shutil.rmtree, str(tmpdir), True)
    return ds


def _from_hf_dataset(ds: datasets.Dataset) -> Passages:
    names = set(ds.column_names)
    if {"id", "title", "text"} <= names and names <= set(COLUMNS):
        return Passages(ds.map(lambda r: {"id": str(r["id"])}) if ds.features["id"].dtype != "string" else ds)
    id_key = "id" if "id" in names else "_id" if "_id" in names else None
    if id_key is None:
        raise ValueError(f"dataset has no 'id' or '_id' column (columns: {sorted(names)})")
    fmt = "contents" if "contents" in names and "text" not in names else ("beir" if id_key == "_id" else "atlas")

    def convert(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {c: [] for c in COLUMNS}
        keys = list(batch.keys())
        for j in range(len(batch[keys[0]])):
            rec = {k: batch[k][j] for k in keys}
            pid, title, text, meta = _record_to_row(rec, fmt, f"dataset row {j}")
            out["id"].append(pid)
            out["title"].append(title)
            out["text"].append(text)
            out["metadata"].append(json.dumps(meta, ensure_ascii=False, default=str) if meta else "")
        return out

    with quiet_datasets():
        converted = ds.map(convert, batched=True, remove_columns=ds.column_names, features=_features())
    return Passages(converted)


def load_passages(source: str | os.PathLike | datasets.Dataset | Passages, format: str = "auto") -> Passages:
    """Load a passage corpus.

    Formats: Atlas jsonl ``{"id","title","text"}`` (extra fields kept as metadata), DPR tsv
    ``id<TAB>text<TAB>title`` (header optional), BEIR ``corpus.jsonl`` ``{"_id","title","text"}``,
    Pyserini/FlashRAG ``{"id","contents"}`` (title = first line), a JSON list of such records, an
    Arrow folder written by :meth:`Passages.save`, or an HF ``datasets.Dataset``.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown passage format {format!r} (known: {', '.join(FORMATS)})")
    if isinstance(source, Passages):
        return source
    if isinstance(source, datasets.Dataset):
        return _from_hf_dataset(source)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"passage file not found: {path}")
    if path.is_dir() or format == "arrow":
        return Passages.load(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: no passages found (empty file)")
    if format == "dpr" or (format == "auto" and path.suffix.lower() == ".tsv"):
        rows = _iter_tsv(path)
    elif format == "json" or (format == "auto" and path.suffix.lower() == ".json"):
        rows = _iter_json_list(path, "auto" if format == "json" else format)
    else:
        rows = _iter_jsonl(path, format)
    passages = Passages(_stream_to_arrow(rows, path))
    log.info("loaded %d passages from %s", len(passages), path)
    return passages
