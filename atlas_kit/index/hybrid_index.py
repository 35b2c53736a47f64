"""Hybrid retrieval: fuse the rankings of several indexes (typically dense FAISS + sparse BM25).

Dense and lexical retrievers fail differently (paraphrase vs. rare names and numbers), so fusing
their rankings is a robust, training-free gain. Each member is asked for ``k * fetch_factor``
candidates (a passage ranked just outside one member's top-k can still win after fusion), the
lists are fused per query, and the best ``k`` are returned.

Fusion methods (``rrf``, ``interpolate``) and tie-breaking: :mod:`atlas_kit.index.fusion`.

Folder layout::

    manifest.json     kind="hybrid", fusion settings, and the member folders (relative paths)
    member0-faiss/    each member saved by its own ``save`` into a subfolder
    member1-bm25/
"""
from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atlas_kit.index.base import FORMAT_VERSION, MANIFEST, Hits, Index, bumped, now_iso, read_manifest, verify_loaded
from atlas_kit.index.fusion import FUSIONS, Fused, fuse_batch, fuse_hits, fuse_rankings, resolve_weights
from atlas_kit.index.registry import index_class, register
from atlas_kit.passages import Passages, load_passages
from atlas_kit.storage import atomic_dir, atomic_write_json

__all__ = ["HybridIndex", "FUSIONS", "Fused", "fuse_rankings", "fuse_hits", "resolve_weights"]

log = logging.getLogger(__name__)

def _load_accepts(cls: type, name: str) -> bool:
    """Whether ``cls.load`` names parameter ``name`` (``**kwargs`` does not count: a member's
    catch-all, e.g. Elasticsearch client options, must not receive another member's options)."""
    try:
        params = inspect.signature(cls.load).parameters  # type: ignore[attr-defined]
    except (TypeError, ValueError):  # pragma: no cover
        return False
    return name in params


