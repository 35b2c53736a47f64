"""Retriever objectives: how the reader's signal teaches the retriever, one function per file.

Every objective has the signature ``f(retriever_scores, reader_scores, temperature_score=0.01,
temperature_gold=0.01) -> scalar tensor`` and is selectable by name through :func:`retriever_loss`.

* ``retriever_scores`` [batch, k]: query·passage inner products of the k retrieved passages, with
  gradient. **The caller divides them by sqrt(dim) first**, as Atlas does (the trainer does); the
  objectives then divide by ``temperature_score`` τs.
* ``reader_scores`` [batch, k]: the reader's verdict on each passage, computed by
  :mod:`atlas_kit.reader_signals` under ``torch.no_grad()``; the objectives detach them again, so
  no gradient ever reaches the reader through them.

========  =====================================================  ==========================================
name      reader_scores[b, i]                                    loss
========  =====================================================  ==========================================
adist     cross-attention mass on passage i                      KL(softmax(g/τg) ‖ softmax(s/τs)), batch mean
pdist     mean per-token log-lik of the answer, passage i alone  same KL
loop      mean per-token NLL of the answer without passage i     same KL
emdr2     log p(answer | q, passage i), summed over tokens       −mean_b log Σ_i softmax(s/τs)_i · exp(g_i)
none      (unused, may be None)                                  0 (retriever frozen)
gold      1 if passage i is a labelled gold passage, else 0     −mean_b log Σ_{i gold} softmax(s/τs)_i
========  =====================================================  ==========================================

Defaults τs = τg = 0.01 as in Atlas (its MMLU recipes use 0.1). The KL is averaged over the batch
('batchmean'); Atlas's ``nn.KLDivLoss()`` averages over batch x k, i.e. its values are ours / k
(what that changes, and what it does not, is in :func:`atlas_kit.losses.kl.distillation_kl`).
"""
from __future__ import annotations

from typing import Callable

import torch

from atlas_kit.losses.adist import adist_loss
from atlas_kit.losses.emdr2 import emdr2_loss
from atlas_kit.losses.gold import gold_loss
from atlas_kit.losses.kl import check_inputs, distillation_kl
from atlas_kit.losses.loop import loop_loss
from atlas_kit.losses.none import none_loss
from atlas_kit.losses.pdist import pdist_loss

__all__ = ["retriever_loss", "LOSSES", "adist_loss", "emdr2_loss", "pdist_loss", "loop_loss", "none_loss", "gold_loss",
           "distillation_kl"]

LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "adist": adist_loss,
    "emdr2": emdr2_loss,
    "pdist": pdist_loss,
    "loop": loop_loss,
    "none": none_loss,
    "gold": gold_loss,
}


def retriever_loss(name: str, retriever_scores: torch.Tensor, reader_scores: torch.Tensor | None,
                   temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """The named objective (``adist``, ``emdr2``, ``pdist``, ``loop``, ``gold`` or ``none``) as a scalar.

    Raises ``ValueError`` for an unknown name (listing the known ones), for scores that are not
    both [batch, k] (or empty), for non-positive temperatures, and when an objective other than
    ``none`` gets no ``reader_scores``.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown retriever loss {name!r} (known: {', '.join(LOSSES)})")
    if name == "none":
        return none_loss(retriever_scores, reader_scores)
    if reader_scores is None:
        raise ValueError(f"retriever loss {name!r} needs reader_scores (see atlas_kit.reader_signals)")
    check_inputs(retriever_scores, reader_scores, temperature_score, temperature_gold)
    return LOSSES[name](retriever_scores, reader_scores, temperature_score=temperature_score,
                        temperature_gold=temperature_gold)
