"""What every index shares: ranked hits, the manifest, and the retriever-compatibility check.

An index on disk is a self-describing folder (``manifest.json`` + passages + backend files) so a
model can be pointed at another corpus (another time, another domain) without retraining: the
manifest says which encoder produced the vectors, and a mismatch is refused before it can silently
return garbage.
"""
from __future__ import annotations

import datetime as _dt
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from atlas_kit.passages import Passage, Passages
from atlas_kit.storage import read_json

__all__ = [
    "FORMAT_VERSION",
    "Hit",
    "Hits",
    "Index",
    "IndexChangedError",
    "IndexMismatchError",
    "check_retriever",
    "folder_origin",
    "verify_loaded",
    "folder_size",
    "read_manifest",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class IndexMismatchError(ValueError):
    """The index was built by a different encoder (fingerprint or dimension differs)."""


class IndexChangedError(RuntimeError):
    """The index folder was replaced (re-saved) while it was being loaded; load it again."""


class Manifest(dict):
    """A manifest as read from disk; ``origin`` identifies the exact file it came from (folder and
    file inode, mtime, size) so a load can tell whether the folder was replaced while it read."""

    origin: tuple[int, ...] | None = None


def folder_origin(folder: str | os.PathLike) -> tuple[int, ...] | None:
    """Identity of one save of an index folder (folder and manifest inode, mtime, size)."""
    try:
        d, m = os.stat(folder), os.stat(Path(folder) / MANIFEST)
    except OSError:
        return None
    return d.st_dev, d.st_ino, m.st_ino, m.st_mtime_ns, m.st_size


@dataclass(frozen=True)
class Hit:
    """One retrieved passage with its score (higher is better) and 0-based rank."""

    id: str
    title: str
    text: str
    score: float
    rank: int = 0
    metadata: dict = field(default_factory=dict)

    @property
    def passage(self) -> Passage:
        return Passage(self.id, self.title, self.text, self.metadata)


class Hits(Sequence):
    """The ranked hits of one query.

    Backed by arrays of passage positions and scores; passage text is fetched from the index's
    (memory-mapped) passage store only when a hit is read, so batch retrieval of thousands of
    queries costs little more than the raw vector search.
    """

    __slots__ = ("_passages", "positions", "scores", "_cache")

    def __init__(self, passages: Passages | None, positions: np.ndarray, scores: np.ndarray,
                 hits: list[Hit] | None = None) -> None:
        self._passages = passages
        self.positions = positions
        self.scores = scores
        self._cache: list[Hit] | None = hits

    @classmethod
    def from_hits(cls, hits: list[Hit]) -> "Hits":
        """Hits whose passages do not live in a local store (e.g. Elasticsearch results)."""
        hits = [Hit(h.id, h.title, h.text, h.score, r, h.metadata) for r, h in enumerate(hits)]
        return cls(None, np.full(len(hits), -1, dtype=np.int64),
                   np.asarray([h.score for h in hits], dtype=np.float32), hits)

    def _materialize(self) -> list[Hit]:
        if self._cache is None:
            ps = self._passages.take(self.positions.tolist()) if len(self.positions) else []
            self._cache = [
                Hit(p.id, p.title, p.text, float(s), r, p.metadata)
                for r, (p, s) in enumerate(zip(ps, self.scores.tolist()))
            ]
        return self._cache

    @property
    def store(self) -> Passages | None:
        """The passage store ``positions`` point into; ``None`` when the hits carry their own
        passages (:meth:`from_hits`, e.g. Elasticsearch or fused results)."""
        if self._passages is None or (len(self.positions) and int(np.min(self.positions)) < 0):
            return None
        return self._passages

    @property
    def loaded(self) -> list[Hit] | None:
        """The :class:`Hit` objects if they were already read (or given), else ``None``: reading
        them costs a passage-store gather, which callers that only need some of them avoid."""
        return self._cache

    @property
    def ids(self) -> list[str]:
        if self._cache is None and self._passages is not None:
            # one vectorised gather from the store's (cached, append-only) id array
            return self._passages.id_array()[self.positions].tolist()
        return [h.id for h in self._materialize()]

    def truncate(self, k: int) -> "Hits":
        """The best ``k`` hits (no passage text is read)."""
        cache = self._cache[:k] if self._cache is not None else None
        return Hits(self._passages, self.positions[:k], self.scores[:k], cache)

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, i):  # type: ignore[override]
        return self._materialize()[i]

    def __iter__(self) -> Iterator[Hit]:
        return iter(self._materialize())

    def __repr__(self) -> str:
        return f"Hits({self.ids[:5]}{'...' if len(self) > 5 else ''})"


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an atlas_kit index: {MANIFEST} is missing")
    origin = folder_origin(folder)  # taken before reading: a swap after it shows up in verify_loaded
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version!r} is not supported (this atlas_kit reads <= {FORMAT_VERSION})")
    manifest = Manifest(data)
    manifest.origin = origin
    return manifest


