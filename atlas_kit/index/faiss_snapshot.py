"""One consistent state of a FAISS index, and how a search of it reads results.

A :class:`FaissSnapshot` is what one search (or one stored-vector lookup) of a
:class:`~atlas_kit.index.FaissIndex` sees: the FAISS index, the live passages, the stored
embeddings and the tombstones of rows removed since the last compaction. :meth:`FaissSnapshot.search`
turns FAISS labels into passage positions, dropping tombstoned rows, and - for indexes whose codes
lose precision - re-ranks ``refine`` x k candidates by exact scores over the stored embeddings.

Where this differs from FAISS's own tools, on purpose: FAISS's ``IndexRefineFlat`` does the same
re-ranking but keeps a second float32 copy of every vector inside the FAISS file; the index folder
already stores ``embeddings.npy`` (float16 by default, memory-mapped), so the re-ranking reads
those. Removed rows are filtered after the search (fetching ``k + tombstones`` candidates) rather
than with a FAISS ``IDSelector``, because search parameters with a selector must be built per index
type (IVF, HNSW, pre-transforms) and would replace the tuned ``nprobe`` / ``efSearch``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from atlas_kit.passages import Passages
from atlas_kit.passages.tombstones import Tombstones

__all__ = ["FaissSnapshot", "is_flat", "is_lossy", "inner_index"]

_REFINE_FLOATS = 1 << 24  # float32 values gathered per chunk of queries while re-ranking (64 MB)


@dataclass(frozen=True)
class FaissSnapshot:
    """One consistent state of a :class:`~atlas_kit.index.FaissIndex`: what one search or vector
    lookup reads.

    ``passages`` are the live passages; ``embeddings`` and the FAISS ``index`` hold *stored* rows
    (removed ones included until compaction, listed in ``dead``). Positions given to
    :meth:`vectors` and returned by :meth:`search` are live positions of ``passages``, as in
    :class:`~atlas_kit.index.base.Hits`.
    """

    index: faiss.Index
    passages: Passages
    embeddings: np.ndarray | None
    dead: Tombstones

    @property
    def has_vectors(self) -> bool:
        """Whether :meth:`vectors` can answer (stored embeddings, or an exact Flat index)."""
        return self.embeddings is not None or is_flat(self.index)

    def vectors(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """Float32 vectors of the passages at live ``positions``: the stored float32 embeddings,
        else the exact vectors of a Flat index, else the stored (float16) embeddings. Read in
        position order (sequential reads of a memory-mapped file)."""
        stored = self.dead.to_stored(np.asarray(positions, dtype=np.int64))
        order = np.argsort(stored, kind="stable")
        sorted_pos = stored[order]
        emb = self.embeddings
        if emb is not None and emb.dtype == np.float32:
            vecs = np.asarray(emb[sorted_pos], dtype=np.float32)
        elif is_flat(self.index):
            vecs = self.index.reconstruct_batch(np.ascontiguousarray(sorted_pos, dtype=np.int64))
        elif emb is not None:
            vecs = np.asarray(emb[sorted_pos], dtype=np.float32)
        else:
            raise ValueError("this index stores no vectors (loaded without embeddings, and not Flat)")
        out = np.empty_like(vecs)
        out[order] = vecs
        return out

    def search(self, queries: np.ndarray, k: int, refine: int = 1, metric: str = "ip",
               index: faiss.Index | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores [n, k], live positions [n, k]; -1 = no result) of float32 ``queries``.

        ``refine`` > 1 (and stored embeddings) re-scores ``refine`` x k candidates exactly;
        ``index`` searches another copy of the same index (e.g. on a GPU) instead of ``self.index``.
        """
        index = self.index if index is None else index
        refine = refine if self.embeddings is not None else 1
        if refine <= 1 and not self.dead:
            return index.search(queries, k)
        fetch = min(k * refine + len(self.dead), max(int(self.index.ntotal), 1))
        scores, labels = index.search(queries, fetch)
        valid = labels >= 0
        if self.dead:
            valid &= ~self.dead.is_dead(labels)
        ip = metric == "ip"
        if refine > 1:
            scores = _exact_scores(self.embeddings, queries, labels, valid, ip)
        worst = np.float32(-np.inf if ip else np.inf)
        scores = np.where(valid, scores, worst).astype(np.float32, copy=False)
        order = np.argsort(-scores if ip else scores, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(scores, order, axis=1)
        labels = np.take_along_axis(labels, order, axis=1)
        ok = np.take_along_axis(valid, order, axis=1)
        positions = np.where(ok, self.dead.to_live(np.where(ok, labels, 0)), -1)
        if positions.shape[1] < k:  # fewer stored rows than k: pad as FAISS does
            pad = k - positions.shape[1]
            positions = np.pad(positions, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=worst)
        return scores, positions


def is_flat(index: Any) -> bool:
    """Whether ``index`` is an exact ``IndexFlat`` (its vectors can be reconstructed exactly)."""
    try:
        return isinstance(faiss.downcast_index(index), faiss.IndexFlat)
    except Exception:  # not a FAISS index
        return False


def inner_index(index: faiss.Index) -> faiss.Index:
    """The index below any pre-transform (OPQ, PCA...) wrapper."""
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index


def is_lossy(index: faiss.Index) -> bool:
    """Whether the index stores compressed codes (PQ, SQ, ...) rather than the float vectors."""
    try:
        return int(index.sa_code_size()) < 4 * index.d
    except RuntimeError:  # kinds without standalone codes (e.g. HNSW over Flat storage)
        storage = getattr(inner_index(index), "storage", None)
        return storage is not None and not is_flat(storage)


def _exact_scores(emb: np.ndarray, q: np.ndarray, labels: np.ndarray, valid: np.ndarray, ip: bool) -> np.ndarray:
    """Exact inner products (or squared L2 distances) of ``q`` with the stored rows ``labels``."""
    n, fetch = labels.shape
    out = np.empty((n, fetch), dtype=np.float32)
    safe = np.where(valid, labels, 0)
    step = max(1, _REFINE_FLOATS // max(1, fetch * q.shape[1]))
    for i in range(0, n, step):
        rows = safe[i : i + step]
        flat = rows.reshape(-1)
        order = np.argsort(flat, kind="stable")  # sequential reads of a memory-mapped file
        vecs = np.empty((len(flat), q.shape[1]), dtype=np.float32)
        vecs[order] = np.asarray(emb[flat[order]], dtype=np.float32)
        vecs = vecs.reshape(len(rows), fetch, -1)
        if ip:
            out[i : i + step] = np.einsum("nkd,nd->nk", vecs, q[i : i + step])
        else:
            out[i : i + step] = ((vecs - q[i : i + step, None, :]) ** 2).sum(-1)
    return out
