from __future__ import annotations

import json

import bm25s
import numpy as np
import pytest

from atlas_kit import Atlas
from atlas_kit.index import BM25Index, load_index
from atlas_kit.passages import Passages, passage_text

QUERIES = ["capital of Zorvania", "river flowing into the sea", "copper lamps company", "blue pine mountain"]


def _raw_bm25s(passages, queries, k, stopwords="en", stemmer=None, backend="numpy", **params):
    """The reference: plain bm25s on the same texts, exactly as its README does it."""
    import Stemmer

    stem = Stemmer.Stemmer(stemmer) if stemmer else None
    corpus = [passage_text(p) for p in passages]
    model = bm25s.BM25(backend=backend, **params)
    model.index(bm25s.tokenize(corpus, stopwords=stopwords, stemmer=stem, show_progress=False), show_progress=False)
    docs, scores = model.retrieve(bm25s.tokenize(queries, stopwords=stopwords, stemmer=stem, show_progress=False),
                                  k=k, show_progress=False)
    return docs, scores


def _assert_same(a, b, atol=0.0):
    assert len(a) == len(b)
    for ha, hb in zip(a, b):
        assert ha.ids == hb.ids
        np.testing.assert_allclose(ha.scores, hb.scores, atol=atol, rtol=0)


@pytest.mark.parametrize("stopwords,stemmer,method", [("en", None, "lucene"), (None, "english", "robertson"), ("en", "english", "atire")])
def test_results_identical_to_raw_bm25s(toy_passages, stopwords, stemmer, method):
    index = BM25Index.build(toy_passages, stopwords=stopwords, stemmer=stemmer, method=method, k1=1.2, b=0.7)
    hits = index.search(QUERIES, k=4)
    docs, scores = _raw_bm25s(toy_passages, QUERIES, 4, stopwords, stemmer, backend=index.model.backend,
                              method=method, k1=1.2, b=0.7)
    for h, d, s in zip(hits, docs, scores):
        assert h.ids == [toy_passages.ids[i] for i in d]
        np.testing.assert_array_equal(h.scores, s)
        assert [x.rank for x in h] == [0, 1, 2, 3]
    assert hits[0][0].id == "p0" and hits[0][0].title == "Zorvania" and "Blim" in hits[0][0].text
    assert not index.needs_embeddings


def test_k_larger_than_corpus_returns_whole_corpus_ranked(toy_passages):
    index = BM25Index.build(toy_passages)
    (hits,) = index.search(["capital city"], k=100)
    assert len(hits) == len(toy_passages)
    assert sorted(hits.ids) == sorted(toy_passages.ids)
    assert np.all(np.diff(hits.scores) <= 0)
    assert index.search([], k=3) == []
    with pytest.raises(ValueError, match="k must be"):
        index.search(["x"], k=0)


def test_query_embeddings_are_ignored_and_atlas_uses_no_encoder(toy_passages, tiny_retriever):
    index = BM25Index.build(toy_passages)
    a = index.search(QUERIES, 3)
    b = index.search(QUERIES, 3, query_embeddings=np.zeros((len(QUERIES), 7), dtype=np.float32))
    _assert_same(a, b)
    hits = Atlas(tiny_retriever, index=index).retrieve(["capital of Zorvania"], k=2)
    assert hits[0].ids[0] == "p0" and len(hits[0]) == 2


