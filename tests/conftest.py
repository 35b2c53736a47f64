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

# Tolerance for float32 results of the same computation in different layouts - batch sizes, padding,
# chunking, replicas, thread counts. Those change the order of float32 reductions, and with it the
# rounding: a sum of n terms moves by up to ~n * eps * sum|x| (eps = 1.2e-7), i.e. 1e-6 - 1e-5 relative
# for the few-hundred-term dot products of these tiny models. rtol 1e-4 / atol 1e-5 leaves 10-100x
# headroom over that, while a real bug (a masked token counted, a row misplaced) moves values by 1e-2+.
# Comparisons of one computation repeated in the same layout stay exact.
F32_LAYOUT = {"rtol": 1e-4, "atol": 1e-5}


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


def write_world_recipe(tmp_path: Path, entities: int = 10, **sections: str) -> Path:
    """A YAML recipe over a generated world written into ``tmp_path`` (``corpus`` = its passages;
    ``sections`` are YAML flow-mapping bodies of the recipe's sections, with ``{train}`` /
    ``{test}`` standing for the world's question files), returned as a path."""
    from atlas_kit.world import World

    paths = World.generate(entities, seed=0, granularity="fact", typed_values=True).to_jsonl(tmp_path / "w")
    lines = [f"corpus: {paths['passages']}"]
    lines += [f"{name}: {{{body.format(train=paths['train'], test=paths['test'])}}}" for name, body in sections.items()]
    recipe = tmp_path / "w.yaml"
    recipe.write_text("\n".join(lines) + "\n")
    return recipe


def make_setup(seed: int = 0):
    """A tiny trainable Atlas over a 12-entity generated world (config-built retriever and
    reader) and the world's questions: the shared fixture of the training tests."""
    from atlas_kit import Atlas, Passages, Reader
    from atlas_kit.index import FaissIndex
    from atlas_kit.tasks.qa import QAExample
    from atlas_kit.tokenization import train_word_tokenizer
    from atlas_kit.world import World

    world = World.generate(12, seed=3, granularity="fact", typed_values=True)
    passages = Passages.from_records(world.passages())
    retriever = make_tiny_retriever(seed=seed)
    index = FaissIndex.build(passages, retriever, embeddings_dtype="float32")
    reader = Reader.from_config(train_word_tokenizer(world.texts()), d_model=32, num_layers=1, num_heads=2,
                                dropout=0.1, seed=seed, text_maxlength=40, answer_maxlength=6)
    atlas = Atlas(retriever, reader, index)
    examples = [QAExample(q.id, q.question, q.answers, q.gold_ids) for q in world.questions()]
    return atlas, examples


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for Gloo process groups in tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
