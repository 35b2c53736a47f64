"""Removed positions of an append-only sequence, and the map between live and stored positions.

A collection that removes by *marking* rows (instead of rewriting everything after them) has two
numberings: stored (physical) positions ``0..n_stored-1``, which never change until the rows are
compacted, and live (logical) positions ``0..n_live-1``, which skip the removed rows. Both the
passage store (:class:`~atlas_kit.passages.Passages`) and the FAISS index keep such marks, so a
removal costs O(removed) there, and the mapping lives here once.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Tombstones"]


class Tombstones:
    """An immutable, sorted set of removed stored positions (``with_removed`` returns a new one).

    ``to_stored`` / ``to_live`` convert positions vectorised in O(k log d) for k positions and d
    tombstones; with no tombstones both are the identity and cost nothing.
    """

    __slots__ = ("dead", "_shifted")

    def __init__(self, dead: np.ndarray | None = None) -> None:
        self.dead = np.zeros(0, dtype=np.int64) if dead is None else np.asarray(dead, dtype=np.int64)
        # live position at which the j-th removed row would sit: dead[j] - j (non-decreasing)
        self._shifted = self.dead - np.arange(len(self.dead), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dead)

    def __bool__(self) -> bool:
        return len(self.dead) > 0

    def with_removed(self, stored: np.ndarray) -> "Tombstones":
        """These tombstones plus the stored positions ``stored`` (which must be live)."""
        stored = np.unique(np.asarray(stored, dtype=np.int64))
        if not len(stored):
            return self
        return Tombstones(np.union1d(self.dead, stored))

    def to_stored(self, live: np.ndarray) -> np.ndarray:
        """Stored positions of live positions ``live``."""
        live = np.asarray(live, dtype=np.int64)
        if not len(self.dead):
            return live
        return live + np.searchsorted(self._shifted, live, side="right")

    def to_live(self, stored: np.ndarray) -> np.ndarray:
        """Live positions of stored positions (of rows that are not removed)."""
        stored = np.asarray(stored, dtype=np.int64)
        if not len(self.dead):
            return stored
        return stored - np.searchsorted(self.dead, stored, side="left")

    def is_dead(self, stored: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``stored`` are removed."""
        stored = np.asarray(stored, dtype=np.int64)
        if not len(self.dead):
            return np.zeros(stored.shape, dtype=bool)
        i = np.searchsorted(self.dead, stored).clip(max=len(self.dead) - 1)
        return self.dead[i] == stored

    def live_positions(self, n_stored: int) -> np.ndarray:
        """Stored positions of every live row, in order."""
        keep = np.ones(n_stored, dtype=bool)
        keep[self.dead[self.dead < n_stored]] = False
        return np.flatnonzero(keep)
