"""Masked-span pre-training examples from the corpus itself (Atlas's ``mlm`` task).

Atlas pre-trains reader and retriever jointly before few-shot training: spans of a passage are
masked, the masked passage is the query, *other* passages are retrieved, and the reader must fill
the spans (T5's span-corruption target ``<extra_id_0> span <extra_id_1> span ...``). The reader
learns to copy from retrieved text and the retriever learns (through any objective) which passages
help - with no labels at all. The passage a query was cut from is excluded from its retrieval
(``metadata["exclude_ids"]``, honoured by :class:`~atlas_kit.train.Trainer`), otherwise the task
is solved by retrieving the passage itself.
"""
from __future__ import annotations

import random
from typing import Any, Iterable

from atlas_kit.tasks.qa import QAExample

__all__ = ["mlm_examples", "mask_spans", "SENTINEL"]

SENTINEL = "<extra_id_{}>"


def mask_spans(words: list[str], rng: random.Random, mask_ratio: float = 0.15, mean_span: float = 3.0,
               max_spans: int = 20) -> tuple[list[str], list[list[str]]]:
    """(words with each masked span replaced by one sentinel, the masked spans in order).

    About ``mask_ratio`` of the words are masked, in spans of ``mean_span`` words on average (at
    least 1 span when there are at least 2 words, never the whole text); spans do not touch, so
    every sentinel stands for exactly one span.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    n = len(words)
    if n < 2:
        return list(words), []
    n_mask = max(1, min(n - 1, round(n * mask_ratio)))
    n_spans = max(1, min(max_spans, round(n_mask / mean_span)))
    lengths = [max(1, n_mask // n_spans)] * n_spans
    for i in range(n_mask - sum(lengths)):
        lengths[i % n_spans] += 1
    starts: list[int] = []
    taken = [False] * n
    for length in lengths:
        options = [s for s in range(0, n - length + 1)
                   if not any(taken[max(0, s - 1): min(n, s + length + 1)])]
        if not options:
            break
        s = rng.choice(options)
        starts.append(s)
        for j in range(s, s + length):
            taken[j] = True
    starts.sort()
    out: list[str] = []
    spans: list[list[str]] = []
    i = 0
    while i < n:
        if taken[i]:
            span = []
            while i < n and taken[i]:
                span.append(words[i])
                i += 1
            out.append(SENTINEL.format(len(spans)))
            spans.append(span)
        else:
            out.append(words[i])
            i += 1
    return out, spans


def mlm_examples(passages: Iterable[Any], seed: int = 0, mask_ratio: float = 0.15, mean_span: float = 3.0,
                 max_words: int = 128, limit: int | None = None) -> list[QAExample]:
    """One masked-span example per passage (seeded): question = "title: masked text", answer =
    the T5-style target, ``metadata["exclude_ids"]`` = the source passage's id. Passages longer than
    ``max_words`` are cut to a random window of that many words."""
    rng = random.Random(seed)
    out: list[QAExample] = []
    for p in passages:
        words = str(getattr(p, "text", "")).split()
        if len(words) < 4:
            continue
        if len(words) > max_words:
            start = rng.randrange(len(words) - max_words + 1)
            words = words[start: start + max_words]
        masked, spans = mask_spans(words, rng, mask_ratio, mean_span)
        target = " ".join(f"{SENTINEL.format(i)} {' '.join(span)}" for i, span in enumerate(spans))
        title = str(getattr(p, "title", "") or "")
        question = f"{title}: {' '.join(masked)}" if title else " ".join(masked)
        out.append(QAExample(f"mlm-{p.id}", question, [target], metadata={"exclude_ids": [p.id], "task": "mlm"}))
        if limit is not None and len(out) >= limit:
            break
    return out
