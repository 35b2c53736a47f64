"""KILT's evaluation: page-level R-precision / recall@k and the KILT scores (ROUGE-L through the
``rouge`` package that KILT itself calls).

KILT (Petroni et al. 2021) asks a knowledge-intensive system for an answer *and* the Wikipedia
pages that justify it. Its scores are re-implemented here from the paper's definitions and the
behaviour of its reference scripts (``kilt/eval_retrieval.py``, ``kilt/eval_downstream.py``) so that
the numbers reported by atlas_kit are comparable with published KILT numbers; the tests check them
against KILT's own test fixtures and expected values.

Page identity (which retrieved passage is which gold page) is defined in
:mod:`atlas_kit.provenance.pages`; the scores are in :mod:`atlas_kit.provenance.scoring`.

Deviations from KILT's scripts, on inputs those scripts reject or crash on, are documented where
they happen (examples without gold answers, empty provenance lists).

Modules: :mod:`~atlas_kit.provenance.pages` (page identity, gold provenance) and
:mod:`~atlas_kit.provenance.scoring` (the scores). Scoring a KILT guess *file* against a gold file
is :func:`atlas_kit.kilt_submission.evaluate_kilt_files`, next to the code that writes such files.
"""
from atlas_kit.provenance.pages import Page, PageLike, align_pages, as_page, decode_fever_title, gold_pages, normalize_title
from atlas_kit.provenance.scoring import (
    kilt_exact_match,
    kilt_f1,
    kilt_scores,
    page_precision_at_k,
    page_recall_at_k,
    page_success_at_k,
    r_precision,
    rouge_l,
)

__all__ = ["Page", "PageLike", "normalize_title", "decode_fever_title", "as_page", "gold_pages", "align_pages",
           "r_precision", "page_recall_at_k", "page_success_at_k", "page_precision_at_k", "kilt_exact_match",
           "kilt_f1", "rouge_l", "kilt_scores"]
