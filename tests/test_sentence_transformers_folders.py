"""Retriever folders are sentence-transformers folders: SentenceTransformer(folder) loads them and
gives atlas_kit's embeddings; old atlas_kit folders still load."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from atlas_kit.retriever import Retriever, default_retriever_path
from tests.conftest import make_tiny_retriever

QUERIES = ["What is the capital of Zorvania?", "a river", "Which company makes copper lamps in Quessa today?"]
PASSAGES = [{"title": "Zorvania", "text": "The capital of Zorvania is Blim."}, {"title": "", "text": "No title here."}]


def _st(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


@pytest.mark.parametrize("normalize,pooling", [(True, "mean"), (False, "mean"), (False, "cls")])
def test_shared_folder_loads_in_sentence_transformers_with_the_same_embeddings(tmp_path, normalize, pooling):
    retriever = make_tiny_retriever(normalize=normalize)
    retriever.pooling = pooling
    retriever.save_pretrained(tmp_path / "r")
    modules = json.loads((tmp_path / "r" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling"] + (["Normalize"] if normalize else [])
    model = _st(tmp_path / "r")
    np.testing.assert_allclose(model.encode(QUERIES), retriever.encode_queries(QUERIES), atol=1e-5, rtol=1e-4)
    texts = retriever.passage_texts(PASSAGES)
    np.testing.assert_allclose(model.encode(texts), retriever.encode_passages(PASSAGES), atol=1e-5, rtol=1e-4)
    # and atlas_kit reads it back with the same settings
    again = Retriever.from_pretrained(tmp_path / "r")
    assert (again.pooling, again.normalize) == (pooling, normalize)


def test_untied_folder_has_a_second_sentence_transformers_folder_for_passages(tmp_path):
    import torch

    retriever = make_tiny_retriever(normalize=True)
    retriever.untie()
    with torch.no_grad():
        for p in retriever.passage_encoder.parameters():
            p.add_(0.05)  # the two encoders now differ
    retriever.save_pretrained(tmp_path / "r")
    np.testing.assert_allclose(_st(tmp_path / "r").encode(QUERIES), retriever.encode_queries(QUERIES), atol=1e-5, rtol=1e-4)
    passages = _st(tmp_path / "r" / "passage_encoder").encode(retriever.passage_texts(PASSAGES))
    np.testing.assert_allclose(passages, retriever.encode_passages(PASSAGES), atol=1e-5, rtol=1e-4)
    assert not np.allclose(passages, retriever.encode_queries(retriever.passage_texts(PASSAGES)), atol=1e-3)
    again = Retriever.from_pretrained(tmp_path / "r")
    assert not again.shared and again.fingerprint() == retriever.fingerprint()


def test_bundled_minilm_round_trips_through_sentence_transformers(tmp_path):
    retriever = Retriever.default()
    retriever.save_pretrained(tmp_path / "minilm")
    want = _st(tmp_path / "minilm").encode(QUERIES)
    np.testing.assert_allclose(want, retriever.encode_queries(QUERIES), atol=1e-5, rtol=1e-4)
    original = _st(default_retriever_path()).encode(QUERIES)
    np.testing.assert_allclose(want, original, atol=1e-5, rtol=1e-4)


def test_folders_saved_before_the_sentence_transformers_layout_still_load(tmp_path):
    retriever = make_tiny_retriever()
    retriever.save_pretrained(tmp_path / "r")
    for extra in ("modules.json", "1_Pooling", "config_sentence_transformers.json", "README.md",
                  "query_encoder/sentence_bert_config.json"):
        path = tmp_path / "r" / extra
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    old = Retriever.from_pretrained(tmp_path / "r")
    np.testing.assert_allclose(old.encode_queries(QUERIES), retriever.encode_queries(QUERIES), atol=1e-6)
