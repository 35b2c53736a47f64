"""EMDR² - end-to-end training of multi-document reader and retriever (Sachan et al., 2021).

Treats the retrieved passage as a latent variable and maximises the marginal likelihood
log Σ_i p_retr(i | q) · p_reader(a | q, i), with the reader term held fixed.
``reader_scores[b, i]`` = log p(answer | question, passage i), summed over answer tokens
(:func:`atlas_kit.reader_signals.passage_logprob_sum`).

Atlas marginalises per answer token (a sum over tokens of per-token mixtures); this is the
sequence-level form of the EMDR² paper, which the reader signal above provides.
"""
from __future__ import annotations

import torch

from atlas_kit.losses.kl import check_inputs, prepare

__all__ = ["emdr2_loss"]


def emdr2_loss(retriever_scores: torch.Tensor, reader_scores: torch.Tensor,
               temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """−mean_b log Σ_i softmax(s / τs)[b, i] · exp(reader_scores[b, i]), computed as
    −mean_b logsumexp_i(log_softmax(s / τs)[b, i] + reader_scores[b, i]) so that very negative
    sequence log-likelihoods do not underflow.

    ``temperature_gold`` is accepted for a uniform signature and ignored: the reader term is a
    probability, not a target distribution to sharpen.
    """
    del temperature_gold
    check_inputs(retriever_scores, reader_scores, temperature_score)
    s, g = prepare(retriever_scores, reader_scores)
    log_prior = torch.nn.functional.log_softmax(s / temperature_score, dim=-1)
    return -torch.logsumexp(log_prior + g, dim=-1).mean()
