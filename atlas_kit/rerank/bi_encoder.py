"""Bi-encoder reranking: re-score candidates with fresh passage embeddings.

``score = query_embedding . passage_embedding`` with the retriever's own pooling and
normalisation, so with an unchanged retriever the scores equal the (exact) index's. Uses:

* an approximate index (IVF-PQ, PQ, HNSW) retrieves many candidates cheaply, and the exact inner
  products re-rank them (from the index's stored full-precision vectors, no encoding at all);
* during training the passage encoder drifts away from the index, so the candidates of the stale
  index are re-embedded with the *current* passage encoder (Atlas's "re-rank" refresh strategy).
  The weight fingerprint tells the two cases apart: vectors stored by an index built with the same
  fingerprint are reused, any others are encoded.

All candidates of a batch of questions are de-duplicated by passage id and encoded together in
length-sorted batches by the retriever's own engine (:meth:`Retriever.encode_texts`,
:mod:`atlas_kit.batching`), never one forward pass per question.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from atlas_kit.index.base import Hits, Index
from atlas_kit.rerank.base import CandidateSet, Reranker, gather_candidates
from atlas_kit.batching import EncodeStats, resolve_devices

__all__ = ["BiEncoderReranker", "reusable_sources"]

# identity fields that must agree for an index's stored vectors to equal fresh ones
_IDENTITY_KEYS = ("fingerprint", "dim", "pooling", "normalize", "passage_maxlength", "with_title")


class BiEncoderReranker(Reranker):
    """Re-score candidates by ``query . passage`` with the retriever's current passage encoder.

    Args:
        retriever: the :class:`~atlas_kit.Retriever` (its query encoder embeds the questions, its
            passage encoder the candidates).
        batch_size: inputs per forward pass (a cap when ``max_tokens_per_batch`` is set).
        max_tokens_per_batch: budget of padded tokens per forward pass instead of a fixed batch
            size: short passages go in large batches, long ones in small batches.
        reuse_index_embeddings: take the vectors the index already stores when the index was
            built by this very passage encoder (same weight fingerprint, pooling, normalisation,
            max length, title use). ``False`` always re-encodes.
        devices: where to encode, e.g. ``["cuda:0", "cuda:1"]`` for data-parallel encoding of the
            length buckets (one replica per device, batches dealt round-robin). ``None``: the
            retriever's device if it is a GPU, else the first GPU if any, else the CPU.
        amp: bf16 (or fp16) autocast on CUDA; ignored on CPU.
        pin_memory: pinned host buffers + non-blocking copies to CUDA devices.
        sort_by_length: bucket by token length (disable only to measure what it buys).
        query_batch_size: batch size for the questions.

    After each call ``last_stats`` (:class:`~atlas_kit.batching.EncodeStats`) says how many
    passages were encoded or reused, in how many batches, with how much padding.
    """

    def __init__(
        self,
        retriever: Any,
        batch_size: int = 128,
        max_tokens_per_batch: int | None = None,
        reuse_index_embeddings: bool = True,
        devices: Sequence[str | torch.device] | str | torch.device | None = None,
        amp: bool = True,
        pin_memory: bool = True,
        sort_by_length: bool = True,
        query_batch_size: int = 128,
    ) -> None:
        self.retriever = retriever
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.reuse_index_embeddings = reuse_index_embeddings
        self.devices = devices
        self.amp = amp
        self.pin_memory = pin_memory
        self.sort_by_length = sort_by_length
        self.query_batch_size = query_batch_size
        self.last_stats = EncodeStats()

    @property
    def encoded_last(self) -> int:
        """Passages the last call encoded (0 when every vector came from the index)."""
        return self.last_stats.encoded

    # ------------------------------------------------------------------ scoring
    def score(self, questions: Sequence[str], hits: Sequence[Hits], index: Index | None = None,
              query_embeddings: np.ndarray | None = None) -> list[np.ndarray]:
        """``query . passage`` for every hit of every question (float32, hit order).

        ``query_embeddings`` ([n_questions, dim], from this retriever) skips query encoding.
        """
        qs = list(questions)
        if len(qs) != len(hits):
            raise ValueError(f"{len(qs)} questions but {len(hits)} hit lists")
        self.last_stats = stats = EncodeStats()
        cands = gather_candidates(hits)
        q = self._query_embeddings(qs) if query_embeddings is None else np.asarray(query_embeddings, dtype=np.float32)
        if q.shape != (len(qs), self.retriever.dim):
            raise ValueError(f"query_embeddings must be [{len(qs)}, {self.retriever.dim}], got {q.shape}")
        vectors = self.candidate_embeddings(cands, index, stats=stats)
        return [vectors[slot] @ q[i] for i, slot in enumerate(cands.slots)]

    def rerank(self, questions, hits, k=None, index=None, query_embeddings=None):  # type: ignore[override]
        """Re-score with fresh (or reused) passage vectors, sort, keep ``k``; see :meth:`score`."""
        return super().rerank(questions, hits, k, index=index, query_embeddings=query_embeddings)

    def _query_embeddings(self, questions: list[str]) -> np.ndarray:
        unique = list(dict.fromkeys(questions))
        emb = self.retriever.encode_queries(unique, batch_size=self.query_batch_size, show_progress=False)
        if len(unique) == len(questions):
            return emb
        row = {q: i for i, q in enumerate(unique)}
        return emb[[row[q] for q in questions]]

    # ------------------------------------------------------------------ passage vectors
    def candidate_embeddings(self, cands: CandidateSet, index: Index | None = None,
                             stats: EncodeStats | None = None) -> np.ndarray:
        """[n_unique, dim] float32 vectors of the unique candidates: reused from the index where
        allowed, encoded (bucketed) otherwise."""
        stats = stats if stats is not None else EncodeStats()
        n = len(cands)
        out = np.empty((n, self.retriever.dim), dtype=np.float32)
        need = np.ones(n, dtype=bool)
        if self.reuse_index_embeddings and index is not None and n:
            for src in reusable_sources(index, self.retriever):
                _fill_from_index(src, cands, need, out)
        stats.reused = int(n - need.sum())
        todo = np.flatnonzero(need)
        if len(todo):
            texts = self.retriever.passage_texts(cands.passages(todo))
            out[todo] = self.encode_texts(texts, stats=stats)
        return out

    def encode_passages(self, passages: Sequence[Any], stats: EncodeStats | None = None) -> np.ndarray:
        """[n, dim] float32 embeddings of passages (objects with title/text, dicts or strings) with
        the current passage encoder, in length-sorted batches; rows in input order."""
        return self.encode_texts(self.retriever.passage_texts(passages), stats=stats)

    def encode_texts(self, texts: Sequence[str], stats: EncodeStats | None = None) -> np.ndarray:
        """[n, dim] float32 passage-side embeddings of already formatted strings, with this
        reranker's batching, device and AMP settings."""
        r = self.retriever
        return r.encode_texts(texts, "passage", batch_size=self.batch_size, max_tokens=self.max_tokens_per_batch,
                              devices=resolve_devices(self.devices, r.device), amp=self.amp,
                              pin_memory=self.pin_memory, sort_by_length=self.sort_by_length, show_progress=False,
                              stats=stats)


