"""``python -m molediff.train CONFIG [--resume [DIR]] [--out DIR] [--steps N] [--device DEV]``.

Also the library entry ``run_training`` behind ``molediff train``. Under ``torchrun --nproc_per_node K``
the same command trains with DDP over K processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys

from .training import distributed
from .training.config import TrainConfig, load_config
from .training.trainer import seed_everything, train

log = logging.getLogger(__name__)

# config ``task:`` -> "module:function" building a TrainingTask from the TrainConfig (imported lazily)
TASKS = {
    "toy": "molediff.training.toy:build_task",
    "qm9": "molediff.molecules.training:build_task",
}


def build_task(config: TrainConfig):
    """The task named by ``config.task``, with its model's initial weights drawn from ``config.seed``."""
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r} in the config; choose one of {sorted(TASKS)}")
    module_name, _, attr = TASKS[config.task].partition(":")
    builder = getattr(importlib.import_module(module_name), attr)
    seed_everything(config.seed)  # identical initial weights on every process and every run
    return builder(config)


def run_training(config_path, resume: bool | str = False, out_dir_override: str | None = None,
                 steps_override: int | None = None, device: str | None = None,
                 time_limit_s: float | None = None) -> dict:
    """Load the YAML config, apply overrides, build the task and train; returns the final metrics."""
    config = load_config(config_path)
    changes = {}
    if out_dir_override is not None:
        changes["out_dir"] = str(out_dir_override)
    if steps_override is not None:
        changes["steps"] = int(steps_override)
    if time_limit_s is not None:
        changes["time_limit_s"] = float(time_limit_s)
    if changes:
        config = dataclasses.replace(config, **changes)
    task = build_task(config)
    return train(task, config, resume=resume, device=device)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="YAML training config (see configs/toy.yaml)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                        help="continue exactly where a run stopped: without DIR from the newest checkpoint in "
                             "the output directory (starting fresh if there is none), with DIR from that "
                             "checkpoint or run directory")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output directory for checkpoints and metrics.jsonl (overrides out_dir)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="total number of optimiser steps (overrides steps; raise it to extend a run)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda (default: this process's GPU if any, else cpu)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="stop after this much wall time, writing a checkpoint first (overrides "
                             "time_limit_s); resume later with --resume")


def run_from_args(args: argparse.Namespace) -> dict:
    if args.steps is not None and args.steps < 1:
        raise ValueError("--steps must be at least 1")
    if distributed.env_rank() != 0:
        logging.getLogger("molediff").setLevel(logging.WARNING)
    metrics = run_training(args.config, resume=args.resume, out_dir_override=args.out,
                           steps_override=args.steps, device=args.device, time_limit_s=args.time_limit)
    shown = {k: v for k, v in metrics.items() if isinstance(v, float)}
    if shown:
        log.info("final: %s", ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    return metrics


def main(argv: list[str] | None = None) -> int:
    from .commands import train as command

    parser = argparse.ArgumentParser(prog="python -m molediff.train", description=command.__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages and show tracebacks")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        run_from_args(args)
    except (ValueError, OSError, RuntimeError) as e:
        if args.verbose:
            raise
        print(f"molediff.train: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
