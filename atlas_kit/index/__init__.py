"""Indexes: FAISS dense, bm25s sparse, Elasticsearch, hybrid fusion; each a self-describing folder."""
from __future__ import annotations

from atlas_kit.index.base import Hit, Hits, Index, IndexMismatchError, read_manifest
from atlas_kit.index.bm25_index import BM25Index
from atlas_kit.index.elasticsearch_index import ElasticsearchIndex
from atlas_kit.index.faiss_index import FaissIndex
from atlas_kit.index.hybrid_index import HybridIndex
from atlas_kit.index.registry import FOLDER_KINDS, INDEX_KINDS, load_index

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
    "FOLDER_KINDS",
    "read_manifest",
]
