"""Rerankers: re-score a large candidate set in big, length-bucketed batches.

``BiEncoderReranker`` re-embeds candidates with the retriever's *current* passage encoder (what
Atlas's ``retrieve_with_rerank`` does while the index is stale during training, and how a
compressed index recovers exact scores). ``CrossEncoderReranker`` scores (question, passage)
pairs with a ``sentence_transformers.CrossEncoder``. Both return ``list[Hits]`` like an index, so
``Atlas(..., reranker=...)`` and the trainer's ``rerank`` refresh use the same component.
"""
from atlas_kit.rerank.bi_encoder import BiEncoderReranker
from atlas_kit.rerank.cross_encoder import CrossEncoderReranker
from atlas_kit.rerank.candidates import Candidates, reorder

__all__ = ["BiEncoderReranker", "CrossEncoderReranker", "Candidates", "reorder"]
