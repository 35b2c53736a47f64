"""Retriever objectives: how the reader's signal teaches the retriever (one function per file).

``retriever_scores`` are query-passage inner products of the k retrieved passages, [batch, k],
which the caller divides by sqrt(dim) first as Atlas does; ``reader_scores`` are computed by
:mod:`atlas_kit.reader_signals` without gradient, [batch, k].
"""
from __future__ import annotations

from typing import Callable

import torch

from atlas_kit.losses.adist import adist_loss
from atlas_kit.losses.emdr2 import emdr2_loss
from atlas_kit.losses.kl import check_shapes, distillation_kl
from atlas_kit.losses.loop import loop_loss
from atlas_kit.losses.pdist import pdist_loss

__all__ = ["retriever_loss", "LOSSES", "adist_loss", "emdr2_loss", "pdist_loss", "loop_loss", "none_loss",
           "distillation_kl"]


def none_loss(retriever_scores: torch.Tensor, reader_scores: torch.Tensor | None = None,
              temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """Retriever frozen: a zero that keeps the graph valid."""
    return retriever_scores.sum() * 0.0


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "adist": adist_loss,
    "emdr2": emdr2_loss,
    "pdist": pdist_loss,
    "loop": loop_loss,
    "none": none_loss,
}


def retriever_loss(name: str, retriever_scores: torch.Tensor, reader_scores: torch.Tensor | None,
                   temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """The named objective (``adist``, ``emdr2``, ``pdist``, ``loop`` or ``none``), a scalar."""
    if name not in LOSSES:
        raise ValueError(f"unknown retriever loss {name!r} (known: {', '.join(LOSSES)})")
    if name != "none":
        if reader_scores is None:
            raise ValueError(f"retriever loss {name!r} needs reader_scores")
        check_shapes(retriever_scores, reader_scores)
    return LOSSES[name](retriever_scores, reader_scores, temperature_score=temperature_score,
                        temperature_gold=temperature_gold)
