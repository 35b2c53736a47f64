from __future__ import annotations

import json

import numpy as np
import pytest

from atlas_kit import Atlas
from atlas_kit.index import BM25Index, FaissIndex, HybridIndex, IndexMismatchError, load_index
from atlas_kit.index.base import Hits, Index
from atlas_kit.index.hybrid_index import fuse_rankings
from atlas_kit.passages import Passages
from tests.conftest import make_tiny_retriever


class FakeIndex(Index):
    """Returns a fixed ranking (ids + scores) for every query, over its own passage store."""

    kind = "fake"

    def __init__(self, ranking: list[tuple[str, float]], needs_embeddings: bool = False) -> None:
        self._passages = Passages.from_records(
            [{"id": pid, "title": f"title {pid}", "text": f"text of {pid}"} for pid, _ in ranking])
        self.ranking = ranking
        self.needs_embeddings = needs_embeddings
        self.manifest = {"kind": self.kind, "count": len(ranking)}
        self.calls: list[tuple[int, object]] = []

    def search(self, queries, k, query_embeddings=None):
        self.calls.append((k, query_embeddings))
        scores = np.asarray([s for _, s in self.ranking[:k]], dtype=np.float32)
        return [Hits(self._passages, np.arange(len(scores)), scores) for _ in queries]

    def __len__(self):
        return len(self.ranking)

    def save(self, folder):  # pragma: no cover - not used
        raise NotImplementedError


def test_rrf_order_and_scores_hand_computed():
    a = FakeIndex([("a", 9.0), ("b", 8.0), ("c", 7.0), ("d", 6.0)])
    b = FakeIndex([("c", 0.9), ("a", 0.8), ("e", 0.7)])  # "e" exists only in this member's store
    hybrid = HybridIndex([a, b], fusion="rrf", rrf_k=60, fetch_factor=2)
    (hits,) = hybrid.search(["q"], k=5)
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, e: 1/63, d: 1/64
    assert hits.ids == ["a", "c", "b", "e", "d"]
    expected = [1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62, 1 / 63, 1 / 64]
    assert [h.score for h in hits] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(hits.scores, expected, rtol=1e-6)
    assert [h.rank for h in hits] == [0, 1, 2, 3, 4]
    assert (hits[3].title, hits[3].text) == ("title e", "text of e")  # text read from the member that has it
    assert a.calls[0][0] == 10 and b.calls[0][0] == 10  # over-retrieval: k * fetch_factor
    (top2,) = hybrid.search(["q"], k=2)
    assert top2.ids == ["a", "c"]


def test_weighted_rrf():
    a = FakeIndex([("a", 1.0), ("b", 0.5)])
    b = FakeIndex([("b", 1.0), ("a", 0.5)])
    (hits,) = HybridIndex([a, b], rrf_k=60, weights=[1.0, 3.0]).search(["q"], 2)
    # b: 1/62 + 3/61 > a: 1/61 + 3/62
    assert hits.ids == ["b", "a"]
    assert [h.score for h in hits] == pytest.approx([1 / 62 + 3 / 61, 1 / 61 + 3 / 62])
    (only_a,) = HybridIndex([a, b], weights=[1.0, 0.0]).search(["q"], 2)
    assert only_a.ids == ["a", "b"]


def test_ties_are_broken_by_best_rank_then_id():
    # rrf_k=0 makes exact ties: "zz" = 1/1 (rank 1 in A only); "aa" = 1/2 + 1/2 (rank 2 in both)
    fused = fuse_rankings([["zz", "aa"], ["yy", "aa"]], rrf_k=0)
    assert [f.id for f in fused] == ["yy", "zz", "aa"]  # yy/zz tie at rank 1 -> by id; aa ties at 1.0 but best rank 2
    assert [f.score for f in fused] == [1.0, 1.0, 1.0]
    # symmetric lists: equal fused scores and equal best ranks -> by id, regardless of member order
    assert [f.id for f in fuse_rankings([["x2", "x1"], ["x1", "x2"]])] == ["x1", "x2"]
    assert [f.id for f in fuse_rankings([["x1", "x2"], ["x2", "x1"]])] == ["x1", "x2"]


def test_interpolation_of_min_max_normalised_scores():
    a = FakeIndex([("a", 10.0), ("b", 8.0), ("c", 6.0)])
    b = FakeIndex([("c", 0.9), ("d", 0.5), ("a", 0.1)])
    (hits,) = HybridIndex([a, b], fusion="interpolate", weights=[0.7, 0.3]).search(["q"], 4)
    # A normalised: a=1, b=.5, c=0; B normalised: c=1, d=.5, a=0
    assert hits.ids == ["a", "b", "c", "d"]
    assert [h.score for h in hits] == pytest.approx([0.7, 0.35, 0.3, 0.15])
    (default_w,) = HybridIndex([a, b], fusion="interpolate").search(["q"], 2)  # weights 1/2 each
    assert [h.score for h in default_w] == pytest.approx([0.5, 0.5]) and default_w.ids == ["a", "c"]


