"""Value auto-encoding (EMAT pre-training): the decoder reconstructs an answer from its value
tokens alone, so a value read from memory carries its answer into the encoder."""
from __future__ import annotations

from typing import Sequence

import torch


def value_autoencoding_loss(emat, answers: Sequence[str]) -> torch.Tensor:
    """Mean token cross-entropy of each answer decoded from its layer-normalised value tokens
    (EMAT's ``value_ae_target="ans"``)."""
    values = emat.embed_values(list(answers))
    return emat.decode_loss(emat.normed_key_tokens(values), list(answers))
