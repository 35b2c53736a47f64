"""Streaming, resumable FAISS index builds for corpora larger than memory.

:func:`build_faiss_index` encodes the corpus in chunks of ``chunk_size`` passages and writes each
chunk's vectors into one memory-mapped float32 file in a work folder next to the output
(``.NAME.build/``) as it is produced; a chunk counts as done only once its rows are flushed and
recorded in ``progress.json`` (written atomically). The FAISS index is then trained on a seeded
sample and filled chunk by chunk from that file (:meth:`FaissIndex.from_embeddings` reads it
memory-mapped), and the index folder is published by an atomic rename; the work folder is removed
last. A build killed part-way is resumed with ``resume=True`` (CLI: ``index build ... --resume``):
finished chunks are kept, the rest re-encoded, and the result is the index an uninterrupted build
gives (same vectors, same ids), since chunk boundaries and the training sample do not depend on
where it stopped. Nothing is ever written under the final path before the publish.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from atlas_kit.index.faiss_index import DEFAULT_TARGET_RECALL, FaissIndex
from atlas_kit.passages import Passages, load_passages
from atlas_kit.storage import atomic_write_json, read_json

__all__ = ["build_faiss_index", "work_dir_for"]

log = logging.getLogger(__name__)

PLAN_KEYS = ("count", "dim", "chunk_size", "corpus_checksum", "retriever_fingerprint", "with_title")


def work_dir_for(out: str | os.PathLike) -> Path:
    """The hidden work folder of a build publishing to ``out``."""
    out = Path(out)
    return out.parent / f".{out.name}.build"


def build_faiss_index(
    passages: Passages | str | os.PathLike,
    retriever: Any,
    out: str | os.PathLike,
    factory: str = "Flat",
    metric: str = "ip",
    chunk_size: int = 10_000,
    batch_size: int = 128,
    resume: bool = False,
    train_size: int | None = None,
    embeddings_dtype: str = "float16",
    seed: int = 0,
    target_recall: float | None = DEFAULT_TARGET_RECALL,
    show_progress: bool | None = None,
) -> FaissIndex:
    """Encode ``passages`` chunk by chunk, build the FAISS index and publish it at ``out``.

    Returns the published index, loaded from ``out`` (memory-mapped). With ``resume=False`` a
    leftover work folder of an earlier build is discarded; with ``resume=True`` it is reused when
    it belongs to the same corpus, retriever and chunk size (otherwise a ValueError says why).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not isinstance(passages, Passages):
        passages = load_passages(passages)
    n = len(passages)
    if n == 0:
        raise ValueError("cannot build an index over an empty corpus")
    work = work_dir_for(out)
    plan = {"count": n, "dim": int(retriever.dim), "chunk_size": chunk_size,
            "corpus_checksum": passages.checksum(), "retriever_fingerprint": retriever.fingerprint(),
            "with_title": getattr(retriever, "with_title", True)}
    done = _prepare(work, plan, resume)
    vectors_path = work / "vectors.npy"
    if not vectors_path.is_file():
        np.lib.format.open_memmap(vectors_path, mode="w+", dtype=np.float32, shape=(n, plan["dim"])).flush()
    vectors = np.load(vectors_path, mmap_mode="r+")
    chunks = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]
    todo = [c for c in range(len(chunks)) if c not in done]
    if done:
        log.info("resuming: %d of %d chunks already encoded in %s", len(done), len(chunks), work)
    for c in tqdm(todo, desc="encode chunks", unit="chunk", disable=show_progress is False or len(todo) < 2):
        start, stop = chunks[c]
        vectors[start:stop] = retriever.encode_passages(passages.select(range(start, stop)), batch_size=batch_size,
                                                        show_progress=False)
        vectors.flush()
        done.add(c)
        atomic_write_json(work / "progress.json", {**plan, "done": sorted(done)})
    del vectors
    index = FaissIndex.from_embeddings(
        np.load(vectors_path, mmap_mode="r"), passages, retriever_identity=retriever.identity(), factory=factory,
        metric=metric, train_size=train_size, embeddings_dtype=embeddings_dtype, seed=seed,
        target_recall=target_recall,
    )
    index.manifest["build"]["chunk_size"] = chunk_size
    index.save(out)
    shutil.rmtree(work, ignore_errors=True)
    return FaissIndex.load(out, retriever=retriever)


def _prepare(work: Path, plan: dict[str, Any], resume: bool) -> set[int]:
    """The finished chunks in ``work`` (an empty set for a fresh build)."""
    progress = work / "progress.json"
    if work.exists() and not resume:
        log.info("discarding the unfinished build in %s (pass resume=True / --resume to continue it)", work)
        shutil.rmtree(work)
    if resume and progress.is_file():
        recorded = read_json(progress)
        changed = [k for k in PLAN_KEYS if recorded.get(k) != plan[k]]
        if changed:
            raise ValueError(f"{work}: cannot resume, the unfinished build differs in {', '.join(changed)} "
                             "(run without --resume to start over)")
        return {int(c) for c in recorded.get("done", [])}
    if work.exists():  # resume asked, but no chunk was ever finished: start clean
        shutil.rmtree(work)
    work.mkdir(parents=True)
    atomic_write_json(progress, {**plan, "done": []})
    return set()