@register
class HybridIndex(Index):
    """Fuses the rankings of member indexes (e.g. ``[FaissIndex, BM25Index]``).

    Args:
        members: two or more indexes. Dense members get the query embeddings Atlas computes.
        fusion: ``"rrf"`` (rank-based, default) or ``"interpolate"`` (min-max normalised scores).
        rrf_k: the RRF constant (60 in the original paper); larger flattens rank differences.
        weights: one non-negative weight per member (default: 1 each for RRF, 1/M for interpolate).
        fetch_factor: each member returns ``k * fetch_factor`` candidates before fusion.
    """

    kind = "hybrid"

    def __init__(
        self,
        members: Sequence[Index],
        fusion: str = "rrf",
        rrf_k: float = 60,
        weights: Sequence[float] | None = None,
        fetch_factor: float = 2,
    ) -> None:
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"a HybridIndex needs at least 2 member indexes, got {len(members)}")
        for m in members:
            if not isinstance(m, Index):
                raise TypeError(f"members must be atlas_kit indexes, got {type(m).__name__}")
        resolve_weights(fusion, weights, len(members))  # validate now, not at the first query
        if rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
        if fetch_factor < 1:
            raise ValueError(f"fetch_factor must be >= 1, got {fetch_factor}")
        self.members = members
        self.fusion = fusion
        self.rrf_k = float(rrf_k)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.fetch_factor = fetch_factor
        #: an instance attribute (not a class one): true when any member needs query embeddings
        self.needs_embeddings = any(m.needs_embeddings for m in members)
        self.path: str | None = None
        self.manifest = self._make_manifest()

    def _make_manifest(self, previous: dict[str, Any] | None = None) -> dict[str, Any]:
        dense = next((m for m in self.members if m.needs_embeddings and m.manifest.get("retriever")), None)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "fusion": self.fusion,
            "rrf_k": self.rrf_k,
            "weights": self.weights,
            "fetch_factor": self.fetch_factor,
            "members": [
                {"path": f"member{i}-{m.kind}", "kind": m.kind, "count": m.manifest.get("count"),
                 "version": m.manifest.get("version"), "corpus_checksum": m.manifest.get("corpus_checksum")}
                for i, m in enumerate(self.members)
            ],
            "count": self._count(live=False),
            "retriever": dict(dense.manifest["retriever"]) if dense is not None else {},
            "version": 1,
            "history": [{"version": 1, "change": "build", "count": None, "at": now_iso()}],
            "created": now_iso(),
        }
        manifest["history"][0]["count"] = manifest["count"]
        if previous is not None:
            for key in ("version", "history", "created"):
                if key in previous:
                    manifest[key] = previous[key]
        return manifest

    def _count(self, live: bool = True) -> int:
        """Distinct passages over the members. Without local stores (Elasticsearch) ids cannot be
        unioned cheaply, so the largest member is taken; ``live=False`` reads manifests only
        (no network round trip while building a manifest)."""
        checksums = {m.manifest.get("corpus_checksum") for m in self.members}
        if len(checksums) == 1 and None not in checksums:
            return len(self.members[0]) if live or self.members[0].passages is not None else int(self.members[0].manifest.get("count") or 0)
        stores = [m.passages for m in self.members]
        if any(s is None for s in stores):
            return max((len(m) if live else int(m.manifest.get("count") or 0)) for m in self.members)
        return len(set().union(*(s.ids for s in stores)))  # type: ignore[union-attr]

    # ------------------------------------------------------------------ search
    def __len__(self) -> int:
        """Distinct passages over all members (the member size when all share one corpus)."""
        return self._count()

    @property
    def passages(self) -> Passages | None:
        """The shared passage store when every member indexes the same corpus, else None."""
        checksums = {m.manifest.get("corpus_checksum") for m in self.members}
        if len(checksums) == 1 and None not in checksums:
            return self.members[0].passages
        return None

    def search(self, queries: Sequence[str], k: int, query_embeddings: np.ndarray | None = None) -> list[Hits]:
        """Query every member for ``k * fetch_factor`` candidates and fuse them per query."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = list(queries)
        if not queries:
            return []
        fetch = max(int(k), int(np.ceil(k * self.fetch_factor)))
        member_hits = []
        for m in self.members:
            hits = m.search(queries, fetch, query_embeddings=query_embeddings if m.needs_embeddings else None)
            if len(hits) != len(queries):
                raise RuntimeError(f"{m.kind} member returned {len(hits)} result lists for {len(queries)} queries")
            member_hits.append(hits)
        return fuse_batch(member_hits, k, fusion=self.fusion, weights=self.weights, rrf_k=self.rrf_k)

    def check_compatible(self, retriever: Any, allow_mismatch: bool = False) -> None:
        """Delegate to the members that use embeddings (sparse members need no encoder)."""
        for m in self.members:
            if m.needs_embeddings:
                m.check_compatible(retriever, allow_mismatch=allow_mismatch)

    # ------------------------------------------------------------------ updates
    def add(self, passages: Any, retriever: Any = None) -> "HybridIndex":
        """Add passages to every member (dense members encode them with ``retriever``).

        Members are updated one after another; if one fails, the ones before it already hold the
        passages - reload the saved folder to get back a consistent hybrid.
        """
        for m in self.members:
            if not hasattr(m, "add"):
                raise TypeError(f"member {m.kind!r} does not support add()")
        if not isinstance(passages, Passages):
            passages = load_passages(passages)
        for m in self.members:
            if m.needs_embeddings:
                m.add(passages, retriever=retriever)  # type: ignore[attr-defined]
            else:
                m.add(passages)  # type: ignore[attr-defined]
        self._bump("add", len(passages))
        return self

    def remove(self, ids: Iterable[str]) -> "HybridIndex":
        """Remove passages (by id) from every member that holds them."""
        ids = list(ids)
        for m in self.members:
            if not hasattr(m, "remove"):
                raise TypeError(f"member {m.kind!r} does not support remove()")
        known = set()
        for m in self.members:
            store = m.passages
            present = [pid for pid in ids if store is None or pid in store]
            known.update(present)
            if present:
                m.remove(present)  # type: ignore[attr-defined]
        unknown = [pid for pid in ids if pid not in known]
        if unknown:
            log.warning("hybrid remove: %d id(s) were in no member, e.g. %s", len(unknown), unknown[:5])
        self._bump("remove", len(known))
        return self

    def _bump(self, change: str, n: int) -> None:
        fresh = self._make_manifest(self.manifest)
        self.manifest = {**fresh, **{k: v for k, v in bumped(self.manifest, change, n).items()
                                     if k in ("version", "history")}}

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> None:
        """Save each member into a subfolder and the manifest listing them; published atomically."""
        folder = Path(folder)
        self.manifest = self._make_manifest(self.manifest)
        with atomic_dir(folder) as tmp:
            for entry, m in zip(self.manifest["members"], self.members):
                m.save(tmp / entry["path"])
            atomic_write_json(tmp / MANIFEST, self.manifest)
        self.path = str(folder)
        for entry, m in zip(self.manifest["members"], self.members):
            if hasattr(m, "path"):
                m.path = str(folder / entry["path"])  # type: ignore[attr-defined]

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        retriever: Any = None,
        allow_mismatch: bool = False,
        mmap: bool = True,
        **kwargs: Any,
    ) -> "HybridIndex":
        """Load the members listed in the manifest (each with its own loader) and the settings.

        ``retriever`` is checked against dense members; ``mmap`` and other keyword arguments are
        passed to the members whose loaders accept them.
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest.get("kind") != cls.kind:
            raise ValueError(f"{folder}: is a {manifest.get('kind')!r} index, not {cls.kind!r}")
        members: list[Index] = []
        for entry in manifest.get("members", []):
            sub = folder / entry["path"]
            if Path(entry["path"]).is_absolute() or ".." in Path(entry["path"]).parts:
                raise ValueError(f"{folder}: member path {entry['path']!r} must be relative and inside the folder")
            member_cls = index_class(read_manifest(sub).get("kind"), sub)
            opts = {name: value for name, value in {"mmap": mmap, **kwargs}.items() if _load_accepts(member_cls, name)}
            if _load_accepts(member_cls, "retriever"):
                opts.update(retriever=retriever, allow_mismatch=allow_mismatch)
            members.append(member_cls.load(sub, **opts))  # type: ignore[attr-defined]
        verify_loaded(folder, manifest, None)  # every member from the same save of the folder
        hybrid = cls(members, fusion=manifest.get("fusion", "rrf"), rrf_k=manifest.get("rrf_k", 60),
                     weights=manifest.get("weights"), fetch_factor=manifest.get("fetch_factor", 2))
        hybrid.manifest = {**hybrid.manifest, **{key: manifest[key] for key in ("version", "history", "created") if key in manifest}}
        hybrid.path = str(folder)
        return hybrid

    def info(self) -> dict[str, Any]:
        info = dict(self.manifest)
        info["members"] = [{**entry, "info": m.info()} for entry, m in zip(self.manifest["members"], self.members)]
        return info
