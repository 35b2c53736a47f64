"""BEIR dataset folders (Thakur et al., 2021): read them, and evaluate a retriever on one end to end.

A BEIR folder holds ``corpus.jsonl`` (``{"_id", "title", "text"}``, read by
:func:`atlas_kit.passages.load_passages`), ``queries.jsonl`` (``{"_id", "text"}``) and
``qrels/<split>.tsv`` (``query-id<TAB>corpus-id<TAB>score`` under a header line).

:func:`evaluate_beir` follows BEIR's ``EvaluateRetrieval``: only the queries judged in the split
are searched, and (``ignore_identical_ids``, BEIR's default) a hit whose id equals the query id is
dropped first, since some BEIR sets (ArguAna, Quora) contain the query itself in the corpus.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from atlas_kit.ir.measures import DEFAULT_KS, ir_metrics
from atlas_kit.ir.trec import Qrels, Run, write_run
from atlas_kit.storage import iter_jsonl

__all__ = ["read_beir_queries", "read_beir_qrels", "load_beir", "evaluate_beir"]

log = logging.getLogger(__name__)


def read_beir_queries(path: str | os.PathLike) -> dict[str, str]:
    """``{query id: text}`` from a BEIR ``queries.jsonl``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BEIR queries file not found: {path}")
    queries: dict[str, str] = {}
    for lineno, rec in iter_jsonl(path):
        for name in ("_id", "text"):
            if name not in rec:
                raise ValueError(f"{path}:{lineno}: missing field {name!r}")
        qid = str(rec["_id"])
        if qid in queries:
            raise ValueError(f"{path}:{lineno}: field '_id': duplicate query id {qid!r}")
        queries[qid] = str(rec["text"])
    return queries


def read_beir_qrels(path: str | os.PathLike) -> Qrels:
    """:data:`~atlas_kit.ir.trec.Qrels` from a BEIR ``qrels/<split>.tsv`` (the header line is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BEIR qrels file not found: {path}")
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if lineno == 1 and fields[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(fields) != 3:
                raise ValueError(f"{path}:{lineno}: expected 3 tab-separated fields 'query-id corpus-id score', "
                                 f"got {len(fields)}")
            qid, docid, score = (x.strip() for x in fields)
            try:
                rel = int(float(score))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: field 'score': not a number: {score!r}") from None
            qrels.setdefault(qid, {})[docid] = rel
    return qrels


def load_beir(folder: str | os.PathLike, split: str = "test") -> tuple[Any, dict[str, str], Qrels]:
    """``(passages, queries, qrels)`` of a BEIR folder; queries are those judged in ``split``."""
    from atlas_kit.passages import load_passages

    folder = Path(folder)
    if not (folder / "corpus.jsonl").is_file():
        raise FileNotFoundError(f"{folder}: not a BEIR folder (no corpus.jsonl)")
    qrels = read_beir_qrels(folder / "qrels" / f"{split}.tsv")
    all_queries = read_beir_queries(folder / "queries.jsonl")
    unknown = [q for q in qrels if q not in all_queries]
    if unknown:
        raise ValueError(f"{folder / 'qrels' / f'{split}.tsv'}: query id(s) {unknown[:5]} are not in queries.jsonl")
    queries = {q: all_queries[q] for q in qrels}
    return load_passages(folder / "corpus.jsonl", format="beir"), queries, qrels


def evaluate_beir(folder: str | os.PathLike, retriever: Any = None, k: int = 100, split: str = "test",
                  ks: Sequence[int] = DEFAULT_KS, factory: str = "Flat", batch_size: int = 128,
                  ignore_identical_ids: bool = True, run_file: str | os.PathLike | None = None,
                  tag: str = "atlas_kit") -> tuple[dict[str, float], Run]:
    """Index a BEIR folder's corpus with ``retriever`` (default: the bundled MiniLM), retrieve
    ``k`` passages for each judged query, and score with :func:`~atlas_kit.ir.measures.ir_metrics`.

    Returns ``(metrics, run)``; ``run_file`` also writes the run in TREC format.
    """
    from atlas_kit.api import Atlas
    from atlas_kit.index import FaissIndex
    from atlas_kit.retriever import Retriever

    ks = sorted({int(x) for x in ks if int(x) <= k}) or [k]
    passages, queries, qrels = load_beir(folder, split)
    retriever = retriever if retriever is not None else Retriever.default()
    log.info("BEIR %s (%s): %d passages, %d judged queries", folder, split, len(passages), len(queries))
    index = FaissIndex.build(passages, retriever, factory=factory, batch_size=batch_size)
    atlas = Atlas(retriever, None, index, k=k)
    qids = list(queries)
    extra = 1 if ignore_identical_ids else 0  # one more, in case the query itself is retrieved
    hits = atlas.retrieve([queries[q] for q in qids], k=min(k + extra, len(passages)), batch_size=batch_size)
    run: Run = {}
    for qid, ranked in zip(qids, hits):
        docs: dict[str, float] = {}
        for h in ranked:
            if ignore_identical_ids and h.id == qid:
                continue
            if len(docs) < k:
                docs.setdefault(h.id, float(h.score))
        run[qid] = docs
    metrics = ir_metrics(run, qrels, ks=ks)
    if run_file is not None:
        write_run(run_file, run, tag=tag)
    return metrics, run
