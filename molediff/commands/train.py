"""Train a diffusion model (or the toy regression task) from a YAML config.

Writes step-numbered checkpoints (safetensors weights, EMA weights, JSON state, optimiser state) and a
JSON-lines metrics log under the output directory; --resume continues a stopped run exactly. Launch with
'torchrun --nproc_per_node K -m molediff.train CONFIG' for multi-GPU (DDP) training."""

from __future__ import annotations

import argparse

HELP = "train a model from a YAML config (checkpoints, exact resume, DDP under torchrun)"


def configure(parser: argparse.ArgumentParser) -> None:
    from ..train import add_arguments

    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..train import run_from_args

    run_from_args(args)
    return 0
