"""What every GPU job in ``scripts/gpu`` reports: the exported weights (brought back when small enough), the run's
training facts and ``report.json``. Torch and the standard library only, so it imports on a bare device machine;
each job puts this folder on ``sys.path`` beside the working tree's root.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch


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


def training_facts(config, device: torch.device, metrics: dict, start_step: int, final_step: int, load_s: float,
                   train_s: float) -> dict:
    """Steps, wall times, bf16 use, the EMA's remaining weight on the starting point, the last logged metrics
    and the peak GPU memory of one ``molediff.training.train`` run under ``config``."""
    from molediff.utils import native_bf16

    ema_decay = config.optim.ema_decay
    return {
        "start_step": start_step, "final_step": final_step, "steps_this_run": final_step - start_step,
        "batch_size": config.batch_size,
        "bf16_autocast": bool(config.bf16 and native_bf16(device)),   # the trainer's own rule
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
