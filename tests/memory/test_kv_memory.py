"""KVMemory against brute force, through wrap-around, eviction, namespaces, resets and save/load,
and the three faults of public kNN memories (wrong ids after wrapping, a reset that wipes every
namespace, additions silently lost)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from atlas_kit.index import load_index
from atlas_kit.index.store import IndexStore
from atlas_kit.memory import KVMemory

DIM = 8


def rand(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def brute(keys: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ keys.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def check_against_brute_force(mem: KVMemory, keys: np.ndarray, values: np.ndarray, ns=0, k: int = 5) -> None:
    """Top-k of ``mem[ns]`` = brute force over ``keys`` (the entries that should be live), and every
    returned value belongs to its returned key."""
    q = rand(7, 99)
    hits = mem.search(q, k, ns)
    scores, order = brute(keys, q, k)
    np.testing.assert_allclose(hits.scores.numpy(), scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(hits.keys.numpy(), keys[order])
    np.testing.assert_array_equal(hits.values.numpy(), values[order])
    assert hits.mask.all()


def test_top_k_equals_brute_force_through_wrap_around_and_eviction():
    mem = KVMemory(DIM, capacity=20)
    keys, values = rand(53, 0), rand(53, 1)
    for start in range(0, 53, 6):  # 9 adds, the ring wraps twice
        mem.add(keys[start:start + 6], values[start:start + 6])
        live = slice(max(0, min(53, start + 6) - 20), min(53, start + 6))
        assert mem.count() == min(20, start + 6) == len(keys[live])
        check_against_brute_force(mem, keys[live], values[live])
    stored_k, stored_v = mem.entries()
    np.testing.assert_array_equal(stored_k, keys[-20:])  # oldest first: exactly the newest 20
    np.testing.assert_array_equal(stored_v, values[-20:])
    near = KVMemory(DIM, capacity=20, metric="l2")  # each live key is its own nearest neighbour
    for start in range(0, 53, 6):
        near.add(keys[start:start + 6], values[start:start + 6])
    own = near.search(keys[-20:], 1)  # ids still right after wrapping twice
    np.testing.assert_array_equal(own.keys[:, 0].numpy(), keys[-20:])
    np.testing.assert_array_equal(own.values[:, 0].numpy(), values[-20:])


def test_a_batch_larger_than_the_capacity_keeps_the_newest_entries():
    mem = KVMemory(DIM, capacity=10)
    keys, values = rand(25, 2), rand(25, 3)
    slots = mem.add(keys, values)
    assert mem.count() == 10 and len(mem) == 10
    assert (slots[:15] == -1).all() and sorted(slots[15:].tolist()) == list(range(10))
    check_against_brute_force(mem, keys[15:], values[15:])


def test_namespaces_are_isolated_and_reset_one_at_a_time():
    mem = KVMemory(DIM, capacity=16)
    data = {ns: (rand(12, 10 + i), rand(12, 20 + i)) for i, ns in enumerate(["doc-a", "doc-b", 3])}
    for ns, (k, v) in data.items():
        mem.add(k, v, namespace=ns)
    for ns, (k, v) in data.items():
        check_against_brute_force(mem, k, v, ns)
    mem.reset("doc-a")  # only doc-a is emptied
    assert mem.count("doc-a") == 0 and mem.count("doc-b") == 12 and mem.count(3) == 12
    empty = mem.search(rand(2, 5), 4, "doc-a")
    assert not empty.mask.any() and torch.isinf(empty.scores).all() and (empty.slots == -1).all()
    check_against_brute_force(mem, *data["doc-b"], ns="doc-b")
    hits = mem.search_batch(np.stack([rand(3, 6), rand(3, 7)]), 4, namespaces=["doc-b", 3])
    assert hits.scores.shape == (2, 3, 4) and hits.values.shape == (2, 3, 4, DIM)
    mem.reset()
    assert len(mem) == 0 and mem.namespaces == []
    with pytest.raises(TypeError, match="namespace"):
        mem.add(rand(1, 0), rand(1, 0), namespace=("a", 1))


def test_fewer_entries_than_k_are_masked():
    mem = KVMemory(DIM, capacity=8, value_dim=3)
    mem.add(rand(2, 0), rand(2, 1, dim=3))
    hits = mem.search(rand(4, 2), 5)
    assert hits.mask.sum(-1).tolist() == [2, 2, 2, 2] and hits.values.shape == (4, 5, 3)
    assert torch.isinf(hits.scores[:, 2:]).all() and (hits.keys[:, 2:] == 0).all()


def test_no_gradient_through_stored_entries_and_results_follow_the_query_device():
    mem = KVMemory(DIM, capacity=8)
    keys = torch.randn(4, DIM, requires_grad=True)
    mem.add(keys * 2, keys.sum(-1, keepdim=True).expand(4, DIM))
    q = torch.randn(2, DIM, requires_grad=True)
    hits = mem.search(q, 3)
    assert not hits.keys.requires_grad and not hits.values.requires_grad and hits.keys.device == q.device
    one = mem.search(q[0], 2)  # a single query vector
    assert one.scores.shape == (2,) and one.keys.shape == (2, DIM)


@pytest.mark.parametrize("backend", ["IVF4,Flat", "HNSW8"])
def test_approximate_backends_match_brute_force_when_searched_exhaustively(backend):
    mem = KVMemory(DIM, capacity=300, backend=backend, train_size=200 if backend.startswith("IVF") else None)
    mem.set_search_params(**({"nprobe": 4} if backend.startswith("IVF") else {"efSearch": 256}))
    keys, values = rand(500, 30), rand(500, 31)
    mem.add(keys[:150], values[:150])  # IVF: below train_size, searched exactly
    check_against_brute_force(mem, keys[:150], values[:150])
    mem.add(keys[150:420], values[150:420])  # trains (IVF) and wraps: the oldest 120 are evicted
    check_against_brute_force(mem, keys[120:420], values[120:420])
    mem.add(keys[420:], values[420:])  # HNSW cannot remove ids: rebuilt from the ring buffer
    check_against_brute_force(mem, keys[200:], values[200:])


def test_save_load_and_the_index_store(tmp_path):
    mem = KVMemory(DIM, capacity=12, backend="IVF2,Flat", train_size=10)
    mem.set_search_params(nprobe=2)
    keys, values = rand(30, 40), rand(30, 41)
    mem.add(keys[:25], values[:25], namespace="a")
    mem.add(keys[25:], values[25:], namespace=7)
    q = rand(5, 42)
    mem.save(tmp_path / "mem")
    loaded = KVMemory.load(tmp_path / "mem")
    for ns in ("a", 7):
        before, after = mem.search(q, 4, ns), loaded.search(q, 4, ns)
        for field in ("scores", "keys", "values", "mask", "slots"):
            assert torch.equal(getattr(before, field), getattr(after, field)), field
    # eviction continues where it left off: the next add overwrites the same (oldest) slot
    for m in (mem, loaded):
        m.add(keys[:1] * 3, values[:1], namespace="a")
    assert torch.equal(mem.search(q, 4, "a").slots, loaded.search(q, 4, "a").slots)
    # versioned and swapped like an index
    store = IndexStore(tmp_path / "store")
    store.add("kb@v1", mem)
    loaded.add(keys[:3], values[:3], namespace="b")
    store.add("kb@v2", loaded, publish=False)
    assert store.versions("kb") == ["v1", "v2"] and store.current("kb") == "v1"
    assert isinstance(load_index(store.path("kb")), KVMemory) and store.load("kb@v2").count("b") == 3
    store.publish("kb@v2")
    assert store.load("kb").namespaces == ["a", 7, "b"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="capacity"):
        KVMemory(DIM, capacity=0)
    with pytest.raises(RuntimeError):
        KVMemory(DIM, backend="NoSuchIndex")
    mem = KVMemory(DIM)
    with pytest.raises(ValueError, match=r"keys must be \[n, 8\]"):
        mem.add(rand(2, 0, dim=4), rand(2, 0))
    with pytest.raises(ValueError, match="NaN"):
        mem.add(np.full((1, DIM), np.nan), rand(1, 0))
    with pytest.raises(ValueError, match="2 keys but 3 values"):
        mem.add(rand(2, 0), rand(3, 0))
