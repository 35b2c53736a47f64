"""Reader signals against plain, independent FiD forwards (one example at a time, no label
padding), and the bookkeeping around them (modes, gradients, attention backend, validation)."""
from __future__ import annotations

import pytest
import torch

from atlas_kit.passages import Passage
from atlas_kit.reader import Reader
from atlas_kit.reader_signals import (SIGNALS, attention_scores, leave_one_out_nll, passage_logprob_sum,
                                      passage_loglik, reader_signal)
from atlas_kit.tokenization import train_word_tokenizer

WORDS = "question title context what is the capital of zorvania blim leader oska river sea lamps who and a much longer text about x y".split()


@pytest.fixture(scope="module")
def setup():
    tok = train_word_tokenizer([" ".join(WORDS)])
    reader = Reader.from_config(tok, d_model=32, num_layers=2, num_heads=2, dropout=0.1, seed=0, text_maxlength=24)
    qs = ["what is the capital of zorvania", "who is the leader"]
    ps = [
        [Passage("a", "zorvania", "the capital is blim"), Passage("b", "x", "river sea"),
         Passage("c", "y", "lamps and a much longer text about the sea river")],
        [Passage("d", "oska", "the leader is oska"), Passage("e", "y", "lamps"), Passage("f", "x", "blim")],
    ]
    # answers of different lengths, so the label batch has -100 padding
    return reader, qs, ps, ["blim", "oska river sea"]


def mean_nll_alone(reader, question, passages, answer):
    """T5's own mean token cross-entropy for ONE example (no label padding), via a plain FiD forward."""
    return reader.loss([question], [passages], [answer]).item()


def n_answer_tokens(reader, answer):
    return int((reader.tokenize_answers([answer]) != -100).sum())


def test_loop_one_pass_equals_k_separate_forwards(setup):
    reader, qs, ps, ans = setup
    got = leave_one_out_nll(reader, qs, ps, ans)
    assert got.shape == (2, 3) and got.dtype == torch.float32
    reader.eval()
    with torch.no_grad():
        for b in range(2):
            for i in range(3):
                without_i = [p for j, p in enumerate(ps[b]) if j != i]
                assert got[b, i].item() == pytest.approx(mean_nll_alone(reader, qs[b], without_i, ans[b]), abs=1e-5)


def test_pdist_and_emdr2_equal_single_passage_forwards(setup):
    reader, qs, ps, ans = setup
    ll, lp = passage_loglik(reader, qs, ps, ans), passage_logprob_sum(reader, qs, ps, ans)
    assert ll.shape == lp.shape == (2, 3)
    reader.eval()
    with torch.no_grad():
        for b in range(2):
            n = n_answer_tokens(reader, ans[b])
            for i in range(3):
                nll = mean_nll_alone(reader, qs[b], [ps[b][i]], ans[b])
                assert ll[b, i].item() == pytest.approx(-nll, abs=1e-5)
                assert lp[b, i].item() == pytest.approx(-nll * n, abs=1e-4)
    assert (ll <= 0).all() and (lp <= ll).all()  # log-probs; the sum over >= 1 tokens is below the mean


def test_attention_scores_total_mass(setup):
    reader, qs, ps, ans = setup
    att = attention_scores(reader, qs, ps, ans)
    assert att.shape == (2, 3) and (att >= 0).all()
    layers, heads = reader.model.config.num_decoder_layers, reader.model.config.num_heads
    # every real answer token spreads mass 1 per head and layer over the non-padding encoder positions;
    # padded answer positions must not count (the two answers have different lengths)
    expected = torch.tensor([n_answer_tokens(reader, a) * layers * heads for a in ans], dtype=torch.float32)
    assert torch.allclose(att.sum(-1), expected, rtol=1e-4)
    normalized = attention_scores(reader, qs, ps, ans, normalize=True)
    assert torch.allclose(normalized, att / expected[:, None], rtol=1e-5)
    assert torch.allclose(normalized.sum(-1), torch.ones(2), atol=1e-5)


