"""Indexes: FAISS dense, bm25s sparse, Elasticsearch, hybrid fusion; each a self-describing folder."""
from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from atlas_kit.index.base import Hit, Hits, Index, IndexMismatchError, read_manifest
from atlas_kit.index.bm25_index import BM25Index
from atlas_kit.index.elasticsearch_index import ElasticsearchIndex
from atlas_kit.index.faiss_index import FaissIndex
from atlas_kit.index.hybrid_index import HybridIndex

__all__ = [
    "Hit",
    "Hits",
    "Index",
    "IndexMismatchError",
    "FaissIndex",
    "BM25Index",
    "ElasticsearchIndex",
    "HybridIndex",
    "load_index",
    "INDEX_KINDS",
]

INDEX_KINDS: dict[str, type[Index]] = {
    FaissIndex.kind: FaissIndex,
    BM25Index.kind: BM25Index,
    ElasticsearchIndex.kind: ElasticsearchIndex,
    HybridIndex.kind: HybridIndex,
}


# Folders in the index-folder format that are not retrieval indexes, by kind -> (module, class):
# kept as names so that index/ never imports the packages built on top of it.
FOLDER_KINDS: dict[str, tuple[str, str]] = {
    "kv_memory": ("atlas_kit.memory.kv_memory", "KVMemory"),
    "emat_memory": ("atlas_kit.memory.emat_memory", "QAMemory"),
}


def _accepts(cls: type, name: str) -> bool:
    params = inspect.signature(cls.load).parameters  # type: ignore[attr-defined]
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def load_index(folder: str | os.PathLike, retriever: Any = None, allow_mismatch: bool = False, **kwargs: Any) -> Index:
    """Open any index folder, dispatching on the ``kind`` its manifest records.

    ``retriever``/``allow_mismatch`` go to loaders that take them (dense, hybrid and
    Elasticsearch indexes check the encoder; a hybrid's kind is only known from its members).
    """
    kind = read_manifest(folder).get("kind")
    if kind in FOLDER_KINDS:  # other folders in the index format (a memory), imported when met
        module, name = FOLDER_KINDS[kind]
        return getattr(importlib.import_module(module), name).load(folder, **kwargs)
    if kind not in INDEX_KINDS:
        raise ValueError(f"{folder}: unknown index kind {kind!r} (known: {sorted([*INDEX_KINDS, *FOLDER_KINDS])})")
    cls = INDEX_KINDS[kind]
    if cls.needs_embeddings or _accepts(cls, "retriever"):
        return cls.load(folder, retriever=retriever, allow_mismatch=allow_mismatch, **kwargs)  # type: ignore[attr-defined]
    return cls.load(folder, **kwargs)  # type: ignore[attr-defined]
