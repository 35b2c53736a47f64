"""Memory-augmented models and their shared memory store.

:class:`RMT` (Recurrent Memory Transformer) reads inputs longer than its backbone's window segment
by segment, carrying memory tokens between segments. :func:`memory_attention` is the attention of
kNN-memory layers (Memorizing Transformer's gated two softmaxes, FoT's single softmax) and
:func:`cross_batch_memory` FoT's cross-batch training memory; :class:`KNNMemoryModel` adds them to
a GPT-2 / Llama-family causal LM, :func:`cross_batch_forward` is FoT's training forward and
:class:`~atlas_kit.memory.memory_training.MemoryLMStep` trains it through the library's loop
(recipes: :mod:`atlas_kit.memory.knn_recipe`).

:class:`KVMemory` is the FAISS-backed (key, value) store with namespaces and FIFO eviction that the
kNN-memory attention (Memorizing Transformer, FoT) and EMAT's key-value memory search; it is saved
in the index-folder format, so :class:`~atlas_kit.index.store.IndexStore` versions and swaps it.

:class:`EMAT` is the efficient memory-augmented T5 (Wu et al. 2022): a key-value memory of QA pairs
(:class:`QAMemory`, on a ``KVMemory``) searched by MIPS at an early encoder layer and fused into
the encoder; trained by :class:`atlas_kit.memory.emat_train.EMATStep` through the library's loop.
"""
from atlas_kit.memory.knn_attention import cross_batch_memory, memory_attention
from atlas_kit.memory.emat import EMAT
from atlas_kit.memory.emat_memory import QAMemory
from atlas_kit.memory.kv_memory import KVMemory, MemoryHits
from atlas_kit.memory.memory_layers import DenseMemory, KNNMemoryModel, MemoryAttention
from atlas_kit.memory.cross_batch import cross_batch_forward
from atlas_kit.memory.rmt import RMT, RMTOutput

__all__ = ["KVMemory", "MemoryHits", "RMT", "RMTOutput", "memory_attention", "cross_batch_memory", "KNNMemoryModel",
           "MemoryAttention", "DenseMemory", "cross_batch_forward", "EMAT", "QAMemory"]
