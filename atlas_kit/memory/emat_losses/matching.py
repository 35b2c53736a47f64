"""Matching loss (EMAT fine-tuning): the query must score a weakly labelled positive slot (one whose
answer matches the gold answer) above hard negatives (highly ranked slots whose answer does not)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def matching_loss(query: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax cross-entropy over inner products, the positive in column 0.

    Args:
        query: [B, d] search vectors from the forward pass (with gradient).
        candidates: [B, 1 + n, d] search keys of the positive (column 0) and n negatives, re-encoded
            with gradient.
        mask: [B, 1 + n], False for padding negatives (EMAT's ``negative_mask``).

    EMAT pools every example's positives and negatives into one candidate set for the whole batch;
    here each question is scored against its own positive and its own hard negatives, so a batch
    with two questions sharing an answer never counts the other's positive as a negative.
    """
    if query.dim() != 2 or candidates.dim() != 3 or candidates.shape[0] != query.shape[0]:
        raise ValueError(f"query must be [B, d] and candidates [B, 1 + n, d]; got {tuple(query.shape)} and "
                         f"{tuple(candidates.shape)}")
    scores = torch.einsum("bd,bnd->bn", query.float(), candidates.float())
    if mask is not None:
        scores = scores.masked_fill(~mask.to(scores.device).bool(), float("-inf"))
    target = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores, target)
