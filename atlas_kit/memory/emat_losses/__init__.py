"""EMAT's training objectives, one file each, selectable by name (weights in
:class:`~atlas_kit.memory.emat_train.EMATSettings`):

==============  ==========================================================  ======================
name            what is learned                                             EMAT flag
==============  ==========================================================  ======================
key_ae          decode the question from its (normalised) key tokens        ``--key_ae_weight``
value_ae        decode the answer from its (normalised) value tokens        ``--value_ae_weight``
generation      generate the answer with the retrieved slots fused in       ``--gen_weight``
matching        query . key of a weakly labelled positive slot above hard   ``--match_weight``
                negatives (softmax cross-entropy)
==============  ==========================================================  ======================

Pre-training uses ``key_ae + value_ae + generation`` (EMAT: 0.5 / 0.5 / 1.0), fine-tuning
``generation + matching`` (1.0 / 1.0).
"""
from __future__ import annotations

from typing import Callable

from atlas_kit.memory.emat_losses.generation import generation_loss
from atlas_kit.memory.emat_losses.key_ae import key_autoencoding_loss
from atlas_kit.memory.emat_losses.matching import matching_loss
from atlas_kit.memory.emat_losses.value_ae import value_autoencoding_loss

__all__ = ["EMAT_OBJECTIVES", "generation_loss", "key_autoencoding_loss", "value_autoencoding_loss", "matching_loss",
           "PRETRAIN_WEIGHTS", "FINETUNE_WEIGHTS"]

EMAT_OBJECTIVES: dict[str, Callable[..., object]] = {
    "key_ae": key_autoencoding_loss,
    "value_ae": value_autoencoding_loss,
    "generation": generation_loss,
    "matching": matching_loss,
}

PRETRAIN_WEIGHTS = {"key_ae": 0.5, "value_ae": 0.5, "generation": 1.0}
FINETUNE_WEIGHTS = {"generation": 1.0, "matching": 1.0}
