"""Rerankers: re-score a large candidate set in big, length-bucketed batches.

``BiEncoderReranker`` re-embeds candidates with the retriever's *current* passage encoder (what
Atlas's ``retrieve_with_rerank`` does while the index is stale during training, and how a
compressed index recovers exact scores). ``CrossEncoderReranker`` scores (question, passage)
pairs with a ``sentence_transformers.CrossEncoder``. Both return ``list[Hits]`` like an index, so
``Atlas(..., reranker=...)`` and the trainer's ``rerank`` refresh use the same component.

    from atlas_kit.rerank import BiEncoderReranker, CrossEncoderReranker
    atlas = Atlas(retriever=r, reader=rd, index=idx, reranker=BiEncoderReranker(r))
    atlas = Atlas(..., reranker=CrossEncoderReranker.from_pretrained(path_or_hub_id))
    hits = atlas.retrieve(questions, k=20, candidates=128)    # retrieve 128, rerank, keep 20

Batched, never per query: the candidates of all questions are de-duplicated (by passage id for
the bi-encoder, by (question, passage) for the cross-encoder), sorted by token length, encoded in
large batches (fixed size or ``max_tokens_per_batch``) under ``torch.inference_mode`` with AMP,
pinned memory and non-blocking copies on CUDA, optionally over several GPUs (``devices=[...]``),
and scattered back per question. Vectors an index already stores for the very same passage
encoder (weight fingerprint) are reused instead of re-encoded. No pretrained cross-encoder exists
offline here: tests build a tiny one from a config (see :mod:`atlas_kit.rerank.cross_encoder`).
"""
from atlas_kit.rerank.base import CandidateSet, Reranker, gather_candidates, reorder
from atlas_kit.batching import EncodeStats, plan_batches
from atlas_kit.rerank.bi_encoder import BiEncoderReranker
from atlas_kit.rerank.cross_encoder import CrossEncoderReranker

__all__ = [
    "Reranker",
    "BiEncoderReranker",
    "CrossEncoderReranker",
    "CandidateSet",
    "gather_candidates",
    "EncodeStats",
    "plan_batches",
    "reorder",
]
