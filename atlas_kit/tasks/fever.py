"""FEVER fact verification: claims labelled SUPPORTS / REFUTES / NOT ENOUGH INFO.

Atlas treats FEVER as generation: the reader reads the claim with retrieved passages and
generates the label, so a claim becomes a :class:`~atlas_kit.tasks.qa.QAExample` whose only
answer is its label. Both the original FEVER files (``{"id","verifiable","label","claim",
"evidence"}``, e.g. ``paper_dev.jsonl``) and KILT's FEVER files (``{"id","input","output"}``) load.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from atlas_kit.provenance import decode_fever_title
from atlas_kit.storage import iter_jsonl
from atlas_kit.tasks.kilt import example_from_kilt_record
from atlas_kit.tasks.qa import QAExample

__all__ = ["FEVER_LABELS", "load_fever", "fever_provenance"]

log = logging.getLogger(__name__)

FEVER_LABELS: tuple[str, ...] = ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")


def fever_provenance(evidence: Any, where: str) -> list[list[dict[str, str | None]]]:
    """FEVER evidence as page-level provenance: one list of distinct pages per evidence set.

    FEVER evidence is a list of alternative evidence sets, each a list of
    ``[annotation_id, evidence_id, wiki_page, sentence_id]``; any one complete set justifies the
    label, exactly KILT's notion of a provenance set. Page names are decoded
    (``Soul_Food_-LRB-film-RRB-`` -> ``Soul Food (film)``) so they compare with Wikipedia titles;
    FEVER has no page ids, so ``wikipedia_id`` is None. Sets repeated by several annotators are
    kept once; NOT ENOUGH INFO claims (page None) have no provenance.
    """
    if evidence is None:
        return []
    if not isinstance(evidence, list):
        raise ValueError(f"{where}: field 'evidence' must be a list, got {type(evidence).__name__}")
    out: list[list[dict[str, str | None]]] = []
    for i, group in enumerate(evidence):
        if not isinstance(group, list):
            raise ValueError(f"{where}: field 'evidence[{i}]' must be a list, got {type(group).__name__}")
        pages: list[dict[str, str | None]] = []
        for j, item in enumerate(group):
            if not isinstance(item, list) or len(item) < 3:
                raise ValueError(f"{where}: field 'evidence[{i}][{j}]' must be [annotation, evidence, page, sentence]")
            if item[2] is None:
                continue
            page = {"wikipedia_id": None, "title": decode_fever_title(str(item[2]))}
            if page["title"] and page not in pages:
                pages.append(page)
        if pages and pages not in out:
            out.append(pages)
    return out


def _from_fever_record(rec: Mapping[str, Any], where: str) -> QAExample:
    for key in ("id", "claim", "label"):
        if key not in rec:
            raise ValueError(f"{where}: missing field {key!r}")
    claim, label = rec["claim"], rec["label"]
    if not isinstance(claim, str) or not claim.strip():
        raise ValueError(f"{where}: field 'claim' must be a non-empty string")
    if label not in FEVER_LABELS:
        raise ValueError(f"{where}: field 'label': {label!r} is not one of {list(FEVER_LABELS)}")
    meta = {
        "fever_id": rec["id"],
        "verifiable": rec.get("verifiable"),
        "provenance": fever_provenance(rec.get("evidence"), where),
        "evidence": rec.get("evidence"),  # raw, for sentence-level evidence scoring
    }
    return QAExample(str(rec["id"]), claim.strip(), [label], [], meta)


def load_fever(path: str | os.PathLike, limit: int | None = None,
               labels: Sequence[str] = FEVER_LABELS) -> list[QAExample]:
    """Read FEVER claims as examples with ``question=claim`` and ``answers=[label]``.

    Original FEVER records and KILT FEVER records (those with ``output``, parsed by
    :func:`~atlas_kit.tasks.kilt.example_from_kilt_record`) may be mixed. A label outside
    :data:`FEVER_LABELS` is an error naming the file, line and field; claims whose (valid) label is
    not in ``labels`` are skipped, e.g. ``labels=("SUPPORTS", "REFUTES")`` for KILT's two-way task.
    ``limit`` counts the examples returned.
    """
    unknown = [label for label in labels if label not in FEVER_LABELS]
    if unknown or not labels:
        raise ValueError(f"labels must be a non-empty subset of {list(FEVER_LABELS)}, got {list(labels)}")
    keep = set(labels)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FEVER file not found: {path}")
    out: list[QAExample] = []
    skipped: Counter[str] = Counter()
    for lineno, rec in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if "output" in rec:  # KILT format
            ex = example_from_kilt_record(rec, where)
            if len(ex.answers) != 1 or ex.answers[0] not in FEVER_LABELS:
                raise ValueError(f"{where}: field 'output[].answer': {ex.answers!r} is not one of {list(FEVER_LABELS)}")
        else:
            ex = _from_fever_record(rec, where)
        if ex.answers[0] not in keep:
            skipped[ex.answers[0]] += 1
            continue
        out.append(ex)
        if limit is not None and len(out) >= limit:
            break
    if skipped:
        log.info("%s: skipped %s (labels not requested)", path, dict(skipped))
    if not out:
        raise ValueError(f"{path}: no examples")
    return out
