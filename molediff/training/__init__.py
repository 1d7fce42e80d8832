"""Domain-agnostic training: config, EMA, checkpoints, the training loop and DDP helpers.

Domains plug in a ``TrainingTask`` (model, loss, data order, optional evaluation); see ``trainer.train``.
"""

from .checkpoint import (
    export_weights,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from .config import OptimConfig, TrainConfig, config_from_dict, config_to_dict, load_config
from .ema import EMA
from .trainer import TrainingDiverged, TrainingTask, lr_factor, seed_everything, train

__all__ = [
    "EMA",
    "OptimConfig",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingTask",
    "config_from_dict",
    "config_to_dict",
    "export_weights",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_config",
    "load_weights",
    "lr_factor",
    "save_checkpoint",
    "seed_everything",
    "train",
]