def verify_loaded(folder: str | os.PathLike, manifest: dict[str, Any], n_passages: int | None,
                  n_vectors: int | None = None) -> None:
    """Check that a finished load read one complete version of ``folder``.

    Raises :class:`IndexChangedError` when the folder was replaced since ``manifest`` was read
    (its data may then come from another save), and ``ValueError`` when the data disagree with
    the manifest's ``count``. Cheap: two ``stat`` calls, no reading of data.
    """
    origin = getattr(manifest, "origin", None)
    if origin is not None and folder_origin(folder) != origin:
        raise IndexChangedError(f"{folder} was replaced while it was being loaded (a concurrent save); load it again")
    count = manifest.get("count")
    if n_passages is None:
        return
    if count is not None and count != n_passages:
        raise ValueError(f"{folder}: the manifest says {count} passages but the passage store holds {n_passages}")
    if n_vectors is not None and n_vectors != n_passages:
        raise ValueError(f"{folder}: the index holds {n_vectors} vectors but there are {n_passages} passages")


def check_retriever(manifest: dict[str, Any], retriever: Any, where: str = "index", allow_mismatch: bool = False) -> None:
    """Refuse to pair an index with an encoder other than the one that built its vectors.

    Dimension mismatches can never be overridden (search would fail) and are checked even when the
    manifest records no retriever identity (its top-level ``dim``); a fingerprint mismatch can
    (``allow_mismatch=True``), e.g. after fine-tuning the query encoder only. ``pooling``,
    ``normalize``, ``with_title`` and ``passage_maxlength`` must match too (the last two change
    the strings that were embedded, so an ``add`` would mix differently embedded passages).
    """
    if retriever is None:
        return
    expected = manifest.get("retriever") or {}
    dim = getattr(retriever, "dim", None)
    built_dim = expected.get("dim") or manifest.get("dim")
    if dim is not None and built_dim not in (None, dim):
        raise IndexMismatchError(
            f"{where}: built with {built_dim}-d embeddings by {expected.get('name', 'an unrecorded encoder')!r}, "
            f"but the retriever produces {dim}-d embeddings"
        )
    if not expected or allow_mismatch:
        return
    fp = retriever.fingerprint()
    if expected.get("fingerprint") != fp:
        raise IndexMismatchError(
            f"{where}: built by retriever {expected.get('name')!r} (fingerprint {str(expected.get('fingerprint'))[:12]}), "
            f"but the given retriever {getattr(retriever, 'name', '?')!r} has fingerprint {fp[:12]}. "
            "Rebuild the index with this retriever, or pass allow_mismatch=True (CLI: --force) if you know "
            "the passage encoder is unchanged."
        )
    for key in ("pooling", "normalize", "with_title", "passage_maxlength"):
        if key in expected and getattr(retriever, key, expected[key]) != expected[key]:
            raise IndexMismatchError(
                f"{where}: built with {key}={expected[key]!r} but the retriever uses {key}={getattr(retriever, key)!r}"
            )


def folder_size(folder: str | os.PathLike) -> int:
    """Bytes on disk under ``folder``."""
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def bumped(manifest: dict[str, Any], change: str, n: int, **updates: Any) -> dict[str, Any]:
    """A copy of ``manifest`` one version later, with ``change`` (of ``n`` passages) appended to
    its history and ``updates`` (count, checksum...) applied. Every index kind records updates so."""
    out = {**manifest, **updates}
    out["version"] = int(manifest.get("version", 1)) + 1
    out["history"] = [*manifest.get("history", []),
                      {"version": out["version"], "change": change, "count": n, "at": now_iso()}]
    return out


class Index(ABC):
    """A searchable collection of passages.

    Dense indexes need query embeddings (``needs_embeddings``); the :class:`~atlas_kit.Atlas`
    facade computes them with its retriever so one retriever call serves every index of a hybrid.
    """

    kind: str = "abstract"
    needs_embeddings: bool = False
    manifest: dict[str, Any]

    @abstractmethod
    def search(self, queries: Sequence[str], k: int, query_embeddings: np.ndarray | None = None) -> list[Hits]:
        """Top-``k`` hits for each query, best first."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def save(self, folder: str | os.PathLike) -> None: ...

    @property
    def passages(self) -> Passages | None:
        return getattr(self, "_passages", None)

    def check_compatible(self, retriever: Any, allow_mismatch: bool = False) -> None:
        """Raise :class:`IndexMismatchError` if ``retriever`` did not build this index."""
        if self.needs_embeddings:
            check_retriever(self.manifest, retriever, where=f"{self.kind} index", allow_mismatch=allow_mismatch)

    def info(self) -> dict[str, Any]:
        return dict(self.manifest)