def test_embeddings_go_only_to_members_that_need_them():
    dense = FakeIndex([("a", 1.0)], needs_embeddings=True)
    sparse = FakeIndex([("a", 2.0)])
    hybrid = HybridIndex([dense, sparse])
    assert hybrid.needs_embeddings
    q = np.ones((1, 4), dtype=np.float32)
    hybrid.search(["q"], 1, query_embeddings=q)
    assert dense.calls[0][1] is q and sparse.calls[0][1] is None
    assert not HybridIndex([FakeIndex([("a", 1.0)]), FakeIndex([("b", 1.0)])]).needs_embeddings


def test_invalid_configurations_fail_early():
    a, b = FakeIndex([("a", 1.0)]), FakeIndex([("b", 1.0)])
    with pytest.raises(ValueError, match="at least 2"):
        HybridIndex([a])
    with pytest.raises(ValueError, match="fusion"):
        HybridIndex([a, b], fusion="max")
    with pytest.raises(ValueError, match="2 members"):
        HybridIndex([a, b], weights=[1.0])
    with pytest.raises(ValueError, match=">= 0"):
        HybridIndex([a, b], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="fetch_factor"):
        HybridIndex([a, b], fetch_factor=0.5)


@pytest.fixture
def dense_and_sparse(tiny_retriever, toy_passages):
    dense = FaissIndex.build(toy_passages, tiny_retriever, embeddings_dtype="float32")
    sparse = BM25Index.build(toy_passages, stemmer="english")
    return dense, sparse


QS = ["capital of Zorvania", "river into the sea", "who makes copper lamps"]


def test_save_load_round_trip_with_faiss_and_bm25(tmp_path, tiny_retriever, dense_and_sparse):
    dense, sparse = dense_and_sparse
    hybrid = HybridIndex([dense, sparse], rrf_k=10, weights=[1.0, 2.0], fetch_factor=3)
    q = tiny_retriever.encode_queries(QS)
    before = hybrid.search(QS, 4, query_embeddings=q)
    hybrid.save(tmp_path / "hyb")
    m = json.loads((tmp_path / "hyb" / "manifest.json").read_text())
    assert m["kind"] == "hybrid" and m["fusion"] == "rrf" and m["rrf_k"] == 10 and m["weights"] == [1.0, 2.0]
    assert [e["kind"] for e in m["members"]] == ["faiss", "bm25"]
    for entry in m["members"]:
        assert not entry["path"].startswith("/") and (tmp_path / "hyb" / entry["path"] / "manifest.json").is_file()
    assert m["retriever"]["fingerprint"] == tiny_retriever.fingerprint()
    assert dense.path == str(tmp_path / "hyb" / m["members"][0]["path"])  # members point at their published folders

    loaded = load_index(tmp_path / "hyb", retriever=tiny_retriever)
    assert isinstance(loaded, HybridIndex) and loaded.needs_embeddings
    assert [type(x) for x in loaded.members] == [FaissIndex, BM25Index]
    after = loaded.search(QS, 4, query_embeddings=q)
    for hb, ha in zip(before, after):
        assert hb.ids == ha.ids
        np.testing.assert_array_equal(hb.scores, ha.scores)
        assert [h.text for h in hb] == [h.text for h in ha]
    with pytest.raises(IndexMismatchError):
        load_index(tmp_path / "hyb", retriever=make_tiny_retriever(seed=1))


def test_works_through_atlas_retrieve(tiny_retriever, dense_and_sparse):
    dense, sparse = dense_and_sparse
    hybrid = HybridIndex([dense, sparse])
    atlas = Atlas(tiny_retriever, index=hybrid)
    hits = atlas.retrieve(QS, k=3)
    direct = hybrid.search(QS, 3, query_embeddings=tiny_retriever.encode_queries(QS))
    assert [h.ids for h in hits] == [h.ids for h in direct]
    assert all(len(h) == 3 for h in hits)
    assert hits[0][0].title and hits[0][0].text
    # the fused order is the RRF of what the members return for k * fetch_factor
    q = tiny_retriever.encode_queries(QS)
    d, s = dense.search(QS, 6, query_embeddings=q), sparse.search(QS, 6)
    for i, h in enumerate(hits):
        assert h.ids == [f.id for f in fuse_rankings([d[i].ids, s[i].ids], k=3)]
    with pytest.raises(IndexMismatchError):  # check_compatible delegates to the dense member
        Atlas(make_tiny_retriever(seed=1), index=hybrid)


def test_add_and_remove_update_every_member(tiny_retriever, dense_and_sparse):
    dense, sparse = dense_and_sparse
    hybrid = HybridIndex([dense, sparse])
    new = Passages.from_records([{"id": "p9", "title": "Oskavel", "text": "Oskavel is a glacier lake."}])
    hybrid.add(new, retriever=tiny_retriever)
    assert len(dense) == len(sparse) == len(hybrid) == 7
    assert hybrid.manifest["version"] == 2 and hybrid.manifest["history"][-1]["change"] == "add"
    hits = hybrid.search(["glacier lake Oskavel"], 1, query_embeddings=tiny_retriever.encode_queries(["glacier lake Oskavel"]))
    assert hits[0].ids == ["p9"]
    hybrid.remove(["p9"])
    assert len(dense) == len(sparse) == 6 and hybrid.manifest["version"] == 3
