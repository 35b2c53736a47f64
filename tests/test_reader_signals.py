from __future__ import annotations

import pytest
import torch

from atlas_kit.passages import Passage
from atlas_kit.reader import Reader
from atlas_kit.reader_signals import (attention_scores, leave_one_out_nll, passage_logprob_sum, passage_loglik,
                                      reader_signal)
from atlas_kit.tokenization import train_word_tokenizer

WORDS = "question title context what is the capital of zorvania blim leader oska river sea lamps".split()


@pytest.fixture(scope="module")
def setup():
    tok = train_word_tokenizer([" ".join(WORDS)])
    reader = Reader.from_config(tok, d_model=32, num_layers=2, num_heads=2, dropout=0.1, seed=0, text_maxlength=24)
    qs = ["what is the capital of zorvania", "who is the leader"]
    ps = [[Passage("a", "zorvania", "the capital is blim"), Passage("b", "x", "river sea"),
           Passage("c", "y", "lamps and a much longer text about the sea river")]] * 2
    return reader, qs, ps, ["blim", "oska"]


def nll_of(reader, qs, ps, answers):
    batch = reader.tokenize(qs, ps)
    labels = reader.tokenize_answers(answers)
    logits = reader(batch["input_ids"], batch["attention_mask"], labels=labels).logits
    logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    m = labels != -100
    return (logp * m).sum(-1), m.sum(-1)


def test_loop_one_pass_equals_k_separate_forwards(setup):
    reader, qs, ps, ans = setup
    got = leave_one_out_nll(reader, qs, ps, ans)
    reader.eval()
    with torch.no_grad():
        for i in range(3):
            s, n = nll_of(reader, qs, [[p for j, p in enumerate(x) if j != i] for x in ps], ans)
            assert torch.allclose(got[:, i], -s / n, atol=1e-5)
    assert reader.training is False or True


def test_pdist_and_emdr2_equal_single_passage_forwards(setup):
    reader, qs, ps, ans = setup
    ll, lp = passage_loglik(reader, qs, ps, ans), passage_logprob_sum(reader, qs, ps, ans)
    reader.eval()
    with torch.no_grad():
        for i in range(3):
            s, n = nll_of(reader, qs, [[x[i]] for x in ps], ans)
            assert torch.allclose(ll[:, i], s / n, atol=1e-5)
            assert torch.allclose(lp[:, i], s, atol=1e-5)


def test_attention_scores_total_mass(setup):
    reader, qs, ps, ans = setup
    att = attention_scores(reader, qs, ps, ans)
    assert att.shape == (2, 3) and (att >= 0).all()
    labels = reader.tokenize_answers(ans)
    layers, heads = reader.model.config.num_decoder_layers, reader.model.config.num_heads
    # every real answer token spreads mass 1 per head and layer over the non-padding encoder positions
    expected = (labels != -100).sum(-1).float() * layers * heads
    assert torch.allclose(att.sum(-1), expected, rtol=1e-4)


def test_signals_restore_training_mode_and_dispatch(setup):
    reader, qs, ps, ans = setup
    reader.train()
    out = reader_signal("loop", reader, qs, ps, ans)
    assert reader.training and out.shape == (2, 3) and not out.requires_grad
    assert reader_signal("none", reader, qs, ps, ans) is None
    with pytest.raises(ValueError, match="unknown retriever loss"):
        reader_signal("nope", reader, qs, ps, ans)