# ---------------------------------------------------------------------- reuse of stored vectors
def _walk(index: Any) -> list[Any]:
    out, stack = [], [index]
    while stack:
        ix = stack.pop(0)
        out.append(ix)
        stack.extend(getattr(ix, "members", None) or [])
    return out


def reusable_sources(index: Index, retriever: Any) -> list[Any]:
    """The dense indexes inside ``index`` (itself or hybrid members) whose stored vectors were
    produced by ``retriever``'s current passage encoder (identity and weight fingerprint match)."""
    identity = None
    out = []
    for ix in _walk(index):
        if not getattr(ix, "needs_embeddings", False) or getattr(ix, "members", None):
            continue  # sparse indexes have no vectors; a hybrid's members are visited themselves
        recorded = (getattr(ix, "manifest", None) or {}).get("retriever") or {}
        if not recorded.get("fingerprint"):
            continue
        if identity is None:
            identity = retriever.identity()  # hashes the passage encoder (cached per weight version)
        if recorded["fingerprint"] != identity["fingerprint"] or any(
                k in recorded and recorded[k] != identity.get(k) for k in _IDENTITY_KEYS):
            continue
        if _snapshot(ix) is not None:
            out.append(ix)
    return out


def stored_passage_vectors(index: Index, retriever: Any, ids: Sequence[str]) -> np.ndarray | None:
    """[len(ids), dim] float32 vectors the index already stores for these passage ids, when they were
    produced by ``retriever``'s current passage encoder (see :func:`reusable_sources`); ``None`` if
    no dense index inside ``index`` can provide all of them. Query-side training uses this: the
    passage encoder is frozen, so its vectors for the retrieved passages are the index's own."""
    for src in reusable_sources(index, retriever):
        snap = _snapshot(src)
        store = snap.passages if snap is not None else None
        if store is None or not all(pid in store for pid in ids):
            continue
        return snap.vectors(np.asarray([store.position(pid) for pid in ids], dtype=np.int64))
    return None


def _snapshot(ix: Any) -> Any:
    """A consistent state of a dense index that can give stored vectors
    (:class:`~atlas_kit.index.faiss_snapshot.FaissSnapshot`), or ``None``."""
    snapshot = getattr(ix, "snapshot", None)
    snap = snapshot() if callable(snapshot) else None
    if snap is None or snap.passages is None or not snap.has_vectors:
        return None
    return snap


def _fill_from_index(src: Any, cands: CandidateSet, need: np.ndarray, out: np.ndarray) -> None:
    snap = _snapshot(src)
    if snap is None:
        return
    store = snap.passages
    same = np.fromiter((need[u] and cands.stores[u] is store for u in range(len(cands))), dtype=bool, count=len(cands))
    us = np.flatnonzero(same)
    if len(us):
        out[us] = snap.vectors(cands.positions[us])
        need[us] = False
    # candidates without a store (e.g. fused hybrid hits): match by id, and only if the text is
    # the very text the index embedded (a member may hold another snapshot of the corpus)
    loose = [u for u in np.flatnonzero(need).tolist() if cands.stores[u] is None and cands.keys[u] in store]
    if not loose:
        return
    pos = np.asarray([store.position(cands.keys[u]) for u in loose], dtype=np.int64)
    stored = store.take(pos.tolist())
    ok = [j for j, (u, p) in enumerate(zip(loose, stored))
          if (cands.hit_objs[u].title or "") == (p.title or "") and cands.hit_objs[u].text == p.text]
    if ok:
        us = np.asarray([loose[j] for j in ok], dtype=np.int64)
        out[us] = snap.vectors(pos[ok])
        need[us] = False
