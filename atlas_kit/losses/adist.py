"""ADist - attention distillation (Izacard & Grave, "Distilling Knowledge from Reader to Retriever").

Target: the reader's cross-attention mass on each passage, summed over layers, heads, answer
tokens and the passage's tokens (``atlas_kit.reader_signals.attention_scores``; Atlas's
value-norm and first-token variants through ``TrainConfig.signal_options``).

The target is only as good as the reader's own choice of passage: attention points at what the
reader finds, so a reader that cannot tell two candidates apart gives them chance-level targets
(``eval/learning.py``'s signal probe measures this).
"""
from __future__ import annotations

import torch

from atlas_kit.losses.kl import distillation_kl


def adist_loss(retriever_scores: torch.Tensor, reader_scores: torch.Tensor,
               temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """KL(softmax(attention / τg) ‖ softmax(s / τs)), batch mean."""
    return distillation_kl(retriever_scores, reader_scores, temperature_score, temperature_gold)
