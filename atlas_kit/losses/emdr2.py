"""EMDR² - end-to-end training of multi-document reader and retriever (Sachan et al., 2021).

Treats the retrieved passage as a latent variable: maximise log Σ_i p_retr(i | q) · p_reader(a | q, i).
``reader_scores[b, i]`` = log p(answer | question, passage i), summed over answer tokens
(``atlas_kit.reader_signals.passage_logprob_sum``), held fixed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from atlas_kit.losses.kl import check_shapes


def emdr2_loss(retriever_scores: torch.Tensor, reader_scores: torch.Tensor,
               temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """−mean_b log Σ_i softmax(s / τs)[b, i] · exp(reader_scores[b, i]), computed with logsumexp.

    ``temperature_gold`` is unused (the reader term is a probability, not a target distribution).
    """
    del temperature_gold
    check_shapes(retriever_scores, reader_scores)
    log_prior = F.log_softmax(retriever_scores.float() / temperature_score, dim=-1)
    return -torch.logsumexp(log_prior + reader_scores.detach().float(), dim=-1).mean()
