"""LOOP - leave-one-out perplexity distillation (Atlas).

Target: the mean per-token negative log-likelihood of the answer when the reader sees every passage
except i (``atlas_kit.reader_signals.leave_one_out_nll``, one encoder pass with passage i masked
out of the cross-attention): the passage whose removal hurts most gets the highest target.
"""
from __future__ import annotations

import torch

from atlas_kit.losses.kl import distillation_kl


def loop_loss(retriever_scores: torch.Tensor, reader_scores: torch.Tensor,
              temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """KL(softmax(leave-one-out NLL / τg) ‖ softmax(s / τs)), batch mean."""
    return distillation_kl(retriever_scores, reader_scores, temperature_score, temperature_gold)
