"""Training configuration: frozen dataclasses read from YAML.

The engine reads the typed fields; the free-form ``model`` and ``data`` sections belong to the task named
by ``task`` (see ``molediff.train.TASKS``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..utils import build_config


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, then a constant (or cosine-decaying) learning rate.

    ``grad_clip=None`` disables gradient clipping; ``ema_decay=None`` disables the EMA.
    """

    lr: float = 1e-4
    weight_decay: float = 1e-12
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: str = "constant"   # "constant" or "cosine" (decays to 0 at the last step)
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"optim.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"optim.grad_clip must be positive or null, got {self.grad_clip}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"optim.ema_decay must lie in [0, 1) or be null, got {self.ema_decay}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``batch_size`` is global: under DDP each of W processes gets batch_size / W."""

    steps: int
    batch_size: int
    task: str = ""
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_last: int = 3              # step-numbered checkpoints kept on disk
    eval_every: int = 0             # 0 = never
    out_dir: str = "runs/default"
    bf16: bool = True               # bf16 autocast; used only on CUDA
    time_limit_s: float = 0.0       # stop (with a checkpoint) after this much wall time; 0 = no limit
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.time_limit_s < 0:
            raise ValueError(f"time_limit_s must be >= 0, got {self.time_limit_s}")


def config_from_dict(d: dict) -> TrainConfig:
    """A ``TrainConfig`` from plain data (YAML/JSON); ValueError naming unknown keys or wrong types."""
    return build_config(TrainConfig, d)


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML training config; errors name the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    try:
        return config_from_dict(data if data is not None else {})
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def config_to_dict(cfg: TrainConfig) -> dict:
    """Plain JSON/YAML-ready data; ``config_from_dict(config_to_dict(c)) == c``."""
    d = dataclasses.asdict(cfg)
    d["optim"]["betas"] = list(d["optim"]["betas"])
    return d
