"""PDist - perplexity distillation (Atlas).

Target: the mean per-token log-likelihood of the answer when the reader sees only passage i
(``atlas_kit.reader_signals.passage_loglik``): passages that make the answer likely get retrieved.
"""
from __future__ import annotations

import torch

from atlas_kit.losses.kl import distillation_kl


def pdist_loss(retriever_scores: torch.Tensor, reader_scores: torch.Tensor,
               temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """KL(softmax(loglik / τg) ‖ softmax(s / τs)), batch mean."""
    return distillation_kl(retriever_scores, reader_scores, temperature_score, temperature_gold)
