"""What every GPU job in ``scripts/gpu`` shares: its device, its training run (the library's config overrides and
``--init`` rule), the exported weights (brought back when small enough), the run's training facts and
``report.json``. Torch, the standard library and the tree's molediff only (no RDKit, no biotite), so it imports on
a bare device machine. Each job puts this folder on ``sys.path`` and imports it as ``job``; importing it puts the
working tree's root (its molediff, not installed there) and ``scripts/`` (``_bench``) on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
"""The working tree's root."""
for _path in (ROOT, ROOT / "scripts"):   # the tree's molediff (not installed on a device machine) and _bench
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _bench import Stopwatch  # noqa: E402, F401  (the jobs time with it)

INIT_HELP = ("start from these weights (an exported .safetensors file or a run directory) when the run directory "
             "holds no checkpoint; every parameter name and shape must match the config's model")


def stage_parsers(description: str):
    """A job's argument parser (``description``: its module docstring, shown as written) and the subparsers of its
    stages (``prepare``, ``run``, ...), one of which each call names."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser, parser.add_subparsers(dest="stage", required=True)


def add_run_arguments(parser: argparse.ArgumentParser, sampling: bool = False, weights_limit: bool = False) -> None:
    """The run stage's options that mean the same in every job: ``--init`` and ``--train-steps`` (``JobRun``),
    ``--device`` and ``--out``; with ``sampling`` also ``--sampler``, ``--steps`` and ``--bf16-sampling``, with
    ``weights_limit`` ``--max-file-mib`` (``returned_weights``)."""
    parser.add_argument("--init", default=None, help=INIT_HELP)
    parser.add_argument("--train-steps", type=int, default=None,
                        help="total optimiser steps (overrides the config's steps; raise it to extend a run)")
    if weights_limit:
        parser.add_argument("--max-file-mib", type=float, default=15.0,
                            help="put the weights into --out only when the file is at most this size (the device "
                                 "tool brings back files of up to 16 MiB, 64 MiB in all)")
    if sampling:
        parser.add_argument("--sampler", default="ddpm", help="core sampler: ddpm (ancestral), ddim, heun or dpm2m")
        parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: all T)")
        parser.add_argument("--bf16-sampling", action="store_true", help="sample under bf16 autocast on CUDA")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--out", required=True, help="output folder (the device tool's $OUT)")


def run_stage(stages: dict, args: argparse.Namespace) -> None:
    """Run ``stages[args.stage](args)`` with the library's progress logged to stderr."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stages[args.stage](args)


def pick_device(name: str | None) -> torch.device:
    """``name`` (cuda when available if None) as a device; ValueError for one this torch cannot use. On CUDA, TF32
    matrix products and convolutions, and a fresh peak-memory count."""
    from molediff.utils import check_device

    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    return device


def usage_error(error: Exception) -> SystemExit:
    """A job's bad input as one line (``run: ...``) and exit status 1, before anything is trained or written."""
    return SystemExit(f"run: {' '.join(str(error).split())}")


