"""Reader signals against plain, independent FiD forwards (one example at a time, no label
padding), and the bookkeeping around them (modes, gradients, attention backend, validation)."""
from __future__ import annotations

import pytest
import torch

from atlas_kit.passages import Passage
from atlas_kit.reader import Reader
from atlas_kit.reader_signals import (AGGREGATIONS, SIGNALS, attention_scores, leave_one_out_nll,
                                      passage_logprob_sum, passage_loglik, reader_signal)
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


def _atlas_forward(reader, qs, ps, ans):
    """What Atlas's ``cross_attention_forward`` stores, recomputed from the attention tensors the
    forward returns and values projected from the encoder output by hand (no hooks): per layer,
    the head-averaged α and α·‖v‖, [B, T, k*L]."""
    reader.eval()
    with torch.no_grad():
        batch = reader.tokenize(qs, ps)
        labels = reader.tokenize_answers(ans)
        out = reader(batch["input_ids"], batch["attention_mask"], labels=labels, output_attentions=True, use_cache=False)
        hidden, _ = reader.encode(batch["input_ids"], batch["attention_mask"])
        heads, d_kv = reader.model.config.num_heads, reader.model.config.d_kv
        b, n = hidden.shape[:2]
        probs, norms = [], []
        for block, att in zip(reader.model.decoder.block, out.cross_attentions):
            value_states = block.layer[1].EncDecAttention.v(hidden).view(b, n, heads, d_kv).transpose(1, 2)
            probs.append(att.double().mean(dim=1))
            norms.append((torch.norm(value_states.double(), dim=-1)[:, :, None] * att.double()).mean(dim=1))
    return batch, labels, torch.stack(probs), torch.stack(norms)


def _atlas_aggregate(scores, batch, labels):
    """Atlas's ``aggregate_value`` (src/fid.py) for the ``sum`` and ``first`` reductions, transcribed."""
    n_layers, bsz, n_tokens, _ = scores.size()
    n_passages = batch["input_ids"].shape[1]
    scores = scores.view(n_layers, bsz, n_tokens, n_passages, -1)
    mask = batch["attention_mask"].bool().view(bsz, n_passages, -1)
    scores = scores.masked_fill(~mask[None, :, None], 0.0)
    ntokens_sum = 256 * n_layers * (~(labels == -100)).sum(dim=[1])[:, None]
    ntokens_first = mask.sum(dim=[2]) * n_layers
    scores = scores.sum(dim=[0])
    scores = scores.masked_fill((labels == -100)[:, :, None, None], 0.0)
    return {"sum": scores.sum(dim=[1, 3]) / ntokens_sum, "first": scores[:, 0].sum(dim=[2]) / ntokens_first}


def _entropy(g, tau=0.01):
    p = torch.softmax(g.double() / tau, dim=-1)
    return -(p * p.clamp(min=1e-300).log()).sum(-1)


def test_adist_default_is_atlas_evalnormsum(setup):
    """The default target equals Atlas's ``evalnormsum`` computed the way Atlas computes it, in value
    and in the entropy of softmax(g / 0.01) (Atlas's τ_gold), to 1e-6."""
    reader, qs, ps, ans = setup
    got = attention_scores(reader, qs, ps, ans)
    assert got.shape == (2, 3) and (got >= 0).all()
    batch, labels, probs, norms = _atlas_forward(reader, qs, ps, ans)
    ref = _atlas_aggregate(norms, batch, labels)["sum"]
    assert torch.allclose(got.double(), ref, rtol=1e-6, atol=1e-9)
    assert torch.allclose(_entropy(got), _entropy(ref), atol=1e-6)
    assert (_entropy(ref) > 0.5).all()  # not one-hot at τ = 0.01 (the old default's target was)
    assert torch.allclose(got, reader_signal("adist", reader, qs, ps, ans), rtol=1e-6, atol=1e-9)


def test_adist_probability_aggregations_match_atlas(setup):
    reader, qs, ps, ans = setup
    batch, labels, probs, _ = _atlas_forward(reader, qs, ps, ans)
    ref = _atlas_aggregate(probs, batch, labels)
    probssum = attention_scores(reader, qs, ps, ans, aggregation="probssum")
    probsfirst = attention_scores(reader, qs, ps, ans, aggregation="probsfirst")
    assert torch.allclose(probssum.double(), ref["sum"], rtol=1e-6, atol=1e-9)
    assert torch.allclose(probsfirst.double(), ref["first"], rtol=1e-6, atol=1e-9)
    # every real answer token spreads mass 1 per layer over the non-padding encoder positions, and
    # padded answer positions do not count (the two answers have different lengths): sum = 1/256
    assert torch.allclose(probssum.sum(-1), torch.full((2,), 1 / 256), rtol=1e-5)
    layers = reader.model.config.num_decoder_layers
    tokens = batch["attention_mask"].sum(-1).float()  # [B, k]
    assert torch.allclose((probsfirst * tokens * layers).sum(-1), torch.full((2,), float(layers)), rtol=1e-5)
    avg = attention_scores(reader, qs, ps, ans, aggregation="probsavg")
    n_ans = torch.tensor([n_answer_tokens(reader, a) for a in ans], dtype=torch.float32)
    assert torch.allclose(avg * tokens, probssum * 256, rtol=1e-5)  # same sum, per-passage denominator
    assert n_ans.tolist() != [n_ans[0].item()] * 2


def test_adist_pre_softmax_scores_are_the_logits_of_the_attention(setup):
    """``scoresfirst`` (FiD-KD-like): pre-softmax q·k captured inside the forward. Per (layer, head)
    row, log α = score - logsumexp(row), so ours minus the same aggregation of log α is one constant
    per example (the rows' logsumexps), the same for every passage."""
    reader, qs, ps, ans = setup
    got = attention_scores(reader, qs, ps, ans, aggregation="scoresfirst").double()
    reader.eval()
    with torch.no_grad():
        batch = reader.tokenize(qs, ps)
        out = reader(batch["input_ids"], batch["attention_mask"], labels=reader.tokenize_answers(ans),
                     output_attentions=True, use_cache=False)
    b, k, length = batch["input_ids"].shape
    mask = batch["attention_mask"].bool().view(b, k, length)
    log_alpha = sum(a.double()[:, :, 0].clamp(min=1e-300).log().mean(dim=1) for a in out.cross_attentions)  # [B, N]
    log_alpha = log_alpha.view(b, k, length).masked_fill(~mask, 0.0).sum(-1) / (mask.sum(-1) * len(out.cross_attentions))
    diff = got - log_alpha
    assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-4)
    assert not torch.allclose(got, log_alpha, atol=1e-2)  # not the log-probabilities themselves


def test_adist_aggregation_names(setup):
    reader, qs, ps, ans = setup
    assert set(AGGREGATIONS) == {f"{s}{r}" for s in ("norms", "probs", "scores") for r in ("sum", "avg", "first")}
    with pytest.raises(ValueError, match="aggregation must be one of"):
        attention_scores(reader, qs, ps, ans, aggregation="normsum")


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
