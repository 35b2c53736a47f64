"""Indexes: FAISS dense, bm25s sparse, Elasticsearch, hybrid fusion; each a self-describing folder."""
from __future__ import annotations

import os
from typing import Any

from atlas_kit.index.base import Hit, Hits, Index, IndexMismatchError, read_manifest
from atlas_kit.index.faiss_index import FaissIndex

__all__ = ["Hit", "Hits", "Index", "IndexMismatchError", "FaissIndex", "load_index", "INDEX_KINDS"]

INDEX_KINDS: dict[str, type[Index]] = {FaissIndex.kind: FaissIndex}


def load_index(folder: str | os.PathLike, retriever: Any = None, allow_mismatch: bool = False, **kwargs: Any) -> Index:
    """Open any index folder, dispatching on the ``kind`` its manifest records."""
    kind = read_manifest(folder).get("kind")
    if kind not in INDEX_KINDS:
        raise ValueError(f"{folder}: unknown index kind {kind!r} (known: {sorted(INDEX_KINDS)})")
    cls = INDEX_KINDS[kind]
    if cls.needs_embeddings:
        return cls.load(folder, retriever=retriever, allow_mismatch=allow_mismatch, **kwargs)
    return cls.load(folder, **kwargs)
