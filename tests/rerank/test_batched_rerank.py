"""Batched reranking: bucketing, de-duplication, reuse of stored vectors, token budgets, and the
cross-encoder path. Tiny config-built BERTs on CPU; no pretrained cross-encoder exists offline, so a
randomly initialised ``BertForSequenceClassification`` stands in (its scores mean nothing, the
plumbing is what is tested)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from atlas_kit import Atlas
from atlas_kit.index import BM25Index, FaissIndex, HybridIndex
from atlas_kit.index.base import Hit, Hits
from atlas_kit.rerank import BiEncoderReranker, CrossEncoderReranker, gather_candidates, plan_batches
from atlas_kit.batching import pad_batch
from tests.conftest import F32_LAYOUT, make_tiny_retriever

QS = ["capital of Zorvania", "river into the sea", "copper lamps", "harbour fish", "capital of Zorvania"]


@pytest.fixture
def flat(tiny_retriever, toy_passages):
    # default float16 stored embeddings: reuse must still reproduce the Flat scores exactly
    return FaissIndex.build(toy_passages, tiny_retriever)


def _forward_counter(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda m, args, kwargs, out: calls.append(1), with_kwargs=True)
    return calls


# ---------------------------------------------------------------------- bi-encoder
@pytest.mark.parametrize("reuse", [True, False])
def test_unchanged_retriever_reproduces_flat_index(tiny_retriever, flat, reuse):
    r = tiny_retriever
    plain = Atlas(r, index=flat).retrieve(QS, k=4)
    rr = BiEncoderReranker(r, reuse_index_embeddings=reuse, batch_size=4)
    reranked = Atlas(r, index=flat, reranker=rr).retrieve(QS, k=4, candidates=6)
    assert rr.last_stats.encoded == (0 if reuse else len(flat))
    assert rr.last_stats.reused == (len(flat) if reuse else 0)
    for a, b in zip(plain, reranked):
        assert b.ids == a.ids
        np.testing.assert_allclose(b.scores, a.scores, **F32_LAYOUT)
        assert [h.text for h in b] == [h.text for h in a]
        assert [h.rank for h in b] == list(range(4))


def test_reuse_runs_no_passage_encoding(tiny_retriever, flat):
    r = tiny_retriever
    qv = r.encode_queries(QS)
    hits = flat.search(QS, 6, qv)
    calls = _forward_counter(r.query_encoder)  # shared encoder: any forward would be counted
    BiEncoderReranker(r).rerank(QS, hits, 3, index=flat, query_embeddings=qv)
    assert calls == []
    rr = BiEncoderReranker(r, reuse_index_embeddings=False, batch_size=4)
    rr.rerank(QS, hits, 3, index=flat, query_embeddings=qv)
    assert len(calls) == rr.last_stats.batches == 2  # 6 unique passages in batches of 4


def test_changed_weights_change_fingerprint_and_force_reencoding(tiny_retriever, flat):
    r = tiny_retriever
    hits = Atlas(r, index=flat).retrieve(QS, k=6)
    with torch.no_grad():  # what an optimizer step does: in-place update, version counter bumps
        next(r.query_encoder.parameters()).add_(0.05)
    rr = BiEncoderReranker(r)
    out = rr.rerank(QS, hits, 6, index=flat)
    assert rr.last_stats.encoded == len(flat) and rr.last_stats.reused == 0
    qv = r.encode_queries(QS)
    pv = r.encode_passages(flat.passages)
    for q, h in zip(qv, out):
        expected = pv[[flat.passages.position(i) for i in h.ids]] @ q
        np.testing.assert_allclose(h.scores, expected, rtol=1e-4, atol=1e-6)


def _random_hits(rng: np.random.Generator, n_questions: int, vocab: list[str]) -> tuple[list[str], list[Hits], dict]:
    """Store-less hits with random lengths, duplicates across (never within) questions."""
    texts = {f"d{i}": " ".join(rng.choice(vocab, size=int(rng.integers(1, 40)))) for i in range(25)}
    qs, hits = [], []
    for qi in range(n_questions):
        ids = rng.choice(sorted(texts), size=int(rng.integers(1, 12)), replace=False)
        hits.append(Hits.from_hits([Hit(str(i), "T" if int(str(i)[1:]) % 2 else "", texts[str(i)], 0.0) for i in ids]))
        qs.append(" ".join(rng.choice(vocab, size=int(rng.integers(1, 8)))))
    return qs, hits, texts


@pytest.mark.parametrize("seed", range(4))
def test_bucketing_and_scatter_keep_every_candidate_with_its_question(tiny_retriever, seed):
    r = tiny_retriever
    rng = np.random.default_rng(seed)
    vocab = "the a capital river lamp copper harbour fish mountain city bridge blue pine salt sea".split()
    qs, hits, _ = _random_hits(rng, 7, vocab)
    rr = BiEncoderReranker(r, batch_size=int(rng.integers(1, 9)),
                           max_tokens_per_batch=[None, 60, 200][seed % 3], reuse_index_embeddings=False)
    scores = rr.score(qs, hits)
    n_unique = len({pid for h in hits for pid in h.ids})
    assert rr.last_stats.encoded == n_unique  # de-duplicated across questions
    out = rr.rerank(qs, hits, None)
    for q, h, s, o in zip(qs, hits, scores, out):
        direct = r.encode_passages(list(h)) @ r.encode_queries([q])[0]  # one question at a time
        np.testing.assert_allclose(s, direct, rtol=1e-4, atol=1e-5)
        assert sorted(o.ids) == sorted(h.ids)  # nothing lost or swapped between questions
        assert np.all(np.diff(o.scores) <= 0)
        by_id = {x.id: x for x in h}
        assert all(x.text == by_id[x.id].text and x.title == by_id[x.id].title for x in o)


def test_each_unique_passage_encoded_once(tiny_retriever, toy_passages, monkeypatch):
    r = tiny_retriever
    flat = FaissIndex.build(toy_passages, r)
    hits = flat.search(QS, 5, r.encode_queries(QS))
    rr = BiEncoderReranker(r, reuse_index_embeddings=False)
    seen: list[list[str]] = []
    orig = rr.encode_texts
    monkeypatch.setattr(rr, "encode_texts", lambda texts, **kw: seen.append(list(texts)) or orig(texts, **kw))
    rr.score(QS, hits, index=flat)
    assert len(seen) == 1 and len(seen[0]) == len(set(seen[0])) == len({i for h in hits for i in h.ids})


def test_max_tokens_per_batch_is_respected(tiny_retriever, toy_passages):
    r = tiny_retriever
    budget = 48
    rr = BiEncoderReranker(r, batch_size=64, max_tokens_per_batch=budget)
    stats_emb = rr.encode_passages(toy_passages)
    assert 1 <= rr.last_stats.max_batch_tokens <= budget or rr.last_stats.encoded == 0
    from atlas_kit.batching import EncodeStats

    st = EncodeStats()
    emb = rr.encode_passages(toy_passages, stats=st)
    assert st.max_batch_tokens <= budget and st.batches > 1
    np.testing.assert_allclose(emb, r.encode_passages(toy_passages), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats_emb, emb, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(6))
def test_plan_batches_property(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 80, size=int(rng.integers(0, 300)))
    batch_size = [None, 1, 7, 64][seed % 4] if seed % 4 else 16
    budget = [None, 50, 300][seed % 3]
    batches = plan_batches(lengths, batch_size, budget)
    flat_idx = np.concatenate(batches) if batches else np.empty(0, dtype=int)
    assert sorted(flat_idx.tolist()) == list(range(len(lengths)))  # every input exactly once
    assert np.all(np.diff(lengths[flat_idx]) <= 0)  # longest first
    for b in batches:
        assert batch_size is None or len(b) <= batch_size
        if budget is not None and len(b) > 1:
            assert len(b) * lengths[b].max() <= budget
    unsorted = plan_batches(lengths, 8, sort=False)
    assert (np.concatenate(unsorted) if unsorted else np.empty(0)).tolist() == list(range(len(lengths)))


def test_pad_batch_matches_tokenizer_pad(tiny_retriever):
    tok = tiny_retriever.tokenizer
    enc = tok(["a b c d e", "a", "x y z"], ["q", "q r s", "t"], truncation=True, padding=False)
    mine = pad_batch(enc, [2, 0, 1], tok.pad_token_id, tok.pad_token_type_id)
    ref = tok.pad([{k: enc[k][i] for k in enc.keys()} for i in [2, 0, 1]], return_tensors="pt")
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(mine[k], ref[k])


def test_data_parallel_replicas_match_single_device(tiny_retriever, flat):
    r = tiny_retriever
    qv = r.encode_queries(QS)
    hits = flat.search(QS, 6, qv)
    one = BiEncoderReranker(r, batch_size=2, reuse_index_embeddings=False, devices=["cpu"])
    two = BiEncoderReranker(r, batch_size=2, reuse_index_embeddings=False, devices=["cpu", "cpu"])
    a, b = one.score(QS, hits, query_embeddings=qv), two.score(QS, hits, query_embeddings=qv)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **F32_LAYOUT)


def test_hybrid_hits_reuse_the_dense_members_vectors(tiny_retriever, toy_passages):
    r = tiny_retriever
    dense = FaissIndex.build(toy_passages, r)
    hybrid = HybridIndex([dense, BM25Index.build(toy_passages)])
    qv = r.encode_queries(QS)
    hits = hybrid.search(QS, 4, query_embeddings=qv)
    assert all(h.positions.min() < 0 for h in hits)  # fused hits carry text, not positions
    rr = BiEncoderReranker(r)
    out = rr.rerank(QS, hits, 3, index=hybrid, query_embeddings=qv)
    assert rr.last_stats.encoded == 0 and rr.last_stats.reused > 0
    fresh = BiEncoderReranker(r, reuse_index_embeddings=False).rerank(QS, hits, 3, index=hybrid, query_embeddings=qv)
    for a, b in zip(out, fresh):
        assert a.ids == b.ids
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3, atol=1e-5)


def test_retriever_trained_state_is_restored(tiny_retriever, flat):
    r = tiny_retriever
    r.train()
    BiEncoderReranker(r, reuse_index_embeddings=False).rerank(QS, flat.search(QS, 3, r.encode_queries(QS)), 2)
    assert r.query_encoder.training  # evaluated without dropout, then put back in train mode
    assert torch.is_grad_enabled()


def test_mismatched_lengths_are_refused(tiny_retriever, flat):
    with pytest.raises(ValueError, match="questions but"):
        BiEncoderReranker(tiny_retriever).rerank(QS[:2], flat.search(QS, 2, tiny_retriever.encode_queries(QS)), 1)


# ---------------------------------------------------------------------- cross-encoder
@pytest.fixture(scope="module")
def tiny_cross_encoder_dir(tmp_path_factory):
    """A config-built BERT cross-encoder (no pretrained one exists offline) saved to a folder."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from atlas_kit.retriever import default_retriever_path

    folder = tmp_path_factory.mktemp("tiny-ce")
    tok = AutoTokenizer.from_pretrained(default_retriever_path())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=1)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # spread the scores so that ranking is not a coin toss between ties
        model.classifier.weight.mul_(50)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def test_cross_encoder_end_to_end_through_atlas(tiny_retriever, flat, tiny_cross_encoder_dir):
    r = tiny_retriever
    ce = CrossEncoderReranker.from_pretrained(tiny_cross_encoder_dir, device="cpu", max_length=64, batch_size=3)
    atlas = Atlas(r, index=flat, reranker=ce)
    hits = atlas.retrieve(QS, k=2, candidates=5)
    assert all(len(h) == 2 for h in hits)
    cands = flat.search(QS, 5, r.encode_queries(QS))
    for q, h, c in zip(QS, hits, cands):
        pairs = [(q, f"{x.title} {x.text}") for x in c]
        logits = ce.model.predict(pairs, activation_fn=torch.nn.Identity())
        best = np.argsort(-logits, kind="stable")[:2]
        assert h.ids == [c.ids[i] for i in best]
        np.testing.assert_allclose(h.scores, logits[best], rtol=1e-4, atol=1e-5)
        assert [x.text for x in h] == [c[i].text for i in best]


