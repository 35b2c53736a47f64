"""The RMT long-context QA reader: it reads exactly the FiD reader's tokens, equals FiD on one
passage without memory, persists exactly, and trains through the FiD training code."""
from __future__ import annotations

import pytest
import torch

from atlas_kit.demo import train_reader_curriculum
from atlas_kit.memory.rmt_reader import RMTReader
from atlas_kit.passages import Passages
from atlas_kit.reader import Reader
from atlas_kit.tokenization import default_tokenizer

QUESTIONS = ["where does the river start?", "who founded the company"]
PASSAGES = [[{"title": "Blim", "text": "The river Blim starts in the hills of Varn and runs to the sea."},
             {"title": "Varn", "text": "Varn is a country."},
             {"title": "Ost", "text": "Ost is a company founded by Mara Teel in a small town."}]] * 2
ANSWERS = ["Varn", "Mara Teel"]


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


def tiny_reader(tok, seed=0, text_maxlength=24):
    return Reader.from_config(tok, d_model=32, num_layers=2, num_decoder_layers=2, num_heads=2, dropout=0.0,
                              seed=seed, text_maxlength=text_maxlength, answer_maxlength=6)


def test_it_reads_exactly_the_fid_readers_tokens_in_passage_order(tok):
    reader = tiny_reader(tok)
    rmt = RMTReader(reader, num_mem_tokens=3, segment_size=16)
    fid = reader.tokenize(QUESTIONS, PASSAGES)
    batch = rmt.tokenize(QUESTIONS, PASSAGES)
    assert batch["attention_mask"].sum().item() == fid["attention_mask"].sum().item()  # the same token budget
    for b in range(len(QUESTIONS)):
        expected = torch.cat([fid["input_ids"][b, j][fid["attention_mask"][b, j].bool()] for j in range(3)])
        n = int(batch["attention_mask"][b].sum())
        assert batch["input_ids"][b, :n].tolist() == expected.tolist()
        assert not batch["attention_mask"][b, n:].any()
    assert rmt.rmt.segment_size == 16 and RMTReader(reader).rmt.segment_size == reader.text_maxlength


def test_without_memory_on_one_passage_it_is_the_fid_reader(tok):
    """M = 0 and one passage that fits one segment: the same encoder input, the same decoder -
    the loss and the generated answers equal FiD's exactly."""
    reader = tiny_reader(tok)
    rmt = RMTReader(reader, num_mem_tokens=0, segment_size=reader.text_maxlength)
    one = [ps[:1] for ps in PASSAGES]
    reader.eval()
    with torch.no_grad():
        assert torch.equal(rmt.loss(QUESTIONS, one, ANSWERS), reader.loss(QUESTIONS, one, ANSWERS))
    assert rmt.generate(QUESTIONS, one) == reader.generate(QUESTIONS, one)


def test_save_load_gives_identical_outputs(tok, tmp_path):
    torch.manual_seed(0)
    rmt = RMTReader(tiny_reader(tok), num_mem_tokens=3, segment_size=16, bptt_depth=2, seed=1)
    with torch.no_grad():
        rmt.rmt.memory.add_(torch.randn_like(rmt.rmt.memory))  # not the initial value
    rmt.eval()
    rmt.save_pretrained(tmp_path / "r")
    loaded = RMTReader.from_pretrained(tmp_path / "r")
    loaded.eval()
    assert loaded.settings() == rmt.settings() == {"num_mem_tokens": 3, "segment_size": 16, "bptt_depth": 2}
    with torch.no_grad():
        assert torch.equal(loaded.loss(QUESTIONS, PASSAGES, ANSWERS), rmt.loss(QUESTIONS, PASSAGES, ANSWERS))
    assert loaded.generate(QUESTIONS, PASSAGES) == rmt.generate(QUESTIONS, PASSAGES)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["reader", "rmt_memory.safetensors", "rmt_reader.json"]


def test_the_memory_changes_the_answer_distribution_and_reset_removes_it(tok):
    """With several segments the earlier passages reach the decoder only through the memory: the
    loss with the memory reset differs; with one segment, reset changes nothing."""
    rmt = RMTReader(tiny_reader(tok), num_mem_tokens=3, segment_size=16)
    rmt.eval()
    batch = rmt.tokenize(QUESTIONS, PASSAGES)
    labels = rmt.reader.tokenize_answers(ANSWERS)
    with torch.no_grad():
        kept = rmt.rmt(batch["input_ids"], batch["attention_mask"], labels=labels).loss
        reset = rmt.rmt(batch["input_ids"], batch["attention_mask"], labels=labels, reset_memory=True).loss
    assert rmt.rmt(batch["input_ids"], batch["attention_mask"]).segments.min() >= 3
    assert not torch.allclose(kept, reset)


def test_it_trains_through_the_fid_training_code(tok):
    """``train_reader_curriculum`` (gold passage alone, then top-k with the gold swapped in) takes
    an RMTReader as it takes a Reader (same arguments, same batches); the loss falls."""
    rmt = RMTReader(tiny_reader(tok), num_mem_tokens=2, segment_size=16)
    store = Passages.from_records([{"id": str(i), **p} for i, p in enumerate(PASSAGES[0])])
    retrieved = [[store.get(str(i)) for i in range(3)]] * 2
    gold = [store.get("0"), store.get("2")]
    losses = train_reader_curriculum(rmt, QUESTIONS, ANSWERS, gold, retrieved, steps=30, k=3,
                                     gold_only_fraction=0.3, batch_size=2, lr=3e-3, seed=0, show_progress=False)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert not rmt.training and rmt.rmt.memory.grad is not None  # the memory was trained too
