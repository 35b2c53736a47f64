"""Removals as tombstones (O(removed), compacted later) and exact re-ranking of lossy codes."""
from __future__ import annotations

import numpy as np
import pytest

from atlas_kit.index import FaissIndex
from atlas_kit.passages import Passages


def _passages(start: int, n: int) -> Passages:
    return Passages.from_records({"id": f"p{i}", "title": "", "text": f"t{i}"} for i in range(start, start + n))


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "PQ4x4"])
def test_removed_passages_vanish_at_once_and_results_equal_a_rebuild(factory):
    emb = _vectors(300)
    ix = FaissIndex.from_embeddings(emb, _passages(0, 300), factory=factory, embeddings_dtype="float32",
                                    target_recall=None, refine=1)
    if factory.startswith("IVF"):
        ix.set_search_params(nprobe=4)
    gone = [f"p{i}" for i in range(0, 300, 7)]
    ix.remove(gone)
    assert len(ix) == 300 - len(gone) and ix.info()["tombstones"] == len(gone)  # not compacted yet
    keep = [i for i in range(300) if f"p{i}" not in set(gone)]
    q = _vectors(20, seed=1)
    hits = ix.search(["q"] * 20, 10, q)
    assert not {pid for h in hits for pid in h.ids} & set(gone)
    rebuilt = FaissIndex.from_embeddings(emb[keep], _passages(0, 300).remove(gone), factory="Flat")
    if factory != "PQ4x4":  # exact codes: same neighbours as an index built without them
        assert [h.ids for h in hits] == [h.ids for h in rebuilt.search(["q"] * 20, 10, q)]
    # positions are live positions of the live passages, as for any index
    h = hits[0]
    assert [ix.passages[p].id for p in h.positions.tolist()] == h.ids
    np.testing.assert_allclose(ix.stored_vectors(h.positions[:3]), emb[[keep[p] for p in h.positions[:3].tolist()]])
    ix.compact()
    assert ix.info()["tombstones"] == 0 and ix.index.ntotal == len(keep)
    assert [x.ids for x in ix.search(["q"] * 20, 10, q)] == [x.ids for x in hits]


def test_compaction_runs_past_the_threshold_and_on_save(tmp_path):
    ix = FaissIndex.from_embeddings(_vectors(200), _passages(0, 200), factory="Flat")
    assert ix.compact_at == 64
    ix.remove([f"p{i}" for i in range(64)])
    assert ix.info()["tombstones"] == 64
    ix.remove(["p64"])  # 65 > 64: compacted
    assert ix.info()["tombstones"] == 0 and ix.index.ntotal == 135
    ix.remove(["p100"])
    checksum = ix.manifest["corpus_checksum"]
    assert checksum == ix.passages.checksum()  # recomputed when read after a removal
    ix.save(tmp_path / "ix")
    loaded = FaissIndex.load(tmp_path / "ix")
    assert loaded.index.ntotal == 134 and loaded.passages.ids == ix.passages.ids
    assert loaded.manifest["corpus_checksum"] == checksum


def test_remove_then_add_back_and_append_after_removal():
    emb = _vectors(30)
    ix = FaissIndex.from_embeddings(emb[:20], _passages(0, 20), factory="Flat")
    ix.remove(["p3", "p5"])
    ix.add(_passages(3, 1), embeddings=emb[3:4])  # an id comes back before compaction
    ix.add(_passages(20, 10), embeddings=emb[20:])
    assert len(ix) == 29 and "p5" not in ix.passages and ix.passages.ids[-11] == "p3"
    for i in (3, 25):
        assert ix.search(["q"], 1, emb[i : i + 1])[0].ids == [f"p{i}"]
    assert ix.manifest["corpus_checksum"] == ix.passages.checksum()


def test_refine_is_on_by_default_for_lossy_codes_and_recovers_exact_ranking():
    emb = _vectors(2000, dim=32)
    flat = FaissIndex.from_embeddings(emb, _passages(0, 2000), factory="Flat")
    pq = FaissIndex.from_embeddings(emb, _passages(0, 2000), factory="PQ8x4", embeddings_dtype="float32")
    assert flat.refine == 1 and pq.manifest["refine"] == 4 and pq.refine == 4
    q = _vectors(50, dim=32, seed=3)
    exact = [set(h.ids) for h in flat.search(["q"] * 50, 5, q)]

    def overlap(ix):
        return np.mean([len(set(h.ids) & e) / 5 for h, e in zip(ix.search(["q"] * 50, 5, q), exact)])

    refined = overlap(pq)
    pq.set_refine(1)
    plain = overlap(pq)
    assert refined > 1.5 * plain  # exact scores over the stored vectors fix the PQ ranking
    pq.set_refine(4)
    scores, positions = pq.search_vectors(q[:4], 5)
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", emb[positions], q[:4]), atol=1e-5)  # exact scores
    assert (np.diff(scores, axis=1) <= 0).all()
    assert FaissIndex.from_embeddings(emb, _passages(0, 2000), factory="IVF8,Flat", target_recall=None).refine == 1


def test_tune_on_given_query_vectors():
    emb = _vectors(2000)
    ix = FaissIndex.from_embeddings(emb, _passages(0, 2000), factory="IVF16,Flat", target_recall=None)
    questions = _vectors(300, seed=5)
    tuned = ix.tune(0.95, k=10, query_vectors=questions, queries=200)
    assert tuned["query_source"] == "given query vectors" and tuned["queries"] == 200 and tuned["recall"] >= 0.95
    exact = FaissIndex.from_embeddings(emb, _passages(0, 2000), factory="Flat")
    got, want = ix.search_vectors(questions, 10)[1], exact.search_vectors(questions, 10)[1]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)]) >= 0.9
    with pytest.raises(ValueError, match="query_vectors"):
        ix.tune(0.95, query_vectors=questions[:, :3])
