"""The task registry and the library entry of ``molediff train``.

A config's ``task:`` is a name in ``TASKS``, which maps it to a builder ``build_task(config) -> TrainingTask``
given as ``"module:function"``; the module is imported only when that task is trained, so the engine never
imports a domain. ``register_task`` adds a name (e.g. a user's own domain).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os

from .config import TrainConfig, load_config
from .trainer import seed_everything, train

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


def run_training(config_path: str | os.PathLike, resume: bool | str = False, out_dir: str | None = None,
                 steps: int | None = None, device: str | None = None, time_limit_s: float | None = None,
                 init: str | os.PathLike | None = None) -> dict:
    """Load the YAML config, apply the overrides, build the task and train; returns the final metrics.

    ``init``: start a fresh run from these weights (``initialise_from``); ignored when ``resume`` finds a
    checkpoint to continue from.
    """
    config = load_config(config_path)
    changes = {}
    if out_dir is not None:
        changes["out_dir"] = str(out_dir)
    if steps is not None:
        if steps < 1:
            raise ValueError("--steps must be at least 1")
        changes["steps"] = int(steps)
    if time_limit_s is not None:
        changes["time_limit_s"] = float(time_limit_s)
    if changes:
        config = dataclasses.replace(config, **changes)
    task = build_task(config)
    if init is not None:
        from .checkpoint import find_checkpoint

        try:
            found = find_checkpoint(resume if isinstance(resume, str) else config.out_dir) if resume else None
        except FileNotFoundError:
            found = None
        if found is None:
            initialise_from(task.model, init)
            log.info("initialised the model from %s", init)
        else:
            log.info("resuming from %s; --init %s is not used", found, init)
    return train(task, config, resume=resume, device=device)
