"""The passage collection: an ordered, id-addressable, memory-mapped store that grows and shrinks
without copying itself.

Retrieval corpora run from a few thousand to tens of millions of passages (DPR's Wikipedia split is
21M), so a corpus is never a Python list of dicts: rows live in Arrow (``datasets``, memory-mapped
when read from disk) and only the ids and an id -> position map live in RAM.

A live index appends and removes passages while searches run, so a collection is built for that:

* **Appends cost O(added).** Rows are a list of immutable Arrow *segments*; ids, the id -> position
  map and the id array behind :meth:`Passages.id_array` are append-only and *shared* between a
  collection and the one :meth:`~Passages.concat` extends it into. A collection only ever reads
  its own first ``n`` stored rows, so a search holding the older collection is not disturbed by
  the rows appended after it. Extending a collection that is not the newest of its store (two
  branches from one parent), or re-adding an id that was removed, copies it once instead.
* **Removals cost O(removed).** :meth:`~Passages.remove` marks rows dead
  (:class:`~atlas_kit.passages.tombstones.Tombstones`) instead of rewriting everything after them;
  positions are *live* positions (dead rows skipped), so a removal still shifts the passages after
  it down by one, as before. Dead rows are dropped when the collection is saved or
  :meth:`~Passages.compacted`.

Every collection is immutable from the outside: select / remove / concat return new ones.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import operator
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from atlas_kit.passages.arrow import (
    COLUMNS,
    dump_meta,
    features,
    passages_from_table,
    quiet_datasets,
    stream_rows,
    unlink_quiet,
)
from atlas_kit.passages.passage import Passage
from atlas_kit.passages.records import RESERVED, Row, check_row, record_to_row
from atlas_kit.passages.tombstones import Tombstones

__all__ = ["Passages", "PassageIds"]

log = logging.getLogger(__name__)

_BATCH = 2_000  # rows per batched read when iterating a collection
_MERGE_BELOW = 4_096  # consecutive appended segments smaller than this are merged (bounded cost)


class _Store:
    """Rows shared by a collection and the collections appended from it. Append-only.

    ``segments[s]`` holds stored rows ``starts[s] .. starts[s] + len(segments[s]) - 1``;
    ``ids`` / ``pos`` cover every stored row. Appends happen under ``lock``; readers never take it
    (each collection reads only stored rows below its own ``n``, which never change).
    """

    __slots__ = ("segments", "arrow", "starts", "ids", "pos", "lock", "_id_arr", "_id_filled")

    def __init__(self, dataset: datasets.Dataset, ids: list[str], pos: dict[str, int]) -> None:
        self.segments = [dataset]
        self.arrow = [dataset.with_format("arrow")]  # batched reads return pyarrow tables
        self.starts = [0]
        self.ids = ids
        self.pos = pos
        self.lock = threading.Lock()
        self._id_arr: np.ndarray | None = None
        self._id_filled = 0

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, dataset: datasets.Dataset, ids: list[str]) -> None:
        """Append rows (the caller holds ``lock`` and checked that the ids are new)."""
        start = len(self.ids)
        last = self.segments[-1]
        if len(last) < _MERGE_BELOW and len(dataset) < _MERGE_BELOW and len(self.segments) > 1:
            # many small appends would make one segment each: merge the small tail instead. The
            # merged segment starts where the last one did and holds its rows at the same offsets,
            # so a collection still reading the old segment object is unaffected.
            merged = datasets.concatenate_datasets([last, dataset])
            self.segments[-1], self.arrow[-1] = merged, merged.with_format("arrow")
        else:
            self.segments.append(dataset)
            self.arrow.append(dataset.with_format("arrow"))
            self.starts.append(start)
        self.pos.update(zip(ids, range(start, start + len(ids))))
        self.ids.extend(ids)

    def id_array(self, n: int) -> np.ndarray:
        """Object array of the first ``n`` stored ids (grown into doubling capacity, O(new ids))."""
        arr = self._id_arr
        if arr is None or self._id_filled < n:
            with self.lock:
                arr, filled, total = self._id_arr, self._id_filled, len(self.ids)
                if arr is None or len(arr) < total:
                    grown = np.empty(max(total, 2 * filled, 1024), dtype=object)
                    if arr is not None:
                        grown[:filled] = arr[:filled]
                    arr = grown
                arr[filled:total] = self.ids[filled:total]
                self._id_arr, self._id_filled = arr, total
        return arr[:n]


class PassageIds(Sequence):
    """The ids of a :class:`Passages`, in order: a read-only view (no copy), equal to any list or
    tuple of the same ids. Slicing returns a list."""

    __slots__ = ("_p",)

    def __init__(self, passages: "Passages") -> None:
        self._p = passages

    def __len__(self) -> int:
        return len(self._p)

    def __getitem__(self, i):  # type: ignore[override]
        p = self._p
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(p)))]
        i = operator.index(i)
        n = len(p)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"passage position {i} out of range for {n} passages")
        return p._store.ids[int(p._dead.to_stored(np.asarray([i]))[0]) if p._dead else i]

    def __iter__(self) -> Iterator[str]:
        p = self._p
        if not p._dead:
            return itertools.islice(iter(p._store.ids), p._n)
        ids = p._store.ids
        return (ids[s] for s in p._dead.live_positions(p._n).tolist())

    def __contains__(self, pid: object) -> bool:
        return pid in self._p

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (PassageIds, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in itertools.islice(self, 5))
        return f"PassageIds([{head}{', ...' if len(self) > 5 else ''}])"


class Passages(Sequence):
    """An ordered, id-addressable passage collection backed by ``datasets`` (Arrow).

    Columns: id, title, text (strings) and metadata (a JSON string, or null for none), so that
    arbitrary extra fields survive Arrow. Loaded from disk it is memory-mapped: a multi-GB corpus
    costs little RAM. Collections are immutable; select/remove/concat return new ones, and
    concat/remove cost O(changed passages), not O(collection) (see the module docstring).
    """

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
        self._init(_Store(dataset, ids, pos), len(ids), Tombstones(), ())

    def _init(self, store: _Store, n: int, dead: Tombstones, owners: tuple) -> None:
        self._store = store
        self._n = n  # stored rows this collection sees (later appends to the store are not its own)
        self._dead = dead  # removed stored positions, all < n
        self._owners = owners  # temporary Arrow files this collection reads from
        self._dataset: datasets.Dataset | None = None
        self._live: np.ndarray | None = None  # ids of live rows, cached when there are tombstones

    @classmethod
    def _make(cls, store: _Store, n: int, dead: Tombstones, owners: tuple) -> "Passages":
        self = cls.__new__(cls)
        self._init(store, n, dead, owners)
        return self

    @classmethod
    def _trusted(cls, dataset: datasets.Dataset, ids: list[str], pos: dict[str, int] | None = None,
                 owners: tuple = ()) -> "Passages":
        """Construct without re-reading ids when the caller already has them (and checked them)."""
        if pos is None:
            pos = {pid: i for i, pid in enumerate(ids)}
        return cls._make(_Store(dataset, ids, pos), len(ids), Tombstones(), owners)

    def __reduce__(self):
        # the store holds a lock: pickle the live rows as one dataset (datasets pickles it by path)
        return _unpickle, (self.dataset, list(self.ids), self._owners)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, records: Iterable[Passage | dict]) -> "Passages":
        """From Passage objects or dicts with id, title, text[, metadata] (other keys become metadata).

        Builds an in-memory dataset: meant for small corpora, tests and generated data; use
        :func:`~atlas_kit.passages.load_passages` for files.
        """
        cols: dict[str, list] = {c: [] for c in COLUMNS}
        for i, r in enumerate(records):
            if isinstance(r, Passage):
                pid, title, text, meta = check_row(r.id, r.title, r.text, f"record {i}")
                meta = dict(r.metadata)
            elif isinstance(r, dict):
                pid, title, text, meta = record_to_row(r, "atlas", f"record {i}")
            else:
                raise TypeError(f"record {i}: expected a Passage or a dict, got {type(r).__name__}")
            cols["id"].append(pid)
            cols["title"].append(title)
            cols["text"].append(text)
            cols["metadata"].append(dump_meta(meta))
        return cls(datasets.Dataset.from_dict(cols, features=features()))

    @classmethod
    def from_dataset(cls, ds: datasets.Dataset, label: str = "dataset") -> "Passages":
        """An HF dataset: used as is when it has our columns, otherwise converted row by row into Arrow
        (``_id`` / ``contents`` layouts mapped, extra columns folded into metadata)."""
        if _is_native(ds):
            return cls(ds)
        names = set(ds.column_names)
        if "id" not in names and "_id" not in names:
            raise ValueError(f"{label}: no 'id' or '_id' column (columns: {sorted(names)})")
        if "text" not in names and "contents" not in names:
            raise ValueError(f"{label}: no 'text' or 'contents' column (columns: {sorted(names)})")
        schema = "contents" if "text" not in names else ("beir" if "id" not in names else "atlas")

        def rows() -> Iterator[tuple[int, Row]]:
            n = 0
            for batch in ds.iter(batch_size=10_000):
                keys = list(batch)
                for values in zip(*(batch[k] for k in keys)):
                    yield n, record_to_row(dict(zip(keys, values)), schema, f"{label} row {n}")
                    n += 1

        return cls.from_rows(rows(), label, lambda n: f"{label} row {n}", "row", len(ds) > 100_000)

    @classmethod
    def from_rows(cls, rows: Iterator[tuple[int, Row]], label: str, where: Any, unit: str,
                  show_progress: bool) -> "Passages":
        """From ``(line, row)`` pairs, streamed into a temporary memory-mapped Arrow file
        (:func:`~atlas_kit.passages.arrow.stream_rows`)."""
        ds, ids, pos, owner = stream_rows(rows, label, where, unit, show_progress)
        return cls._trusted(ds, ids, pos, owners=(owner,))

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self._n - len(self._dead)

    def _stored(self, positions: Sequence[int]) -> np.ndarray:
        """Stored positions of live ``positions``; out-of-range ones raise IndexError.

        Negative positions are refused (not wrapped): FAISS pads missing results with -1, and
        silently returning the last passage for them would be a nasty retrieval bug."""
        live = np.fromiter((operator.index(p) for p in positions), dtype=np.int64)
        n = len(self)
        if len(live) and (live.min() < 0 or live.max() >= n):
            bad = next(int(p) for p in live if not 0 <= p < n)
            raise IndexError(f"passage position {bad} out of range for {n} passages")
        return self._dead.to_stored(live)

    def _gather(self, stored: np.ndarray) -> list[Passage]:
        """Passages at stored positions, in that order: one Arrow gather per segment touched."""
        st = self._store
        arrow, starts = st.arrow, st.starts  # read once: an append may grow them meanwhile
        k = len(starts)
        if k == 1:
            return passages_from_table(arrow[0][stored.tolist()])
        seg = np.searchsorted(np.asarray(starts[:k]), stored, side="right") - 1
        out: list[Any] = [None] * len(stored)
        for s in np.unique(seg).tolist():
            where = np.flatnonzero(seg == s)
            got = passages_from_table(arrow[s][(stored[where] - starts[s]).tolist()])
            for i, p in zip(where.tolist(), got):
                out[i] = p
        return out

    def _batches(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        """The live rows in order, as Arrow tables of ``columns`` (batched reads, dead rows dropped)."""
        st = self._store
        arrow, starts = list(st.arrow), list(st.starts)
        for s, (ds, start) in enumerate(zip(arrow, starts)):
            if start >= self._n:
                break
            for off, batch in zip(itertools.count(start, _BATCH), ds.select_columns(list(columns)).iter(batch_size=_BATCH)):
                if off >= self._n:
                    break
                if off + len(batch) > self._n:
                    batch = batch.slice(0, self._n - off)
                if self._dead:
                    dead = self._dead.is_dead(np.arange(off, off + len(batch)))
                    if dead.any():
                        batch = batch.filter(pa.array(~dead))
                yield batch

    def __getitem__(self, i: int | slice) -> Passage | list[Passage]:  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(range(*i.indices(len(self))))
        i = operator.index(i)
        if i < 0:
            i += len(self)
        return self._gather(self._stored([i]))[0]

    def __iter__(self) -> Iterator[Passage]:
        for batch in self._batches(COLUMNS):
            yield from passages_from_table(batch)

    def __contains__(self, pid: object) -> bool:
        try:
            s = self._store.pos.get(pid)  # type: ignore[call-overload]
        except TypeError:  # unhashable
            return False
        return s is not None and s < self._n and not (self._dead and self._dead.is_dead(np.asarray([s]))[0])

    def __repr__(self) -> str:
        return f"Passages(n={len(self)})"

    @property
    def ids(self) -> PassageIds:
        """Passage ids in order: a read-only view that compares equal to a list of them."""
        return PassageIds(self)

    def id_array(self) -> np.ndarray:
        """Passage ids as a numpy object array (for vectorised gathers, e.g. ``ids[positions]``).

        Shared with the collection and cached: do not modify it. O(1) for a collection without
        removed rows; with removed rows it is built once per collection."""
        arr = self._store.id_array(self._n)
        if not self._dead:
            return arr
        if self._live is None:
            self._live = arr[self._dead.live_positions(self._n)]
        return self._live

    def position(self, pid: str) -> int:
        if pid not in self:
            raise KeyError(f"unknown passage id {pid!r}")
        return int(self._dead.to_live(np.asarray([self._store.pos[pid]]))[0])

    def get(self, pid: str) -> Passage:
        return self[self.position(pid)]  # type: ignore[return-value]

    def take(self, positions: Sequence[int]) -> list[Passage]:
        """Fetch many passages with one Arrow gather per segment (the search hot path). Order is kept."""
        stored = self._stored(positions)
        return self._gather(stored) if len(stored) else []

    def texts(self, with_title: bool = True) -> Iterator[str]:
        """Stream :func:`~atlas_kit.passages.passage_text` of every passage from batched Arrow reads."""
        for batch in self._batches(("title", "text")):
            for title, text in zip(batch.column("title").to_pylist(), batch.column("text").to_pylist()):
                yield f"{title} {text}" if with_title and title else text

    # ------------------------------------------------------------------ derived collections
    @property
    def dataset(self) -> datasets.Dataset:
        """The live rows as one ``datasets.Dataset`` (built on first use: it concatenates the
        segments and, after removals, selects the live rows)."""
        if self._dataset is None:
            st = self._store
            segs = [ds for ds, start in zip(list(st.segments), list(st.starts)) if start < self._n]
            ds = segs[0] if len(segs) == 1 else datasets.concatenate_datasets(segs)
            if self._dead or len(ds) != self._n:
                keep = self._dead.live_positions(self._n)
                ds = ds.select(keep, keep_in_memory=True)  # in-memory indices: no cache files
            self._dataset = ds
        return self._dataset

    def compacted(self) -> "Passages":
        """The same passages in a fresh store without removed rows (O(n); ``save`` does this too)."""
        if not self._dead and len(self._store) == self._n and len(self._store.segments) == 1:
            return self
        return Passages._trusted(self.dataset, list(self.ids), owners=self._owners)

    def select(self, positions: Sequence[int]) -> "Passages":
        """A new collection of the passages at ``positions`` (in that order; no data is copied)."""
        stored = self._stored(positions)
        if len(np.unique(stored)) != len(stored):
            seen: set[int] = set()
            dup = next(int(p) for p in positions if p in seen or seen.add(p))  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate passage id {self.ids[dup]!r}: position {dup} selected twice")
        st = self._store
        if len(st.segments) == 1:
            ds = st.segments[0].select(stored, keep_in_memory=True)
        else:
            ds = self.dataset.select(self._dead.to_live(stored) if self._dead else stored, keep_in_memory=True)
        ids = st.ids
        return Passages._trusted(ds, [ids[s] for s in stored.tolist()], owners=self._owners)

    def concat(self, other: "Passages") -> "Passages":
        """This collection followed by ``other``; a shared id raises ValueError (ids must stay unique).

        Costs O(len(other)) when this collection is the newest of its store (the usual case: an
        index appending to its current passages); otherwise this collection is copied once."""
        new_ids = list(other.ids)
        dup = next((pid for pid in new_ids if pid in self), None)
        if dup is not None:
            raise ValueError(f"duplicate passage id {dup!r}: it is already in the collection")
        if not new_ids:
            return self
        if len(self) == 0:
            return other
        rows = other.dataset
        owners = self._owners + tuple(o for o in other._owners if o not in self._owners)
        st = self._store
        with st.lock:
            if len(st) == self._n and not any(pid in st.pos for pid in new_ids):
                st.append(rows, new_ids)
                return Passages._make(st, self._n + len(new_ids), self._dead, owners)
        # another collection already extended this store, or an id comes back after its removal
        log.debug("Passages.concat: copying %d passages (not the newest collection of its store)", len(self))
        ids = list(self.ids)
        store = _Store(self.dataset, ids, {pid: i for i, pid in enumerate(ids)})
        store.append(rows, new_ids)
        return Passages._make(store, len(ids), Tombstones(), owners)

    def remove(self, ids: Iterable[str]) -> "Passages":
        """A new collection without ``ids``; an unknown id raises KeyError (it usually means a typo).

        The rows are marked removed (O(removed)); they are dropped on save or :meth:`compacted`."""
        stored = []
        for pid in ids:
            if pid not in self:
                raise KeyError(f"unknown passage id {pid!r}")
            stored.append(self._store.pos[pid])
        if not stored:
            return self
        return Passages._make(self._store, self._n, self._dead.with_removed(np.asarray(stored)), self._owners)

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
        for batch in self._batches(("id", "title", "text")):
            cols = [batch.column(c).to_pylist() for c in ("id", "title", "text")]
            for pid, title, text in zip(*cols):
                for part in (pid, title or "", text or ""):
                    b = part.encode("utf-8")
                    h.update(len(b).to_bytes(8, "little"))
                    h.update(b)
        return h

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> None:
        """Write an Arrow folder (``datasets.save_to_disk``) of the live rows into ``folder``.

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
        return cls.from_dataset(ds, str(folder))

    def to_jsonl(self, path: str | os.PathLike) -> None:
        """Write Atlas jsonl (id, title, text + metadata fields at top level), atomically.

        Metadata keys that would clash with the passage fields are nested under ``"metadata"``,
        which :func:`~atlas_kit.passages.load_passages` merges back, so export -> load is lossless.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for p in self:
                    rec: dict[str, Any] = {"id": p.id, "title": p.title, "text": p.text}
                    nested = {k: v for k, v in p.metadata.items() if k in RESERVED}
                    rec.update((k, v) for k, v in p.metadata.items() if k not in RESERVED)
                    if nested:
                        rec["metadata"] = nested
                    f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            unlink_quiet(tmp)
            raise


def _unpickle(dataset: datasets.Dataset, ids: list[str], owners: tuple) -> Passages:
    return Passages._trusted(dataset, ids, owners=owners)


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
