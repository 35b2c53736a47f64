from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from atlas_kit.index import FaissIndex, IndexMismatchError, load_index
from tests.conftest import make_tiny_retriever


def test_build_search_matches_raw_faiss(tiny_retriever, toy_passages):
    index = FaissIndex.build(toy_passages, tiny_retriever)
    q = tiny_retriever.encode_queries(["capital of Zorvania", "river into the sea"])
    hits = index.search(["a", "b"], k=3, query_embeddings=q)
    emb = tiny_retriever.encode_passages(toy_passages)
    raw = faiss.IndexFlatIP(emb.shape[1])
    raw.add(emb)
    D, I = raw.search(q, 3)
    for h, d, i in zip(hits, D, I):
        assert h.ids == [toy_passages[j].id for j in i]
        np.testing.assert_allclose(h.scores, d, rtol=1e-5)
        assert [x.rank for x in h] == [0, 1, 2]
        assert h[0].title == toy_passages[int(i[0])].title


def test_save_load_round_trip_identical_results(tmp_path, tiny_retriever, toy_passages):
    index = FaissIndex.build(toy_passages, tiny_retriever, embeddings_dtype="float32")
    index.save(tmp_path / "idx")
    loaded = FaissIndex.load(tmp_path / "idx", retriever=tiny_retriever)
    q = tiny_retriever.encode_queries(["capital of Zorvania", "lamps", "harbour fish"])
    a = index.search(["x"] * 3, 6, q)
    b = loaded.search(["x"] * 3, 6, q)
    for ha, hb in zip(a, b):
        assert ha.ids == hb.ids
        np.testing.assert_array_equal(ha.scores, hb.scores)
    assert loaded.path == str(tmp_path / "idx")
    assert isinstance(load_index(tmp_path / "idx"), FaissIndex)
    np.testing.assert_array_equal(np.asarray(loaded.embeddings), np.asarray(index.embeddings))


def test_manifest_is_self_describing(tmp_path, tiny_retriever, toy_passages):
    FaissIndex.build(toy_passages, tiny_retriever).save(tmp_path / "idx")
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert m["kind"] == "faiss" and m["format_version"] == 1 and m["count"] == len(toy_passages)
    assert m["dim"] == 32 and m["factory"] == "Flat" and m["metric"] == "ip"
    assert m["retriever"]["fingerprint"] == tiny_retriever.fingerprint()
    assert m["retriever"]["pooling"] == "mean" and m["retriever"]["normalize"] is False
    assert m["corpus_checksum"] == toy_passages.checksum()
    assert np.load(tmp_path / "idx" / "embeddings.npy", mmap_mode="r").dtype == np.float16
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_fingerprint_and_dim_mismatch_refused(tmp_path, tiny_retriever, toy_passages):
    FaissIndex.build(toy_passages, tiny_retriever).save(tmp_path / "idx")
    other = make_tiny_retriever(seed=1)
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        FaissIndex.load(tmp_path / "idx", retriever=other)
    FaissIndex.load(tmp_path / "idx", retriever=other, allow_mismatch=True)  # explicit override works
    wider = make_tiny_retriever(hidden=48)
    with pytest.raises(IndexMismatchError, match="48-d"):
        FaissIndex.load(tmp_path / "idx", retriever=wider, allow_mismatch=True)  # dim can never be overridden


def test_failed_save_leaves_previous_index_intact(tmp_path, tiny_retriever, toy_passages, monkeypatch):
    index = FaissIndex.build(toy_passages, tiny_retriever)
    index.save(tmp_path / "idx")
    before = (tmp_path / "idx" / "manifest.json").read_text()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", boom)
    with pytest.raises(RuntimeError):
        index.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_k_larger_than_corpus(tiny_retriever, toy_passages):
    index = FaissIndex.build(toy_passages, tiny_retriever)
    q = tiny_retriever.encode_queries(["anything"])
    hits = index.search(["anything"], k=50, query_embeddings=q)
    assert len(hits[0]) == len(toy_passages)


def test_search_requires_embeddings(tiny_retriever, toy_passages):
    index = FaissIndex.build(toy_passages, tiny_retriever)
    with pytest.raises(ValueError, match="query_embeddings"):
        index.search(["q"], 2)
    with pytest.raises(ValueError, match=r"\[n, 32\]"):
        index.search(["q"], 2, np.zeros((1, 5), dtype=np.float32))
