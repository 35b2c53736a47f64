from __future__ import annotations

import numpy as np
import pytest

from atlas_kit import Atlas
from atlas_kit.index import FaissIndex
from atlas_kit.rerank import BiEncoderReranker, CrossEncoderReranker
from atlas_kit.batching import EncodeStats
from tests.conftest import F32_LAYOUT, make_tiny_retriever

QS = ["capital of Zorvania", "river into the sea", "copper lamps", "harbour fish"]


@pytest.fixture
def setup(tiny_retriever, toy_passages):
    index = FaissIndex.build(toy_passages, tiny_retriever, embeddings_dtype="float32")
    return tiny_retriever, index


@pytest.mark.parametrize("reuse", [True, False])
def test_unchanged_retriever_reproduces_flat_order(setup, reuse):
    r, index = setup
    qv = r.encode_queries(QS)
    plain = index.search(QS, 6, qv)
    rr = BiEncoderReranker(r, reuse_index_embeddings=reuse)
    reranked = rr.rerank(QS, index.search(QS, 6, qv), k=4, index=index)
    assert rr.encoded_last == (0 if reuse else len(index))
    for a, b in zip(plain, reranked):
        assert b.ids == a.ids[:4]
        np.testing.assert_allclose(b.scores, a.scores[:4], rtol=1e-4, atol=1e-5)
        assert b[0].text == a[0].text  # passage text preserved


def test_changed_encoder_is_not_reused(setup, toy_passages):
    r, index = setup
    other = make_tiny_retriever(seed=3)
    rr = BiEncoderReranker(other)
    rr.rerank(QS, index.search(QS, 6, r.encode_queries(QS)), k=3, index=index)
    assert rr.encoded_last == len(toy_passages)  # fingerprint differs: re-encoded


def test_dedup_encodes_each_passage_once_and_scatter_keeps_questions(setup, monkeypatch):
    r, index = setup
    hits = index.search(QS, 5, r.encode_queries(QS))  # heavy overlap across questions
    seen = []
    rr = BiEncoderReranker(r, reuse_index_embeddings=False)
    orig = rr.encode_texts
    monkeypatch.setattr(rr, "encode_texts", lambda ts, **kw: seen.append(len(ts)) or orig(ts, **kw))
    scores = rr.score(QS, hits, index=index)
    assert seen == [len({pid for h in hits for pid in h.ids})]  # one bucketed call, each passage once
    for q, h, s in zip(QS, hits, scores):  # each candidate keeps its own question's score
        direct = r.encode_passages(list(h)) @ r.encode_queries([q])[0]
        np.testing.assert_allclose(s, direct, rtol=1e-4, atol=1e-5)


def test_retriever_encoding_runs_on_the_shared_batching_engine(setup, toy_passages):
    """Chunked, length-sorted, token-budgeted encoding gives the plain vectors; the stats say what
    it did; sorting cuts padding; a retriever that has encoded can still be deep-copied."""
    import copy

    r, _ = setup
    texts = r.passage_texts(toy_passages)
    plain = r.encode_texts(texts)
    stats = EncodeStats()
    chunked = r.encode_texts(texts, batch_size=4, max_tokens=40, chunk_size=3, stats=stats)
    np.testing.assert_allclose(chunked, plain, **F32_LAYOUT)
    assert stats.encoded == len(texts) and stats.batches >= -(-len(texts) // 3)
    assert stats.max_batch_tokens <= 40 or stats.batches == len(texts)
    unsorted = EncodeStats()
    r.encode_texts(texts, batch_size=4, sort_by_length=False, stats=unsorted)
    sorted_ = EncodeStats()
    r.encode_texts(texts, batch_size=4, stats=sorted_)
    assert sorted_.padding_ratio <= unsorted.padding_ratio
    r.encode_texts(texts, devices=["cpu", "cpu"])
    np.testing.assert_allclose(copy.deepcopy(r).encode_texts(texts), plain, **F32_LAYOUT)
    with pytest.raises(ValueError, match="side"):
        r.encode_texts(texts, side="document")


def test_max_tokens_encoding_matches_plain(setup, toy_passages):
    r, _ = setup
    np.testing.assert_allclose(r.encode_passages(toy_passages, max_tokens=40), r.encode_passages(toy_passages),
                               rtol=1e-4, atol=1e-5)


def test_atlas_retrieve_with_reranker_and_candidates(setup):
    r, index = setup
    atlas = Atlas(r, index=index, reranker=BiEncoderReranker(r))
    hits = atlas.retrieve(QS, k=2, candidates=5)
    assert all(len(h) == 2 for h in hits)
    assert [h.ids for h in hits] == [h.ids for h in Atlas(r, index=index).retrieve(QS, k=2)]


def test_cross_encoder_path_end_to_end(tmp_path, setup):
    """No pretrained cross-encoder exists offline: a config-built BERT stands in."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from atlas_kit.retriever import default_retriever_path

    r, index = setup
    tok = AutoTokenizer.from_pretrained(default_retriever_path())
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=1))
    model.save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    ce = CrossEncoderReranker.from_pretrained(str(tmp_path / "ce"), device="cpu", max_length=64)
    atlas = Atlas(r, index=index, reranker=ce)
    hits = atlas.retrieve(QS, k=2, candidates=5)
    assert all(len(h) == 2 and h.scores[0] >= h.scores[1] for h in hits)
    # scores are the cross-encoder's own, computed once per (question, passage)
    cand = index.search(QS[:1], 5, r.encode_queries(QS[:1]))
    s = ce.score(QS[:1], cand)[0]
    # raw logits by default (a sigmoid would saturate into ties); activation=True matches predict()
    direct = ce.model.predict([(QS[0], f"{h.title} {h.text}") for h in cand[0]], activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(s, np.asarray(direct).reshape(-1), rtol=1e-4, atol=1e-5)


def test_data_parallel_encoding_over_replicas_matches_single_device(setup, toy_passages):
    """Two replicas (CPU stands in for two GPUs): batches are dealt round-robin and gathered back
    in input order, giving the same vectors as one device."""
    r, index = setup
    single = r.encode_passages(toy_passages, batch_size=2)
    parallel = r.encode_passages(toy_passages, batch_size=2, devices=["cpu", "cpu"])
    np.testing.assert_allclose(parallel, single, **F32_LAYOUT)
    rr = BiEncoderReranker(r, batch_size=2, reuse_index_embeddings=False, devices=["cpu", "cpu"])
    qv = r.encode_queries(QS)
    a = rr.rerank(QS, index.search(QS, 6, qv), k=3)
    b = BiEncoderReranker(r, reuse_index_embeddings=False).rerank(QS, index.search(QS, 6, qv), k=3)
    assert [h.ids for h in a] == [h.ids for h in b]
