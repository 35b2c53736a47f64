"""The ``Atlas`` facade: retriever + index (+ reranker) + FiD reader behind three calls.

``ask`` answers questions, ``retrieve`` returns ranked passages, ``swap_index`` points a live model
at another corpus. Every call takes whole batches: questions are embedded together, searched
together and read together, never one forward pass per question.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from atlas_kit.index import load_index
from atlas_kit.index.base import Hits, Index
from atlas_kit.reader import Reader
from atlas_kit.retriever import Retriever
from atlas_kit.model_card import write_model_card
from atlas_kit.storage import atomic_dir, atomic_write_json, read_json

__all__ = ["Atlas", "Answer"]

log = logging.getLogger(__name__)

CONFIG_NAME = "atlas_config.json"


@dataclass
class Answer:
    """A generated answer and the passages the reader saw (``passages[i].score`` / ``.id``)."""

    question: str
    text: str
    passages: Hits
    memory: list[tuple[str, str]] | None = None  # EMAT: the (question, answer) slots read, best first

    def __str__(self) -> str:
        return self.text


class Atlas:
    """Retrieval-augmented reader.

    Args:
        retriever: the dual encoder that embeds questions (and built the dense index).
        reader: a Fusion-in-Decoder :class:`~atlas_kit.Reader`; optional for retrieval-only use.
        index: any :class:`~atlas_kit.index.Index`; checked against the retriever.
        reranker: optional; re-scores candidates (see :mod:`atlas_kit.rerank`).
        k: default number of passages given to the reader.
        allow_mismatch: accept a dense index built by a different encoder fingerprint.
        memory: an EMAT key-value memory (:class:`~atlas_kit.memory.emat_memory.QAMemory`) read by
            an :class:`~atlas_kit.memory.emat.EMAT` reader: ``ask`` then answers from the memory
            alone (no retriever, no index needed) or from memory + retrieved passages.
        memory_k: memory slots read per question (EMAT's ``num_values``).
    """

    def __init__(
        self,
        retriever: Retriever | None = None,
        reader: Reader | None = None,
        index: Index | None = None,
        reranker: Any = None,
        k: int = 20,
        allow_mismatch: bool = False,
        memory: Any = None,
        memory_k: int = 10,
    ) -> None:
        self.retriever = retriever
        self.reader = reader
        self.reranker = reranker
        self.k = k
        self.memory_k = memory_k
        self._swap_lock = threading.Lock()
        if index is not None:
            index.check_compatible(retriever, allow_mismatch=allow_mismatch)
        self._index = index
        if memory is not None:
            memory.check_compatible(reader, allow_mismatch=allow_mismatch)
        self._memory = memory

    # ------------------------------------------------------------------ index
    @property
    def index(self) -> Index:
        index = self._index
        if index is None:
            raise RuntimeError("this Atlas has no index: pass index=... or call swap_index()")
        return index

    def swap_index(self, new_index: Index, allow_mismatch: bool = False) -> Index | None:
        """Point the live model at ``new_index`` and return the previous one.

        Compatibility is checked before anything changes. The swap is one reference assignment:
        a call in flight keeps the index it read at its start (so no result mixes two indexes),
        and every call that starts afterwards uses the new one. No retraining, no downtime.
        """
        new_index.check_compatible(self.retriever, allow_mismatch=allow_mismatch)
        with self._swap_lock:
            old, self._index = self._index, new_index
        log.info("swapped index: %s -> %s", _describe(old), _describe(new_index))
        return old

    # ------------------------------------------------------------------ memory (EMAT)
    @property
    def memory(self) -> Any:
        return self._memory

    def swap_memory(self, new_memory: Any, allow_mismatch: bool = False) -> Any:
        """Point the live model at another EMAT memory (checked against the reader's weights
        first) and return the previous one; like :meth:`swap_index`, one reference assignment."""
        new_memory.check_compatible(self.reader, allow_mismatch=allow_mismatch)
        with self._swap_lock:
            old, self._memory = self._memory, new_memory
        log.info("swapped memory: %s -> %s", getattr(old, "path", old), getattr(new_memory, "path", new_memory))
        return old

    def _ask_memory(self, qs: list[str], memory: Any, k: int | None, candidates: int | None, batch_size: int,
                    num_beams: int, max_length: int | None, show_progress: bool) -> list[Answer]:
        """EMAT: the memory's slots (and the retrieved passages, when there is an index)."""
        hits = self.retrieve(qs, k=k, candidates=candidates) if self._index is not None else None
        texts, rows = self.reader.generate(
            qs, [list(h) for h in hits] if hits is not None else None, memory=memory, k=self.memory_k,
            max_length=max_length, num_beams=num_beams, batch_size=batch_size, show_progress=show_progress,
            return_slots=True,
        )
        empty = Hits(None, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), [])
        return [Answer(q, t, hits[i] if hits is not None else empty, memory.pairs([r for r in rows[i] if r >= 0]))
                for i, (q, t) in enumerate(zip(qs, texts))]

    # ------------------------------------------------------------------ retrieval
    def retrieve(
        self,
        questions: Sequence[str] | str,
        k: int | None = None,
        candidates: int | None = None,
        query_embeddings: np.ndarray | None = None,
        batch_size: int = 128,
        index: Index | None = None,
    ) -> list[Hits]:
        """Ranked hits for every question, batched.

        With a reranker, ``candidates`` hits are fetched (default ``4 * k``) and re-scored, and
        the best ``k`` kept.
        """
        single = isinstance(questions, str)
        qs = [questions] if single else list(questions)
        k = k or self.k
        use_reranker = self.reranker is not None
        fetch = max(k, candidates or (4 * k if use_reranker else k))
        index = index if index is not None else self.index  # read once: a concurrent swap cannot split this call
        if index.needs_embeddings and query_embeddings is None:
            query_embeddings = self.retriever.encode_queries(qs, batch_size=batch_size)
        hits = index.search(qs, fetch, query_embeddings=query_embeddings)
        if use_reranker:
            hits = self.reranker.rerank(qs, hits, k, index=index)
        elif fetch > k:
            hits = [h.truncate(k) for h in hits]
        return hits

    # ------------------------------------------------------------------ answering
    def ask(
        self,
        questions: Sequence[str] | str,
        k: int | None = None,
        candidates: int | None = None,
        batch_size: int = 16,
        num_beams: int = 1,
        max_length: int | None = None,
        show_progress: bool | None = None,
    ) -> Answer | list[Answer]:
        """Answer one question (returns an :class:`Answer`) or many (a list, batched)."""
        if self.reader is None:
            raise RuntimeError("this Atlas has no reader: pass reader=... (retrieve() works without one)")
        single = isinstance(questions, str)
        qs = [questions] if single else list(questions)
        if show_progress is None:
            show_progress = len(qs) > 4 * batch_size
        memory = self._memory  # read once: a concurrent swap cannot split this call
        if memory is not None:
            answers = self._ask_memory(qs, memory, k, candidates, batch_size, num_beams, max_length, show_progress)
            return answers[0] if single else answers
        hits = self.retrieve(qs, k=k, candidates=candidates)
        texts = self.reader.generate(
            qs, [list(h) for h in hits], max_length=max_length, num_beams=num_beams,
            batch_size=batch_size, show_progress=show_progress,
        )
        answers = [Answer(q, t, h) for q, t, h in zip(qs, texts, hits)]
        return answers[0] if single else answers

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Save retriever and reader (safetensors) and the settings that change answers: ``k``
        and the index. The reader's own settings (template, lengths) are saved with it. The index
        is referenced, not copied (indexes are large and versioned on their own): by a path
        relative to ``folder`` when it has one, so a run folder holding both can be moved."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            if self.retriever is not None:
                self.retriever.save_pretrained(tmp / "retriever")
            if self.reader is not None:
                self.reader.save_pretrained(tmp / "reader")
            index_path = getattr(self._index, "path", None) if self._index is not None else None
            memory_path = getattr(self._memory, "path", None) if self._memory is not None else None
            atomic_write_json(tmp / CONFIG_NAME, {
                "k": self.k,
                "index": _relative_to(index_path, folder) if index_path else None,
                "has_reader": self.reader is not None,
                "has_retriever": self.retriever is not None,
                "reader_kind": "emat" if self._memory is not None or _is_emat(self.reader) else "fid",
                "memory": _relative_to(memory_path, folder) if memory_path else None,
                "memory_k": self.memory_k,
            })
            write_model_card(tmp)  # README.md with the Hub's metadata block

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        index: Index | str | os.PathLike | None = None,
        allow_mismatch: bool = False,
        device: str | None = None,
        k: int | None = None,
    ) -> "Atlas":
        """Load a saved model so that it answers as the saved one did: same reader settings,
        same ``k`` and the index it was saved with. ``index`` and ``k`` override those; a recorded
        index that no longer exists is an error only when retrieval is attempted."""
        folder = Path(folder)
        cfg = read_json(folder / CONFIG_NAME)
        retriever = Retriever.from_pretrained(folder / "retriever", device=device) if cfg.get("has_retriever", True) else None
        if cfg.get("reader_kind") == "emat":  # an EMAT reader and its memory
            from atlas_kit.memory.emat import EMAT
            from atlas_kit.memory.emat_memory import QAMemory

            reader = EMAT.from_pretrained(folder / "reader", device=device)
            memory = QAMemory.load(folder / cfg["memory"], reader, allow_mismatch) if cfg.get("memory") else None
            if index is None and cfg.get("index") and (folder / cfg["index"]).exists():
                index = folder / cfg["index"]
            if isinstance(index, (str, os.PathLike)):
                index = load_index(index, retriever=retriever, allow_mismatch=allow_mismatch)
            return cls(retriever, reader, index, k=k or cfg.get("k", 20), allow_mismatch=allow_mismatch, memory=memory,
                       memory_k=cfg.get("memory_k", 10))
        reader = Reader.from_pretrained(str(folder / "reader")) if cfg.get("has_reader") else None
        if reader is not None and device is not None:
            reader.to(device)
        if index is None and cfg.get("index"):
            recorded = folder / cfg["index"]  # an absolute recorded path stays absolute
            if recorded.exists():
                index = recorded
            else:
                log.warning("%s: the recorded index %s does not exist; pass an index", folder / CONFIG_NAME, recorded)
        if isinstance(index, (str, os.PathLike)):
            index = load_index(index, retriever=retriever, allow_mismatch=allow_mismatch)
        return cls(retriever, reader, index, k=k or cfg.get("k", 20), allow_mismatch=allow_mismatch)


def _is_emat(reader: Any) -> bool:
    return type(reader).__name__ == "EMAT"


def _relative_to(path: str | os.PathLike, folder: Path) -> str:
    """``path`` relative to ``folder`` (e.g. ``../index``), or absolute when on another drive."""
    path, folder = Path(path).resolve(), folder.resolve()
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # Windows: different drives
        return str(path)


def _describe(index: Index | None) -> str:
    if index is None:
        return "None"
    return f"{index.kind}({getattr(index, 'path', '') or len(index)})"
