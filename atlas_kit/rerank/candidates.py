"""Candidate bookkeeping shared by rerankers: de-duplicate across a batch, scatter scores back."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from atlas_kit.index.base import Hit, Hits


@dataclass
class Candidates:
    """All candidates of a batch of questions, each distinct passage once.

    ``unique[j]`` is a representative hit of distinct passage j; ``slots[i]`` maps question i's
    candidates to rows of ``unique`` (so scores computed once per passage scatter back per question).
    """

    unique: list[Hit]
    positions: np.ndarray  # index position of each unique passage, or -1 when unknown
    slots: list[np.ndarray]

    @classmethod
    def collect(cls, hits: Sequence[Hits]) -> "Candidates":
        row: dict[str, int] = {}
        unique: list[Hit] = []
        positions: list[int] = []
        slots = []
        for h in hits:
            ids = h.ids
            pos = h.positions if len(h.positions) == len(ids) else np.full(len(ids), -1)
            idx = np.empty(len(ids), dtype=np.int64)
            fresh = [j for j, pid in enumerate(ids) if pid not in row]
            if fresh:
                materialised = list(h)
                for j in fresh:
                    if ids[j] in row:  # repeated inside this question's own list
                        continue
                    row[ids[j]] = len(unique)
                    unique.append(materialised[j])
                    positions.append(int(pos[j]))
            for j, pid in enumerate(ids):
                idx[j] = row[pid]
            slots.append(idx)
        return cls(unique, np.asarray(positions, dtype=np.int64), slots)


def reorder(hits: Sequence[Hits], scores: Sequence[np.ndarray], k: int) -> list[Hits]:
    """Sort each question's candidates by the new ``scores`` (best first) and keep ``k``."""
    out = []
    for h, s in zip(hits, scores):
        s = np.asarray(s, dtype=np.float32)
        order = np.argsort(-s, kind="stable")[:k]
        if h._passages is not None and len(h.positions) == len(s) and (h.positions >= 0).all():
            out.append(Hits(h._passages, h.positions[order], s[order]))
        else:
            items = list(h)
            out.append(Hits.from_hits([Hit(items[i].id, items[i].title, items[i].text, float(s[i]), 0, items[i].metadata)
                                       for i in order]))
    return out
