"""Joint few-shot training: the trainer, its configuration and the index-refresh strategies."""
from atlas_kit.train.config import TrainConfig
from atlas_kit.train.trainer import Trainer

__all__ = ["Trainer", "TrainConfig"]
