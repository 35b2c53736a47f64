"""KILT task files: one loader for all eleven KILT datasets (FEVER, HotpotQA, WoW, NQ, ...).

KILT (Petroni et al. 2021) puts every task in one format::

    {"id", "input", "output": [{"answer", "provenance": [{"wikipedia_id", "title", ...}]}, ...], "meta"}

so a single loader turns them all into :class:`~atlas_kit.tasks.qa.QAExample`. The provenance (which
Wikipedia pages justify each gold output) is kept at page level in ``metadata["provenance"]`` for
the page-level metrics of :mod:`atlas_kit.provenance`.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atlas_kit.provenance import gold_pages
from atlas_kit.storage import iter_jsonl
from atlas_kit.tasks.qa import QAExample

__all__ = ["load_kilt", "kilt_pages", "example_from_kilt_record"]

log = logging.getLogger(__name__)


def _provenance_page(entry: Any, where: str) -> dict[str, str | None]:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
    wid = entry.get("wikipedia_id")
    wid = str(wid).strip() if wid is not None and str(wid).strip() else None
    title = entry.get("title")
    title = str(title).strip() if title is not None and str(title).strip() else None
    if wid is None and title is None:
        raise ValueError(f"{where}: provenance entry has neither 'wikipedia_id' nor 'title'")
    return {"wikipedia_id": wid, "title": title}


def example_from_kilt_record(rec: Mapping[str, Any], where: str, require_input: bool = True) -> QAExample:
    """One KILT record as a :class:`QAExample`; ``where`` (``"file:line"``) prefixes every error.

    * question: ``input`` as given (for Wizard of Wikipedia the dialogue history, turns separated
      by newlines); ``""`` when absent and ``require_input`` is false (KILT's test gold files).
    * answers: the non-empty ``answer`` strings, stripped (KILT strips), de-duplicated, in order.
    * ``metadata["provenance"]``: one list per output that has a non-empty ``provenance``, of the
      distinct pages ``{"wikipedia_id", "title"}`` (paragraph spans are dropped: the metrics are
      page level). An empty provenance list is skipped: it can never be satisfied, and counting it
      would only lower recall.
    * ``metadata["kilt_id"]``: the original id (KILT ids may be ints); ``metadata["meta"]``: ``meta``.

    A record without any answer is kept when it has provenance (ELI5/WoW-style outputs can carry
    provenance alone, and retrieval can still be scored); with neither it is an error.
    """
    if "id" not in rec:
        raise ValueError(f"{where}: missing field 'id'")
    question = rec.get("input")
    if question is None:
        if require_input:
            raise ValueError(f"{where}: missing field 'input'")
        question = ""
    if not isinstance(question, str):
        raise ValueError(f"{where}: field 'input' must be a string, got {type(question).__name__}")
    outputs = rec.get("output")
    if outputs is None:
        raise ValueError(f"{where}: missing field 'output'")
    if not isinstance(outputs, list):
        raise ValueError(f"{where}: field 'output' must be a list, got {type(outputs).__name__}")
    answers: list[str] = []
    provenance: list[list[dict[str, str | None]]] = []
    for i, out in enumerate(outputs):
        if not isinstance(out, Mapping):
            raise ValueError(f"{where}: field 'output[{i}]' must be an object, got {type(out).__name__}")
        answer = out.get("answer")
        if answer is not None:
            if not isinstance(answer, str):
                raise ValueError(f"{where}: field 'output[{i}].answer' must be a string, got {type(answer).__name__}")
            answer = answer.strip()
            if answer and answer not in answers:
                answers.append(answer)
        prov = out.get("provenance")
        if prov is None:
            continue
        if not isinstance(prov, list):
            raise ValueError(f"{where}: field 'output[{i}].provenance' must be a list, got {type(prov).__name__}")
        pages: list[dict[str, str | None]] = []
        for j, entry in enumerate(prov):
            page = _provenance_page(entry, f"{where}: field 'output[{i}].provenance[{j}]'")
            if page not in pages:
                pages.append(page)
        if pages:
            provenance.append(pages)
    if not answers and not provenance:
        raise ValueError(f"{where}: field 'output': no answer and no provenance")
    meta: dict[str, Any] = {"kilt_id": rec["id"], "provenance": provenance}
    if "meta" in rec:
        meta["meta"] = rec["meta"]
    return QAExample(str(rec["id"]), question, answers, [], meta)


def load_kilt(path: str | os.PathLike, limit: int | None = None, *, require_input: bool = True) -> list[QAExample]:
    """Read a KILT jsonl file (any KILT task) into examples; see :func:`example_from_kilt_record`.

    Errors name the file, the line and the field. ``require_input=False`` accepts records without
    ``input`` (gold files used only for scoring, like KILT's own test fixtures).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"KILT file not found: {path}")
    out: list[QAExample] = []
    answerless = 0
    for lineno, rec in iter_jsonl(path):
        ex = example_from_kilt_record(rec, f"{path}:{lineno}", require_input=require_input)
        answerless += not ex.answers
        out.append(ex)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{path}: no examples")
    if answerless:
        log.info("%s: %d of %d examples have provenance but no answer", path, answerless, len(out))
    return out


def kilt_pages(example: QAExample) -> list[set[str]]:
    """The example's provenance as page-id sets, one per gold output, for the page-level metrics.

    A page is named by its ``wikipedia_id`` when it has one, else by its normalised title
    (:func:`atlas_kit.provenance.normalize_title`), i.e. :attr:`~atlas_kit.provenance.Page.key`.
    Retrieved pages named the same way can be scored directly with
    :func:`~atlas_kit.provenance.r_precision`; to match ids against titles use
    :func:`~atlas_kit.provenance.align_pages` (or :func:`~atlas_kit.provenance.kilt_scores`).
    """
    return [{page.key for page in group} for group in gold_pages(example)]
