"""Generation with retrieved slots: the answer's cross-entropy when the encoder reads the question
with the slots' keys prepended at the key layer and their values added at the value layer."""
from __future__ import annotations

from typing import Any, Sequence

import torch


def generation_loss(emat, questions: Sequence[str], answers: Sequence[str], slots: Any = None,
                    memory: Any = None, k: int = 0) -> tuple[torch.Tensor, Any]:
    """(mean token cross-entropy, the encoding - its ``query`` feeds :func:`matching_loss`).
    ``slots`` re-encoded with gradients (training), or ``memory`` + ``k`` (stored slots)."""
    return emat(list(questions), list(answers), memory=memory, k=k, slots=slots)
