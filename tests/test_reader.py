"""Fusion-in-Decoder reader: tiny, seeded T5 models built from configs (no pretrained T5 offline)."""
from __future__ import annotations

import json

import pytest
import torch

from atlas_kit.passages import Passage
from atlas_kit.reader import CONFIG_NAME, Reader
from atlas_kit.tokenization import default_tokenizer, train_word_tokenizer

NAMES = ["zorvania", "brundle", "telmirok", "quessa", "ilvaro", "marrow", "pelloc", "dunsk"]
CAPITALS = ["blim", "varnhold", "oska", "trell", "kessar", "vune", "amrel", "tosk"]
QUESTIONS = [f"what is the capital of {n} ?" for n in NAMES]
GOLD = [{"title": n, "text": f"the capital of {n} is {c} ."} for n, c in zip(NAMES, CAPITALS)]
DISTRACT = [{"title": n, "text": f"{n} is a land of rivers and hills ."} for n in NAMES]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a 2-core machine shared with another
    busy process, OpenMP threads waiting for a core made a 10 ms training step take ~2 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def word_tok():
    texts = QUESTIONS + [f"{p['title']} {p['text']}" for p in GOLD + DISTRACT] + ["question : title : context :"]
    return train_word_tokenizer(texts)


def tiny_reader(tok, seed: int = 0, dropout: float = 0.0, **kw) -> Reader:
    return Reader.from_config(tok, d_model=32, num_layers=1, num_heads=2, d_ff=64, dropout=dropout, seed=seed, **kw)


def test_fid_with_one_passage_equals_plain_t5(word_tok):
    reader = tiny_reader(word_tok).eval()
    passages = [[GOLD[i]] for i in range(3)]
    batch = reader.tokenize(QUESTIONS[:3], passages)
    labels = reader.tokenize_answers(CAPITALS[:3])
    assert batch["input_ids"].shape[:2] == (3, 1)
    with torch.no_grad():
        fid = reader(batch["input_ids"], batch["attention_mask"], labels=labels)
        plain = reader.model(input_ids=batch["input_ids"][:, 0], attention_mask=batch["attention_mask"][:, 0], labels=labels)
    assert torch.allclose(fid.logits, plain.logits, atol=1e-5)
    assert abs(fid.loss.item() - plain.loss.item()) < 1e-5


def test_fid_decoder_sees_all_passages(word_tok):
    reader = tiny_reader(word_tok).eval()
    k = 4
    passages = [[GOLD[0], DISTRACT[1], {"title": "x", "text": "short"}, DISTRACT[3]]]
    batch = reader.tokenize(QUESTIONS[:1], passages)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[:2] == (1, k) and ids.shape == mask.shape
    assert (ids[mask == 0] == word_tok.pad_token_id).all() and (mask[0, 2] == 0).any()  # passage 2 is padded
    hidden, fused = reader.encode(ids, mask)
    length = ids.shape[-1]
    assert hidden.shape == (1, k * length, reader.model.config.d_model) and fused.shape == (1, k * length)
    assert torch.equal(fused, mask.view(1, -1))  # padding positions stay 0 after fusion

    labels = reader.tokenize_answers([CAPITALS[0]])
    with torch.no_grad():
        base = reader.loss(QUESTIONS[:1], passages, [CAPITALS[0]])
        changed = [list(passages[0])]
        changed[0][3] = {"title": "x", "text": "the capital of zorvania is vune ."}
        assert abs(reader.loss(QUESTIONS[:1], changed, [CAPITALS[0]]).item() - base.item()) > 1e-6

        # hiding passage 2 from cross-attention (one encoder pass) == running without it
        hidden_mask = reader(labels=labels, encoded=(hidden, fused), passage_mask=torch.tensor([[1, 1, 0, 1]])).loss
        without = [[GOLD[0], DISTRACT[1], DISTRACT[3]]]
        b2 = reader.tokenize(QUESTIONS[:1], without)
        assert b2["input_ids"].shape[-1] == length
        assert abs(hidden_mask.item() - reader(b2["input_ids"], b2["attention_mask"], labels=labels).loss.item()) < 1e-5

        # cross-attention weights span all k passages (what attention-distillation scores need)
        out = reader(ids, mask, labels=labels, output_attentions=True)
    assert len(out.cross_attentions) == reader.model.config.num_decoder_layers
    assert out.cross_attentions[0].shape == (1, 2, labels.shape[1], k * length)
    assert torch.allclose(out.logits, reader(ids, mask, labels=labels).logits.detach(), atol=1e-5)


