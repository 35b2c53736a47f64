"""Appends change the FAISS index in place; a concurrent search must still see one whole state."""
from __future__ import annotations

import threading

import numpy as np

from atlas_kit.index import FaissIndex
from atlas_kit.passages import Passages

DIM = 8


def _vectors(start: int, n: int) -> np.ndarray:
    """Passage i's vector, a pure function of i, so any hit's score can be checked from its id."""
    v = np.stack([np.random.default_rng(i).normal(size=DIM) for i in range(start, start + n)]).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)  # inner product: a vector is its own best match


def _passages(start: int, n: int) -> Passages:
    return Passages.from_records([{"id": f"p{i}", "title": "", "text": f"t{i}"} for i in range(start, start + n)])


def test_concurrent_add_remove_and_search_see_consistent_states():
    ix = FaissIndex.from_embeddings(_vectors(0, 200), _passages(0, 200), embeddings_dtype="float32")
    queries = np.random.default_rng(99).normal(size=(4, DIM)).astype(np.float32)
    sizes = {200 + 5 * b for b in range(41)} | {200 + 5 * b - 3 for b in range(1, 41)}  # after each add / remove
    errors: list[str] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for b in range(40):
                start = 1000 + 5 * b
                ix.add(_passages(start, 5), embeddings=_vectors(start, 5))
                ix.remove([f"p{b}", f"p{b + 100}", f"p{start}"])  # old and just-added passages
                ix.add(_passages(2000 + 3 * b, 3), embeddings=_vectors(2000 + 3 * b, 3))
        finally:
            done.set()

    def reader() -> None:
        searches = 0
        while (not done.is_set() or searches < 5) and searches < 2000 and not errors:
            hits = ix.search(["q"] * len(queries), 400, queries)
            searches += 1
            for q, h in zip(queries, hits):
                ids = h.ids
                if len(ids) not in sizes:
                    errors.append(f"a search saw {len(ids)} passages, not the size of any whole state")
                expected = np.stack([_vectors(int(pid[1:]), 1)[0] for pid in ids[:20]]) @ q
                if not np.allclose(h.scores[:20], expected, rtol=1e-4, atol=1e-4):
                    errors.append("a hit's score does not belong to its passage id")
                if len(set(ids)) != len(ids):
                    errors.append("a passage id appeared twice in one result")

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    assert len(ix) == 200 + 40 * 5 and ix.manifest["version"] == 1 + 3 * 40
    final = ix.search(["q"], 1, _vectors(2117, 1))[0]
    assert final.ids == ["p2117"]
    assert ix.manifest["corpus_checksum"] == ix.passages.checksum()  # running hash == full recompute


def test_appends_reuse_spare_capacity_and_keep_old_snapshots_valid():
    ix = FaissIndex.from_embeddings(_vectors(0, 50), _passages(0, 50), embeddings_dtype="float32")
    ix.add(_passages(50, 2), embeddings=_vectors(50, 2))
    before = ix.embeddings  # a snapshot a search might hold
    ix.add(_passages(52, 3), embeddings=_vectors(52, 3))
    assert ix.embeddings.base is before.base  # written into the same buffer, no copy of the old rows
    np.testing.assert_array_equal(before, _vectors(0, 52))
    np.testing.assert_array_equal(ix.embeddings, _vectors(0, 55))