def test_cross_encoder_deduplicates_identical_pairs_and_matches_predict(flat, tiny_retriever, tiny_cross_encoder_dir):
    r = tiny_retriever
    ce = CrossEncoderReranker.from_pretrained(tiny_cross_encoder_dir, device="cpu", activation=True,
                                              max_tokens_per_batch=64, batch_size=16)
    hits = flat.search(QS, 4, r.encode_queries(QS))  # QS[0] == QS[4]: same pairs twice
    scores = ce.score(QS, hits)
    n_pairs = len({(q, i) for q, h in zip(QS, hits) for i in h.ids})
    assert ce.last_stats.encoded == n_pairs < sum(len(h) for h in hits)
    assert ce.last_stats.max_batch_tokens <= 64
    np.testing.assert_array_equal(scores[0], scores[4])
    for q, h, s in zip(QS, hits, scores):  # activation=True: exactly CrossEncoder.predict's scores
        np.testing.assert_allclose(s, ce.model.predict([(q, f"{x.title} {x.text}") for x in h]), rtol=1e-4, atol=1e-6)


def test_cross_encoder_on_store_less_hits(tiny_cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    ce = CrossEncoderReranker(CrossEncoder(tiny_cross_encoder_dir, device="cpu"), sort_by_length=False, batch_size=2)
    hits = [Hits.from_hits([Hit("a", "", "short", 1.0), Hit("b", "B", "a much longer passage text here", 0.5)])]
    (out,) = ce.rerank(["what"], hits, 1)
    assert len(out) == 1 and out[0].id in {"a", "b"} and out[0].rank == 0
    assert out[0].text == {"a": "short", "b": "a much longer passage text here"}[out[0].id]


def test_candidates_gather_keeps_first_occurrence(toy_passages):
    hits = [Hits.from_hits([Hit("x", "", "one", 1.0), Hit("y", "", "two", 0.5)]),
            Hits.from_hits([Hit("y", "", "two", 3.0)])]
    c = gather_candidates(hits)
    assert c.keys == ["x", "y"]
    assert [s.tolist() for s in c.slots] == [[0, 1], [1]]
    assert [p.text for p in c.passages()] == ["one", "two"]


def test_other_retriever_never_reuses_vectors(flat):
    other = make_tiny_retriever(seed=5)
    rr = BiEncoderReranker(other)
    rr.rerank(QS, flat.search(QS, 6, other.encode_queries(QS)), 2, index=flat)
    assert rr.last_stats.reused == 0 and rr.last_stats.encoded == len(flat)