def test_overfit_tiny_set_then_generate(word_tok):
    torch.manual_seed(0)
    reader = Reader.from_config(word_tok, d_model=64, num_layers=2, num_heads=4, dropout=0.0, seed=0)
    passages = [[GOLD[i], DISTRACT[(i + 1) % 8]] for i in range(8)]
    opt = torch.optim.AdamW(reader.parameters(), lr=3e-3)
    reader.train()
    batch = reader.tokenize(QUESTIONS, passages)
    labels = reader.tokenize_answers(CAPITALS)
    losses = []
    for _ in range(100):
        loss = reader(batch["input_ids"], batch["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
    answers = reader.generate(QUESTIONS, passages, batch_size=3)
    assert reader.training  # generate restores the training mode
    assert sum(a == c for a, c in zip(answers, CAPITALS)) >= 6, answers
    beams = reader.generate(QUESTIONS, passages, num_beams=2)
    assert sum(a == c for a, c in zip(beams, CAPITALS)) >= 6, beams


def test_save_and_load_round_trip(word_tok, tmp_path):
    reader = tiny_reader(word_tok, seed=3, template="q: {question} t: {title} c: {text}", text_maxlength=48, answer_maxlength=6)
    folder = tmp_path / "reader"
    reader.save_pretrained(folder)
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names and CONFIG_NAME in names and not any(n.endswith(".bin") for n in names)
    assert not [p for p in tmp_path.iterdir() if p.name != "reader"]  # no temporary folder left behind
    assert json.loads((folder / CONFIG_NAME).read_text()) == reader.settings()

    again = Reader.from_pretrained(folder)
    assert (again.template, again.text_maxlength, again.answer_maxlength) == ("q: {question} t: {title} c: {text}", 48, 6)
    sd, sd2 = reader.state_dict(), again.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[n], sd2[n]) for n in sd)
    passages = [[GOLD[i], DISTRACT[i]] for i in range(4)]
    assert again.generate(QUESTIONS[:4], passages) == reader.generate(QUESTIONS[:4], passages)
    assert Reader.from_pretrained(folder, answer_maxlength=3).answer_maxlength == 3

    reader.save_pretrained(folder)  # overwriting a published checkpoint is fine
    assert Reader.from_pretrained(folder).settings() == reader.settings()


