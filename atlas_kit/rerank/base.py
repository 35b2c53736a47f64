"""The reranker contract and the candidate bookkeeping every reranker shares.

A reranker re-scores the candidates an index returned for a batch of questions and keeps the best
``k``: ``rerank(questions, hits, k, index=None) -> list[Hits]``. Subclasses implement ``score``
(one float32 array per question, aligned with that question's hits); the base class sorts, cuts
and rebuilds :class:`~atlas_kit.index.base.Hits` so that passage text is preserved (positions into
the same passage store when they are known, the hits' own title/text otherwise).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from atlas_kit.index.base import Hit, Hits, Index
from atlas_kit.passages import Passages

__all__ = ["Reranker", "CandidateSet", "gather_candidates", "reorder"]


@dataclass
class CandidateSet:
    """The de-duplicated candidates of a batch of questions.

    ``keys[u]`` is the passage id of unique candidate ``u``; ``slots[q]`` maps question ``q``'s hits
    (in their order) to unique candidates; ``stores[u]`` / ``positions[u]`` locate the candidate in
    a passage store when known (else ``None`` / -1, and ``hit_objs[u]`` carries its title/text).
    """

    keys: list[str]
    slots: list[np.ndarray]
    stores: list[Passages | None]
    positions: np.ndarray
    hit_objs: list[Hit | None]

    def __len__(self) -> int:
        return len(self.keys)

    def passages(self, which: Sequence[int] | np.ndarray | None = None) -> list[Any]:
        """Objects with ``.title`` / ``.text`` for the unique candidates ``which`` (default: all),
        in that order; passages in a store are read with one Arrow gather per store."""
        which = list(range(len(self.keys))) if which is None else [int(u) for u in which]
        out: list[Any] = [self.hit_objs[u] for u in which]
        by_store: dict[int, tuple[Passages, list[int]]] = {}
        for j, u in enumerate(which):
            store = self.stores[u]
            if store is not None and out[j] is None:
                by_store.setdefault(id(store), (store, []))[1].append(j)
        for store, js in by_store.values():
            pos = self.positions[[which[j] for j in js]]
            order = np.argsort(pos, kind="stable")  # sequential reads from the Arrow file
            got = store.take(pos[order].tolist())
            for o, p in zip(order.tolist(), got):
                out[js[o]] = p
        return out


def gather_candidates(hits: Sequence[Hits]) -> CandidateSet:
    """De-duplicate the candidates of all questions by passage id (first occurrence wins)."""
    index_of: dict[str, int] = {}
    keys: list[str] = []
    stores: list[Passages | None] = []
    positions: list[int] = []
    hit_objs: list[Hit | None] = []
    slots: list[np.ndarray] = []
    for h in hits:
        store = h.store
        ids = h.ids
        objs = None if store is not None else list(h)
        pos = h.positions.tolist() if store is not None else None
        slot = np.empty(len(ids), dtype=np.int64)
        for j, pid in enumerate(ids):
            u = index_of.get(pid)
            if u is None:
                u = index_of[pid] = len(keys)
                keys.append(pid)
                if store is not None:
                    stores.append(store)
                    positions.append(int(pos[j]))
                    hit_objs.append(None)
                else:
                    stores.append(None)
                    positions.append(-1)
                    hit_objs.append(objs[j])
            slot[j] = u
        slots.append(slot)
    return CandidateSet(keys, slots, stores, np.asarray(positions, dtype=np.int64), hit_objs)


def reorder(hits: Hits, scores: np.ndarray, k: int | None) -> Hits:
    """``hits`` re-sorted by ``scores`` (descending, stable: ties keep the retrieval order), cut to
    ``k``, with the new scores. Text is preserved: positions into the same store when known,
    otherwise the original :class:`Hit` objects (re-ranked, re-scored)."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(scores) != len(hits):
        raise ValueError(f"{len(scores)} scores for {len(hits)} hits")
    order = np.argsort(-scores, kind="stable")
    if k is not None:
        order = order[:k]
    new_scores = scores[order]
    store = hits.store
    cache = hits.loaded
    if store is not None:
        new_cache = None
        if cache is not None:
            new_cache = [_rescored(cache[i], s, r) for r, (i, s) in enumerate(zip(order.tolist(), new_scores.tolist()))]
        return Hits(store, hits.positions[order], new_scores, new_cache)
    objs = list(hits)
    return Hits.from_hits([_rescored(objs[i], s, r) for r, (i, s) in enumerate(zip(order.tolist(), new_scores.tolist()))])


def _rescored(h: Hit, score: float, rank: int) -> Hit:
    return Hit(h.id, h.title, h.text, float(score), rank, h.metadata)


class Reranker(ABC):
    """Re-scores retrieved candidates for a batch of questions.

    Subclasses implement :meth:`score`; :meth:`rerank` is what :meth:`atlas_kit.Atlas.retrieve`
    and the trainer's ``rerank`` refresh strategy call.
    """

    @abstractmethod
    def score(self, questions: Sequence[str], hits: Sequence[Hits], index: Index | None = None) -> list[np.ndarray]:
        """One float32 array per question: the new score of each of its hits, in hit order."""

    def rerank(self, questions: Sequence[str] | str, hits: Sequence[Hits] | Hits, k: int | None = None,
               index: Index | None = None, **kwargs: Any) -> list[Hits] | Hits:
        """Re-score every question's hits, sort by the new score (best first) and keep ``k``
        (all when ``None``). ``Hits.scores`` become the reranker's scores."""
        single = isinstance(questions, str)
        qs = [questions] if single else list(questions)
        hs = [hits] if isinstance(hits, Hits) and single else list(hits)
        if len(qs) != len(hs):
            raise ValueError(f"{len(qs)} questions but {len(hs)} hit lists")
        scores = self.score(qs, hs, index=index, **kwargs)
        out = [reorder(h, s, k) for h, s in zip(hs, scores)]
        return out[0] if single else out

    def __call__(self, questions: Sequence[str], hits: Sequence[Hits], k: int | None = None,
                 index: Index | None = None, **kwargs: Any) -> list[Hits]:
        return self.rerank(questions, hits, k, index=index, **kwargs)
