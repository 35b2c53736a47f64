"""Shared fixtures: tiny, seeded models so the suite runs in minutes on 2 CPU cores."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_tiny_retriever(seed: int = 0, normalize: bool = False, hidden: int = 32):
    """A 2-layer BERT built from a config, with the bundled MiniLM WordPiece tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from atlas_kit.retriever import Retriever, default_retriever_path

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(default_retriever_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128)
    model = BertModel(cfg).eval()
    return Retriever(model, tok, normalize=normalize, name=f"tiny-bert-{seed}", passage_maxlength=64)


@pytest.fixture
def tiny_retriever():
    return make_tiny_retriever()


@pytest.fixture
def toy_records():
    facts = [
        ("Zorvania", "The capital of Zorvania is Blim. Its leader is Oska Trell."),
        ("Telmirok", "Telmirok is a river that flows into the Pale Sea."),
        ("Quessa", "Quessa is a company that makes copper lamps."),
        ("Brundle", "The capital of Brundle is Varnhold, a city of bridges."),
        ("Ilvaro", "Ilvaro is a mountain covered in blue pines."),
        ("Marrow Bay", "Marrow Bay is a harbour famous for its salt fish."),
    ]
    return [{"id": f"p{i}", "title": t, "text": x} for i, (t, x) in enumerate(facts)]


@pytest.fixture
def toy_passages(toy_records):
    from atlas_kit.passages import Passages

    return Passages.from_records(toy_records)


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path