def test_from_config_with_bert_tokenizer_learns_to_stop():
    tok = default_tokenizer()
    reader = Reader.from_config(d_model=32, num_layers=1, num_heads=2, d_ff=64, dropout=0.0, answer_maxlength=8)
    cfg = reader.model.config
    assert cfg.vocab_size == len(tok) and cfg.eos_token_id == tok.sep_token_id
    assert cfg.pad_token_id == cfg.decoder_start_token_id == tok.pad_token_id
    out = reader.generate(["who wrote the iliad?"], [[Passage("h", "Homer", "Homer wrote the Iliad.")]], max_length=4)
    assert isinstance(out[0], str)
    labels = reader.tokenize_answers(["homer"])
    assert labels[0, -1].item() == tok.sep_token_id and tok.cls_token_id not in labels[0].tolist()

    # once it has learned the answer, generation stops at [SEP] instead of running to max_length
    opt = torch.optim.AdamW(reader.parameters(), lr=1e-2)
    for _ in range(30):
        loss = reader.loss(["who wrote the iliad?"], [[]], ["homer"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert reader.generate(["who wrote the iliad?"], [[]]) == ["homer"]


def test_mismatched_k_raises_and_zero_passages_work(word_tok):
    reader = tiny_reader(word_tok)
    with pytest.raises(ValueError, match="question 2 has 1 passages but question 0 has 2"):
        reader.tokenize(QUESTIONS[:3], [[GOLD[0], GOLD[1]], [GOLD[1], GOLD[2]], [GOLD[2]]])
    with pytest.raises(ValueError, match="passage lists"):
        reader.tokenize(QUESTIONS[:2], [[GOLD[0]]])
    assert reader.format_inputs("q", []) == ["question: q title:  context: "]
    batch = reader.tokenize(QUESTIONS[:2], [[], []])
    assert batch["input_ids"].shape[:2] == (2, 1)
    assert reader.loss(QUESTIONS[:2], [[], []], CAPITALS[:2]).item() > 0
    assert len(reader.generate(QUESTIONS[:2], [[], []], max_length=3)) == 2
    assert reader.generate([], []) == []


def test_passage_kinds_truncation_and_labels(word_tok):
    reader = tiny_reader(word_tok, text_maxlength=10, answer_maxlength=3)
    hit = Passage("p0", "zorvania", "the capital of zorvania is blim .")
    as_dict = {"title": "zorvania", "text": "the capital of zorvania is blim ."}
    assert reader.format_inputs("q", [hit]) == reader.format_inputs("q", [as_dict])
    assert reader.format_inputs("q", ["bare text"]) == ["question: q title:  context: bare text"]
    batch = reader.tokenize(QUESTIONS[:2], [[hit, GOLD[1]], [GOLD[2], GOLD[3]]])
    assert batch["input_ids"].shape == (2, 2, 10)
    assert (batch["input_ids"][..., -1] == word_tok.eos_token_id).all()  # truncated inputs keep their eos
    labels = reader.tokenize_answers(["blim", "the capital of zorvania"])
    assert labels.shape == (2, 3)
    assert labels[0].tolist() == [word_tok.convert_tokens_to_ids("blim"), 1, -100]
    assert labels[1, -1].item() == 1  # truncated answers still end with eos


def test_gradient_checkpointing_passthrough(word_tok):
    reader = tiny_reader(word_tok)
    passages = [[GOLD[0], DISTRACT[0]]]
    reader.eval()
    with torch.no_grad():
        ref = reader.loss(QUESTIONS[:1], passages, CAPITALS[:1]).item()
    reader.train()
    reader.gradient_checkpointing_enable()
    assert reader.model.is_gradient_checkpointing
    loss = reader.loss(QUESTIONS[:1], passages, CAPITALS[:1])
    loss.backward()
    assert abs(loss.item() - ref) < 1e-5  # dropout is 0: same numbers, less memory
    assert reader.model.shared.weight.grad is not None
    reader.gradient_checkpointing_disable()
    assert not reader.model.is_gradient_checkpointing


def test_a_decoder_deeper_than_the_encoder_generates(word_tok):
    """generate's own cache is sized by the ENCODER depth (num_hidden_layers maps to num_layers);
    a deeper decoder used to raise IndexError there. Greedy generation must equal greedy decoding
    by full forwards."""
    reader = Reader.from_config(word_tok, d_model=32, num_layers=1, num_decoder_layers=3, num_heads=2, seed=1,
                                answer_maxlength=5).eval()
    assert reader.model.config.num_decoder_layers == 3
    got = reader.generate(QUESTIONS[:2], [[GOLD[0]], [GOLD[1]]], max_length=4)
    batch = reader.tokenize(QUESTIONS[:2], [[GOLD[0]], [GOLD[1]]])
    with torch.no_grad():
        encoded = reader.encode(batch["input_ids"], batch["attention_mask"])
        ids = torch.full((2, 1), reader.model.config.decoder_start_token_id)
        for _ in range(4):
            logits = reader(encoded=encoded, decoder_input_ids=ids, use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    manual = []
    for row in ids[:, 1:].tolist():  # generation stops at eos; drop what follows it
        eos = reader.eos_token_id
        manual.append(reader.tokenizer.decode(row[: row.index(eos)] if eos in row else row, skip_special_tokens=True).strip())
    assert got == manual
    assert len(reader.generate(QUESTIONS[:1], [[GOLD[0]]], max_length=3, num_beams=2)) == 1


def test_score_is_the_one_scoring_call(word_tok):
    """Reader.score: log p(target | question, passages) from one encoder pass, broadcast targets,
    passage masks and the three reductions, against plain T5 losses of single examples."""
    reader = tiny_reader(word_tok).eval()
    qs, ps = QUESTIONS[:2], [[GOLD[0], GOLD[1]], [GOLD[1], GOLD[2]]]
    with torch.no_grad():
        total = reader.score(CAPITALS[:2], qs, ps)
        mean = reader.score(CAPITALS[:2], qs, ps, reduction="mean")
        tok, mask = reader.score(CAPITALS[:2], qs, ps, reduction="none")
        for b in range(2):  # T5's mean token cross-entropy of the example alone
            assert -mean[b].item() == pytest.approx(reader.loss(qs[b:b + 1], ps[b:b + 1], CAPITALS[b:b + 1]).item(), abs=1e-5)
        assert torch.allclose(total, tok.sum(-1)) and torch.allclose(mean * mask.sum(-1), total)
        batch = reader.tokenize(qs, ps)
        encoded = reader.encode(batch["input_ids"], batch["attention_mask"])
        assert torch.allclose(reader.score(CAPITALS[:2], encoded=encoded), total, atol=1e-6)
        one = reader.tokenize_answers(CAPITALS[:1])  # one target row for every example
        assert torch.allclose(reader.score(one, encoded=encoded), reader.score([CAPITALS[0]] * 2, qs, ps), atol=1e-6)
        hide_second = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        alone = reader.score(CAPITALS[:2], qs, [[GOLD[0]], [GOLD[1]]])
        assert torch.allclose(reader.score(CAPITALS[:2], encoded=encoded, passage_mask=hide_second), alone, atol=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        reader.score(CAPITALS[:2], qs, ps, reduction="max")
    with pytest.raises(ValueError, match="questions and passages"):
        reader.score(CAPITALS[:2])
