"""Choosing a FAISS search knob (``nprobe`` for IVF, ``efSearch`` for HNSW) for a target recall.

The queries are a seeded sample of stored passage vectors, each searched leave-one-out (its own
passage is dropped from both result lists, so it acts as a held-out vector). The exact neighbours
come from a chunked brute-force pass over the stored embeddings
(``faiss.contrib.exhaustive_search.knn_ground_truth``). Where FAISS's ``ParameterSpace.explore``
picks operating points by measured speed, this scans one knob in increasing order and keeps the
first value that reaches the target: deterministic, so a rebuild gets the same setting. If recall
levels off below the target (the codes themselves lose too much, e.g. coarse PQ), the start of the
plateau is kept and a warning logged.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth

from atlas_kit.index.faiss_snapshot import inner_index

__all__ = ["search_knob", "knob_values", "tune_knob"]

log = logging.getLogger(__name__)


def search_knob(index: faiss.Index) -> str | None:
    """The query-time knob that trades speed for recall: ``nprobe`` (IVF), ``efSearch`` (HNSW)."""
    if faiss.try_extract_index_ivf(index) is not None:
        return "nprobe"
    if isinstance(faiss.downcast_index(inner_index(index)), faiss.IndexHNSW):
        return "efSearch"
    return None


def knob_values(index: faiss.Index, knob: str, k: int) -> list[int]:
    """The values scanned, in increasing order (powers of two up to ``nlist`` for IVF)."""
    if knob == "nprobe":
        nlist = faiss.try_extract_index_ivf(index).nlist
        return sorted({min(2**i, nlist) for i in range(int(np.ceil(np.log2(nlist))) + 1)})
    return [v for v in (16, 32, 64, 128, 256, 512, 1024, 2048) if v >= k] or [k]


def _drop_self(found: np.ndarray, pos: np.ndarray, k: int) -> list[np.ndarray]:
    """Per query, the first ``k`` results other than the query's own position (and padding)."""
    return [row[(row != p) & (row >= 0)][:k] for row, p in zip(found, pos)]


def tune_knob(index: faiss.Index, embeddings: np.ndarray, search_at: Callable[[int, np.ndarray, int], np.ndarray],
              metric_type: int, target_recall: float, k: int = 20, queries: int = 500, seed: int = 0,
              query_vectors: np.ndarray | None = None) -> dict[str, Any]:
    """The smallest knob value whose top-``k`` recovers ``target_recall`` of exact top-``k``.

    ``search_at(value, xq, kk)`` sets the knob to ``value`` and returns the positions [n, kk] the
    index's own search finds (as searches run: refined, tombstones dropped). ``query_vectors``:
    real query embeddings (e.g. questions) to tune on instead of held-out passage vectors - a
    seeded sample of ``queries`` of them, searched as they are (no leave-one-out). Questions are
    usually farther from the passages than passages are from each other, so they need more probes
    for the same recall (measured in eval/bench_scale.py). Returns the record a manifest keeps under
    ``tuned``: ``params``, ``target_recall``, ``recall``, ``k``, ``queries``, ``seed``, ``query_source``.
    """
    knob = search_knob(index)
    if knob is None:
        raise ValueError("the index has no search knob to tune (only IVF and HNSW do)")
    n = len(embeddings)
    k = min(k, n - 1)
    if k < 1:
        raise ValueError("tuning needs at least two passages")
    rng = np.random.default_rng(seed)
    if query_vectors is None:  # held-out passage vectors: each query's own passage is dropped
        pos = np.sort(rng.choice(n, min(queries, n), replace=False))
        xq = np.ascontiguousarray(np.asarray(embeddings[pos]), dtype=np.float32)
        extra = 1
    else:
        qv = np.asarray(query_vectors, dtype=np.float32)
        if qv.ndim != 2 or qv.shape[1] != embeddings.shape[1]:
            raise ValueError(f"query_vectors must be [n, {embeddings.shape[1]}], got {qv.shape}")
        xq = np.ascontiguousarray(qv[np.sort(rng.choice(len(qv), min(queries, len(qv)), replace=False))])
        pos, extra = np.full(len(xq), -1), 0  # -1: no own passage to drop
    chunks = (np.ascontiguousarray(embeddings[i : i + 65_536], dtype=np.float32) for i in range(0, n, 65_536))
    _, gt = knn_ground_truth(xq, chunks, k + extra, metric_type=metric_type)
    truth = _drop_self(gt, pos, k)
    seen: list[tuple[int, float]] = []
    for value in knob_values(index, knob, k):
        got = _drop_self(search_at(value, xq, k + extra), pos, k)
        seen.append((value, float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth)]))))
        log.info("tune: %s=%d -> recall@%d %.3f", knob, value, k, seen[-1][1])
        plateau = len(seen) >= 3 and seen[-1][1] - seen[-3][1] < 1e-3
        if seen[-1][1] >= target_recall or plateau:
            break
    value, recall = seen[-1]
    if recall < target_recall:
        best = max(r for _, r in seen)
        value, recall = next((v, r) for v, r in seen if r >= best - 5e-3)  # the plateau's start
        log.warning("tune: recall@%d of exact search stops at %.3f (%s=%d), below the target %.3f: "
                    "the index's codes lose more than that", k, recall, knob, value, target_recall)
    return {"params": {knob: int(value)}, "target_recall": target_recall, "recall": round(recall, 4),
            "k": k, "queries": len(xq), "seed": seed,
            "query_source": "passages (leave-one-out)" if query_vectors is None else "given query vectors"}
