"""Answer-string normalisation shared by the QA metrics and KILT's scores.

SQuAD's official ``normalize_answer`` (lowercase, drop punctuation and the articles a/an/the,
collapse whitespace), which KILT's ``eval_downstream`` uses too. It lives below both
:mod:`atlas_kit.metrics` and :mod:`atlas_kit.provenance` so neither imports the other for it.
"""
from __future__ import annotations

import re
import string

__all__ = ["normalize_answer"]

_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())