def test_save_load_round_trip_identical(tmp_path, toy_passages):
    index = BM25Index.build(toy_passages, stopwords="en", stemmer="english", k1=1.3, b=0.6)
    index.save(tmp_path / "x-bm25")
    assert index.path == str(tmp_path / "x-bm25")
    m = json.loads((tmp_path / "x-bm25" / "manifest.json").read_text())
    assert m["kind"] == "bm25" and m["format_version"] == 1 and m["count"] == len(toy_passages)
    assert (m["stopwords"], m["stemmer"], m["k1"], m["b"], m["method"]) == ("en", "english", 1.3, 0.6, "lucene")
    assert m["version"] == 1 and m["history"][0]["change"] == "build"
    assert m["corpus_checksum"] == toy_passages.checksum()
    assert (tmp_path / "x-bm25" / "passages").is_dir() and (tmp_path / "x-bm25" / "bm25" / "params.index.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left

    loaded = BM25Index.load(tmp_path / "x-bm25", mmap=True)
    assert isinstance(loaded.model.scores["data"], np.memmap)  # bm25s arrays are memory-mapped
    _assert_same(index.search(QUERIES, 5), loaded.search(QUERIES, 5))
    via_registry = load_index(tmp_path / "x-bm25", mmap=False)
    assert isinstance(via_registry, BM25Index)
    _assert_same(index.search(QUERIES, 5), via_registry.search(QUERIES, 5))


def test_add_equals_fresh_build(toy_records):
    first, extra = Passages.from_records(toy_records[:4]), Passages.from_records(toy_records[4:])
    index = BM25Index.build(first, stemmer="english")
    before = index.manifest
    assert index.add(extra) is index
    fresh = BM25Index.build(Passages.from_records(toy_records), stemmer="english")
    _assert_same(index.search(QUERIES, 6), fresh.search(QUERIES, 6), atol=1e-6)
    m = index.manifest
    assert m["version"] == 2 and m["count"] == 6 and m["corpus_checksum"] == fresh.manifest["corpus_checksum"]
    assert m["history"][-1]["change"] == "add" and m["history"][-1]["count"] == 2
    assert before["version"] == 1  # the previous manifest object is not mutated
    assert index.search(["harbour salt fish"], 1)[0].ids == ["p5"]
    with pytest.raises(ValueError, match="duplicate"):
        index.add(extra)
    assert index.manifest["version"] == 2 and len(index) == 6  # failed add changed nothing


def test_remove_equals_fresh_build(toy_records, toy_passages):
    index = BM25Index.build(toy_passages)
    index.remove(["p1", "p3"])
    fresh = BM25Index.build(Passages.from_records([r for r in toy_records if r["id"] not in ("p1", "p3")]))
    _assert_same(index.search(QUERIES, 4), fresh.search(QUERIES, 4), atol=1e-6)
    last = index.manifest["history"][-1]
    assert index.manifest["version"] == 2 and (last["change"], last["count"], last["version"]) == ("remove", 2, 2)
    assert "p1" not in index.passages and len(index) == 4
    with pytest.raises(KeyError, match="nope"):
        index.remove(["nope"])
    with pytest.raises(ValueError, match="every passage"):
        index.remove(index.passages.ids)
    assert len(index) == 4


def test_stopwords_option_takes_effect(toy_passages):
    with_sw = BM25Index.build(toy_passages, stopwords="en")
    without = BM25Index.build(toy_passages, stopwords=None)
    (a,) = with_sw.search(["the of is"], k=3)
    (b,) = without.search(["the of is"], k=3)
    assert np.all(a.scores == 0)  # only stopwords: nothing to match
    assert b.scores[0] > 0
    custom = BM25Index.build(toy_passages, stopwords=["capital"])
    assert custom.search(["capital"], 1)[0].scores[0] == 0
    assert custom.manifest["stopwords"] == ["capital"]


def test_stemmer_option_takes_effect(toy_passages):
    plain = BM25Index.build(toy_passages, stemmer=None)
    stemmed = BM25Index.build(toy_passages, stemmer="english")
    # "flowing" only matches "flows" (p1) after stemming
    assert plain.search(["flowing"], 1)[0].scores[0] == 0
    (hits,) = stemmed.search(["flowing"], 1)
    assert hits.ids == ["p1"] and hits.scores[0] > 0


def test_errors_are_clear(toy_passages):
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Index.build(Passages.from_records([]))
    with pytest.raises(ValueError, match="method"):
        BM25Index.build(toy_passages, method="tfidf")
    with pytest.raises(ValueError, match="unknown stemmer"):
        BM25Index.build(toy_passages, stemmer="klingon")
    with pytest.raises(ValueError, match="not recognized"):
        BM25Index.build(toy_passages, stopwords="klingon")
