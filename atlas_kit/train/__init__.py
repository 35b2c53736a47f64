"""Training: the generic loop every model family shares (:mod:`atlas_kit.train.loop`), Atlas's
retrieve-and-read step and trainer (:mod:`atlas_kit.train.trainer`), and its configuration."""
from atlas_kit.train.config import TrainConfig
from atlas_kit.train.loop import LoopConfig, TrainLoop, TrainStep
from atlas_kit.train.trainer import AtlasStep, Trainer

__all__ = ["Trainer", "TrainConfig", "AtlasStep", "TrainLoop", "LoopConfig", "TrainStep"]
