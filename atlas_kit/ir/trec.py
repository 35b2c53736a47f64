"""TREC run and qrels files, the text formats trec_eval, Pyserini, BEIR and ir-measures exchange.

* run: one line per retrieved document, ``qid Q0 docid rank score tag`` (whitespace separated);
* qrels: one line per judgement, ``qid iteration docid relevance`` (iteration is unused, ``0``).

In memory both are nested dicts, the shape ``pytrec_eval`` and ``ir-measures`` take directly:
:data:`Run` ``{qid: {docid: score}}`` and :data:`Qrels` ``{qid: {docid: relevance}}``.

trec_eval ranks by score (descending) and ignores the rank column; on tied scores it orders by
docid, descending. A run written here keeps atlas_kit's order in the rank column, so two tied
documents may be evaluated in the other order, exactly as for any other TREC run.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from atlas_kit.storage import atomic_write_text

__all__ = ["Run", "Qrels", "run_from_hits", "qrels_from_gold_ids", "write_run", "read_run", "read_qrels",
           "write_qrels"]

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def _check_token(value: str, what: str) -> str:
    text = str(value)
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{what} {text!r} cannot be written to a TREC file (empty or contains whitespace)")
    return text


def run_from_hits(qids: Sequence[str], hits: Sequence[Iterable[Any]]) -> Run:
    """A :data:`Run` from one ranked hit list per query (``Hits``, or objects with ``.id``/``.score``).

    A passage retrieved twice for a query keeps its first (best-ranked) score."""
    if len(qids) != len(hits):
        raise ValueError(f"{len(qids)} query ids but {len(hits)} hit lists")
    run: Run = {}
    for qid, ranked in zip(qids, hits):
        if str(qid) in run:
            raise ValueError(f"duplicate query id {qid!r}")
        docs: dict[str, float] = {}
        for h in ranked:
            docs.setdefault(str(h.id), float(h.score))
        run[str(qid)] = docs
    return run


def qrels_from_gold_ids(qids: Sequence[str], gold_ids: Sequence[Iterable[str]]) -> Qrels:
    """Binary :data:`Qrels` (relevance 1) from each query's gold passage ids; queries without
    gold ids are left out (trec_eval skips them too)."""
    if len(qids) != len(gold_ids):
        raise ValueError(f"{len(qids)} query ids but {len(gold_ids)} gold id lists")
    return {str(q): {str(d): 1 for d in g} for q, g in zip(qids, gold_ids) if g}


def write_run(path: str | os.PathLike, run: Mapping[str, Mapping[str, float]], tag: str = "atlas_kit") -> Path:
    """Write ``run`` as a TREC run file (atomically): per query, documents by descending score,
    ranks from 1. Returns the path."""
    tag = _check_token(tag, "run tag")
    lines = []
    for qid, docs in run.items():
        qid = _check_token(qid, "query id")
        ranked = sorted(docs.items(), key=lambda kv: -kv[1])  # stable: ties keep their given order
        for rank, (docid, score) in enumerate(ranked, 1):
            lines.append(f"{qid} Q0 {_check_token(docid, 'document id')} {rank} {float(score):.6f} {tag}\n")
    path = Path(path)
    atomic_write_text(path, "".join(lines))
    log.info("wrote a TREC run of %d queries (%d lines) to %s", len(run), len(lines), path)
    return path


def _lines(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield lineno, line.split()


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run file into a :data:`Run` (the rank column is ignored, as trec_eval does)."""
    path = Path(path)
    run: Run = {}
    for lineno, fields in _lines(path):
        if len(fields) != 6:
            raise ValueError(f"{path}:{lineno}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}")
        qid, _, docid, _, score, _ = fields
        try:
            value = float(score)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: field 'score': not a number: {score!r}") from None
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise ValueError(f"{path}:{lineno}: field 'docid': {docid!r} listed twice for query {qid!r}")
        docs[docid] = value
    return run


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read a TREC qrels file ``qid iteration docid relevance`` into :data:`Qrels`."""
    path = Path(path)
    qrels: Qrels = {}
    for lineno, fields in _lines(path):
        if len(fields) != 4:
            raise ValueError(f"{path}:{lineno}: expected 4 fields 'qid iteration docid relevance', got {len(fields)}")
        qid, _, docid, rel = fields
        try:
            value = int(rel)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: field 'relevance': not an integer: {rel!r}") from None
        qrels.setdefault(qid, {})[docid] = value
    return qrels


def write_qrels(path: str | os.PathLike, qrels: Mapping[str, Mapping[str, int]]) -> Path:
    """Write ``qrels`` as a TREC qrels file (atomically). Returns the path."""
    lines = [f"{_check_token(q, 'query id')} 0 {_check_token(d, 'document id')} {int(r)}\n"
             for q, docs in qrels.items() for d, r in docs.items()]
    path = Path(path)
    atomic_write_text(path, "".join(lines))
    return path
