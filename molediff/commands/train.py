"""Train a diffusion model (or the toy regression task) from a YAML config.

Writes step-numbered checkpoints (safetensors weights, EMA weights, JSON state, optimiser state) and a
JSON-lines metrics log under the output directory; --resume continues a stopped run exactly. The config's
'task:' names what is trained (the tasks are listed below). Launch with
'torchrun --nproc_per_node K -m molediff.train CONFIG' for DDP over K processes."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def task_list() -> str:
    """The tasks a config's ``task:`` can name, as ``training/tasks.py`` registers them (for the help)."""
    from ..training.tasks import TASK_ALIASES, TASKS

    aliases = {name: [old for old, new in TASK_ALIASES.items() if new == name] for name in TASKS}
    width = max(map(len, TASKS))
    lines = [f"  {name:<{width}}  built by {target}" + (f" (older name: {', '.join(aliases[name])})"
                                                         if aliases[name] else "")
             for name, target in sorted(TASKS.items())]
    return "tasks (a config's 'task:'; registered in molediff.training.tasks):\n" + "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = task_list()
    parser.add_argument("config", metavar="CONFIG", help="YAML training config (see configs/)")
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
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch in each process (default: torch's choice); on a shared "
                             "machine leave cores for other work")
    parser.add_argument("--init", default=None, metavar="WEIGHTS",
                        help="start a new run from these weights (an exported .safetensors file, e.g. a shipped "
                             "model, or a run directory) so that training adds up across sessions; the config may "
                             "change the recipe but not the architecture; ignored when --resume finds a checkpoint")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="stop after this much time (wall time, or CPU time with --time-clock cpu), writing a "
                             "checkpoint first (overrides time_limit_s); resume later with --resume")
    # training.config.TIME_LIMIT_CLOCKS, written out: importing molediff.training loads torch at every CLI start
    parser.add_argument("--time-clock", choices=("wall", "cpu"), default=None,
                        help="what --time-limit counts: wall time (default) or this process's CPU time, so that "
                             "runs compared at equal CPU time get equal work on a shared machine (overrides "
                             "time_limit_clock)")


def check_arguments(args: argparse.Namespace) -> None:
    """UsageError for an argument that cannot work, before the config, data or any weights are read (also for
    ``molediff image train``)."""
    from ..utils import UsageError, check_device

    for flag, value in (("--steps", args.steps), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1")
    if args.time_limit is not None and not args.time_limit > 0:
        raise UsageError(f"--time-limit must be a positive number of seconds, got {args.time_limit:g}")
    if args.device is not None:
        check_device(args.device)


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    from ..training import distributed
    from ..training.tasks import run_training
    from ..utils import set_threads

    set_threads(args.threads)
    if distributed.env_rank() != 0:
        logging.getLogger("molediff").setLevel(logging.WARNING)
    metrics = run_training(args.config, resume=args.resume, out_dir=args.out, steps=args.steps,
                           device=args.device, time_limit_s=args.time_limit, init=args.init,
                           changes={"time_limit_clock": args.time_clock} if args.time_clock else None)
    shown = {k: v for k, v in metrics.items() if isinstance(v, float)}
    if shown:
        log.info("final: %s", ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    return 0
