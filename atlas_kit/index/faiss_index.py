"""Dense index over passage embeddings, backed by FAISS (any factory string).

Folder layout::

    manifest.json     format version, kind, factory, metric, dim, count, retriever identity, corpus checksum
    passages/         the passages (Arrow, memory-mapped on load)
    embeddings.npy    the passage vectors (float16 by default; loaded with mmap) - kept so the index can be
                      rebuilt, updated or re-ranked without re-encoding the corpus
    index.faiss       the FAISS index (labels = passage positions)

Two things differ from a plain FAISS index on purpose:

* **Exact re-ranking of lossy codes** (``refine``): an index whose codes lose precision (PQ, SQ, ...)
  fetches ``refine`` x k candidates and orders them by exact scores over the stored embeddings
  (what FAISS's ``IndexRefineFlat`` does, but without a second float copy of every vector inside
  the FAISS file: the folder already keeps ``embeddings.npy``). On by default (x4) when the index
  is lossy and embeddings are stored.
* **Removals mark, they do not rewrite**: removed rows stay in the FAISS index as tombstones
  (:class:`~atlas_kit.passages.tombstones.Tombstones`), searches fetch past them and drop them, and
  the index is compacted on save or once tombstones exceed ``compact_at`` (default 1/1000 of the
  index, at least 64 and at most 1024), so a removal costs O(removed) between compactions.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import fasteners
import numpy as np
from tqdm.auto import tqdm

from atlas_kit.index.base import (
    FORMAT_VERSION,
    MANIFEST,
    Hits,
    Index,
    bumped,
    check_retriever,
    now_iso,
    read_manifest,
    verify_loaded,
)
from atlas_kit.index.faiss_snapshot import FaissSnapshot, is_flat, is_lossy
from atlas_kit.index.faiss_tuning import search_knob, tune_knob
from atlas_kit.index.registry import register
from atlas_kit.passages import Passages, load_passages
from atlas_kit.passages.tombstones import Tombstones
from atlas_kit.storage import atomic_dir, atomic_write_json

__all__ = ["FaissIndex", "FaissSnapshot"]

log = logging.getLogger(__name__)

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
DEFAULT_TARGET_RECALL = 0.95  # of exact top-k neighbours, for the search knob chosen at build time
DEFAULT_REFINE = 4  # candidates per result re-scored exactly, for indexes with lossy codes


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@register
class FaissIndex(Index):
    """Dense retrieval over a FAISS index built from a :class:`~atlas_kit.Retriever`.

    Use :meth:`build` (encodes the passages) or :meth:`from_embeddings` (vectors you already
    have), then :meth:`save` / :meth:`load`. ``search`` takes query embeddings of the same
    retriever; :class:`~atlas_kit.Atlas` computes them for you.
    """

    kind = "faiss"
    needs_embeddings = True

    def __init__(
        self,
        index: faiss.Index,
        passages: Passages,
        embeddings: np.ndarray | None,
        manifest: dict[str, Any],
    ) -> None:
        if index.ntotal != len(passages):
            raise ValueError(f"FAISS index holds {index.ntotal} vectors but there are {len(passages)} passages")
        # The state, replaced as a whole under the write lock. The FAISS index inside is changed in
        # place (no copy per update), so a search holds the read lock while it runs and takes the
        # passages of the same moment: it sees the state before or after an update, never one
        # half-applied. Passages and embeddings of an older snapshot stay valid.
        self._snap = FaissSnapshot(index, passages, embeddings, Tombstones())
        self._manifest = manifest
        self._checksum_pending = False  # a removal left the corpus checksum to be recomputed
        self._gpu_index = None
        self._gpu_source = None
        self._update_lock = threading.RLock()  # one writer at a time (encoding runs outside the RW lock)
        self._rw = fasteners.ReaderWriterLock()
        self._emb_buffer: np.ndarray | None = None  # spare capacity behind the embeddings, for appends
        self._checksum_state: Any = None  # running SHA-256 of the passages (Passages.checksum_state)
        self._mapped = False  # the FAISS index is a read-only view of its file (see memory_mapped)
        self.path: str | None = None

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest; after a removal its corpus checksum is recomputed here, on first read."""
        if self._checksum_pending:
            with self._update_lock:
                if self._checksum_pending:
                    state = self._snap.passages.checksum_state()
                    self._manifest = {**self._manifest, "corpus_checksum": state.hexdigest()}
                    self._checksum_state = state
                    self._checksum_pending = False
        return self._manifest

    @manifest.setter
    def manifest(self, value: dict[str, Any]) -> None:
        self._manifest = value

    def snapshot(self) -> FaissSnapshot:
        """The current consistent state (index, passages, stored embeddings, tombstones)."""
        return self._snap

    @property
    def index(self) -> faiss.Index:
        """The FAISS index (while removals await compaction it still holds the removed rows)."""
        return self._snap.index

    @property
    def passages(self) -> Passages:
        return self._snap.passages

    @property
    def embeddings(self) -> np.ndarray | None:
        """The stored vectors of the live passages, row i = passage i (a copy while removals await
        compaction; otherwise the stored, possibly memory-mapped, array itself)."""
        snap = self._snap
        if snap.embeddings is None or not snap.dead:
            return snap.embeddings
        return np.asarray(snap.embeddings)[snap.dead.live_positions(len(snap.embeddings))]

    def stored_vectors(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """Float32 vectors of the passages at ``positions`` (see :meth:`FaissSnapshot.vectors`)."""
        return self._snap.vectors(positions)

    @property
    def refine(self) -> int:
        """Candidates per result re-scored exactly over the stored embeddings (1 = off)."""
        return int(self._manifest.get("refine", 1)) if self._snap.embeddings is not None else 1

    @property
    def compact_at(self) -> int:
        """Tombstones that trigger a compaction of the FAISS index and passages."""
        return int(self._manifest.get("compact_at") or min(1024, max(64, self._snap.index.ntotal // 1000)))

    @property
    def memory_mapped(self) -> bool:
        """Whether the FAISS index is still a view of its file (as loaded with ``mmap=True``).

        FAISS cannot write to a view (it aborts the process), so the first ``add`` / ``remove``
        copies the index into memory; from then on it is an ordinary in-memory index."""
        return self._mapped

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        passages: Passages | str | os.PathLike,
        retriever: Any,
        factory: str = "Flat",
        metric: str = "ip",
        batch_size: int = 128,
        train_size: int | None = None,
        embeddings_dtype: str = "float16",
        show_progress: bool | None = None,
        seed: int = 0,
        target_recall: float | None = DEFAULT_TARGET_RECALL,
        refine: int | None = None,
    ) -> "FaissIndex":
        """Encode ``passages`` with the retriever's passage encoder and index them.

        ``factory`` is any ``faiss.index_factory`` string ("Flat", "IVF1024,Flat", "IVF256,PQ64",
        "PQ48", "HNSW32", "OPQ16,IVF256,PQ16", ...). Trainable indexes are trained on a seeded
        sample of ``train_size`` vectors (default: all, capped at 256 x the number of centroids).
        An IVF or HNSW index is then tuned to ``target_recall`` (see :meth:`tune`; ``None`` skips it).
        ``refine``: see :meth:`from_embeddings`.
        """
        if not isinstance(passages, Passages):
            passages = load_passages(passages)
        t0 = time.perf_counter()
        embeddings = retriever.encode_passages(passages, batch_size=batch_size, show_progress=show_progress)
        encode_s = time.perf_counter() - t0
        index = cls.from_embeddings(
            embeddings,
            passages,
            retriever_identity=retriever.identity(),
            factory=factory,
            metric=metric,
            train_size=train_size,
            embeddings_dtype=embeddings_dtype,
            seed=seed,
            target_recall=target_recall,
            refine=refine,
        )
        index.manifest["build"]["encode_seconds"] = round(encode_s, 3)
        return index

    @classmethod
    def from_embeddings(
        cls,
        embeddings: np.ndarray,
        passages: Passages,
        retriever_identity: dict[str, Any] | None = None,
        factory: str = "Flat",
        metric: str = "ip",
        train_size: int | None = None,
        embeddings_dtype: str = "float16",
        seed: int = 0,
        target_recall: float | None = DEFAULT_TARGET_RECALL,
        refine: int | None = None,
    ) -> "FaissIndex":
        """Index precomputed passage vectors (row i belongs to ``passages[i]``); an IVF or HNSW
        index is tuned to ``target_recall`` (see :meth:`tune`; ``None`` skips it).

        ``refine``: fetch ``refine`` x k candidates and order them by exact scores over the stored
        embeddings. ``None`` (default): 4 when the index's codes are lossy (PQ, SQ, ...), else 1
        (off); it is recorded in the manifest and can be changed with :meth:`set_refine`.
        """
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        if embeddings_dtype not in ("float16", "float32"):
            raise ValueError(f"embeddings_dtype must be 'float16' or 'float32', got {embeddings_dtype!r}")
        on_disk = isinstance(embeddings, np.memmap)
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or len(embeddings) != len(passages):
            raise ValueError(f"embeddings must be [{len(passages)}, dim], got {embeddings.shape}")
        dim = int(embeddings.shape[1])
        if refine is not None and (not isinstance(refine, int) or refine < 1):
            raise ValueError(f"refine must be a positive integer (1 = off), got {refine!r}")
        t0 = time.perf_counter()
        checksum_state = passages.checksum_state()
        index = faiss.index_factory(dim, factory, METRICS[metric])
        _train(index, embeddings, train_size, seed)
        _add(index, embeddings)
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": cls.kind,
            "factory": factory,
            "metric": metric,
            "dim": dim,
            "count": len(passages),
            "version": 1,
            "history": [{"version": 1, "change": "build", "count": len(passages), "at": now_iso()}],
            "retriever": retriever_identity or {},
            "corpus_checksum": checksum_state.hexdigest(),
            "embeddings_dtype": embeddings_dtype,
            "refine": refine if refine is not None else (DEFAULT_REFINE if is_lossy(index) else 1),
            "created": now_iso(),
            "build": {"index_seconds": round(time.perf_counter() - t0, 3)},
        }
        if not on_disk:  # a memory-mapped array stays on disk (save() converts it chunk by chunk)
            embeddings = embeddings.astype(embeddings_dtype, copy=False)
        built = cls(index, passages, embeddings, manifest)
        built._checksum_state = checksum_state
        if target_recall is not None and search_knob(index) is not None:
            built.tune(target_recall, seed=seed)
        return built

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> None:
        """Write the index folder to a temporary sibling and publish it with an atomic rename."""
        with self._update_lock:
            if self._snap.dead:
                self.compact()
            manifest = self.manifest  # with the corpus checksum brought up to date
        with atomic_dir(folder) as tmp, self._rw.read_lock():
            index, passages, embeddings, _ = self._snap.index, self._snap.passages, self._snap.embeddings, None
            passages.save(tmp / "passages")
            if embeddings is not None:
                _save_array(tmp / "embeddings.npy", embeddings, self.manifest.get("embeddings_dtype", "float16"))
            faiss.write_index(index, str(tmp / "index.faiss"))
            atomic_write_json(tmp / MANIFEST, manifest)
        self.path = str(folder)

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        retriever: Any = None,
        allow_mismatch: bool = False,
        mmap: bool = True,
        load_embeddings: bool = True,
    ) -> "FaissIndex":
        """Load an index folder. With ``retriever``, refuse an index built by another encoder.

        ``mmap`` memory-maps the FAISS file where FAISS supports it and the embeddings always, so
        opening a large index is fast and its pages are shared between processes.
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest.get("kind") != cls.kind:
            raise ValueError(f"{folder}: is a {manifest.get('kind')!r} index, not {cls.kind!r}")
        check_retriever(manifest, retriever, where=str(folder), allow_mismatch=allow_mismatch)
        index, mapped = _read_index(folder / "index.faiss", mmap)
        passages = Passages.load(folder / "passages")
        embeddings = None
        emb_path = folder / "embeddings.npy"
        if load_embeddings and emb_path.is_file():
            embeddings = np.load(emb_path, mmap_mode="r" if mmap else None)
        verify_loaded(folder, manifest, len(passages), index.ntotal)  # one complete version, or IndexChangedError
        loaded = cls(index, passages, embeddings, manifest)
        loaded._apply_search_params()
        loaded._mapped = mapped
        loaded.path = str(folder)
        return loaded

    # ------------------------------------------------------------------ search
    @property
    def dim(self) -> int:
        return int(self.index.d)

    def set_search_params(self, **params: Any) -> None:
        """Query-time knobs, e.g. ``nprobe=32`` (IVF) or ``efSearch=128`` (HNSW).

        They are recorded in the manifest (``search_params``), applied again on load, and win over
        the values chosen by :meth:`tune`."""
        ps = faiss.ParameterSpace()
        for name, value in params.items():
            ps.set_index_parameter(self.index, name, value)
            self.manifest.setdefault("search_params", {})[name] = value

    def set_refine(self, refine: int) -> None:
        """Re-rank ``refine`` x k candidates by exact scores over the stored embeddings (1 = off);
        recorded in the manifest."""
        if not isinstance(refine, int) or refine < 1:
            raise ValueError(f"refine must be a positive integer (1 = off), got {refine!r}")
        self.manifest = {**self._manifest, "refine": refine}

    def _apply_search_params(self) -> None:
        """Tuned values first, then the explicit ones (which therefore win)."""
        params = {**(self.manifest.get("tuned") or {}).get("params", {}), **self.manifest.get("search_params", {})}
        ps = faiss.ParameterSpace()
        for name, value in params.items():
            ps.set_index_parameter(self.index, name, value)

    def tune(self, target_recall: float = DEFAULT_TARGET_RECALL, k: int = 20, queries: int = 500,
             seed: int = 0, query_vectors: np.ndarray | None = None) -> dict[str, Any]:
        """Choose the smallest ``nprobe`` (IVF) or ``efSearch`` (HNSW) whose top-``k`` recovers
        ``target_recall`` of exact (Flat) top-``k`` neighbours; store it in the manifest and use it.

        How (leave-one-out queries from the stored vectors, exact neighbours by brute force, a
        deterministic scan, plateau handling): :mod:`atlas_kit.index.faiss_tuning`. Searches are
        made without exact re-ranking when the queries are held-out passage vectors (they would
        saturate too early, see the comment below) and as :meth:`search` makes them when
        ``query_vectors`` (a sample of real query embeddings, e.g. questions) are given - the
        recommended way for a refined PQ index. Parameters set explicitly with
        :meth:`set_search_params` still win. Returns the manifest's ``tuned`` record.
        """
        if not 0 < target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        with self._update_lock:
            if self._snap.dead:
                self.compact()
        snap = self._snap
        if search_knob(snap.index) is None:
            raise ValueError(f"a {self.manifest.get('factory')!r} index has no search knob to tune (only IVF and HNSW do)")
        if snap.embeddings is None:
            raise ValueError("tuning needs the stored embeddings: load the index with load_embeddings=True")
        ps = faiss.ParameterSpace()
        # Held-out passage vectors are easier queries than questions (they sit inside the clusters
        # the IVF lists were trained on): re-ranked, their recall saturates at fewer probes than
        # questions need (SQuAD-open, IVF32,PQ48: nprobe=2 with re-ranking -> R@20 -11.2 vs Flat).
        # So with them the codes' own ranking is tuned (refine off: nprobe=8 there, -2.95 with
        # re-ranking on top); given real query vectors, the search is tuned as it runs.
        refine = self.refine if query_vectors is not None else 1
        metric = self._manifest.get("metric", "ip")

        def search_at(value: int, xq: np.ndarray, kk: int) -> np.ndarray:
            with self._rw.read_lock():
                ps.set_index_parameter(snap.index, search_knob(snap.index), value)
                return snap.search(xq, kk, refine=refine, metric=metric)[1]

        tuned = tune_knob(snap.index, snap.embeddings, search_at, METRICS[self.manifest.get("metric", "ip")],
                          target_recall, k=k, queries=queries, seed=seed, query_vectors=query_vectors)
        self.manifest = {**self.manifest, "tuned": tuned}
        self._apply_search_params()
        return tuned

    def to_gpu(self) -> bool:
        """Move search to all visible GPUs when faiss-gpu is installed; returns whether it did."""
        if not _gpu_available():
            log.info("faiss GPU support not available; searching on CPU")
            return False
        self._gpu_source = self.index
        self._gpu_index = faiss.index_cpu_to_all_gpus(self._gpu_source)
        return True

    def search_vectors(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Vector search: (scores [n, k], passage positions [n, k]); position -1 means no result.
        Refined and with removed passages dropped, as :meth:`search`."""
        with self._rw.read_lock():
            return self._search(self._snap, query_embeddings, k)

    def _search(self, snap: FaissSnapshot, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search of ``snap`` (the caller holds the read lock), refined over the stored
        embeddings when ``refine`` > 1, tombstoned rows dropped, labels as live positions."""
        q = np.ascontiguousarray(query_embeddings, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != snap.index.d:
            raise ValueError(f"query embeddings must be [n, {snap.index.d}], got {q.shape}")
        gpu = self._gpu_index if self._gpu_index is not None and snap.index is self._gpu_source else None
        return snap.search(q, k, refine=self.refine, metric=self._manifest.get("metric", "ip"), index=gpu)

    # ------------------------------------------------------------------ incremental updates
    def add(self, passages: Passages | str | os.PathLike, retriever: Any = None,
            embeddings: np.ndarray | None = None, batch_size: int = 128) -> "FaissIndex":
        """Append passages (encoded with ``retriever``, which must match the manifest, or given as
        ``embeddings``). Existing passages keep their positions and ids; the manifest version
        increments. Returns ``self``. Searches running meanwhile see the old or the new state.

        The FAISS index grows in place and the stored embeddings grow into spare capacity
        (doubling), so an append costs about the same on a large index as on a small one; only the
        first write to a memory-mapped index copies it into memory (see :attr:`memory_mapped`).
        """
        if not isinstance(passages, Passages):
            passages = load_passages(passages)
        if embeddings is None:
            if retriever is None:
                raise ValueError("FaissIndex.add needs the retriever that built the index (or embeddings=...)")
            check_retriever(self.manifest, retriever, where="FaissIndex.add")
            embeddings = retriever.encode_passages(passages, batch_size=batch_size)
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.shape != (len(passages), self.dim):
            raise ValueError(f"embeddings must be [{len(passages)}, {self.dim}], got {embeddings.shape}")
        with self._update_lock:
            snap = self._snap
            index, old_emb = snap.index, snap.embeddings
            merged = snap.passages.concat(passages)  # raises on duplicate ids before anything changes
            new_emb = None if old_emb is None else self._grown(old_emb, embeddings)
            checksum_state = None
            if not self._checksum_pending:
                if self._checksum_state is None:
                    self._checksum_state = snap.passages.checksum_state()  # once after load; then per append
                checksum_state = passages.checksum_state(self._checksum_state)
            if self._mapped:  # FAISS aborts on writes to a view: copy it into memory first
                index = faiss.deserialize_index(faiss.serialize_index(index))
            with self._rw.write_lock():
                _add(index, embeddings)
                self._commit(FaissSnapshot(index, merged, new_emb, snap.dead), "add", len(passages), checksum_state)
        return self

    def _grown(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """``old`` followed by ``new``, written into spare capacity after ``old`` when there is some.

        Rows past ``len(old)`` are never part of a published snapshot, so writing them does not
        disturb a search still holding ``old``; a full buffer is replaced by one twice as large.
        """
        n, m = len(old), len(new)
        buf = self._emb_buffer
        if buf is None or old.base is not buf or len(buf) < n + m:
            buf = np.empty((max(2 * n, n + m, 1024), old.shape[1]), dtype=self.manifest.get("embeddings_dtype", "float16"))
            buf[:n] = old
            self._emb_buffer = buf
        buf[n : n + m] = new
        return buf[: n + m]

    def remove(self, ids: Sequence[str]) -> "FaissIndex":
        """Remove passages by id; the others keep their ids (positions shift down, in order).

        The rows are marked removed (tombstones) in the FAISS index and the passages, which costs
        O(removed): searches skip them at once. They are dropped for good by :meth:`compact`, which
        runs on :meth:`save` and whenever the tombstones exceed :attr:`compact_at`. The corpus
        checksum in the manifest is recomputed when the manifest is next read.
        """
        with self._update_lock:
            snap = self._snap
            live = sorted({snap.passages.position(pid) for pid in ids})  # KeyError names an unknown id
            if not live:
                return self
            if snap.embeddings is None and not is_flat(snap.index):
                raise ValueError("this index was loaded without embeddings; cannot rebuild it after removal")
            kept = snap.passages.remove([snap.passages.ids[p] for p in live])
            dead = snap.dead.with_removed(snap.dead.to_stored(np.asarray(live)))
            with self._rw.write_lock():
                self._commit(FaissSnapshot(snap.index, kept, snap.embeddings, dead), "remove", len(live), None)
            if len(dead) > self.compact_at:
                self.compact()
        return self

    def compact(self) -> "FaissIndex":
        """Drop the rows removed since the last compaction from the FAISS index, the stored
        embeddings and the passages (O(index)). Searches go on meanwhile, except during a Flat
        index's in-place ``remove_ids``.

        Flat indexes delete in place (``remove_ids``, exact). Other index types are rebuilt from the
        stored embeddings with their trained quantizers (``reset`` + ``add`` on a copy): no
        re-encoding and no re-training, at the cost of one pass of ``add`` over the remaining vectors.
        """
        with self._update_lock:
            snap = self._snap
            if not snap.dead:
                return self
            index, emb = snap.index, snap.embeddings
            n_stored = int(index.ntotal)
            keep = snap.dead.live_positions(n_stored)
            new_emb = None if emb is None else np.asarray(emb)[keep]
            passages = snap.passages.compacted()
            flat = is_flat(index)
            if self._mapped:
                index = faiss.deserialize_index(faiss.serialize_index(index))
            elif not flat:
                index = faiss.clone_index(index)  # rebuilt aside, so searches go on meanwhile
            if not flat:
                index.reset()
                _add(index, new_emb)
            with self._rw.write_lock():
                if flat:
                    index.remove_ids(np.ascontiguousarray(snap.dead.dead, dtype=np.int64))
                self._emb_buffer = None
                self._snap = FaissSnapshot(index, passages, new_emb, Tombstones())
                self._mapped = False
                self._gpu_index = None
            log.info("compacted the FAISS index: %d removed rows dropped, %d remain", len(snap.dead), len(keep))
        return self

    def _commit(self, snap: FaissSnapshot, change: str, n: int, checksum_state: Any) -> None:
        """Publish a new state (the caller holds the write lock). ``checksum_state`` ``None``:
        the corpus checksum is recomputed when the manifest is next read."""
        if checksum_state is None:
            self._manifest = bumped(self._manifest, change, n, count=len(snap.passages))
            self._checksum_pending = True
        else:
            self._manifest = bumped(self._manifest, change, n, count=len(snap.passages),
                                    corpus_checksum=checksum_state.hexdigest())
        if snap.index is not self._snap.index:
            self._mapped = False  # an add to a memory-mapped index copied it into memory
        self._snap = snap
        self._checksum_state = checksum_state
        self._gpu_index = None

    def search(self, queries: Sequence[str], k: int, query_embeddings: np.ndarray | None = None) -> list[Hits]:
        if query_embeddings is None:
            raise ValueError("FaissIndex.search needs query_embeddings (use Atlas.retrieve, which computes them)")
        with self._rw.read_lock():
            snap = self._snap
            scores, positions = self._search(snap, query_embeddings, k)
        passages = snap.passages
        if positions.size and positions[:, -1].min() < 0:  # some queries got fewer than k results
            keep = positions >= 0
            return [Hits(passages, p[m], s[m]) for p, s, m in zip(positions, scores, keep)]
        return [Hits(passages, p, s) for p, s in zip(positions, scores)]

    def __len__(self) -> int:
        return len(self._snap.passages)

    def info(self) -> dict[str, Any]:
        info = dict(self.manifest)
        info["ntotal"] = len(self)
        info["tombstones"] = len(self._snap.dead)
        info["memory_bytes"] = _index_bytes(self.index)
        return info


def _default_train_size(index: faiss.Index, n: int) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return min(n, max(256 * ivf.nlist, 10_000))
    return min(n, 65_536)


def _train(index: faiss.Index, embeddings: np.ndarray, train_size: int | None, seed: int) -> None:
    if index.is_trained:
        return
    n = len(embeddings)
    size = min(n, train_size or _default_train_size(index, n))
    rng = np.random.default_rng(seed)
    sample = embeddings if size >= n else embeddings[np.sort(rng.choice(n, size, replace=False))]
    log.info("training FAISS index on %d vectors", size)
    t0 = time.perf_counter()
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    log.info("trained in %.1fs", time.perf_counter() - t0)


def _add(index: faiss.Index, embeddings: np.ndarray, chunk: int = 65_536) -> None:
    n = len(embeddings)
    for start in tqdm(range(0, n, chunk), desc="add to FAISS", disable=n <= chunk, unit="chunk"):
        index.add(np.ascontiguousarray(embeddings[start : start + chunk], dtype=np.float32))


def _save_array(path: Path, array: np.ndarray, dtype: str, chunk: int = 65_536) -> None:
    """Write ``array`` as ``dtype`` to a ``.npy`` file chunk by chunk (no full in-memory copy)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=array.shape)
    for start in range(0, len(array), chunk):
        out[start : start + chunk] = array[start : start + chunk]
    out.flush()
    del out


def _read_index(path: Path, mmap: bool) -> tuple[faiss.Index, bool]:
    """The FAISS index at ``path`` and whether it is a memory-mapped (read-only) view."""
    if mmap:
        for flag_name in ("IO_FLAG_MMAP_IFC", "IO_FLAG_MMAP"):
            flag = getattr(faiss, flag_name, None)
            if flag is None:
                continue
            try:
                return faiss.read_index(str(path), flag), True
            except RuntimeError:
                continue
    return faiss.read_index(str(path)), False


def _index_bytes(index: faiss.Index) -> int:
    """Bytes the index occupies when serialised (a close proxy for its RAM footprint)."""
    try:
        return int(faiss.serialize_index(index).nbytes)
    except Exception:  # pragma: no cover
        return -1
