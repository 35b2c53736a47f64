"""KILT's evaluation: page-level R-precision / recall@k and the KILT scores (ROUGE-L through the
``rouge`` package that KILT itself calls).

KILT (Petroni et al. 2021) asks a knowledge-intensive system for an answer *and* the Wikipedia
pages that justify it. Its scores are re-implemented here from the paper's definitions and the
behaviour of its reference scripts (``kilt/eval_retrieval.py``, ``kilt/eval_downstream.py``) so that
the numbers reported by atlas_kit are comparable with published KILT numbers; the tests check them
against KILT's own test fixtures and expected values.

Page identity
-------------
A retrieved passage and a gold provenance entry are both reduced to a :class:`Page`: its
``wikipedia_id`` (when the record carries one: a KILT provenance entry, or a passage whose
metadata has ``wikipedia_id``) and its title, normalised by :func:`normalize_title`. A retrieved
page matches a gold page

* by ``wikipedia_id`` when **both** sides have one (titles are then ignored: ids are stable
  across Wikipedia snapshots, titles are not);
* by normalised title otherwise (e.g. a passage corpus without ids scored against KILT gold,
  or FEVER's title-only evidence).

A bare string given as a retrieved page matches a gold page whose ``wikipedia_id`` equals it or
whose normalised title equals its normalised form (a page *titled* like another page's numeric id
would collide; this does not happen in practice and callers that care pass :class:`Page` objects).

Deviations from KILT's scripts, on inputs those scripts reject or crash on, are documented where
they happen (examples without gold answers, empty provenance lists).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from atlas_kit.metrics import normalize_answer

if TYPE_CHECKING:  # imported lazily at run time: atlas_kit.tasks.kilt imports this module
    from atlas_kit.tasks.qa import QAExample

__all__ = [
    "Page",
    "PageLike",
    "normalize_title",
    "decode_fever_title",
    "as_page",
    "gold_pages",
    "align_pages",
    "r_precision",
    "page_recall_at_k",
    "page_success_at_k",
    "page_precision_at_k",
    "kilt_exact_match",
    "kilt_f1",
    "rouge_l",
    "kilt_scores",
    "evaluate_kilt_files",
]

log = logging.getLogger(__name__)

# FEVER (and the Wikipedia dump it ships) escapes brackets and colons in page names, PTB style
_FEVER_ESCAPES = {
    "-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}", "-COLON-": ":",
}
_FEVER_RE = re.compile("|".join(re.escape(k) for k in _FEVER_ESCAPES))
# prefix for keys of retrieved pages that match no gold page: they can never equal a gold key
_MISS = "\x1f"


def decode_fever_title(title: str) -> str:
    """``Soul_Food_-LRB-film-RRB-`` -> ``Soul Food (film)``: FEVER page names as Wikipedia titles.

    Only the escaping is undone (case is kept) so the result is still a readable display title.
    """
    return _FEVER_RE.sub(lambda m: _FEVER_ESCAPES[m.group(0)], title).replace("_", " ").strip()


def normalize_title(title: str) -> str:
    """The form in which two titles of the same page compare equal.

    NFC-normalised, FEVER escapes and underscores decoded, whitespace collapsed, case-folded.
    Case-folding merges the rare pages that differ only by case ("Red" / "RED"), a small price for
    matching corpora that lower-case or re-capitalise titles.
    """
    text = unicodedata.normalize("NFC", decode_fever_title(str(title)))
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class Page:
    """A Wikipedia page as far as provenance scoring is concerned (``title`` is normalised)."""

    wikipedia_id: str | None = None
    title: str | None = None

    @property
    def key(self) -> str:
        """Its id if it has one, else its normalised title (what :func:`kilt_pages` returns)."""
        return self.wikipedia_id if self.wikipedia_id is not None else (self.title or "")

    def matches(self, gold: "Page") -> bool:
        """The page-identity rule: ids when both sides have one, normalised titles otherwise."""
        if self.wikipedia_id is not None and gold.wikipedia_id is not None:
            return self.wikipedia_id == gold.wikipedia_id
        return self.title is not None and self.title == gold.title


PageLike = Union[Page, str, Mapping[str, Any], Any]  # Any: Hit / Passage (attributes title, metadata)


def _clean_id(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _clean_title(value: Any) -> str | None:
    if value is None:
        return None
    text = normalize_title(value)
    return text or None


def as_page(obj: PageLike) -> Page:
    """A :class:`Page` from a Page, a provenance/passage dict, a Hit or Passage, or a title string.

    Dicts give ``wikipedia_id``/``title`` (a passage dict's ``metadata`` is looked into as well);
    Hit/Passage objects give ``metadata["wikipedia_id"]`` and ``.title``; a plain string becomes a
    title-only page (use :func:`align_pages` with strings to also match them against gold ids).
    """
    if isinstance(obj, Page):
        return obj
    if isinstance(obj, str):
        return Page(None, _clean_title(obj))
    if isinstance(obj, Mapping):
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
        wid = obj.get("wikipedia_id", meta.get("wikipedia_id"))
        return Page(_clean_id(wid), _clean_title(obj.get("title", meta.get("title"))))
    meta = getattr(obj, "metadata", None) or {}
    wid = getattr(obj, "wikipedia_id", None)
    if wid is None and isinstance(meta, Mapping):
        wid = meta.get("wikipedia_id")
    return Page(_clean_id(wid), _clean_title(getattr(obj, "title", None)))


def gold_pages(example: "QAExample") -> list[list[Page]]:
    """The provenance sets of a loaded KILT/FEVER example, one list of distinct pages per set.

    Reads ``example.metadata["provenance"]``: a list (one per gold output) of lists of page dicts
    ``{"wikipedia_id", "title"}`` or title strings. Pages with neither id nor title are dropped.
    """
    out: list[list[Page]] = []
    for group in example.metadata.get("provenance") or []:
        pages: list[Page] = []
        for entry in group:
            page = as_page(entry)
            if (page.wikipedia_id is not None or page.title is not None) and page not in pages:
                pages.append(page)
        out.append(pages)
    return out


def align_pages(retrieved: Iterable[PageLike], gold: Sequence[Sequence[Page]]) -> tuple[list[str], list[set[str]]]:
    """Map retrieved pages and gold provenance to one key space, applying the page-identity rule.

    Each gold page is keyed by :attr:`Page.key`; a retrieved page that matches a gold page takes
    that page's key, any other retrieved page gets a private key that equals no gold key (but is
    the same for two retrievals of the same page, so de-duplication still works). The result feeds
    :func:`r_precision` and the ``*_at_k`` functions, which work on plain strings as KILT does.
    """
    gold_flat = [p for group in gold for p in group]
    gold_keys = [{p.key for p in group} for group in gold]
    keys: list[str] = []
    for item in retrieved:
        if isinstance(item, str):
            wid, title = item.strip(), _clean_title(item)
            hit = next((g for g in gold_flat if (g.wikipedia_id is not None and g.wikipedia_id == wid)
                        or (title is not None and g.title == title)), None)
            keys.append(hit.key if hit is not None else _MISS + (title or wid))
            continue
        page = as_page(item)
        hit = next((g for g in gold_flat if page.matches(g)), None)
        if hit is not None:
            keys.append(hit.key)
        else:
            own = f"id:{page.wikipedia_id}" if page.wikipedia_id is not None else f"title:{page.title}"
            keys.append(_MISS + own)
    return keys, gold_keys


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


def evaluate_kilt_files(gold_path: str | os.PathLike, guess_path: str | os.PathLike,
                        ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Score a KILT guess file against a KILT gold file, matched by id, as KILT's
    ``eval_downstream``/``eval_retrieval`` do; returns :func:`kilt_scores`' dict (percent).

    The guess file holds ``{"id", "output": [{"answer", "provenance": [...]}]}``: its answer is the
    first output's ``answer`` that has one, its ranked pages the first output's ``provenance`` that
    has one. Every gold id needs exactly one guess (extra guesses are ignored with a warning; a
    missing or duplicated id is an error). When no guess holds an answer only retrieval metrics
    are returned; otherwise a guess without an answer scores 0 downstream (KILT would refuse it).
    Gold records may lack ``input`` (KILT's fixtures do).
    """
    from atlas_kit.storage import iter_jsonl
    from atlas_kit.tasks.kilt import load_kilt

    gold = load_kilt(gold_path, require_input=False)
    guess_path = Path(guess_path)
    if not guess_path.is_file():
        raise FileNotFoundError(f"KILT guess file not found: {guess_path}")
    guesses: dict[str, tuple[str | None, list[Page]]] = {}
    for lineno, rec in iter_jsonl(guess_path):
        if "id" not in rec:
            raise ValueError(f"{guess_path}:{lineno}: missing field 'id'")
        gid = str(rec["id"]).strip()
        if gid in guesses:
            raise ValueError(f"{guess_path}:{lineno}: field 'id': duplicate id {gid!r}")
        outputs = rec.get("output")
        if not isinstance(outputs, list):
            raise ValueError(f"{guess_path}:{lineno}: field 'output' must be a list")
        answer = next((o["answer"] for o in outputs if isinstance(o, dict) and o.get("answer") is not None), None)
        prov = next((o["provenance"] for o in outputs if isinstance(o, dict) and "provenance" in o), None) or []
        pages = []
        for j, entry in enumerate(prov):
            page = as_page(entry) if isinstance(entry, Mapping) else Page()
            if page.wikipedia_id is None and page.title is None:
                log.warning("%s:%d: provenance[%d] has neither wikipedia_id nor title; skipped", guess_path, lineno, j)
                continue
            pages.append(page)
        guesses[gid] = (None if answer is None else str(answer), pages)
    gold_ids = [str(ex.metadata["kilt_id"]).strip() for ex in gold]
    if len(set(gold_ids)) != len(gold_ids):
        raise ValueError(f"{gold_path}: gold ids are not unique")
    missing = [g for g in gold_ids if g not in guesses]
    if missing:
        raise ValueError(f"{guess_path}: no prediction for id(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")
    extra = len(guesses) - len(gold_ids)
    if extra:
        log.warning("%s: %d guesses have no gold record and are ignored", guess_path, extra)
    answers = [guesses[g][0] for g in gold_ids]
    predictions = None if all(a is None for a in answers) else [a or "" for a in answers]
    return kilt_scores(predictions, gold, [guesses[g][1] for g in gold_ids], ks=ks)
