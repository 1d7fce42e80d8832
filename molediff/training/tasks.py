"""The task registry and the library entry of ``molediff train``.

A config's ``task:`` is a name in ``TASKS``, which maps it to a builder ``build_task(config) -> TrainingTask``
given as ``"module:function"``; the module is imported only when that task is trained, so the engine never
imports a domain. ``register_task`` adds a name (e.g. a user's own domain).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import TrainConfig, config_from_dict, config_to_dict, load_config
from .trainer import TrainingTask, seed_everything, train

log = logging.getLogger(__name__)

TASKS: dict[str, str] = {
    "toy": "molediff.training.toy:build_task",
    "molecules": "molediff.molecules.training:build_task",
    "conformers": "molediff.conformers.training:build_task",
    "proteins": "molediff.proteins.training:build_task",
    "protein_angles": "molediff.proteins.angle_training:build_task",
    "images": "molediff.images.training:build_task",
}
"""Task name → ``"module:function"`` building a ``TrainingTask`` from a ``TrainConfig``."""

TASK_ALIASES: dict[str, str] = {"qm9": "molecules"}
"""Older task names that still work."""


def register_task(name: str, target: str) -> None:
    """Make ``task: NAME`` in a config build its task with ``target`` (``"package.module:function"``)."""
    module, sep, function = target.partition(":")
    if not (module and sep and function):
        raise ValueError(f"task target must look like 'package.module:function', got {target!r}")
    TASKS[name] = target


def build_task(config: TrainConfig):
    """The task named by ``config.task``, with its model's initial weights drawn from ``config.seed``.

    ValueError for an unknown task name, and (from the task's builder) for unknown or invalid keys in the
    config's ``model`` and ``data`` sections — before any training starts.
    """
    name = TASK_ALIASES.get(config.task, config.task)
    if name not in TASKS:
        known = sorted(TASKS) + sorted(TASK_ALIASES)
        raise ValueError(f"unknown task {config.task!r} in the config; choose one of {known}")
    module_name, _, function = TASKS[name].partition(":")
    builder = getattr(importlib.import_module(module_name), function)
    seed_everything(config.seed)  # identical initial weights on every process and every run
    return builder(config)


def initialise_from(model, path: str | os.PathLike) -> None:
    """Copy the weights at ``path`` (an exported file or a run/checkpoint directory) into ``model``, in place.

    The stored model config may differ (e.g. the prediction target or the schedule: a warm start of a changed
    recipe), but every parameter name and shape must match: ValueError naming the first difference otherwise.
    """
    from .weights import load_model

    source = load_model(type(model), path).state_dict()
    target = model.state_dict()
    for name in sorted(set(source) | set(target)):
        if name not in source or name not in target or source[name].shape != target[name].shape:
            raise ValueError(f"--init {path} does not fit this model's architecture: parameter {name!r} is "
                             f"{tuple(source[name].shape) if name in source else 'missing'} there and "
                             f"{tuple(target[name].shape) if name in target else 'missing'} here")
    model.load_state_dict(source)


def configure_run(config: str | os.PathLike | TrainConfig, out_dir: str | os.PathLike | None = None,
                  steps: int | None = None, time_limit_s: float | None = None,
                  changes: Mapping[str, Any] | None = None) -> TrainConfig:
    """The training config (a YAML path, or a ``TrainConfig``) with a run's overrides applied.

    ``out_dir``, ``steps`` and ``time_limit_s`` (seconds) replace the config's values. ``changes`` maps further
    top-level keys to new values, e.g. the data path, the steps or optimiser settings of a continued run
    (``{"data": {"path": ...}, "optim": {"lr": 3e-4}}``); a mapping given for a section (``data``, ``model``,
    ``optim``, ``posthoc_ema``) replaces only the keys it names. The result is checked as a config read from
    YAML is: ValueError naming an unknown key or a bad value, FileNotFoundError for a missing config file.
    """
    if not isinstance(config, TrainConfig):
        config = load_config(config)
    overrides: dict[str, Any] = dict(changes or {})
    if out_dir is not None:
        overrides["out_dir"] = str(out_dir)
    if steps is not None:
        if steps < 1:
            raise ValueError("--steps must be at least 1")
        overrides["steps"] = int(steps)
    if time_limit_s is not None:
        overrides["time_limit_s"] = float(time_limit_s)
    if not overrides:
        return config
    merged = config_to_dict(config)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}   # a section: only the keys named change
        else:
            merged[key] = value
    return config_from_dict(merged)   # the same checks (and messages) as a YAML file's


def prepare_training(config: str | os.PathLike | TrainConfig, resume: bool | str = False,
                     out_dir: str | os.PathLike | None = None, steps: int | None = None,
                     time_limit_s: float | None = None, init: str | os.PathLike | None = None,
                     changes: Mapping[str, Any] | None = None) -> tuple[TrainingTask, TrainConfig, Path | None]:
    """Everything before ``train``: the config with its overrides (``configure_run``), the task, and the
    ``--init`` rule. Returns ``(task, config, checkpoint)``: pass the first two and ``resume`` to ``train``.

    ``resume``: True continues from the newest checkpoint in the run directory, a path from that checkpoint;
    ``checkpoint`` is the one found (None: the run starts fresh). ``init`` (an exported weights file or a
    run/checkpoint directory): a fresh run starts from these weights (``initialise_from``: every parameter name
    and shape must match); ignored when a checkpoint is found. ValueError for a bad config, an unknown task, or
    ``init`` weights of another architecture; FileNotFoundError for a missing config or ``init``.
    """
    from .checkpoint import find_checkpoint

    config = configure_run(config, out_dir=out_dir, steps=steps, time_limit_s=time_limit_s, changes=changes)
    task = build_task(config)
    found = None
    if resume:
        try:
            found = find_checkpoint(resume if isinstance(resume, (str, os.PathLike)) else config.out_dir)
        except FileNotFoundError:
            found = None
    if init is not None:
        if found is None:
            initialise_from(task.model, init)
            log.info("initialised the model from %s", init)
        else:
            log.info("resuming from %s; --init %s is not used", found, init)
    return task, config, found


def run_training(config_path: str | os.PathLike, resume: bool | str = False, out_dir: str | None = None,
                 steps: int | None = None, device: str | None = None, time_limit_s: float | None = None,
                 init: str | os.PathLike | None = None, changes: Mapping[str, Any] | None = None) -> dict:
    """Load the YAML config, apply the overrides (and ``changes``, see ``configure_run``), build the task and
    train; returns the final metrics.

    ``init``: start a fresh run from these weights (``initialise_from``); ignored when ``resume`` finds a
    checkpoint to continue from.
    """
    task, config, _ = prepare_training(config_path, resume=resume, out_dir=out_dir, steps=steps,
                                       time_limit_s=time_limit_s, init=init, changes=changes)
    return train(task, config, resume=resume, device=device)
