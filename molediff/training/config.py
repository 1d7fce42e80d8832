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
from .ema import SIGMA_REL_MAX


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
class PosthocEMAConfig:
    """Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models",
    §3): one power-function EMA per ``sigma_rels`` entry is tracked through training, and every
    ``snapshot_every`` optimiser steps (and at the last step) each is written to
    ``<out_dir>/ema_snapshots/step_<step>_sigma<σ_rel>.safetensors``; after training,
    ``molediff.training.posthoc_ema.reconstruct`` builds the EMA of any other σ_rel from those snapshots.

    ``sigma_rels``: relative standard deviations of the averaging profiles (width of the window as a fraction of
    training so far), each in (0, 1/√12 ≈ 0.2887), distinct to three decimals (the file names).
    ``snapshot_every``: steps between snapshots (≥ 1); the paper's reconstructions use a few hundred snapshots
    per run, more snapshots fit the target profile more closely.
    """

    sigma_rels: tuple[float, ...] = (0.05, 0.10)
    snapshot_every: int = 1000

    def __post_init__(self):
        if not self.sigma_rels:
            raise ValueError("posthoc_ema.sigma_rels must list at least one value")
        for s in self.sigma_rels:
            if not 0 < s < SIGMA_REL_MAX:
                raise ValueError(f"posthoc_ema.sigma_rels values must lie in (0, {SIGMA_REL_MAX:.4f}), got {s}")
        names = [f"{s:.3f}" for s in self.sigma_rels]
        if len(set(names)) != len(names):
            raise ValueError(f"posthoc_ema.sigma_rels must differ in their first three decimals, got "
                             f"{list(self.sigma_rels)}")
        if self.snapshot_every < 1:
            raise ValueError(f"posthoc_ema.snapshot_every must be at least 1, got {self.snapshot_every}")


TIME_LIMIT_CLOCKS = ("wall", "cpu")  # what time_limit_s counts (TrainConfig.time_limit_clock)


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
    bf16: bool = True               # bf16 autocast on CUDA and on CPUs with native bf16 (utils.cpu_has_native_bf16)
    time_limit_s: float = 0.0       # stop (with a checkpoint) after this much time; 0 = no limit
    time_limit_clock: str = "wall"  # what time_limit_s counts: "wall" time, or "cpu" time of this process
                                    # (arms compared at equal CPU time on a shared machine)
    optim: OptimConfig = field(default_factory=OptimConfig)
    posthoc_ema: PosthocEMAConfig | None = None   # null = off
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
        if self.time_limit_clock not in TIME_LIMIT_CLOCKS:
            raise ValueError(f"time_limit_clock must be 'wall' or 'cpu', got {self.time_limit_clock!r}")


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
    if d["posthoc_ema"] is not None:
        d["posthoc_ema"]["sigma_rels"] = list(d["posthoc_ema"]["sigma_rels"])
    return d
