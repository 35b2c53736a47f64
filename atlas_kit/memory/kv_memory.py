"""``KVMemory``: a FAISS-backed store of (key, value) vectors with namespaces and FIFO eviction.

The external memory of the Memorizing Transformer (Wu et al., 2022) and of FoT / LongLLaMA
(Tworkowski et al., 2023), and the key-value memory EMAT searches by MIPS: every namespace (one
document, one batch element, one knowledge base) holds at most ``capacity`` entries; adding past
that evicts the oldest ones first; search returns the top-k keys by inner product (or L2) together
with their values and a validity mask (False where a namespace holds fewer than k entries).

Faults of public implementations that this one avoids, each tested in ``tests/memory``:

* ids that go wrong after the memory wraps around - here a FAISS id is the entry's slot in its
  namespace's ring buffer, and an overwritten slot is removed from FAISS before its new key is
  added, so a search hit always points at the key that is stored there now;
* a "reset" that wipes every namespace - :meth:`reset` takes the namespace(s) to clear;
* additions silently lost (a batch larger than the remaining room, a batch larger than the whole
  capacity) - the newest ``capacity`` entries are always kept, and :meth:`__len__` / ``count``
  say exactly how many are stored.

Stored entries never carry gradients (torch inputs are detached and copied to CPU numpy); search
results come back as torch tensors on the queries' device when the queries are torch tensors.

Backends: ``"Flat"`` (exact) or any ``faiss.index_factory`` string. A trainable backend (IVF, PQ)
is trained per namespace on its first ``train_size`` entries; until then that namespace is searched
exactly (brute force over the stored keys), so results never depend on an untrained quantiser.
Search parameters (``nprobe``, ``efSearch``) go through ``faiss.ParameterSpace`` as for
:class:`~atlas_kit.index.FaissIndex`. Backends whose FAISS index cannot remove ids (HNSW) are
rebuilt from the ring buffer when entries are evicted.

On disk a memory is an index folder (``manifest.json`` with ``kind: kv_memory``, ``entries.npz``
with the keys, values and slots of every namespace - no pickles - and the trained FAISS indexes),
written to a temporary folder and published atomically, so :class:`~atlas_kit.index.store.IndexStore`
versions it and a live model can swap one memory for another.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Sequence

import faiss
import numpy as np
import torch

from atlas_kit.index.base import FORMAT_VERSION, MANIFEST, now_iso, read_manifest
from atlas_kit.storage import atomic_dir, atomic_write_json

__all__ = ["KVMemory", "MemoryHits"]

log = logging.getLogger(__name__)

_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


@dataclass
class MemoryHits:
    """Top-k entries per query: ``scores`` [..., k] (higher is better; -inf where invalid),
    ``keys`` [..., k, dim], ``values`` [..., k, value_dim], ``mask`` [..., k] (True = a real entry),
    ``slots`` [..., k] (position in the namespace's ring buffer, -1 where invalid)."""

    scores: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    slots: torch.Tensor


class _Namespace:
    """One namespace: ring buffers of keys/values, the FAISS index over the live slots, and the
    insertion counter (``added``) that tells which slot is the oldest."""

    def __init__(self, dim: int, value_dim: int, capacity: int, backend: str, metric: str) -> None:
        self.keys = np.zeros((capacity, dim), dtype=np.float32)
        self.values = np.zeros((capacity, value_dim), dtype=np.float32)
        self.added = 0  # entries ever added; the live ones are the last min(added, capacity)
        self.capacity = capacity
        self.backend = backend
        self.metric = metric
        self.index: faiss.Index | None = None  # None until trained (trainable backends)

    @property
    def count(self) -> int:
        return min(self.added, self.capacity)

    def live_slots(self) -> np.ndarray:
        """Slots of the stored entries, oldest first."""
        n = self.count
        if self.added <= self.capacity:
            return np.arange(n, dtype=np.int64)
        start = self.added % self.capacity
        return (np.arange(n, dtype=np.int64) + start) % self.capacity


class KVMemory:
    """A (key, value) memory on FAISS with namespaces and first-in-first-out eviction.

    Args:
        dim: key dimension.
        capacity: entries per namespace; adding more evicts the oldest.
        backend: ``"Flat"`` (exact) or a ``faiss.index_factory`` string (``"IVF64,Flat"``, ``"HNSW32"``...).
        metric: ``"ip"`` (maximum inner product, as in Memorizing Transformer / EMAT) or ``"l2"``.
        value_dim: value dimension (default ``dim``).
        train_size: entries a trainable backend is trained on (default: 39 x its number of lists,
            at least 256).
    """

    kind = "kv_memory"

    def __init__(self, dim: int, capacity: int = 65536, backend: str = "Flat", metric: str = "ip",
                 value_dim: int | None = None, train_size: int | None = None) -> None:
        if dim < 1 or capacity < 1:
            raise ValueError(f"dim and capacity must be >= 1, got dim={dim}, capacity={capacity}")
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {sorted(_METRICS)}, got {metric!r}")
        probe = faiss.index_factory(int(dim), backend, _METRICS[metric])  # refuses a bad factory string now
        self.dim, self.capacity, self.backend, self.metric = int(dim), int(capacity), backend, metric
        self.value_dim = int(value_dim or dim)
        self.trainable = not probe.is_trained
        ivf = faiss.try_extract_index_ivf(probe)
        self.train_size = int(train_size or max(256, 39 * (ivf.nlist if ivf is not None else 1)))
        self.search_params: dict[str, Any] = {}
        self.manifest: dict[str, Any] = {"version": 1, "created": now_iso()}
        self._spaces: dict[Hashable, _Namespace] = {}
        self.path: str | None = None

    # ------------------------------------------------------------------ bookkeeping
    @property
    def namespaces(self) -> list[Hashable]:
        return list(self._spaces)

    def count(self, namespace: Hashable = 0) -> int:
        space = self._spaces.get(namespace)
        return 0 if space is None else space.count

    def __len__(self) -> int:
        return sum(s.count for s in self._spaces.values())

    def __repr__(self) -> str:
        return (f"KVMemory(dim={self.dim}, value_dim={self.value_dim}, capacity={self.capacity}, "
                f"backend={self.backend!r}, namespaces={len(self._spaces)}, entries={len(self)})")

    def _space(self, namespace: Hashable) -> _Namespace:
        space = self._spaces.get(namespace)
        if space is None:
            if not isinstance(namespace, (str, int)) or isinstance(namespace, bool):
                raise TypeError(f"a namespace is a str or an int, got {type(namespace).__name__}")
            space = self._spaces[namespace] = _Namespace(self.dim, self.value_dim, self.capacity, self.backend,
                                                         self.metric)
            if not self.trainable:
                space.index = self._new_index()
        return space

    def _new_index(self) -> faiss.Index:
        """The backend, taking slot numbers as ids: IVF indexes store ids in their inverted lists
        (and keep them on removal); other kinds get an ``IndexIDMap2`` - which must not wrap an
        IVF index, whose removals it would mis-map."""
        index = faiss.index_factory(self.dim, self.backend, _METRICS[self.metric])
        if faiss.try_extract_index_ivf(index) is None:
            index = faiss.IndexIDMap2(index)
        self._apply_params(index)
        return index

    def _apply_params(self, index: faiss.Index) -> None:
        if self.search_params:
            space = faiss.ParameterSpace()
            inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
            for name, value in self.search_params.items():
                space.set_index_parameter(inner, name, value)

    def set_search_params(self, **params: Any) -> None:
        """Query-time knobs of an approximate backend, e.g. ``nprobe=16`` or ``efSearch=64``."""
        self.search_params.update(params)
        for space in self._spaces.values():
            if space.index is not None:
                self._apply_params(space.index)

    # ------------------------------------------------------------------ writing
    @staticmethod
    def _array(x: Any, width: int, what: str) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", torch.float32).numpy()  # stored entries never carry gradients
        arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if arr.ndim != 2 or arr.shape[1] != width:
            raise ValueError(f"{what} must be [n, {width}], got shape {tuple(arr.shape)}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{what} hold NaN or infinite values")
        return arr

    def add(self, keys: Any, values: Any, namespace: Hashable = 0) -> np.ndarray:
        """Append entries to ``namespace`` (oldest evicted past ``capacity``); returns their slots
        (-1 for entries of this very call that were already evicted by later ones in it)."""
        k = self._array(keys, self.dim, "keys")
        v = self._array(values, self.value_dim, "values")
        if len(k) != len(v):
            raise ValueError(f"{len(k)} keys but {len(v)} values")
        space = self._space(namespace)
        n = len(k)
        slots = (space.added + np.arange(n, dtype=np.int64)) % self.capacity
        keep = np.arange(n) >= n - self.capacity  # within one call, only the newest `capacity` survive
        live_slots, live_k, live_v = slots[keep], k[keep], v[keep]
        evicted = np.intersect1d(live_slots, space.live_slots()) if space.added else np.empty(0, np.int64)
        space.keys[live_slots] = live_k
        space.values[live_slots] = live_v
        space.added += n
        self._sync_index(space, live_slots, evicted)
        return np.where(keep, slots, -1)

    def _sync_index(self, space: _Namespace, new_slots: np.ndarray, evicted: np.ndarray) -> None:
        if space.index is None:  # trainable backend, not trained yet
            if space.count >= self.train_size:
                self._train(space)
            return
        if len(evicted):
            try:
                removed = space.index.remove_ids(np.ascontiguousarray(evicted, dtype=np.int64))
            except RuntimeError:  # e.g. HNSW cannot remove: rebuild from the ring buffer
                removed = -1
            if removed != len(evicted):
                self._rebuild(space)
                return
        space.index.add_with_ids(space.keys[new_slots], np.ascontiguousarray(new_slots, dtype=np.int64))

    def _train(self, space: _Namespace) -> None:
        index = self._new_index()
        slots = space.live_slots()
        index.train(space.keys[slots])
        index.add_with_ids(space.keys[slots], slots)
        space.index = index
        log.debug("trained a %s memory index on %d entries", self.backend, len(slots))

    def _rebuild(self, space: _Namespace) -> None:
        old = space.index
        index = faiss.clone_index(old) if old is not None else self._new_index()
        index.reset()
        slots = space.live_slots()
        if len(slots):
            index.add_with_ids(space.keys[slots], slots)
        self._apply_params(index)
        space.index = index

    def reset(self, namespaces: Hashable | Iterable[Hashable] | None = None) -> None:
        """Empty the given namespace(s) - or every namespace with ``None`` - leaving the others."""
        if namespaces is None:
            targets = list(self._spaces)
        elif isinstance(namespaces, (str, int)):
            targets = [namespaces]
        else:
            targets = list(namespaces)
        for ns in targets:
            self._spaces.pop(ns, None)

    # ------------------------------------------------------------------ search
    def search(self, queries: Any, k: int, namespace: Hashable = 0) -> MemoryHits:
        """Top-``k`` entries of ``namespace`` for each query [m, dim] (or [dim])."""
        device = queries.device if isinstance(queries, torch.Tensor) else None
        single = getattr(queries, "ndim", 2) == 1
        q = self._array(queries[None] if single else queries, self.dim, "queries")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        m = len(q)
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        slots = np.full((m, k), -1, dtype=np.int64)
        space = self._spaces.get(namespace)
        if space is not None and space.count:
            if space.index is None:  # exact, until a trainable backend has enough entries
                live = space.live_slots()
                sims = q @ space.keys[live].T if self.metric == "ip" else -(
                    (q[:, None, :] - space.keys[live][None]) ** 2).sum(-1)
                top = min(k, len(live))
                order = np.argsort(-sims, axis=1, kind="stable")[:, :top]
                scores[:, :top] = np.take_along_axis(sims, order, axis=1)
                slots[:, :top] = live[order]
            else:
                d, i = space.index.search(q, k)
                valid = i >= 0
                scores = np.where(valid, d if self.metric == "ip" else -d, -np.inf).astype(np.float32)
                slots = np.where(valid, i, -1)
        mask = slots >= 0
        keys = np.zeros((m, k, self.dim), dtype=np.float32)
        values = np.zeros((m, k, self.value_dim), dtype=np.float32)
        if space is not None and mask.any():
            keys[mask] = space.keys[slots[mask]]
            values[mask] = space.values[slots[mask]]
        out = MemoryHits(*(torch.from_numpy(a) for a in (scores, keys, values, mask, slots)))
        if single:
            out = MemoryHits(*(t[0] for t in (out.scores, out.keys, out.values, out.mask, out.slots)))
        if device is not None:
            out = MemoryHits(*(t.to(device) for t in (out.scores, out.keys, out.values, out.mask, out.slots)))
        return out

    def search_batch(self, queries: Any, k: int, namespaces: Sequence[Hashable]) -> MemoryHits:
        """``queries`` [B, m, dim], one namespace per batch element -> hits of shape [B, m, k, ...]."""
        if len(namespaces) != len(queries):
            raise ValueError(f"{len(queries)} query groups but {len(namespaces)} namespaces")
        parts = [self.search(q, k, ns) for q, ns in zip(queries, namespaces)]
        return MemoryHits(*(torch.stack([getattr(p, f) for p in parts])
                            for f in ("scores", "keys", "values", "mask", "slots")))

    def entries(self, namespace: Hashable = 0) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values) of ``namespace``, oldest first (copies)."""
        space = self._spaces.get(namespace)
        if space is None:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.value_dim), np.float32)
        slots = space.live_slots()
        return space.keys[slots].copy(), space.values[slots].copy()

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> None:
        """Write an index folder (manifest, ``entries.npz``, trained FAISS indexes), atomically."""
        names = list(self._spaces)
        arrays: dict[str, np.ndarray] = {}
        spaces = []
        with atomic_dir(folder) as tmp:
            for i, ns in enumerate(names):
                space = self._spaces[ns]
                slots = space.live_slots()
                arrays[f"keys_{i}"], arrays[f"values_{i}"] = space.keys[slots], space.values[slots]
                trained = self.trainable and space.index is not None
                if trained:
                    faiss.write_index(space.index, str(tmp / f"index_{i}.faiss"))
                spaces.append({"name": ns, "type": type(ns).__name__, "count": space.count, "added": space.added,
                               "trained_index": trained})
            np.savez(tmp / "entries.npz", **arrays)
            manifest = {**self.manifest, "format_version": FORMAT_VERSION, "kind": self.kind, "dim": self.dim,
                        "value_dim": self.value_dim, "capacity": self.capacity, "backend": self.backend,
                        "metric": self.metric, "train_size": self.train_size, "search_params": self.search_params,
                        "count": len(self), "namespaces": spaces, "created": self.manifest.get("created", now_iso())}
            atomic_write_json(tmp / MANIFEST, manifest)
        self.path = str(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike, **_: Any) -> "KVMemory":
        """Open a folder written by :meth:`save` (arrays are read without pickle)."""
        folder = Path(folder)
        m = read_manifest(folder)
        if m.get("kind") != cls.kind:
            raise ValueError(f"{folder}: is a {m.get('kind')!r} index, not a {cls.kind!r}")
        try:
            memory = cls(m["dim"], m["capacity"], m["backend"], m["metric"], m["value_dim"], m["train_size"])
        except KeyError as e:
            raise ValueError(f"{folder / MANIFEST}: missing field {e.args[0]!r}") from None
        memory.search_params = dict(m.get("search_params") or {})
        with np.load(folder / "entries.npz", allow_pickle=False) as data:
            for i, entry in enumerate(m.get("namespaces", [])):
                ns = int(entry["name"]) if entry.get("type") == "int" else str(entry["name"])
                keys, values = data[f"keys_{i}"], data[f"values_{i}"]
                if len(keys) != entry["count"] or len(values) != entry["count"]:
                    raise ValueError(f"{folder}: namespace {ns!r} holds {len(keys)} entries, manifest says {entry['count']}")
                space = memory._space(ns)
                # entries go back oldest first into the slots they had (same ids, same eviction order)
                space.added = int(entry["added"])
                slots = space.live_slots()
                space.keys[slots], space.values[slots] = keys, values
                if entry.get("trained_index"):
                    space.index = faiss.read_index(str(folder / f"index_{i}.faiss"))
                    memory._apply_params(space.index)
                elif space.index is not None:
                    space.index.add_with_ids(space.keys[slots], slots)
                elif space.count >= memory.train_size:
                    memory._train(space)
        memory.manifest = {k: m[k] for k in ("version", "created") if k in m}
        memory.path = str(folder)
        return memory

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "value_dim": self.value_dim, "capacity": self.capacity,
                "backend": self.backend, "metric": self.metric, "count": len(self),
                "namespaces": len(self._spaces), "version": self.manifest.get("version")}
