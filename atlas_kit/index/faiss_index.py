"""Dense index over passage embeddings, backed by FAISS (any factory string).

Folder layout::

    manifest.json     format version, kind, factory, metric, dim, count, retriever identity, corpus checksum
    passages/         the passages (Arrow, memory-mapped on load)
    embeddings.npy    the passage vectors (float16 by default; loaded with mmap) - kept so the index can be
                      rebuilt, updated or re-ranked without re-encoding the corpus
    index.faiss       the FAISS index (labels = passage positions)
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
from atlas_kit.passages import Passages, load_passages
from atlas_kit.storage import atomic_dir, atomic_write_json

__all__ = ["FaissIndex"]

log = logging.getLogger(__name__)

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


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
        # one tuple, replaced as a whole by add/remove: a search reads it once and so always sees
        # a consistent (index, passages, embeddings) snapshot, even while an update runs
        self._state: tuple[faiss.Index, Passages, np.ndarray | None] = (index, passages, embeddings)
        self.manifest = manifest
        self._gpu_index = None
        self._gpu_source = None
        self._update_lock = threading.Lock()
        self.path: str | None = None

    @property
    def index(self) -> faiss.Index:
        return self._state[0]

    @property
    def passages(self) -> Passages:
        return self._state[1]

    @property
    def embeddings(self) -> np.ndarray | None:
        return self._state[2]

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
    ) -> "FaissIndex":
        """Encode ``passages`` with the retriever's passage encoder and index them.

        ``factory`` is any ``faiss.index_factory`` string ("Flat", "IVF1024,Flat", "IVF256,PQ64",
        "PQ48", "HNSW32", "OPQ16,IVF256,PQ16", ...). Trainable indexes are trained on a seeded
        sample of ``train_size`` vectors (default: all, capped at 256 x the number of centroids).
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
    ) -> "FaissIndex":
        """Index precomputed passage vectors (row i belongs to ``passages[i]``)."""
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        if embeddings_dtype not in ("float16", "float32"):
            raise ValueError(f"embeddings_dtype must be 'float16' or 'float32', got {embeddings_dtype!r}")
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or len(embeddings) != len(passages):
            raise ValueError(f"embeddings must be [{len(passages)}, dim], got {embeddings.shape}")
        dim = int(embeddings.shape[1])
        t0 = time.perf_counter()
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
            "corpus_checksum": passages.checksum(),
            "embeddings_dtype": embeddings_dtype,
            "created": now_iso(),
            "build": {"index_seconds": round(time.perf_counter() - t0, 3)},
        }
        return cls(index, passages, embeddings.astype(embeddings_dtype, copy=False), manifest)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> None:
        """Write the index folder to a temporary sibling and publish it with an atomic rename."""
        with atomic_dir(folder) as tmp:
            index, passages, embeddings = self._state
            passages.save(tmp / "passages")
            if embeddings is not None:
                np.save(tmp / "embeddings.npy", np.asarray(embeddings, dtype=self.manifest.get("embeddings_dtype", "float16")))
            faiss.write_index(index, str(tmp / "index.faiss"))
            atomic_write_json(tmp / MANIFEST, self.manifest)
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
        index = _read_index(folder / "index.faiss", mmap)
        passages = Passages.load(folder / "passages")
        embeddings = None
        emb_path = folder / "embeddings.npy"
        if load_embeddings and emb_path.is_file():
            embeddings = np.load(emb_path, mmap_mode="r" if mmap else None)
        verify_loaded(folder, manifest, len(passages), index.ntotal)  # one complete version, or IndexChangedError
        loaded = cls(index, passages, embeddings, manifest)
        loaded.path = str(folder)
        return loaded

    # ------------------------------------------------------------------ search
    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def set_search_params(self, **params: Any) -> None:
        """Query-time knobs, e.g. ``nprobe=32`` (IVF) or ``efSearch=128`` (HNSW)."""
        ps = faiss.ParameterSpace()
        for name, value in params.items():
            ps.set_index_parameter(self.index, name, value)
            self.manifest.setdefault("search_params", {})[name] = value

    def to_gpu(self) -> bool:
        """Move search to all visible GPUs when faiss-gpu is installed; returns whether it did."""
        if not _gpu_available():
            log.info("faiss GPU support not available; searching on CPU")
            return False
        self._gpu_source = self.index
        self._gpu_index = faiss.index_cpu_to_all_gpus(self._gpu_source)
        return True

    def search_vectors(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw FAISS search: (scores [n, k], positions [n, k]); position -1 means no result."""
        return self._search(self.index, query_embeddings, k)

    def _search(self, index: faiss.Index, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(query_embeddings, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != index.d:
            raise ValueError(f"query embeddings must be [n, {index.d}], got {q.shape}")
        if self._gpu_index is not None and index is self._gpu_source:
            index = self._gpu_index
        return index.search(q, k)

    # ------------------------------------------------------------------ incremental updates
    def add(self, passages: Passages | str | os.PathLike, retriever: Any = None,
            embeddings: np.ndarray | None = None, batch_size: int = 128) -> "FaissIndex":
        """Append passages (encoded with ``retriever``, which must match the manifest, or given as
        ``embeddings``). Existing passages keep their positions and ids; the manifest version
        increments. Returns ``self``. Searches running meanwhile see the old or the new state."""
        if not isinstance(passages, Passages):
            passages = load_passages(passages)
        if embeddings is None:
            if retriever is None:
                raise ValueError("FaissIndex.add needs the retriever that built the index (or embeddings=...)")
            check_retriever(self.manifest, retriever, where="FaissIndex.add")
            embeddings = retriever.encode_passages(passages, batch_size=batch_size)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape != (len(passages), self.dim):
            raise ValueError(f"embeddings must be [{len(passages)}, {self.dim}], got {embeddings.shape}")
        with self._update_lock:
            index, old_passages, old_emb = self._state
            merged = old_passages.concat(passages)  # raises on duplicate ids before anything changes
            new_index = faiss.clone_index(index)
            _add(new_index, embeddings)
            dtype = self.manifest.get("embeddings_dtype", "float16")
            new_emb = None if old_emb is None else np.concatenate([np.asarray(old_emb), embeddings.astype(dtype)])
            self._commit((new_index, merged, new_emb), "add", len(passages))
        return self

    def remove(self, ids: Sequence[str]) -> "FaissIndex":
        """Remove passages by id; the others keep their ids (positions shift down, in order).

        Flat indexes delete in place (``remove_ids``, exact). Other index types are rebuilt from the
        stored embeddings with their trained quantizers (``reset`` + ``add``): no re-encoding and no
        re-training, at the cost of one pass of ``add`` over the remaining vectors.
        """
        with self._update_lock:
            index, passages, emb = self._state
            drop = sorted({passages.position(pid) for pid in ids})  # KeyError names an unknown id
            if not drop:
                return self
            keep_mask = np.ones(len(passages), dtype=bool)
            keep_mask[drop] = False
            keep = np.flatnonzero(keep_mask)
            new_index = faiss.clone_index(index)
            if isinstance(faiss.downcast_index(new_index), faiss.IndexFlat):
                new_index.remove_ids(np.asarray(drop, dtype=np.int64))
            else:
                if emb is None:
                    raise ValueError("this index was loaded without embeddings; cannot rebuild it after removal")
                new_index.reset()
                _add(new_index, np.asarray(emb)[keep])
            new_emb = None if emb is None else np.asarray(emb)[keep]
            self._commit((new_index, passages.select(keep.tolist()), new_emb), "remove", len(drop))
        return self

    def _commit(self, state: tuple[faiss.Index, Passages, np.ndarray | None], change: str, n: int) -> None:
        manifest = bumped(self.manifest, change, n, count=len(state[1]), corpus_checksum=state[1].checksum())
        self._state = state
        self.manifest = manifest
        self._gpu_index = None

    def search(self, queries: Sequence[str], k: int, query_embeddings: np.ndarray | None = None) -> list[Hits]:
        if query_embeddings is None:
            raise ValueError("FaissIndex.search needs query_embeddings (use Atlas.retrieve, which computes them)")
        index, passages, _ = self._state
        scores, positions = self._search(index, query_embeddings, k)
        if positions.size and positions[:, -1].min() < 0:  # some queries got fewer than k results
            keep = positions >= 0
            return [Hits(passages, p[m], s[m]) for p, s, m in zip(positions, scores, keep)]
        return [Hits(passages, p, s) for p, s in zip(positions, scores)]

    def info(self) -> dict[str, Any]:
        info = dict(self.manifest)
        info["ntotal"] = len(self)
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


def _read_index(path: Path, mmap: bool) -> faiss.Index:
    if mmap:
        for flag_name in ("IO_FLAG_MMAP_IFC", "IO_FLAG_MMAP"):
            flag = getattr(faiss, flag_name, None)
            if flag is None:
                continue
            try:
                return faiss.read_index(str(path), flag)
            except RuntimeError:
                continue
    return faiss.read_index(str(path))


def _index_bytes(index: faiss.Index) -> int:
    """Bytes the index occupies when serialised (a close proxy for its RAM footprint)."""
    try:
        return int(faiss.serialize_index(index).nbytes)
    except Exception:  # pragma: no cover
        return -1
