"""Domain-agnostic training: config, EMA (fixed-decay, and power-function EMA with post-hoc reconstruction),
checkpoints, the training loop, DDP helpers, the task registry and "weights file or checkpoint → model" for every
domain.

Domains plug in a ``TrainingTask`` (model, loss, data order, optional evaluation; see ``trainer.train``) and
register its builder in ``tasks.TASKS``; a model class with a ``config_class`` loads with ``weights.load_model``
(from a shipped NAME or a path).
"""

from .checkpoint import find_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .config import OptimConfig, PosthocEMAConfig, TrainConfig, config_from_dict, config_to_dict, load_config
from .ema import EMA, PowerEMA, gamma_to_sigma_rel, sigma_rel_to_gamma
from .posthoc_ema import Snapshot, export_posthoc_ema, list_snapshots, reconstruct
from .tasks import TASKS, build_task, register_task, run_training
from .trainer import TrainingDiverged, TrainingTask, lr_factor, seed_everything, train
from .weights import PRETRAINED_DIR, export_weights, load_model, load_weights, pretrained_path, read_weights

__all__ = [
    "EMA",
    "PRETRAINED_DIR",
    "TASKS",
    "OptimConfig",
    "PosthocEMAConfig",
    "PowerEMA",
    "Snapshot",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingTask",
    "build_task",
    "config_from_dict",
    "config_to_dict",
    "export_posthoc_ema",
    "export_weights",
    "find_checkpoint",
    "gamma_to_sigma_rel",
    "list_checkpoints",
    "list_snapshots",
    "load_checkpoint",
    "load_config",
    "load_model",
    "load_weights",
    "lr_factor",
    "pretrained_path",
    "read_weights",
    "reconstruct",
    "register_task",
    "run_training",
    "save_checkpoint",
    "seed_everything",
    "sigma_rel_to_gamma",
    "train",
]
