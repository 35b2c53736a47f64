"""Cross-encoder reranking through ``sentence_transformers.CrossEncoder``.

No pretrained cross-encoder is available offline on this project's machines; the path is tested
with a small config-built BERT cross-encoder. Users load any local or hub checkpoint (e.g.
``cross-encoder/ms-marco-MiniLM-L-6-v2``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from atlas_kit.index.base import Hits
from atlas_kit.passages import passage_text
from atlas_kit.rerank.candidates import reorder

__all__ = ["CrossEncoderReranker"]


class CrossEncoderReranker:
    """Scores (question, passage) pairs; identical pairs in a batch are scored once, and pairs are
    sorted by length so each ``predict`` batch has little padding."""

    def __init__(self, model: Any, batch_size: int = 64, with_title: bool = True) -> None:
        self.model = model
        self.batch_size = batch_size
        self.with_title = with_title

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str | None = None, max_length: int = 512,
                        batch_size: int = 64) -> "CrossEncoderReranker":
        from sentence_transformers import CrossEncoder

        return cls(CrossEncoder(str(path_or_id), device=device, max_length=max_length), batch_size=batch_size)

    def score(self, questions: Sequence[str], hits: Sequence[Hits], index: Any = None) -> list[np.ndarray]:
        if len(questions) != len(hits):
            raise ValueError(f"{len(questions)} questions but {len(hits)} candidate lists")
        row: dict[tuple[str, str], int] = {}
        pairs: list[tuple[str, str]] = []
        slots = []
        for q, h in zip(questions, hits):
            idx = []
            for hit in h:
                key = (q, hit.id)
                if key not in row:
                    row[key] = len(pairs)
                    pairs.append((q, passage_text(hit, self.with_title)))
                idx.append(row[key])
            slots.append(np.asarray(idx, dtype=np.int64))
        if not pairs:
            return [np.zeros(0, dtype=np.float32) for _ in hits]
        order = np.argsort([-(len(a) + len(b)) for a, b in pairs], kind="stable")
        sorted_scores = np.asarray(self.model.predict([pairs[i] for i in order], batch_size=self.batch_size,
                                                      show_progress_bar=len(pairs) > 8 * self.batch_size),
                                   dtype=np.float32).reshape(len(pairs), -1)[:, 0]
        scores = np.empty(len(pairs), dtype=np.float32)
        scores[order] = sorted_scores
        return [scores[s] for s in slots]

    def rerank(self, questions: Sequence[str], hits: Sequence[Hits], k: int, index: Any = None) -> list[Hits]:
        return reorder(hits, self.score(questions, hits), k)
