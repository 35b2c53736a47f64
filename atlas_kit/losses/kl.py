"""The distillation divergence shared by ADist, PDist and LOOP (they differ in the target)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def check_shapes(retriever_scores: torch.Tensor, reader_scores: torch.Tensor) -> None:
    if retriever_scores.dim() != 2 or retriever_scores.shape != reader_scores.shape:
        raise ValueError(
            f"retriever_scores and reader_scores must both be [batch, k]; got {tuple(retriever_scores.shape)} "
            f"and {tuple(reader_scores.shape)}"
        )


def distillation_kl(retriever_scores: torch.Tensor, reader_scores: torch.Tensor,
                    temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """KL(softmax(reader / τg) ‖ softmax(retriever / τs)), averaged over the batch.

    Atlas calls ``KLDivLoss()`` with reduction 'mean', i.e. divides by batch x k; we divide by the
    batch only ('batchmean', the true KL per question), so Atlas's values are ours / k. The target is
    detached: the reader teaches the retriever, never the other way round.
    """
    check_shapes(retriever_scores, reader_scores)
    target = F.softmax(reader_scores.detach().float() / temperature_gold, dim=-1)
    log_pred = F.log_softmax(retriever_scores.float() / temperature_score, dim=-1)
    return F.kl_div(log_pred, target, reduction="batchmean")
