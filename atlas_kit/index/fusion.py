"""Rank fusion: combine the ranked lists several retrievers return for one query.

* ``"rrf"`` - Reciprocal Rank Fusion (Cormack et al., 2009):
  ``score(p) = sum_m w_m / (rrf_k + rank_m(p))`` with 1-based ranks; a member that did not return
  ``p`` contributes nothing. Uses ranks only, so it needs no score calibration between members.
* ``"interpolate"`` - min-max normalise each member's scores over its returned candidates to
  [0, 1] and take ``sum_m w_m * norm_m(p)`` (missing = 0). Uses score margins, but is sensitive
  to each member's score distribution.

Ties are broken deterministically: higher fused score, then better (smaller) best rank over the
members, then passage id. Passages are matched across lists by **passage id**, so the lists may
come from different passage stores (e.g. a BM25 index over a newer corpus snapshot). Used by
:class:`~atlas_kit.index.hybrid_index.HybridIndex` and by Elasticsearch's client-side hybrid mode.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from atlas_kit.index.base import Hit, Hits
from atlas_kit.passages import Passages

__all__ = ["FUSIONS", "Fused", "resolve_weights", "fuse_rankings", "fuse_hits", "fuse_batch"]

FUSIONS = ("rrf", "interpolate")


class Fused(NamedTuple):
    """One fused result: the passage id, its fused score, and where its text can be read
    (the first member, in member order, that returned it, and its 0-based index in that list)."""

    id: str
    score: float
    member: int
    index: int


def resolve_weights(fusion: str, weights: Sequence[float] | None, n_members: int) -> list[float]:
    """Validated per-member weights. Defaults: 1 each for RRF (classic unweighted RRF), and
    ``1 / n_members`` for interpolation (so fused scores stay in [0, 1])."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if weights is None:
        return [1.0] * n_members if fusion == "rrf" else [1.0 / n_members] * n_members
    weights = [float(w) for w in weights]
    if len(weights) != n_members:
        raise ValueError(f"got {len(weights)} weights for {n_members} members")
    if any(w < 0 or not np.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite and >= 0, got {weights}")
    if not any(weights):
        raise ValueError("at least one weight must be > 0")
    return weights


def fuse_rankings(
    ids: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float] | np.ndarray] | None = None,
    *,
    fusion: str = "rrf",
    weights: Sequence[float] | None = None,
    rrf_k: float = 60,
    k: int | None = None,
) -> list[Fused]:
    """Fuse one query's ranked id lists (one per member, best first) into one ranking.

    A pure function over ids and scores, shared by :class:`HybridIndex` and the Elasticsearch
    hybrid mode. ``scores`` is needed only for ``fusion="interpolate"``. Returns at most ``k``
    :class:`Fused` items (all when ``k`` is None), best first.
    """
    weights = resolve_weights(fusion, weights, len(ids))
    if fusion == "interpolate" and scores is None:
        raise ValueError("fusion='interpolate' needs the members' scores")
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    total: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    source: dict[str, tuple[int, int]] = {}
    for m, (member_ids, w) in enumerate(zip(ids, weights)):
        if fusion == "rrf":
            contrib = [w / (rrf_k + r) for r in range(1, len(member_ids) + 1)]
        else:
            s = np.asarray(scores[m], dtype=np.float64)  # type: ignore[index]
            if len(s) != len(member_ids):
                raise ValueError(f"member {m}: {len(member_ids)} ids but {len(s)} scores")
            if len(s) == 0:
                continue
            lo, hi = float(s.min()), float(s.max())
            # all candidates scored alike: none is worse than the best, so all normalise to 1
            norm = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
            contrib = (w * norm).tolist()
        for r, (pid, c) in enumerate(zip(member_ids, contrib)):
            if pid in total:
                total[pid] += c
                if r + 1 < best_rank[pid]:
                    best_rank[pid] = r + 1
            else:
                total[pid] = c
                best_rank[pid] = r + 1
                source[pid] = (m, r)
    # round the sort key so sums that differ only by float summation order count as ties
    order = sorted(total, key=lambda pid: (-round(total[pid], 12), best_rank[pid], pid))
    if k is not None:
        order = order[:k]
    return [Fused(pid, total[pid], *source[pid]) for pid in order]


def fuse_hits(
    hit_lists: Sequence[Hits],
    k: int,
    *,
    fusion: str = "rrf",
    weights: Sequence[float] | None = None,
    rrf_k: float = 60,
) -> Hits:
    """Fuse one query's member :class:`Hits` into ``Hits.from_hits`` (title/text carried over)."""
    return fuse_batch([[h] for h in hit_lists], k, fusion=fusion, weights=weights, rrf_k=rrf_k)[0]


def fuse_batch(
    member_hits: Sequence[Sequence[Hits]],
    k: int,
    *,
    fusion: str,
    weights: Sequence[float] | None,
    rrf_k: float,
) -> list[Hits]:
    """Fuse ``member_hits[m][q]`` for every query ``q``.

    Fusion works on ids and score arrays only; passage text is then read for the ``k`` winners,
    grouped so each member store is read once for the whole batch (one Arrow gather per store,
    instead of one per query).
    """
    n_queries = len(member_hits[0]) if member_hits else 0
    fused_per_query: list[list[Fused]] = []
    for q in range(n_queries):
        lists = [member_hits[m][q] for m in range(len(member_hits))]
        fused_per_query.append(fuse_rankings(
            [h.ids for h in lists],
            [h.scores for h in lists] if fusion == "interpolate" else None,
            fusion=fusion, weights=weights, rrf_k=rrf_k, k=k,
        ))
    # group the winners by the member Hits they come from: Hits with a local store are read
    # with one ``take`` per distinct store; cached Hits (e.g. Elasticsearch) are read directly
    by_store: dict[int, tuple[Passages, list[tuple[int, int, int]]]] = {}
    resolved: list[list[Hit | None]] = [[None] * len(f) for f in fused_per_query]
    for q, fused in enumerate(fused_per_query):
        for j, item in enumerate(fused):
            hits = member_hits[item.member][q]
            store = hits.store
            if hits.loaded is not None or store is None:
                resolved[q][j] = hits[item.index]
            else:
                by_store.setdefault(id(store), (store, []))[1].append((q, j, int(hits.positions[item.index])))
    for store, wanted in by_store.values():
        ps = store.take([pos for _, _, pos in wanted])
        for (q, j, _), p in zip(wanted, ps):
            resolved[q][j] = Hit(p.id, p.title, p.text, 0.0, 0, p.metadata)
    out = []
    for fused, hits in zip(fused_per_query, resolved):
        out.append(Hits.from_hits([Hit(h.id, h.title, h.text, float(f.score), 0, h.metadata)  # type: ignore[union-attr]
                                   for f, h in zip(fused, hits)]))
    return out
