"""Shared pieces of the retriever objectives: input checks and the distillation divergence that
ADist, PDist and LOOP share (they differ only in the target the reader provides)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_inputs", "check_shapes", "prepare", "distillation_kl"]


def check_shapes(retriever_scores: torch.Tensor, reader_scores: torch.Tensor) -> None:
    """Both must be [batch, k] with batch >= 1 and k >= 1, and of the same shape."""
    if not isinstance(retriever_scores, torch.Tensor) or not isinstance(reader_scores, torch.Tensor):
        raise TypeError("retriever_scores and reader_scores must be tensors")
    if retriever_scores.dim() != 2 or retriever_scores.shape != reader_scores.shape:
        raise ValueError(
            f"retriever_scores and reader_scores must both be [batch, k]; got {tuple(retriever_scores.shape)} "
            f"and {tuple(reader_scores.shape)}"
        )
    if retriever_scores.numel() == 0:
        raise ValueError(f"empty scores {tuple(retriever_scores.shape)}: need batch >= 1 and k >= 1 passages")


def check_inputs(retriever_scores: torch.Tensor, reader_scores: torch.Tensor,
                 temperature_score: float, temperature_gold: float | None = None) -> None:
    check_shapes(retriever_scores, reader_scores)
    for name, t in (("temperature_score", temperature_score), ("temperature_gold", temperature_gold)):
        if t is not None and not float(t) > 0:
            raise ValueError(f"{name} must be > 0, got {t!r}")


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 at least (low temperatures amplify half-precision rounding), float64 kept."""
    return torch.promote_types(t.dtype, torch.float32) if t.is_floating_point() else torch.float32


def prepare(retriever_scores: torch.Tensor, reader_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(retriever scores, DETACHED reader scores), same device, float32 or wider."""
    s = retriever_scores.to(_compute_dtype(retriever_scores))
    g = reader_scores.detach().to(device=s.device, dtype=s.dtype)
    return s, g


def distillation_kl(retriever_scores: torch.Tensor, reader_scores: torch.Tensor,
                    temperature_score: float = 0.01, temperature_gold: float = 0.01) -> torch.Tensor:
    """KL(softmax(reader / τg) ‖ softmax(retriever / τs)), averaged over the batch.

    Atlas calls ``nn.KLDivLoss()`` (reduction 'mean'), which divides the summed divergence by
    batch x k; here it is divided by the batch only ('batchmean', the true KL per question), so
    Atlas's value is ours / k and its retriever gradients are k times smaller. That is NOT a k
    times smaller learning rate: AdamW's update is invariant to a constant scale of one
    parameter group's gradients (up to its epsilon). Where the scale does act is gradient
    clipping: with Atlas's joint clipping (one norm over reader and retriever,
    ``TrainConfig.clip_groups="joint"``), a k times larger retriever gradient raises the joint
    norm and so shrinks the READER's step whenever clipping is active. ``clip_groups="separate"``
    clips each group on its own and removes that coupling. The target is detached: the reader
    teaches the retriever, never the other way round.
    """
    check_inputs(retriever_scores, reader_scores, temperature_score, temperature_gold)
    s, g = prepare(retriever_scores, reader_scores)
    target = F.softmax(g / temperature_gold, dim=-1)
    log_pred = F.log_softmax(s / temperature_score, dim=-1)
    return F.kl_div(log_pred, target, reduction="batchmean")