def test_attention_first_token_and_value_norm_variants(setup):
    reader, qs, ps, ans = setup
    layers, heads = reader.model.config.num_decoder_layers, reader.model.config.num_heads
    first = attention_scores(reader, qs, ps, ans, tokens="first")
    assert torch.allclose(first.sum(-1), torch.full((2,), float(layers * heads)), rtol=1e-4)  # one token's mass
    assert (first <= attention_scores(reader, qs, ps, ans) + 1e-5).all()
    # α·‖v‖ by hand: values projected from the encoder output directly (no hooks), weights from the forward
    weighted = attention_scores(reader, qs, ps, ans, value_norms=True)
    was_training = reader.model.training
    reader.eval()
    with torch.no_grad():
        batch = reader.tokenize(qs, ps)
        labels = reader.tokenize_answers(ans)
        out = reader(batch["input_ids"], batch["attention_mask"], labels=labels, output_attentions=True, use_cache=False)
        hidden, _ = reader.encode(batch["input_ids"], batch["attention_mask"])
        b, k, length = batch["input_ids"].shape
        real = (labels != -100).float()
        context = batch["attention_mask"].view(b, k * length).float()
        expected = torch.zeros(b, k)
        for block, att in zip(reader.model.decoder.block, out.cross_attentions):
            v = block.layer[1].EncDecAttention.v(hidden).view(b, k * length, heads, -1).norm(dim=-1)  # [b, n, h]
            mass = torch.einsum("bhtn,bnh,bt->bn", att.float(), v, real) * context
            expected += mass.view(b, k, length).sum(-1)
    reader.train(was_training)
    assert torch.allclose(weighted, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="tokens"):
        attention_scores(reader, qs, ps, ans, tokens="last")


def test_attention_scores_do_not_depend_on_the_other_examples_padding(setup):
    reader, qs, ps, ans = setup
    together = attention_scores(reader, qs, ps, ans)
    for b in range(2):
        alone = attention_scores(reader, [qs[b]], [ps[b]], [ans[b]])
        assert torch.allclose(together[b], alone[0], rtol=1e-4, atol=1e-5)


def test_attention_scores_restore_the_attention_backend(setup):
    reader, qs, ps, ans = setup
    before = reader.model.config._attn_implementation
    attention_scores(reader, qs, ps, ans)
    assert reader.model.config._attn_implementation == before


@pytest.mark.parametrize("name", sorted(SIGNALS))
@pytest.mark.parametrize("training", [True, False])
def test_signals_restore_mode_have_no_grad_and_are_deterministic(setup, name, training):
    reader, qs, ps, ans = setup
    reader.train(training)
    first = reader_signal(name, reader, qs, ps, ans)
    second = SIGNALS[name](reader, qs, ps, ans)
    assert reader.training is training
    assert first.shape == (2, 3) and not first.requires_grad and torch.isfinite(first).all()
    assert torch.equal(first, second)  # eval mode: dropout off despite dropout=0.1
    assert all(p.grad is None for p in reader.parameters())


def test_dispatch_and_validation(setup):
    reader, qs, ps, ans = setup
    assert reader_signal("none", reader, qs, ps, ans) is None
    with pytest.raises(ValueError, match="unknown retriever loss 'nope'"):
        reader_signal("nope", reader, qs, ps, ans)
    with pytest.raises(ValueError, match="answers"):
        passage_loglik(reader, qs, ps, ans[:1])
    with pytest.raises(ValueError, match="k = 0"):
        leave_one_out_nll(reader, qs, [[], []], ans)
    with pytest.raises(ValueError, match="same k"):
        attention_scores(reader, qs, [ps[0], ps[1][:2]], ans)


def test_signals_feed_the_losses(setup):
    """End to end: reader signal -> retriever loss -> gradient on retriever scores only."""
    from atlas_kit.losses import retriever_loss

    reader, qs, ps, ans = setup
    for name in SIGNALS:
        s = torch.zeros(2, 3, requires_grad=True)
        loss = retriever_loss(name, s, reader_signal(name, reader, qs, ps, ans), 0.1, 0.1)
        loss.backward()
        assert torch.isfinite(loss) and s.grad is not None
        assert all(p.grad is None for p in reader.parameters())
