"""KILT's prediction format: what the KILT leaderboard and KILT's evaluation scripts read.

One JSON object per line, ``{"id", "input", "output": [{"answer", "provenance": [{"wikipedia_id",
"title"}, ...]}]}``: the example's original KILT id (kept as in the gold file, int or string), its
input, the predicted answer (left out for a retrieval-only run) and the retrieved Wikipedia pages
in rank order, each page once (KILT scores a page at its first rank). Pages come from the hits'
``metadata["wikipedia_id"]`` and titles; a hit without either is skipped.

:func:`evaluate_kilt_files` scores such a file against a KILT gold file, as KILT's scripts do.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from atlas_kit.provenance import Page, as_page, kilt_scores
from atlas_kit.storage import atomic_write_text, iter_jsonl
from atlas_kit.tasks.kilt import load_kilt

__all__ = ["provenance_entries", "submission_record", "submission_records", "write_kilt_submission", "evaluate_kilt_files"]

log = logging.getLogger(__name__)


def _page_of(hit: Any) -> dict[str, str] | None:
    if isinstance(hit, Mapping):
        meta = hit.get("metadata") if isinstance(hit.get("metadata"), Mapping) else {}
        wid, title = hit.get("wikipedia_id", meta.get("wikipedia_id")), hit.get("title", meta.get("title"))
    else:
        meta = getattr(hit, "metadata", None) or {}
        wid = getattr(hit, "wikipedia_id", None) or (meta.get("wikipedia_id") if isinstance(meta, Mapping) else None)
        title = getattr(hit, "title", None)
    entry: dict[str, str] = {}
    if wid is not None and str(wid).strip():
        entry["wikipedia_id"] = str(wid).strip()
    if title is not None and str(title).strip():
        entry["title"] = str(title).strip()
    return entry or None


def provenance_entries(hits: Iterable[Any], max_pages: int | None = None) -> list[dict[str, str]]:
    """KILT provenance entries of ranked hits (Hits, Passages or dicts), one per distinct page
    (by ``wikipedia_id`` when present, else by title), in rank order, at most ``max_pages``."""
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for hit in hits:
        entry = _page_of(hit)
        if entry is None:
            continue
        key = "id:" + entry["wikipedia_id"] if "wikipedia_id" in entry else "title:" + entry["title"]
        if key in seen:
            continue
        seen.add(key)
        out.append(entry)
        if max_pages is not None and len(out) >= max_pages:
            break
    return out


def submission_record(kilt_id: Any, input: str, answer: str | None, provenance: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """One line of a KILT prediction file (``answer=None``: provenance only)."""
    output: dict[str, Any] = {} if answer is None else {"answer": str(answer)}
    output["provenance"] = [dict(p) for p in provenance]
    return {"id": kilt_id, "input": input, "output": [output]}


def submission_records(examples: Sequence[Any], predictions: Sequence[str] | None,
                       retrieved: Sequence[Iterable[Any]], max_pages: int | None = None) -> list[dict[str, Any]]:
    """KILT prediction records for loaded KILT examples (``metadata["kilt_id"]`` is their
    original id), their predicted answers (or ``None``) and their ranked hits."""
    if predictions is not None and len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions but {len(examples)} examples")
    if len(retrieved) != len(examples):
        raise ValueError(f"{len(retrieved)} retrieval lists but {len(examples)} examples")
    return [submission_record((e.metadata or {}).get("kilt_id", e.id), e.question,
                              None if predictions is None else predictions[i],
                              provenance_entries(retrieved[i], max_pages))
            for i, e in enumerate(examples)]


def write_kilt_submission(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write KILT prediction records (:func:`submission_record`) as jsonl, atomically."""
    path = Path(path)
    lines = []
    for i, rec in enumerate(records):
        for name in ("id", "input", "output"):
            if name not in rec:
                raise ValueError(f"KILT prediction record {i}: missing field {name!r}")
        lines.append(json.dumps({"id": rec["id"], "input": rec["input"], "output": rec["output"]}, ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(lines))
    log.info("wrote %d KILT predictions to %s", len(lines), path)
    return path


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
