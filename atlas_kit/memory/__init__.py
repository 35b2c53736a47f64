"""Memory-augmented models and their shared memory store.

:class:`KVMemory` is the FAISS-backed (key, value) store with namespaces and FIFO eviction that the
kNN-memory attention (Memorizing Transformer, FoT) and EMAT's key-value memory search; it is saved
in the index-folder format, so :class:`~atlas_kit.index.store.IndexStore` versions and swaps it.
"""
from atlas_kit.memory.kv_memory import KVMemory, MemoryHits

__all__ = ["KVMemory", "MemoryHits"]
