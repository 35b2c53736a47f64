"""FAISS factory variants, query-time parameters, memory-mapped loading and incremental updates."""
from __future__ import annotations

import numpy as np
import pytest

from atlas_kit.index import FaissIndex
from atlas_kit.passages import Passages


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    n, d = 600, 16
    centers = rng.normal(size=(12, d))
    emb = (centers[rng.integers(0, 12, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)  # like the default (normalised) retriever
    passages = Passages.from_records([{"id": f"d{i}", "title": f"T{i}", "text": f"text {i}"} for i in range(n)])
    queries = emb[:20] + 0.01 * rng.normal(size=(20, d)).astype(np.float32)
    return passages, emb, queries


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "IVF8,PQ4", "PQ4", "HNSW8", "OPQ4,IVF8,PQ4"])
def test_factories_build_search_save_load(tmp_path, corpus, factory):
    passages, emb, queries = corpus
    index = FaissIndex.from_embeddings(emb, passages, factory=factory, embeddings_dtype="float32")
    if "IVF" in factory:
        index.set_search_params(nprobe=8)
    elif "HNSW" in factory:
        index.set_search_params(efSearch=64)
    hits = index.search(["q"] * len(queries), 5, queries)
    # the query's own source vector should be found by every index type (approximate ones too)
    assert sum(h.ids[0] == f"d{i}" or f"d{i}" in h.ids for i, h in enumerate(hits)) >= 16
    index.save(tmp_path / "ix")
    loaded = FaissIndex.load(tmp_path / "ix")
    if "IVF" in factory:
        loaded.set_search_params(nprobe=8)
    elif "HNSW" in factory:
        loaded.set_search_params(efSearch=64)
    again = loaded.search(["q"] * len(queries), 5, queries)
    assert [h.ids for h in again] == [h.ids for h in hits]
    assert loaded.manifest["factory"] == factory


def test_compressed_index_is_smaller(corpus):
    passages, emb, _ = corpus
    flat = FaissIndex.from_embeddings(emb, passages).info()["memory_bytes"]
    pq = FaissIndex.from_embeddings(emb, passages, factory="PQ4x4").info()["memory_bytes"]  # 4-bit codes: small codebook
    assert pq * 4 < flat


def test_nprobe_changes_ivf_results(corpus):
    passages, emb, queries = corpus
    index = FaissIndex.from_embeddings(emb, passages, factory="IVF8,Flat")
    index.set_search_params(nprobe=1)
    few = [h.ids for h in index.search(["q"] * 20, 50, queries)]
    index.set_search_params(nprobe=8)
    full = [h.ids for h in index.search(["q"] * 20, 50, queries)]
    exact = [h.ids for h in FaissIndex.from_embeddings(emb, passages).search(["q"] * 20, 50, queries)]
    assert full == exact and few != exact


def test_embeddings_are_float16_by_default_and_mmap_loaded(tmp_path, corpus):
    passages, emb, _ = corpus
    FaissIndex.from_embeddings(emb, passages).save(tmp_path / "ix")
    loaded = FaissIndex.load(tmp_path / "ix")
    assert loaded.embeddings.dtype == np.float16 and isinstance(loaded.embeddings, np.memmap)


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "HNSW8"])
def test_add_remove_equals_rebuild(tmp_path, corpus, factory):
    passages, emb, queries = corpus
    base = FaissIndex.from_embeddings(emb[:500], passages.select(range(500)), factory=factory, embeddings_dtype="float32")
    trained_on_all = factory.startswith("IVF")
    if trained_on_all:  # same quantizer as the reference, so the comparison is exact
        base = FaissIndex.from_embeddings(emb, passages, factory=factory, embeddings_dtype="float32")
        base.remove([f"d{i}" for i in range(500, 600)])
    base.add(passages.select(range(500, 600)), embeddings=emb[500:])
    removed = [f"d{i}" for i in range(0, 600, 7)]
    base.remove(removed)
    assert base.manifest["version"] == (4 if trained_on_all else 3)
    assert [h["change"] for h in base.manifest["history"]][-2:] == ["add", "remove"]
    keep = [i for i in range(600) if f"d{i}" not in set(removed)]
    scratch = FaissIndex.from_embeddings(emb[keep], passages.select(keep), factory=factory, embeddings_dtype="float32")
    if trained_on_all:
        scratch = FaissIndex.from_embeddings(emb, passages, factory=factory, embeddings_dtype="float32")
        scratch.remove(removed)
    for ix in (base, scratch):
        if factory.startswith("IVF"):
            ix.set_search_params(nprobe=8)
    assert base.passages.ids == scratch.passages.ids
    assert base.manifest["corpus_checksum"] == scratch.manifest["corpus_checksum"]
    base.save(tmp_path / "u")
    reloaded = FaissIndex.load(tmp_path / "u")
    if factory.startswith("IVF"):
        reloaded.set_search_params(nprobe=8)
    a = reloaded.search(["q"] * 20, 10, queries)
    b = scratch.search(["q"] * 20, 10, queries)
    if factory == "HNSW8":  # graph built in another insertion order: compare recall, not order
        overlap = np.mean([len(set(x.ids) & set(y.ids)) / 10 for x, y in zip(a, b)])
        assert overlap >= 0.9
    else:
        assert [h.ids for h in a] == [h.ids for h in b]
        np.testing.assert_allclose(np.stack([h.scores for h in a]), np.stack([h.scores for h in b]), rtol=1e-5)


def test_update_errors(corpus, tiny_retriever, toy_passages):
    passages, emb, _ = corpus
    index = FaissIndex.from_embeddings(emb[:10], passages.select(range(10)))
    with pytest.raises(ValueError, match="duplicate passage id 'd0'"):
        index.add(passages.select([0]), embeddings=emb[:1])
    with pytest.raises(KeyError, match="nope"):
        index.remove(["nope"])
    with pytest.raises(ValueError, match="needs the retriever"):
        index.add(toy_passages)
    assert index.manifest["version"] == 1 and len(index) == 10


def test_add_with_retriever_encodes(tiny_retriever, toy_passages):
    index = FaissIndex.build(toy_passages.select([0, 1, 2]), tiny_retriever)
    index.add(toy_passages.select([3, 4, 5]), retriever=tiny_retriever)
    full = FaissIndex.build(toy_passages, tiny_retriever)
    q = tiny_retriever.encode_queries(["capital", "fish"])
    assert [h.ids for h in index.search(["a", "b"], 6, q)] == [h.ids for h in full.search(["a", "b"], 6, q)]
