"""Model cards for every saved folder kind, and the reader folder as a plain T5 checkpoint."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from atlas_kit.model_card import folder_kind, write_model_card
from tests.conftest import make_tiny_retriever


def _meta(folder):
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def _tiny_reader():
    from atlas_kit.reader import Reader
    from atlas_kit.tokenization import default_tokenizer

    return Reader.from_config(default_tokenizer(), d_model=32, num_layers=1, num_heads=2, dropout=0.0)


def test_reader_folder_loads_with_plain_t5_and_has_a_card(tmp_path):
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    reader = _tiny_reader().eval()
    reader.save_pretrained(tmp_path / "reader")
    plain = T5ForConditionalGeneration.from_pretrained(tmp_path / "reader").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "reader")
    ids = tok(["question: x title: t context: c"], return_tensors="pt")
    labels = reader.tokenize_answers(["yes"])
    with torch.no_grad():
        torch.testing.assert_close(plain(**ids, labels=labels).logits, reader.model(**ids, labels=labels).logits)
    meta, text = _meta(tmp_path / "reader")
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text2text-generation"
    assert "atlas_kit" in meta["tags"] and "T5ForConditionalGeneration.from_pretrained" in text


def test_retriever_card_and_run_metrics(tmp_path):
    retriever = make_tiny_retriever(normalize=True)
    retriever.save_pretrained(tmp_path / "r")
    meta, _ = _meta(tmp_path / "r")
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    assert "model-index" not in meta and "base_model" not in meta  # nothing measured, no hub id
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"task": "qa", "R@1": 64.16, "NDCG@10": 78.78, "n": 2910,
                                                  "per_category": {}}))
    (run / "recipe.json").write_text(json.dumps({"data": {"eval": "data/squad-open-dev.jsonl", "train": None}}))
    write_model_card(tmp_path / "r", run=run, base_model="sentence-transformers/all-MiniLM-L6-v2")
    meta, text = _meta(tmp_path / "r")
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["datasets"] == ["squad-open-dev"]
    results = meta["model-index"][0]["results"]
    assert {(m["name"], m["value"]) for r in results for m in r["metrics"]} == {("R@1", 64.16), ("NDCG@10", 78.78)}
    assert all(r["task"]["type"] == "text-retrieval" for r in results) and "| R@1 | 64.16 |" in text


def test_atlas_and_index_folders_get_cards(tmp_path, toy_passages):
    from atlas_kit import Atlas
    from atlas_kit.index import FaissIndex

    retriever = make_tiny_retriever(normalize=True)
    index = FaissIndex.build(toy_passages, retriever)
    index.save(tmp_path / "index")
    atlas = Atlas(retriever, _tiny_reader(), index)
    atlas.save_pretrained(tmp_path / "model")
    meta, _ = _meta(tmp_path / "model")
    assert folder_kind(tmp_path / "model") == "atlas" and meta["library_name"] == "atlas_kit"
    assert (tmp_path / "model" / "retriever" / "README.md").is_file() and (tmp_path / "model" / "reader" / "README.md").is_file()
    assert folder_kind(tmp_path / "index") == "index"
    write_model_card(tmp_path / "index", datasets=["toy"])
    meta, text = _meta(tmp_path / "index")
    assert "retrieval-index" in meta["tags"] and meta["source_datasets"] == ["toy"]
    assert index.manifest["retriever"]["fingerprint"] in text
    with pytest.raises(ValueError, match="not an atlas_kit folder"):
        folder_kind(tmp_path)


def test_card_command(tmp_path):
    from atlas_kit.cli import main

    make_tiny_retriever().save_pretrained(tmp_path / "r")
    (tmp_path / "r" / "README.md").unlink()
    assert main(["-q", "card", str(tmp_path / "r"), "--dataset", "nq", "--base-model", "facebook/contriever"]) == 0
    meta, _ = _meta(tmp_path / "r")
    assert meta["datasets"] == ["nq"] and meta["base_model"] == "facebook/contriever"
