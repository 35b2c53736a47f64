"""Cross-encoder reranking with any ``sentence_transformers.CrossEncoder`` checkpoint.

A cross-encoder reads question and passage together, so it is far more accurate than a dual
encoder and far too slow to run over a corpus: it re-scores the few dozen candidates an index
returned. Pairs cannot be shared across questions (the question differs), but identical
(question, passage) pairs in a batch are scored once. All pairs of a batch of questions are
tokenized once, sorted by length and scored in large batches (fixed size or a padded-token
budget) under ``torch.inference_mode`` with AMP on CUDA; see :mod:`atlas_kit.batching`.

Offline note: no pretrained cross-encoder ships with this project (there is no model hub here).
``CrossEncoderReranker.from_pretrained`` loads any local folder or hub id for users who have one,
e.g. ``cross-encoder/ms-marco-MiniLM-L6-v2``. The tests build a tiny randomly initialised
``BertForSequenceClassification(BertConfig(..., num_labels=1))`` with the bundled MiniLM tokenizer,
``save_pretrained`` it to a temporary folder and load that with ``CrossEncoder(folder)``: the
plumbing is exercised, the scores of such a model are meaningless.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from atlas_kit.index.base import Hits, Index
from atlas_kit.passages import passage_text
from atlas_kit.rerank.base import Reranker, gather_candidates
from atlas_kit.batching import (
    EncodeStats,
    ReplicaCache,
    padding_collate,
    plan_batches,
    resolve_devices,
    run_batches,
)

__all__ = ["CrossEncoderReranker"]


class CrossEncoderReranker(Reranker):
    """Re-score (question, passage text) pairs with a ``sentence_transformers.CrossEncoder``.

    Args:
        model: a loaded ``CrossEncoder`` (or use :meth:`from_pretrained`).
        batch_size: pairs per forward pass (a cap when ``max_tokens_per_batch`` is set).
        max_tokens_per_batch: budget of padded tokens per forward pass instead of a fixed size.
        devices: e.g. ``["cuda:0", "cuda:1"]`` for data-parallel scoring (one replica each).
            ``None``: the model's device if it is a GPU, else the first GPU if any, else the CPU.
        amp: bf16 (or fp16) autocast on CUDA; ignored on CPU.
        pin_memory: pinned host buffers + non-blocking copies to CUDA devices.
        activation: apply the model's ``activation_fn`` (Sigmoid for one-label models), as
            ``CrossEncoder.predict`` does. Off by default: raw logits rank identically and do not
            saturate into ties the way a sigmoid does for confident models.
        label: the class whose logit is the score for models with several labels (default: the
            last one, "relevant" for two-class relevance classifiers).
        with_title: pass passages as ``"title text"``.
        max_length: truncation length of a pair in tokens (default: the model's ``max_seq_length``).
        sort_by_length: bucket by token length (disable only to measure what it buys).
    """

    def __init__(
        self,
        model: Any,
        batch_size: int = 64,
        max_tokens_per_batch: int | None = None,
        devices: Sequence[str | torch.device] | str | torch.device | None = None,
        amp: bool = True,
        pin_memory: bool = True,
        activation: bool = False,
        label: int = -1,
        with_title: bool = True,
        max_length: int | None = None,
        sort_by_length: bool = True,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.devices = devices
        self.amp = amp
        self.pin_memory = pin_memory
        self.activation = activation
        self.label = label
        self.with_title = with_title
        self.max_length = max_length
        self.sort_by_length = sort_by_length
        self.last_stats = EncodeStats()
        self._replicas = ReplicaCache()

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str | None = None, max_length: int | None = None,
                        model_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> "CrossEncoderReranker":
        """Load ``sentence_transformers.CrossEncoder(path_or_id)`` (a local folder, or a hub id
        where a hub is reachable) and wrap it; ``kwargs`` go to the reranker.

        No pretrained cross-encoder is available offline in this project: build a small one from
        a config for experiments (see the module docstring)."""
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(path_or_id), device=device, max_length=max_length, model_kwargs=model_kwargs)
        return cls(model, max_length=max_length, **kwargs)

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    def _max_length(self) -> int:
        if self.max_length:
            return int(self.max_length)
        n = getattr(self.model, "max_seq_length", None)
        if n:
            return int(n)
        cfg = getattr(getattr(self.model, "model", None), "config", None)
        return int(getattr(cfg, "max_position_embeddings", 512) or 512)

    def _pretokenizable(self) -> bool:
        """Whether pairs can be tokenized once up front: a text model whose first module is a
        plain ``Transformer`` and that adds no prompt. Other models go through ``preprocess``."""
        m = self.model
        try:
            first = m[0]
        except Exception:
            return False
        return (getattr(m, "tokenizer", None) is not None and type(first).__name__ == "Transformer"
                and not getattr(m, "default_prompt_name", None))

    # ------------------------------------------------------------------ scoring
    def score(self, questions: Sequence[str], hits: Sequence[Hits], index: Index | None = None) -> list[np.ndarray]:
        """The cross-encoder's score of every (question, hit) pair, float32, in hit order."""
        qs = list(questions)
        if len(qs) != len(hits):
            raise ValueError(f"{len(qs)} questions but {len(hits)} hit lists")
        self.last_stats = stats = EncodeStats()
        cands = gather_candidates(hits)
        # one unique pair per (question text, passage id)
        pair_of: dict[tuple[str, int], int] = {}
        pair_q: list[str] = []
        pair_u: list[int] = []
        rows: list[np.ndarray] = []
        for q, slot in zip(qs, cands.slots):
            row = np.empty(len(slot), dtype=np.int64)
            for j, u in enumerate(slot.tolist()):
                key = (q, u)
                p = pair_of.get(key)
                if p is None:
                    p = pair_of[key] = len(pair_q)
                    pair_q.append(q)
                    pair_u.append(u)
                row[j] = p
            rows.append(row)
        stats.reused = sum(len(s) for s in cands.slots) - len(pair_q)
        if not pair_q:
            return [np.empty(0, dtype=np.float32) for _ in qs]
        used = sorted(set(pair_u))
        objs = dict(zip(used, cands.passages(used)))
        texts = {u: passage_text(objs[u], self.with_title) for u in used}
        scores = self.score_pairs(pair_q, [texts[u] for u in pair_u], stats=stats)
        return [scores[row] for row in rows]

    def score_pairs(self, queries: Sequence[str], passages: Sequence[str], stats: EncodeStats | None = None) -> np.ndarray:
        """Float32 scores of ``(queries[i], passages[i])``, length-bucketed and batched."""
        n = len(queries)
        if n != len(passages):
            raise ValueError(f"{n} queries but {len(passages)} passages")
        if n == 0:
            return np.empty(0, dtype=np.float32)
        m = self.model
        max_length = self._max_length()
        tok = getattr(m, "tokenizer", None)
        pairs = list(zip(queries, passages))
        if tok is not None:
            enc = tok(list(queries), list(passages), truncation="longest_first", max_length=max_length, padding=False)
            encodings = {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}
            lengths = [len(x) for x in encodings["input_ids"]]
        else:  # pragma: no cover - non-text models
            encodings, lengths = None, [len(q) + len(p) for q, p in pairs]
        if self._pretokenizable() and encodings is not None:
            pad = padding_collate(tok, encodings)

            def collate(sel: np.ndarray) -> dict[str, Any]:
                return {**pad(sel), "modality": "text"}
        else:
            def collate(sel: np.ndarray) -> dict[str, Any]:
                return m.preprocess([pairs[i] for i in sel],
                                    processing_kwargs={"text": {"max_length": max_length, "truncation": "longest_first"}})

        label = self.label

        def forward(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            s = model(batch)["scores"]
            if s.ndim > 1:
                s = s[:, 0] if s.shape[-1] == 1 else s[:, label]
            return s

        batches = plan_batches(lengths, self.batch_size, self.max_tokens_per_batch, sort=self.sort_by_length)
        devices = resolve_devices(self.devices, self.device)
        models = self._replicas.get(m, self.device, devices)
        if stats is not None:
            stats.encoded += n
        out = run_batches(batches, collate, forward, models, n, amp=self.amp, pin_memory=self.pin_memory, stats=stats)
        if self.activation and getattr(m, "activation_fn", None) is not None:
            out = m.activation_fn(out)
        return out.numpy().astype(np.float32, copy=False)
