"""Supervised retriever training from passage labels: the upper bound the reader-signal objectives
are measured against, and what a user with labelled passages (DPR-style data) trains with.

``reader_scores[b, i]`` here is not a reader verdict but a 0/1 indicator: passage i is one of the
question's gold passages (:meth:`atlas_kit.train.Trainer` builds it from ``QAExample.gold_ids``).
Loss = −mean over questions with at least one gold passage retrieved of log Σ_{i gold}
softmax(s/τs)[b, i] (cross-entropy with every gold passage counted as right). Questions whose gold
passage was not retrieved carry no label among the k candidates and are left out of the mean.
"""
from __future__ import annotations

import torch

from atlas_kit.losses.kl import check_inputs, prepare

__all__ = ["gold_loss"]


def gold_loss(retriever_scores: torch.Tensor, reader_scores: torch.Tensor,
              temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """Cross-entropy of the gold passages under softmax(s / τs); ``temperature_gold`` is ignored."""
    del temperature_gold
    check_inputs(retriever_scores, reader_scores, temperature_score)
    s, g = prepare(retriever_scores, reader_scores)
    is_gold = g > 0.5
    has_gold = is_gold.any(dim=-1)
    log_p = torch.nn.functional.log_softmax(s / temperature_score, dim=-1)
    per_question = -torch.logsumexp(log_p.masked_fill(~is_gold, float("-inf")), dim=-1)
    if not bool(has_gold.any()):
        return s.sum() * 0.0  # no label in this batch: a zero that keeps the graph
    return per_question[has_gold].mean()
