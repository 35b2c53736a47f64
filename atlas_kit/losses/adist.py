"""ADist - attention distillation (Izacard & Grave, "Distilling Knowledge from Reader to Retriever").

Target: Atlas's ``evalnormsum`` - the reader's cross-attention weights times the norms of the
values they read (α·‖v‖), averaged over heads, summed over layers, answer tokens and the passage's
tokens, divided by 256 x layers x answer tokens (``atlas_kit.reader_signals.attention_scores``;
Atlas's other aggregations, e.g. ``probssum`` or the FiD-KD-like ``scoresfirst``, through
``TrainConfig.signal_options={"aggregation": ...}``).

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
