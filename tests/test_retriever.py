from __future__ import annotations

import numpy as np
import pytest
import torch

from atlas_kit.retriever import Retriever, default_retriever_path, mean_pooling
from tests.conftest import make_tiny_retriever


def test_mean_pooling_equals_hand_computed_masked_mean():
    torch.manual_seed(0)
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = mean_pooling(hidden, mask)
    assert torch.allclose(pooled[0], (hidden[0, 0] + hidden[0, 1]) / 2)
    assert torch.allclose(pooled[1], hidden[1].mean(0))


def test_encode_matches_manual_forward_and_ignores_padding(tiny_retriever):
    texts = ["a short one", "a much longer sentence about the capital city of a fictional country"]
    enc = tiny_retriever.encode_queries(texts, batch_size=2)
    # each text alone (no padding at all) must give the same vector as the padded batch
    for i, t in enumerate(texts):
        batch = tiny_retriever.tokenizer([t], return_tensors="pt")
        with torch.no_grad():
            h = tiny_retriever.query_encoder(**batch).last_hidden_state
        manual = (h[0] * batch["attention_mask"][0, :, None]).sum(0) / batch["attention_mask"][0].sum()
        np.testing.assert_allclose(enc[i], manual.numpy(), rtol=1e-4, atol=1e-5)


def test_length_sorted_batches_keep_input_order(tiny_retriever):
    texts = [("word " * n).strip() for n in (3, 30, 1, 12, 7, 25, 2)]
    batched = tiny_retriever.encode_passages(texts, batch_size=3)
    single = np.stack([tiny_retriever.encode_passages([t], batch_size=1)[0] for t in texts])
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)


def test_embed_with_grad_matches_inference(tiny_retriever):
    qs = ["who leads Zorvania", "where is Blim"]
    with_grad = tiny_retriever.embed_queries(qs)
    assert with_grad.requires_grad
    np.testing.assert_allclose(with_grad.detach().numpy(), tiny_retriever.encode_queries(qs), rtol=1e-4, atol=1e-5)


def test_normalize_option():
    r = make_tiny_retriever(normalize=True)
    emb = r.encode_queries(["hello world", "another query"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_passage_text_uses_title(tiny_retriever, toy_passages):
    texts = tiny_retriever.passage_texts(toy_passages)
    assert texts[0].startswith("Zorvania The capital")


def test_fingerprint_stable_and_sensitive(tiny_retriever):
    fp = tiny_retriever.fingerprint()
    assert fp == make_tiny_retriever().fingerprint()
    assert fp != make_tiny_retriever(seed=1).fingerprint()
    with torch.no_grad():
        next(tiny_retriever.query_encoder.parameters()).add_(1.0)
    assert tiny_retriever.fingerprint() != fp


def test_save_load_round_trip(tmp_path, tiny_retriever):
    tiny_retriever.save_pretrained(tmp_path / "r")
    loaded = Retriever.from_pretrained(tmp_path / "r")
    assert loaded.fingerprint() == tiny_retriever.fingerprint()
    assert loaded.settings() == tiny_retriever.settings()
    qs = ["capital of Zorvania"]
    np.testing.assert_allclose(loaded.encode_queries(qs), tiny_retriever.encode_queries(qs), rtol=1e-6)
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "r").rglob("*"))


def test_untied_round_trip_and_freeze(tmp_path, tiny_retriever):
    tiny_retriever.freeze_passage_encoder()
    assert not tiny_retriever.shared
    assert all(not p.requires_grad for p in tiny_retriever.passage_encoder.parameters())
    tiny_retriever.save_pretrained(tmp_path / "r")
    loaded = Retriever.from_pretrained(tmp_path / "r")
    assert not loaded.shared and loaded.fingerprint() == tiny_retriever.fingerprint()


def test_default_retriever_is_minilm_sentence_transformers_layout():
    r = Retriever.default()
    assert r.dim == 384 and r.pooling == "mean" and r.normalize is True
    assert r.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert r.passage_maxlength == 256


def test_default_retriever_matches_sentence_transformers():
    """Our pooling on the bundled MiniLM equals sentence-transformers' own encode."""
    from sentence_transformers import SentenceTransformer

    texts = ["Who wrote the Iliad?", "Homer is the author of the Iliad and the Odyssey, two epic poems."]
    ours = Retriever.default().encode_queries(texts)
    ref = SentenceTransformer(default_retriever_path(), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_plain_hf_folder_loads_unnormalized(tmp_path, tiny_retriever):
    tiny_retriever.query_encoder.save_pretrained(tmp_path / "plain")
    tiny_retriever.tokenizer.save_pretrained(tmp_path / "plain")
    r = Retriever.from_pretrained(tmp_path / "plain")
    assert r.pooling == "mean" and r.normalize is False  # Contriever's convention
    assert r.fingerprint() == tiny_retriever.fingerprint()
    with pytest.raises(ValueError):
        Retriever(r.query_encoder, r.tokenizer, pooling="max")


def test_from_config_builds_a_seeded_untrained_retriever():
    from atlas_kit.retriever import Retriever

    a = Retriever.from_config(hidden_size=32, num_layers=1, num_heads=2, seed=3)
    b = Retriever.from_config(hidden_size=32, num_layers=1, num_heads=2, seed=3)
    c = Retriever.from_config(hidden_size=32, num_layers=1, num_heads=2, seed=4)
    assert a.dim == 32 and a.normalize and a.pooling == "mean"
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    e = a.encode_queries(["who governs Rykata?", "where does Grohith begin?"])
    assert e.shape == (2, 32)
    assert abs(float((e[0] ** 2).sum()) - 1.0) < 1e-5
