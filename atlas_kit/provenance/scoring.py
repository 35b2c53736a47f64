"""KILT's scores: page-level R-precision / recall@k / success@k / precision@k, KILT-EM/F1, ROUGE-L
(through the ``rouge`` package that KILT itself calls) and the per-task aggregate :func:`kilt_scores`.

Re-implemented from the paper's definitions and the behaviour of KILT's reference scripts
(``kilt/eval_retrieval.py``, ``kilt/eval_downstream.py``); the tests check them against KILT's own
fixtures. Page identity (which retrieved passage matches which gold page) is
:mod:`atlas_kit.provenance.pages`. Deviations from KILT's scripts, on inputs those scripts reject or
crash on, are documented where they happen (examples without gold answers, empty provenance lists).
"""
from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from atlas_kit.normalize import normalize_answer
from atlas_kit.provenance.pages import PageLike, align_pages, gold_pages

if TYPE_CHECKING:
    from atlas_kit.tasks.qa import QAExample

log = logging.getLogger(__name__)

__all__ = ["r_precision", "page_recall_at_k", "page_success_at_k", "page_precision_at_k", "kilt_exact_match",
           "kilt_f1", "rouge_l", "kilt_scores"]


def _dedup(items: Iterable[str]) -> list[str]:
    """Order-preserving de-duplication: KILT scores a page once, at its first (best) rank, so that
    many passages from one page neither inflate nor dilute page-level scores."""
    seen: set[str] = set()
    out = []
    for x in items:
        x = str(x).strip()
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _provenance_sets(gold_provenance: Iterable[Iterable[str]]) -> list[set[str]]:
    return [{str(p).strip() for p in group} for group in gold_provenance]


def r_precision(retrieved_pages: Sequence[str], gold_provenance: Sequence[Iterable[str]]) -> float:
    """KILT's page-level R-precision in [0, 1].

    For each provenance set (the pages justifying one gold output) with R distinct pages, the
    share of the first R distinct retrieved pages that belong to it; the best set counts (any one
    complete justification is enough). An example without provenance (no set, or only empty sets)
    scores 0, as in KILT (R = 0 gives 0). When fewer than R pages are retrieved, the missing ones
    count as misses.
    """
    ranked = _dedup(retrieved_pages)
    best = 0.0
    for group in _provenance_sets(gold_provenance):
        if not group:
            continue
        best = max(best, sum(1 for p in ranked[: len(group)] if p in group) / len(group))
    return best


def _evidence_rank(retrieved_pages: Sequence[str], gold_provenance: Sequence[Iterable[str]]) -> tuple[list[Any], int]:
    """KILT's grouped ranking for recall/precision/success@k.

    Every distinct provenance set is one point in the ranking, placed where its most recently seen
    page was retrieved, and it becomes a hit (True) once all its pages have been seen; a retrieved
    page outside every set is a miss (False). Pages of a set seen earlier do not occupy points of
    their own, so "top k" here may span more than k retrieved pages: with set {A, B} and pages
    [A, X, B] the ranking is [False, True] and recall@2 = 1. A page in several sets advances each
    of them (one point per set). Returns the ranking and the number of distinct sets.
    """
    distinct: list[set[str]] = []
    for group in _provenance_sets(gold_provenance):
        if group and group not in distinct:  # empty sets can never be completed; see kilt_scores
            distinct.append(group)
    remaining = [set(g) for g in distinct]
    ranking: list[Any] = []
    for page in _dedup(retrieved_pages):
        found = False
        for idx, rest in enumerate(remaining):
            if page not in rest:
                continue
            found = True
            rest.discard(page)
            marker = ("set", idx)
            if marker in ranking:
                ranking.remove(marker)  # the set's single point moves down to this page
            ranking.append(True if not rest else marker)
        if not found:
            ranking.append(False)
    return ranking, len(distinct)