class JobRun:
    """One job's training run: set up by the library's rules, trained for the time budget, described for
    ``report.json``.

    ``args`` holds the run stage's ``config``, ``minutes``, ``init``, ``train_steps`` and ``device``. The config
    (which must be one for ``task``) writes to ``run_dir``, with the ``data`` keys, the total steps and the
    ``optim`` settings that are not None changed (``molediff.training.tasks.prepare_training``'s ``changes``);
    the run continues from the newest checkpoint in ``run_dir``, or else starts from the ``--init`` weights when
    given (every parameter name and shape must match). ValueError (a config for another task, bad values,
    ``--init`` weights of another architecture, a device this torch cannot use) and FileNotFoundError (a missing
    config, data or ``--init``), before anything is trained or written.
    """

    def __init__(self, args: argparse.Namespace, task: str, run_dir: Path, data: dict,
                 optim: dict | None = None) -> None:
        from molediff.training.checkpoint import latest_step
        from molediff.training.config import load_config
        from molediff.training.tasks import TASK_ALIASES, prepare_training

        self.args, self.run_dir = args, run_dir
        self.device = pick_device(args.device)
        config = load_config(args.config)
        if TASK_ALIASES.get(config.task, config.task) != task:
            raise ValueError(f"{args.config} is a config for task {config.task!r}, not {task!r}")
        changes = {"data": data}
        optim = {k: v for k, v in (optim or {}).items() if v is not None}
        if optim:
            changes["optim"] = optim
        self.task, self.config, checkpoint = prepare_training(
            config, resume=True, out_dir=run_dir, steps=args.train_steps, time_limit_s=60 * args.minutes,
            init=args.init,
            changes=changes)
        self.start_step = latest_step(run_dir) if checkpoint is not None else 0
        self.resumed = checkpoint is not None

    def train(self, out: Path) -> dict:
        """Train (resuming when a checkpoint was found), copy ``metrics.jsonl`` into ``out``; the final metrics."""
        from molediff.training import train
        from molediff.training.checkpoint import latest_step

        out.mkdir(parents=True, exist_ok=True)
        with Stopwatch() as watch:
            self.metrics = train(self.task, self.config, resume=True, device=self.device)
        self.train_s = watch.seconds
        self.final_step = latest_step(self.run_dir)
        shutil.copy(self.run_dir / "metrics.jsonl", out / "metrics.jsonl")
        records = [json.loads(line) for line in (self.run_dir / "metrics.jsonl").read_text().splitlines()]
        self.rates = [r["items_per_s"] for r in records if r.get("kind") == "train" and r["step"] > self.start_step
                      and "items_per_s" in r]
        return self.metrics

    @property
    def items_trained(self) -> int:
        """Training items (molecules, images, chains) this call's steps went through."""
        return (self.final_step - self.start_step) * self.config.batch_size

    def facts(self, model: torch.nn.Module, unit: str, load_s: float | None = None) -> dict:
        """The report's part on the device and the run: what it started from (config, run directory, whether it
        resumed, the ``--init`` weights, None when it resumed: they were not used), the model's parameter count,
        the budget, ``training_facts`` and the training throughput in ``unit``/s (overall and the median logged
        window)."""
        return {
            **device_facts(self.device), "config": self.args.config, "run_dir": str(self.run_dir),
            "resumed": self.resumed, "init": None if self.resumed else self.args.init,
            "parameters": sum(p.numel() for p in model.parameters()), "minutes": self.args.minutes,
            **training_facts(self.config, self.device, self.metrics, self.start_step, self.final_step, load_s,
                             self.train_s),
            f"{unit}_per_s": self.items_trained / self.train_s if self.train_s > 0 else None,
            f"{unit}_per_s_logged_median": statistics.median(self.rates) if self.rates else None,
        }


def device_facts(device: torch.device) -> dict:
    """The device's name and torch's version."""
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__}


def returned_weights(weights: Path, out: Path, max_file_mib: float) -> dict:
    """Copy the exported ``weights`` into ``out`` (the device tool's $OUT) when at most ``max_file_mib`` MiB (the
    tool brings back files of up to 16 MiB), and describe what happened."""
    mib = weights.stat().st_size / 2**20
    returned = mib <= max_file_mib
    if returned:
        shutil.copy(weights, out / weights.name)
    return {"file": weights.name, "mib": mib, "returned": returned,
            "note": "in --out" if returned else
            f"over --max-file-mib {max_file_mib:g}: left on the device in {weights}"}


def training_facts(config, device: torch.device, metrics: dict, start_step: int, final_step: int,
                   load_s: float | None, train_s: float) -> dict:
    """Steps, wall times, bf16 use, the EMA's remaining weight on the starting point, the last logged metrics
    and the peak GPU memory of one ``molediff.training.train`` run under ``config``."""
    from molediff.utils import use_bf16

    ema_decay = config.optim.ema_decay
    return {
        "start_step": start_step, "final_step": final_step, "steps_this_run": final_step - start_step,
        "batch_size": config.batch_size,
        "bf16_autocast": use_bf16("auto" if config.bf16 else "fp32", device),   # the trainer's rule
        "load_wall_s": load_s, "train_wall_s": train_s,
        "ema_decay": ema_decay, "ema_weight_of_start": ema_decay ** final_step if ema_decay is not None else None,
        "final_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def write_report(report: dict, out: Path, started: float | None = None) -> None:
    """Write ``out/report.json`` (with the total wall time since ``started``, a ``time.perf_counter()`` value,
    and the files ``out`` holds) and print it: the device tool's reply carries the end of the output."""
    if started is not None:
        report["total_wall_s"] = time.perf_counter() - started
    report["out_files"] = sorted({p.name for p in out.iterdir()} | {"report.json"})
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
