"""Sparse lexical index backed by `bm25s <https://github.com/xhluca/bm25s>`_ (eager, sparse BM25).

BM25 needs no encoder, so it is the index that works on any corpus immediately, and it is the
lexical half of a :class:`~atlas_kit.index.HybridIndex`. bm25s precomputes every (term, passage)
score into a sparse matrix at build time, so a query is a handful of sparse-row sums plus a top-k
selection: much faster than scoring documents on the fly, and the matrix is memory-mapped on load.

Folder layout::

    manifest.json     format version, kind="bm25", count, version/history, corpus checksum,
                      tokenizer settings (stopwords, stemmer, lower, token_pattern) and k1, b, method
    passages/         the passages (Arrow, memory-mapped on load)
    bm25/             the bm25s model, written by ``bm25s.BM25.save`` (CSC arrays as .npy: mmap-able)
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Callable

import bm25s
import numpy as np

from atlas_kit.index.base import FORMAT_VERSION, MANIFEST, Hits, Index, bumped, now_iso, read_manifest, verify_loaded
from atlas_kit.index.registry import register
from atlas_kit.passages import Passages, load_passages
from atlas_kit.storage import atomic_dir, atomic_write_json

__all__ = ["BM25Index", "METHODS"]

log = logging.getLogger(__name__)

#: scoring variants bm25s implements (Kamphuis et al., 2020); "lucene" is Lucene/Elasticsearch's
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
#: bm25s' (and scikit-learn's) default token pattern: runs of 2+ word characters
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
MODEL_DIR = "bm25"


def _make_stemmer(stemmer: str | None) -> Callable[[list[str]], list[str]] | None:
    """A PyStemmer ``stemWords`` for a Snowball language name ("english", "porter", "german", ...).

    The stemmer is recorded by *name* (not as an object) so the manifest can re-create exactly
    the same query-side analysis when the index is loaded in another process.
    """
    if stemmer is None:
        return None
    if not isinstance(stemmer, str):
        raise TypeError(f"stemmer must be a Snowball language name such as 'english' (or None), got {type(stemmer).__name__}")
    import Stemmer  # PyStemmer

    try:
        return Stemmer.Stemmer(stemmer).stemWords
    except KeyError:
        raise ValueError(f"unknown stemmer {stemmer!r} (PyStemmer knows: {', '.join(Stemmer.algorithms())})") from None


def _check_stopwords(stopwords: str | Sequence[str] | None) -> str | list[str] | None:
    """Validate early (bm25s would only fail at tokenization time) and make it JSON-serialisable."""
    if stopwords is None or stopwords is False:
        return None
    if isinstance(stopwords, str):
        bm25s.tokenization._infer_stopwords(stopwords)  # raises ValueError naming the supported languages
        return stopwords
    return [str(w) for w in stopwords]


@register
class BM25Index(Index):
    """BM25 over ``passage_text(p)`` ("title text") of every passage, using bm25s.

    Build with :meth:`build`, persist with :meth:`save` / :meth:`load`. ``search`` ignores
    ``query_embeddings`` (``needs_embeddings`` is False), so :class:`~atlas_kit.Atlas` does not
    run the retriever for a pure BM25 index.

    Search returns ``min(k, len(index))`` hits per query, exactly as bm25s does: when fewer than
    ``k`` passages share a term with the query, the tail holds zero-scored passages (a fixed-size
    result keeps reader batches rectangular, as with FAISS).
    """

    kind = "bm25"
    needs_embeddings = False

    def __init__(self, model: bm25s.BM25, passages: Passages, manifest: dict[str, Any], n_threads: int = 0) -> None:
        num_docs = int(model.scores["num_docs"])
        if num_docs != len(passages):
            raise ValueError(f"bm25s model holds {num_docs} documents but there are {len(passages)} passages")
        # (model, passages) is replaced as one tuple by add/remove, so a search running meanwhile
        # always sees a consistent snapshot
        self._state: tuple[bm25s.BM25, Passages] = (model, passages)
        self.manifest = manifest
        #: bm25s ``n_threads`` for batch retrieval (0: sequential, -1: all CPUs)
        self.n_threads = n_threads
        self._update_lock = threading.Lock()
        self._stemmer = _make_stemmer(manifest.get("stemmer"))
        self.path: str | None = None

    @property
    def model(self) -> bm25s.BM25:
        return self._state[0]

    @property
    def passages(self) -> Passages:
        return self._state[1]

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        passages: Passages | str | os.PathLike,
        stopwords: str | Sequence[str] | None = "en",
        stemmer: str | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        lower: bool = True,
        token_pattern: str = TOKEN_PATTERN,
        backend: str = "auto",
        n_threads: int = 0,
        show_progress: bool | None = None,
    ) -> "BM25Index":
        """Tokenize every passage with bm25s' tokenizer and build the eager BM25 score matrix.

        Args:
            stopwords: a bm25s language code/name ("en", "english", "de", ...), a list of words, or None.
            stemmer: a PyStemmer (Snowball) language name such as "english", or None.
            k1, b, method: BM25 parameters; ``method`` is one of :data:`METHODS`.
            backend: bm25s scoring backend ("auto" uses numba when it is installed, else numpy).
            n_threads: threads for batch retrieval (bm25s ``n_threads``; 0 = sequential).
        """
        if not isinstance(passages, Passages):
            passages = load_passages(passages)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        settings = {
            "stopwords": _check_stopwords(stopwords),
            "stemmer": stemmer,
            "lower": bool(lower),
            "token_pattern": token_pattern,
            "k1": float(k1),
            "b": float(b),
            "method": method,
        }
        _make_stemmer(stemmer)  # fail on a bad name before the (long) tokenization
        t0 = time.perf_counter()
        model = _build_model(passages, settings, backend, show_progress)
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": cls.kind,
            "count": len(passages),
            "version": 1,
            "history": [{"version": 1, "change": "build", "count": len(passages), "at": now_iso()}],
            "corpus_checksum": passages.checksum(),
            **settings,
            "vocab_size": len(model.vocab_dict),
            "bm25s_version": bm25s.__version__,
            "created": now_iso(),
            "build": {"index_seconds": round(time.perf_counter() - t0, 3)},
        }
        return cls(model, passages, manifest, n_threads=n_threads)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> None:
        """Write the folder to a temporary sibling and publish it with an atomic rename."""
        with atomic_dir(folder) as tmp:
            model, passages = self._state
            passages.save(tmp / "passages")
            model.save(str(tmp / MODEL_DIR), show_progress=False)
            atomic_write_json(tmp / MANIFEST, self.manifest)
        self.path = str(folder)

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        mmap: bool = True,
        n_threads: int = 0,
        retriever: Any = None,
        allow_mismatch: bool = False,
    ) -> "BM25Index":
        """Open a folder written by :meth:`save`.

        ``mmap`` memory-maps bm25s' score arrays (``np.load(mmap_mode="r")``), so a large index
        opens instantly and its pages are shared between processes. ``retriever`` and
        ``allow_mismatch`` are accepted (and ignored) so every index kind loads the same way.
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest.get("kind") != cls.kind:
            raise ValueError(f"{folder}: is a {manifest.get('kind')!r} index, not {cls.kind!r}")
        model_dir = folder / MODEL_DIR
        if not model_dir.is_dir():
            raise FileNotFoundError(f"{folder}: the bm25s model folder {MODEL_DIR}/ is missing")
        model = bm25s.BM25.load(str(model_dir), mmap=mmap, load_corpus=False, show_progress=False)
        passages = Passages.load(folder / "passages")
        n_docs = (getattr(model, "scores", None) or {}).get("num_docs")
        verify_loaded(folder, manifest, len(passages), None if n_docs is None else int(n_docs))
        loaded = cls(model, passages, manifest, n_threads=n_threads)
        loaded.path = str(folder)
        return loaded

    # ------------------------------------------------------------------ search
    def __len__(self) -> int:
        return len(self._state[1])

    def tokenize_queries(self, queries: Sequence[str]) -> list[list[str]]:
        """The query-side analysis: bm25s' tokenizer with the settings the index was built with."""
        m = self.manifest
        return bm25s.tokenize(
            list(queries),
            lower=m.get("lower", True),
            token_pattern=m.get("token_pattern", TOKEN_PATTERN),
            stopwords=m.get("stopwords"),
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )

    def search(self, queries: Sequence[str], k: int, query_embeddings: np.ndarray | None = None) -> list[Hits]:
        """Top-``k`` passages per query (``query_embeddings`` is ignored).

        All queries are tokenized in one call and retrieved in one bm25s ``retrieve`` call (its
        own thread pool with ``n_threads``); Python only wraps the result arrays in :class:`Hits`.
        ``k`` larger than the corpus returns the whole corpus, ranked.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        model, passages = self._state
        if len(queries) == 0:
            return []
        k = min(int(k), len(passages))
        tokens = self.tokenize_queries(queries)
        positions, scores = model.retrieve(
            tokens, k=k, sorted=True, return_as="tuple", show_progress=False, n_threads=self.n_threads
        )
        return [Hits(passages, p, s) for p, s in zip(positions, scores)]

    # ------------------------------------------------------------------ incremental updates
    def add(self, passages: Passages | str | os.PathLike, retriever: Any = None) -> "BM25Index":
        """Append passages; returns ``self`` with the manifest version incremented.

        BM25 scores depend on corpus-wide statistics (document frequencies -> IDF, average
        passage length), so every stored score changes when passages are added. The index is
        therefore **rebuilt over the whole new passage set**: cost O(total corpus tokens), the same
        as :meth:`build` on the merged corpus (and results are identical to it). Batch many small
        additions into one call. Searches running meanwhile see the old or the new state.
        ``retriever`` is accepted for a uniform ``add`` signature and ignored.
        """
        if not isinstance(passages, Passages):
            passages = load_passages(passages)
        with self._update_lock:
            old_passages = self._state[1]
            merged = old_passages.concat(passages)  # raises on duplicate ids before anything changes
            self._rebuild(merged, "add", len(passages))
        return self

    def remove(self, ids: Iterable[str]) -> "BM25Index":
        """Remove passages by id (others keep their ids and order); returns ``self``.

        Like :meth:`add`, a removal changes IDF and average length for every passage, so the index
        is rebuilt over the remaining passages: O(total corpus tokens).
        """
        ids = list(ids)
        with self._update_lock:
            old_passages = self._state[1]
            drop = {old_passages.position(pid) for pid in ids}  # KeyError names an unknown id
            if not drop:
                return self
            if len(drop) == len(old_passages):
                raise ValueError("cannot remove every passage: a BM25 index needs at least one passage")
            keep = [i for i in range(len(old_passages)) if i not in drop]
            self._rebuild(old_passages.select(keep), "remove", len(drop))
        return self

    def _rebuild(self, passages: Passages, change: str, n: int) -> None:
        m = self.manifest
        settings = {key: m.get(key) for key in ("stopwords", "stemmer", "lower", "token_pattern", "k1", "b", "method")}
        t0 = time.perf_counter()
        model = _build_model(passages, settings, self.model.backend, None)
        log.info("rebuilt BM25 index over %d passages (%s of %d) in %.1fs", len(passages), change, n, time.perf_counter() - t0)
        manifest = bumped(m, change, n, count=len(passages), corpus_checksum=passages.checksum(),
                          vocab_size=len(model.vocab_dict))
        self._state = (model, passages)
        self.manifest = manifest

    def info(self) -> dict[str, Any]:
        info = dict(self.manifest)
        scores = self.model.scores
        info["nnz"] = int(len(scores["data"]))
        info["memory_bytes"] = int(sum(np.asarray(scores[key]).nbytes for key in ("data", "indices", "indptr")))
        return info


def _build_model(passages: Passages, settings: dict[str, Any], backend: str, show_progress: bool | None) -> bm25s.BM25:
    """Tokenize (streaming the passage texts; no list of all strings) and index with bm25s."""
    if len(passages) == 0:
        raise ValueError("cannot build a BM25 index over an empty corpus (0 passages)")
    if show_progress is None:
        show_progress = len(passages) > 50_000
    # Passages.texts() yields passage_text(p) ("title text") for every passage, from batched Arrow reads
    texts = passages.texts(with_title=True)
    tokenized = bm25s.tokenize(
        texts,
        lower=settings["lower"],
        token_pattern=settings["token_pattern"],
        stopwords=settings["stopwords"],
        stemmer=_make_stemmer(settings["stemmer"]),
        return_ids=True,
        show_progress=show_progress,
    )
    if not tokenized.vocab:
        raise ValueError("no passage has any indexable token after tokenization (all empty or stopwords?)")
    model = bm25s.BM25(k1=settings["k1"], b=settings["b"], method=settings["method"], backend=backend)
    model.index(tokenized, show_progress=show_progress)
    return model