def page_recall_at_k(retrieved_pages: Sequence[str], gold_provenance: Sequence[Iterable[str]], k: int) -> float:
    """KILT's recall@k in [0, 1]: share of distinct provenance sets completed within the first
    ``k`` points of the grouped ranking (see :func:`_evidence_rank`).

    For the usual single-set example this is 1 when the whole set is retrieved "in the top k",
    each set counting as one rank position. 0 when the example has no provenance.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    ranking, n_sets = _evidence_rank(retrieved_pages, gold_provenance)
    return ranking[:k].count(True) / n_sets if n_sets else 0.0


def page_success_at_k(retrieved_pages: Sequence[str], gold_provenance: Sequence[Iterable[str]], k: int) -> float:
    """KILT's success_rate@k: 1.0 if at least one provenance set is complete within the first
    ``k`` points of the grouped ranking, else 0.0."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    ranking, _ = _evidence_rank(retrieved_pages, gold_provenance)
    return float(True in ranking[:k])


def page_precision_at_k(retrieved_pages: Sequence[str], gold_provenance: Sequence[Iterable[str]], k: int) -> float:
    """KILT's precision@k: completed provenance sets among the first ``k`` ranking points, over k."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    ranking, n_sets = _evidence_rank(retrieved_pages, gold_provenance)
    return ranking[:k].count(True) / k if n_sets else 0.0


# ---------------------------------------------------------------------------------- downstream

def kilt_exact_match(prediction: str, answer: str) -> float:
    """SQuAD-normalised exact match of one prediction against one answer."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def kilt_f1(prediction: str, answer: str) -> float:
    """Token F1 after SQuAD normalisation, as KILT computes it: no shared token -> 0, including
    when both sides normalise to nothing (:func:`atlas_kit.metrics.f1_score` gives 1 there)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure in [0, 1] exactly as KILT scores it: KILT calls the ``rouge`` package
    (pltrdy, 1.0.x), ``Rouge().get_scores(pred, ref)[0]["rouge-l"]["f"]``, and so does this.

    That is summary-level ROUGE-L on raw text (no lower-casing or punctuation removal), sentences
    split on ".", distinct words counted, F = 2PR / (P + R + 1e-8). A side the package calls empty
    (no words) scores 0, as KILT catches that error as 0. Google's ``rouge_score`` is not used: its
    ROUGE-L (lower-cased alphanumeric tokens, repeats counted, no sentence split, no epsilon) gives
    other numbers than published KILT results.
    """
    if not prediction.strip() or not reference.strip():
        return 0.0
    try:
        return float(_rouge().get_scores(prediction, reference)[0]["rouge-l"]["f"])
    except ValueError:  # the package's "Hypothesis is empty." / "Reference is empty." (e.g. only dots)
        return 0.0


@functools.lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge import Rouge

    return Rouge(metrics=["rouge-l"])


def _max_over(fn, prediction: str, answers: Sequence[str]) -> float:
    return max((float(fn(prediction, a)) for a in answers), default=0.0)


