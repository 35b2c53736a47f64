"""Metrics behind one registry: SQuAD-normalised EM/F1, accuracy, answer/gold recall@k, and (via
:func:`metric`) KILT's ROUGE-L, F1, R-Precision and page recall from :mod:`atlas_kit.provenance`.

Hub-hosted ``evaluate`` metric scripts cannot be loaded offline (so ``evaluate`` is not a
dependency), and the project's metrics are plain, tested functions looked up by name
(``metric("rouge_l")``); task-level scoring (which metrics a task reports, KILT-EM, multiple-choice
de-biasing) lives in :mod:`atlas_kit.evaluation`.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Callable, Iterable, Sequence

from atlas_kit import provenance
from atlas_kit.normalize import normalize_answer

__all__ = ["normalize_answer", "exact_match", "f1_score", "accuracy", "recall_at_k", "has_answer",
           "answer_recall_at_k", "METRICS", "metric", "qa_scores"]


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised answer."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(a) for a in answers))


def _f1(prediction: str, answer: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not p or not g:
        return float(p == g)
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, answers: Sequence[str]) -> float:
    """Token-level F1 against the best-matching answer."""
    return max((_f1(prediction, a) for a in answers), default=0.0)


def recall_at_k(retrieved: Sequence[Sequence[str]], gold: Sequence[Iterable[str]], ks: Sequence[int] = (1, 5, 20)) -> dict[str, float]:
    """Share of queries (in %) with at least one gold id among the first k retrieved ids."""
    if len(retrieved) != len(gold):
        raise ValueError(f"{len(retrieved)} retrieval lists but {len(gold)} gold sets")
    out = {}
    golds = [set(g) for g in gold]
    for k in ks:
        hits = sum(1 for r, g in zip(retrieved, golds) if g.intersection(r[:k]))
        out[f"R@{k}"] = 100.0 * hits / max(len(golds), 1)
    return out


_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def _dpr_tokens(text: str) -> list[str]:
    """DPR's has-answer tokenisation: NFD-normalised, lowercased, words and single punctuation
    marks as tokens (articles and punctuation are kept, unlike the SQuAD answer normalisation)."""
    return _TOKEN.findall(unicodedata.normalize("NFD", text).lower())


def has_answer(text: str, answers: Sequence[str]) -> bool:
    """Whether an answer occurs in the text as a whole token sequence (DPR's test of a passage
    "containing" the answer, used when gold passage ids are unknown, as for NQ-open): "1945" is
    found in "(1939–1945)", "The Who" is not found in "who sang it"."""
    words = _dpr_tokens(text)
    for answer in answers:
        target = _dpr_tokens(answer)
        n = len(target)
        if n and any(words[i : i + n] == target for i in range(len(words) - n + 1)):
            return True
    return False


def answer_recall_at_k(passage_texts: Sequence[Sequence[str]], answers: Sequence[Sequence[str]],
                       ks: Sequence[int] = (1, 5, 20)) -> dict[str, float]:
    """Share of queries (in %) with an answer string in one of the first k passages (``AR@k``)."""
    if len(passage_texts) != len(answers):
        raise ValueError(f"{len(passage_texts)} retrieval lists but {len(answers)} answer lists")
    first = [next((i for i, t in enumerate(texts) if has_answer(t, a)), None)
             for texts, a in zip(passage_texts, answers)]
    n = max(len(first), 1)
    return {f"AR@{k}": 100.0 * sum(1 for f in first if f is not None and f < k) / n for k in ks}


def accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Label accuracy (FEVER, multiple choice by generation): exact match after normalisation."""
    return exact_match(prediction, answers)


def qa_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean EM and F1 (in %) over examples."""
    n = max(len(predictions), 1)
    return {
        "EM": 100.0 * sum(exact_match(p, a) for p, a in zip(predictions, answers)) / n,
        "F1": 100.0 * sum(f1_score(p, a) for p, a in zip(predictions, answers)) / n,
    }


METRICS: dict[str, Callable] = {"exact_match": exact_match, "f1": f1_score, "accuracy": accuracy,
                                "has_answer": has_answer}


def metric(name: str) -> Callable:
    """A metric function by name: the per-example functions above, or KILT's (``kilt_f1``,
    ``rouge_l``, ``r_precision``, ``page_recall_at_k``, ``page_success_at_k``, ``page_precision_at_k``)."""
    if name in METRICS:
        return METRICS[name]
    kilt = {n: getattr(provenance, n) for n in ("kilt_f1", "kilt_exact_match", "rouge_l", "r_precision",
                                                "page_recall_at_k", "page_success_at_k", "page_precision_at_k")}
    if name not in kilt:
        raise KeyError(f"unknown metric {name!r} (known: {', '.join(sorted({*METRICS, *kilt}))})")
    return kilt[name]
