"""Streaming, resumable FAISS index builds for corpora larger than memory.

:func:`build_faiss_index` encodes the corpus in chunks of ``chunk_size`` passages and writes each
chunk's vectors into one memory-mapped float32 file in a work folder next to the output
(``.NAME.build/``) as it is produced; a chunk counts as done only once its rows are flushed and
recorded in ``progress-RANK.json`` (written atomically; ``plan.json`` says what is being built). The FAISS index is then trained on a seeded
sample and filled chunk by chunk from that file (:meth:`FaissIndex.from_embeddings` reads it
memory-mapped), and the index folder is published by an atomic rename; the work folder is removed
last. A build killed part-way is resumed with ``resume=True`` (CLI: ``index build ... --resume``):
finished chunks are kept, the rest re-encoded, and the result is the index an uninterrupted build
gives (same vectors, same ids), since chunk boundaries and the training sample do not depend on
where it stopped. Nothing is ever written under the final path before the publish.

Under ``torchrun`` (``torch.distributed`` initialised, or ``WORLD_SIZE`` > 1 in the environment,
in which case a Gloo group is started) the chunks are dealt round-robin to the ranks, which write
disjoint rows of the same work file (a file system all ranks see) and their own
``progress-RANK.json``; rank 0 then trains, fills and publishes the index, and every rank returns
it. The result equals a one-process build; a resume may use another number of ranks.
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
    rank, world = _distributed()
    work = work_dir_for(out)
    plan = {"count": n, "dim": int(retriever.dim), "chunk_size": chunk_size,
            "corpus_checksum": passages.checksum(), "retriever_fingerprint": retriever.fingerprint(),
            "with_title": getattr(retriever, "with_title", True)}
    vectors_path = work / "vectors.npy"
    if rank == 0:
        _prepare(work, plan, resume)
        if not vectors_path.is_file():
            np.lib.format.open_memmap(vectors_path, mode="w+", dtype=np.float32, shape=(n, plan["dim"])).flush()
    _barrier(world)
    done = _finished(work)
    vectors = np.load(vectors_path, mmap_mode="r+")
    chunks = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]
    todo = [c for c in range(len(chunks)) if c not in done][rank::world]
    if done:
        log.info("resuming: %d of %d chunks already encoded in %s", len(done), len(chunks), work)
    mine = {c for c in done if c % world == rank}  # kept in this rank's progress file
    for c in tqdm(todo, desc="encode chunks", unit="chunk", disable=show_progress is False or len(todo) < 2):
        start, stop = chunks[c]
        vectors[start:stop] = retriever.encode_passages(passages.select(range(start, stop)), batch_size=batch_size,
                                                        show_progress=False)
        vectors.flush()
        mine.add(c)
        atomic_write_json(work / f"progress-{rank}.json", {"done": sorted(mine)})
    del vectors
    _barrier(world)
    if rank != 0:
        _barrier(world)  # rank 0 publishes
        return FaissIndex.load(out, retriever=retriever)
    index = FaissIndex.from_embeddings(
        np.load(vectors_path, mmap_mode="r"), passages, retriever_identity=retriever.identity(), factory=factory,
        metric=metric, train_size=train_size, embeddings_dtype=embeddings_dtype, seed=seed,
        target_recall=target_recall,
    )
    index.manifest["build"]["chunk_size"] = chunk_size
    index.save(out)
    shutil.rmtree(work, ignore_errors=True)
    _barrier(world)
    return FaissIndex.load(out, retriever=retriever)


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts a Gloo group when launched by torchrun without one."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _finished(work: Path) -> set[int]:
    """Chunks recorded as done by any rank (of this or an earlier, interrupted run)."""
    done: set[int] = set()
    for path in sorted(work.glob("progress-*.json")):
        done.update(int(c) for c in read_json(path).get("done", []))
    return done


def _prepare(work: Path, plan: dict[str, Any], resume: bool) -> None:
    """Keep ``work`` when resuming the same plan; otherwise start it afresh (with ``plan.json``)."""
    recorded_path = work / "plan.json"
    if work.exists() and not resume:
        log.info("discarding the unfinished build in %s (pass resume=True / --resume to continue it)", work)
        shutil.rmtree(work)
    if resume and recorded_path.is_file():
        recorded = read_json(recorded_path)
        changed = [k for k in PLAN_KEYS if recorded.get(k) != plan[k]]
        if changed:
            raise ValueError(f"{work}: cannot resume, the unfinished build differs in {', '.join(changed)} "
                             "(run without --resume to start over)")
        return
    if work.exists():  # resume asked, but the build never got going: start clean
        shutil.rmtree(work)
    work.mkdir(parents=True)
    atomic_write_json(recorded_path, plan)
