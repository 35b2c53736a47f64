"""Bi-encoder reranking: candidates re-embedded with the retriever's current passage encoder."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from atlas_kit.index.base import Hits
from atlas_kit.rerank.candidates import Candidates, reorder

__all__ = ["BiEncoderReranker"]

log = logging.getLogger(__name__)


class BiEncoderReranker:
    """Score = query embedding · fresh passage embedding (the retriever's own similarity).

    Candidates of the whole batch are de-duplicated and encoded in length-sorted batches (optionally
    bounded by ``max_tokens_per_batch``). When the index stored vectors made by an encoder with the
    same fingerprint, those vectors are reused instead of re-encoding (``reuse_index_embeddings``);
    during training the fingerprint changes after every step, so candidates are re-encoded.
    """

    def __init__(self, retriever: Any, batch_size: int = 128, max_tokens_per_batch: int | None = None,
                 reuse_index_embeddings: bool = True) -> None:
        self.retriever = retriever
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.reuse_index_embeddings = reuse_index_embeddings
        self.encoded_last = 0  # passages encoded by the last call (observability, tests)

    def _passage_vectors(self, cand: Candidates, index: Any) -> np.ndarray:
        stored = getattr(index, "embeddings", None) if index is not None else None
        same_encoder = (
            stored is not None
            and (index.manifest.get("retriever") or {}).get("fingerprint") == self.retriever.fingerprint()
        )
        if self.reuse_index_embeddings and same_encoder and len(cand.positions) and (cand.positions >= 0).all():
            self.encoded_last = 0
            return np.asarray(stored[np.asarray(cand.positions)], dtype=np.float32)
        self.encoded_last = len(cand.unique)
        return self.retriever.encode_passages(cand.unique, batch_size=self.batch_size,
                                              max_tokens=self.max_tokens_per_batch)

    def score(self, questions: Sequence[str], hits: Sequence[Hits], index: Any = None) -> list[np.ndarray]:
        """New scores of every candidate, per question (same order as ``hits``)."""
        if len(questions) != len(hits):
            raise ValueError(f"{len(questions)} questions but {len(hits)} candidate lists")
        cand = Candidates.collect(hits)
        if not cand.unique:
            return [np.zeros(0, dtype=np.float32) for _ in hits]
        q = self.retriever.encode_queries(list(questions), batch_size=self.batch_size)
        p = self._passage_vectors(cand, index)
        return [p[slot] @ q[i] for i, slot in enumerate(cand.slots)]

    def rerank(self, questions: Sequence[str], hits: Sequence[Hits], k: int, index: Any = None) -> list[Hits]:
        """The ``k`` best candidates of each question under the current encoder."""
        return reorder(hits, self.score(questions, hits, index=index), k)
