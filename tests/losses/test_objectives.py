"""Each objective against a direct hand computation, gradient flow, and limiting cases."""
from __future__ import annotations

import math

import pytest
import torch

from atlas_kit.losses import LOSSES, retriever_loss


def softmax(xs, t):
    m = max(x / t for x in xs)
    e = [math.exp(x / t - m) for x in xs]
    return [v / sum(e) for v in e]


def hand_kl(s, g, ts, tg):
    total = 0.0
    for sb, gb in zip(s, g):
        p, q = softmax(gb, tg), softmax(sb, ts)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    return total / len(s)


def hand_emdr2(s, g, ts):
    total = 0.0
    for sb, gb in zip(s, g):
        q = softmax(sb, ts)
        total += -math.log(sum(qi * math.exp(gi) for qi, gi in zip(q, gb)))
    return total / len(s)


@pytest.fixture
def scores():
    torch.manual_seed(0)
    return torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64) - 2.0


@pytest.mark.parametrize("name", ["adist", "pdist", "loop"])
@pytest.mark.parametrize("ts,tg", [(0.01, 0.01), (1.0, 0.5), (0.1, 2.0)])
def test_kl_objectives_match_hand_computation(scores, name, ts, tg):
    s, g = scores
    got = retriever_loss(name, s, g, temperature_score=ts, temperature_gold=tg)
    assert got.item() == pytest.approx(hand_kl(s.tolist(), g.tolist(), ts, tg), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("ts", [0.01, 1.0, 3.0])
def test_emdr2_matches_hand_computation(scores, ts):
    s, g = scores
    got = retriever_loss("emdr2", s, g, temperature_score=ts)
    assert got.item() == pytest.approx(hand_emdr2(s.tolist(), g.tolist(), ts), rel=1e-5)


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradient_flows_into_retriever_scores_only(scores, name):
    s, g = scores
    s = s.clone().requires_grad_(True)
    g = g.clone().requires_grad_(True)
    retriever_loss(name, s, g, temperature_score=1.0, temperature_gold=1.0).backward()
    assert g.grad is None
    if name == "none":
        assert torch.count_nonzero(s.grad) == 0
    else:
        assert s.grad is not None and torch.count_nonzero(s.grad) > 0


@pytest.mark.parametrize("name", ["adist", "pdist", "loop", "emdr2"])
def test_one_hot_target_is_minimised_by_ranking_that_passage_first(name):
    target = torch.full((1, 4), -5.0)
    target[0, 2] = 0.0  # the reader strongly prefers passage 2
    right = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    wrong = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    kw = dict(temperature_score=0.5, temperature_gold=0.5)
    assert retriever_loss(name, right, target, **kw) < retriever_loss(name, wrong, target, **kw)
    s = torch.zeros(1, 4, requires_grad=True)
    opt = torch.optim.SGD([s], lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        retriever_loss(name, s, target, **kw).backward()
        opt.step()
    assert s.argmax().item() == 2


def test_lower_temperature_sharpens_the_target():
    s = torch.zeros(1, 3)
    g = torch.tensor([[0.0, 0.1, 0.2]])
    assert retriever_loss("pdist", s, g, temperature_gold=0.01) > retriever_loss("pdist", s, g, temperature_gold=1.0)


def test_errors():
    with pytest.raises(ValueError, match="unknown retriever loss 'kl'"):
        retriever_loss("kl", torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"\[batch, k\]"):
        retriever_loss("pdist", torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="needs reader_scores"):
        retriever_loss("emdr2", torch.zeros(1, 2), None)
    assert retriever_loss("none", torch.zeros(2, 2), None).item() == 0.0