def kilt_scores(predictions: Sequence[str] | None, examples: Sequence["QAExample"],
                retrieved_pages: Sequence[Iterable[PageLike]] | None = None,
                ks: Sequence[int] = (1, 5), skip_without_provenance: bool = False) -> dict[str, float]:
    """KILT downstream, retrieval and KILT scores, in percent (0-100), averaged over all examples.

    ``skip_without_provenance``: KILT scores an example without provenance 0 on the page-level
    metrics and on the KILT scores (the default, as KILT's scripts do; KILT's own files always have
    provenance). With True such examples (3-way FEVER's NOT ENOUGH INFO claims) are left out of the
    page-level averages and their KILT score is their downstream score; ``n_provenance`` says how
    many examples the page-level metrics average over.

    * ``accuracy``: the stripped prediction equals a stripped gold answer exactly (KILT's
      accuracy, the FEVER label metric); ``em`` / ``f1``: SQuAD-normalised, best gold answer;
      ``rouge_l``: :func:`rouge_l`, best gold answer. An empty prediction scores 0 everywhere.
      An example without any gold answer (KILT outputs may hold provenance only) scores 0 on the
      downstream metrics (KILT's script would crash on it) and is counted in the average.
    * with ``retrieved_pages`` (one ranked list per example of Pages / Hits / dicts / strings,
      matched to the example's gold provenance by the page-identity rule, see the module doc):
      ``r_precision``, ``recall@k``, ``precision@k``, ``success@k`` (KILT's page-level
      definitions, :func:`r_precision` and the ``page_*_at_k`` functions), and the KILT scores
      ``kilt_accuracy``, ``kilt_em``, ``kilt_f1``, ``kilt_rouge_l``: the downstream score counted
      only for examples whose R-precision is exactly 1, averaged over *all* examples.

    ``predictions=None`` computes only the retrieval metrics.
    """
    n = len(examples)
    if predictions is not None and len(predictions) != n:
        raise ValueError(f"{len(predictions)} predictions but {n} examples")
    if retrieved_pages is not None and len(retrieved_pages) != n:
        raise ValueError(f"{len(retrieved_pages)} retrieval lists but {n} examples")
    if predictions is None and retrieved_pages is None:
        raise ValueError("nothing to score: give predictions, retrieved_pages or both")
    ks = sorted({int(k) for k in ks})
    totals: Counter[str] = Counter()
    no_answer = 0
    n_provenance = 0
    for i, ex in enumerate(examples):
        local: dict[str, float] = {}
        if predictions is not None:
            answers = [a.strip() for a in ex.answers if a and a.strip()]
            no_answer += not answers
            pred = str(predictions[i]).strip()
            if pred and answers:
                local = {
                    "accuracy": float(pred in answers),
                    "em": _max_over(kilt_exact_match, pred, answers),
                    "f1": _max_over(kilt_f1, pred, answers),
                    "rouge_l": _max_over(rouge_l, pred, answers),
                }
            else:
                local = {"accuracy": 0.0, "em": 0.0, "f1": 0.0, "rouge_l": 0.0}
            totals.update(local)
        if retrieved_pages is not None:
            if skip_without_provenance and not gold_pages(ex):
                # nothing to retrieve (e.g. a NOT ENOUGH INFO claim): out of the page-level
                # averages, and its KILT score is its downstream score
                for name, value in local.items():
                    totals[f"kilt_{name}"] += value
                continue
            n_provenance += 1
            keys, gold = align_pages(retrieved_pages[i], gold_pages(ex))
            rprec = r_precision(keys, gold)
            totals["r_precision"] += rprec
            for k in ks:
                totals[f"recall@{k}"] += page_recall_at_k(keys, gold, k)
                totals[f"precision@{k}"] += page_precision_at_k(keys, gold, k)
                totals[f"success@{k}"] += page_success_at_k(keys, gold, k)
            if predictions is not None:
                for name, value in local.items():
                    totals[f"kilt_{name}"] += value if rprec == 1.0 else 0.0
    if no_answer:
        log.warning("%d of %d examples have no gold answer; they score 0 on the downstream metrics", no_answer, n)
    names = []
    if predictions is not None:
        names += ["accuracy", "em", "f1", "rouge_l"]
    if retrieved_pages is not None:
        names += ["r_precision"] + [f"{m}@{k}" for m in ("recall", "precision", "success") for k in ks]
        if predictions is not None:
            names += ["kilt_accuracy", "kilt_em", "kilt_f1", "kilt_rouge_l"]
    page_level = {"r_precision"} | {f"{m}@{k}" for m in ("recall", "precision", "success") for k in ks}
    out = {name: 100.0 * totals[name] / max(n_provenance if name in page_level else n, 1) for name in names}
    if retrieved_pages is not None:
        out["n_provenance"] = n_provenance  # examples the page-level metrics average over
    return out
