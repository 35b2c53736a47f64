"""Key auto-encoding (EMAT pre-training): the decoder reconstructs a question from its key tokens
alone, so a key keeps what identifies its question (entity, relation) rather than collapsing."""
from __future__ import annotations

from typing import Sequence

import torch


def key_autoencoding_loss(emat, questions: Sequence[str], targets: Sequence[str] | None = None) -> torch.Tensor:
    """Mean token cross-entropy of ``targets`` (default: the questions themselves, EMAT's
    ``key_ae_target="question"``) decoded from the layer-normalised key tokens of ``questions``."""
    _, raw = emat.embed_keys(list(questions))
    return emat.decode_loss(emat.normed_key_tokens(raw), list(targets if targets is not None else questions))
