"""The domain-agnostic training loop.

A task supplies the model, the loss and the data order (``TrainingTask``); ``train`` supplies AdamW with
warm-up, gradient clipping, the EMA (and optionally the power-function EMAs and snapshots of post-hoc EMA,
``TrainConfig.posthoc_ema``), bf16 autocast on CUDA and bf16-capable CPUs, DDP under ``torchrun``, checkpoints
that resume bit-exactly, a JSON-lines metrics log and periodic evaluation.

Exact resume rests on three things being stored in each checkpoint: the weights/EMA/optimiser/scheduler
state, the data position (epoch, batches consumed; the order is a function of ``(seed, epoch)`` only) and
every process's RNG states (torch, CUDA, numpy, python), which the task's loss may draw noise from.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import logging
import math
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from ..utils import atomic_write, check_device, progress
from ..utils import use_bf16 as bf16_rule
from . import distributed
from .checkpoint import find_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .config import OptimConfig, TrainConfig, config_to_dict
from .ema import EMA, PowerEMA
from .posthoc_ema import SNAPSHOT_DIR, list_snapshots, remove_snapshots_after, write_snapshot

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/inf; no checkpoint of that state was written."""

    def __init__(self, step: int, loss: float, grad_norm: float, last_checkpoint: str | None):
        self.step, self.loss, self.grad_norm, self.last_checkpoint = step, loss, grad_norm, last_checkpoint
        super().__init__(f"training diverged at step {step}: loss={loss}, grad_norm={grad_norm}; "
                         f"last good checkpoint: {last_checkpoint or 'none'}")


@runtime_checkable
class TrainingTask(Protocol):
    """What a domain plugs into ``train``."""

    model: nn.Module

    def loss(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, float]]:
        """Scalar mean loss over the (per-process) batch, plus scalar metrics to log.

        Call ``model(...)`` (its forward) rather than other methods, so DDP synchronises the gradients.
        """
        ...

    def batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> Iterable:
        """Process ``rank``'s ``batch_size // world_size`` items of each global batch of a permutation fixed
        by ``(seed, epoch)``; the iterable ends with the epoch."""
        ...

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Optional periodic sampling/scoring; called on rank 0 with the EMA weights loaded."""
        ...


# ---------------------------------------------------------------------------------------------- RNG
def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _b64(t: Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _unb64(s: str) -> Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def rng_state() -> dict:
    """This process's RNG states as JSON data."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": _b64(torch.get_rng_state()),
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(_unb64(state["torch"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([_unb64(s) for s in cuda])
        else:
            log.warning("checkpoint has CUDA RNG states for %d devices, this machine has %d: not restored",
                        len(cuda), torch.cuda.device_count())


@contextlib.contextmanager
def _preserved_rng():
    """Run a block (evaluation) without disturbing the training RNG streams."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


# --------------------------------------------------------------------------------------------- pieces
def lr_factor(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Multiplier of ``optim.lr`` for optimiser step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then constant, or a cosine decay reaching 0 at ``total_steps``."""
    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.lr_schedule == "cosine":
        span = max(1, total_steps - optim.warmup_steps)
        progress_ = min(1.0, (step - optim.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress_))
    return 1.0


def _data_stream(task, seed: int, epoch: int, skip: int, rank: int, world_size: int,
                 batch_size: int) -> Iterator[tuple[int, int, object]]:
    """(epoch, batches consumed in that epoch, batch) forever, starting ``skip`` batches into ``epoch``."""
    while True:
        n = 0
        for batch in task.batches(seed, epoch, rank, world_size, batch_size):
            n += 1
            if n > skip:
                yield epoch, n, batch
        if n == 0:
            raise ValueError(f"the task yielded no batches for epoch {epoch}: is the dataset smaller than the "
                             f"batch size {batch_size}?")
        if skip > n:
            log.warning("resume position %d is past the end of epoch %d (%d batches): did the data change?",
                        skip, epoch, n)
        epoch, skip = epoch + 1, 0


def _count_items(batch, world_size: int) -> int | None:
    if isinstance(batch, (tuple, dict, str)) or not hasattr(batch, "__len__"):
        return None
    return len(batch) * world_size


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` by a run that crashed before its next checkpoint."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    if len(keep) != len(lines):
        with atomic_write(path) as f:
            f.writelines(keep)


def _resolve_device(device) -> torch.device:
    if device is not None:
        check_device(device)
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", distributed.local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------- train
def train(task: TrainingTask, config: TrainConfig, resume: bool | str = False, device=None) -> dict:
    """Train ``task.model`` for ``config.steps`` optimiser steps and return the final metrics.

    ``resume=True`` continues from the newest checkpoint in ``config.out_dir`` (or starts fresh if there is
    none); a path resumes from that checkpoint. Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in
    DistributedDataParallel (NCCL on CUDA, gloo on CPU) and only rank 0 writes checkpoints and logs.
    Raises ``TrainingDiverged`` on a NaN/inf loss or gradient, leaving the last good checkpoint intact.
    """
    device = _resolve_device(device)
    if device.type == "cuda":
        if device.index is None:   # set_device needs an index: plain "cuda" means the current device
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    started = distributed.init("nccl" if device.type == "cuda" else "gloo")
    try:
        metrics = _train(task, config, resume, device)
        if started:
            # free the DDP reducer (it holds the process group) and wait for every rank, so no rank tears the
            # group down (or exits, closing rank 0's store) while another is still using it
            gc.collect()
            distributed.barrier()
        return metrics
    finally:
        if started:
            distributed.cleanup()


def _train(task: TrainingTask, config: TrainConfig, resume: bool | str, device: torch.device) -> dict:
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must divide evenly over {world} processes")
    oc = config.optim
    out_dir = Path(config.out_dir)
    ckpt_root = out_dir / "checkpoints"
    metrics_path = out_dir / "metrics.jsonl"

    model = task.model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=oc.lr, betas=oc.betas, weight_decay=oc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, oc, config.steps))
    ema = EMA(model, oc.ema_decay) if oc.ema_decay is not None else None
    pc = config.posthoc_ema
    snapshot_dir = out_dir / SNAPSHOT_DIR
    # Only rank 0 writes checkpoints and snapshots, and DDP keeps every rank's weights identical, so the other
    # ranks need not spend memory and time on the power EMAs.
    posthoc = [PowerEMA(model, s) for s in pc.sigma_rels] if pc is not None and main else []

    # ---- fresh start or resume
    ckpt = None
    if resume:
        if isinstance(resume, (str, Path)) and not isinstance(resume, bool):
            ckpt = find_checkpoint(resume)
        elif list_checkpoints(ckpt_root):
            ckpt = find_checkpoint(ckpt_root)
        else:
            log.info("no checkpoint in %s: starting a new run", ckpt_root)
    elif list_checkpoints(ckpt_root):
        raise ValueError(f"{out_dir} already holds checkpoints; pass --resume to continue, or choose another "
                         f"--out directory")
    step, epoch, position, last_metrics = 0, 0, 0, {}
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, ema, optimizer, scheduler, posthoc_emas=posthoc)
        step, epoch, position = state["step"], state.get("epoch", 0), state.get("batches_in_epoch", 0)
        last_metrics = state.get("metrics", {})
        stored = state.get("config", {})
        for key in ("seed", "batch_size"):
            if stored.get(key) is not None and stored[key] != getattr(config, key):
                log.warning("resuming with %s=%s but the checkpoint used %s: the run will not match an "
                            "uninterrupted one", key, getattr(config, key), stored[key])
        states = state.get("rng") or []
        if len(states) == world:
            set_rng_state(states[rank])
        else:
            log.warning("checkpoint holds RNG states for %d processes, this run has %d: reseeding",
                        len(states), world)
            seed_everything(config.seed + 1_000_003 * rank + step)
        if main:
            _truncate_metrics(metrics_path, step)
            if posthoc:
                # written after the checkpoint by a run that stopped before its next one; rewritten identically
                removed = remove_snapshots_after(snapshot_dir, step)
                if removed:
                    log.info("removed %d post-hoc EMA snapshots written after step %d", removed, step)
            log.info("resumed from %s at step %d", ckpt, step)
    else:
        if pc is not None and snapshot_dir.is_dir() and list_snapshots(snapshot_dir):   # on every rank, as above
            # snapshots of some other run would silently mix into this run's reconstructions
            raise ValueError(f"{snapshot_dir} already holds post-hoc EMA snapshots but there is no checkpoint to "
                             f"resume from; remove them or choose another --out directory")
        seed_everything(config.seed + rank)
    last_good = str(ckpt) if ckpt is not None else None
    if step >= config.steps:
        log.info("checkpoint is already at step %d >= steps=%d: nothing to train", step, config.steps)
        return last_metrics

    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    # bf16 autocast where the hardware has it: the loss and gradients agree with float32 to about 1e-4 and
    # cosine 0.97–0.999 per batch on QM9 (far closer than two minibatches agree), at about 2× the speed on CPU.
    use_bf16 = bf16_rule("auto" if config.bf16 else "fp32", device)
    config_dict = config_to_dict(config)
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = oc.grad_clip if oc.grad_clip is not None else float("inf")
    evaluate = getattr(task, "evaluate", None) if config.eval_every else None

    metrics_file = None
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics_file = open(metrics_path, "a")  # noqa: SIM115 - closed in the finally below
    bar = progress(total=config.steps, initial=step, desc="train", unit="step", disable=None if main else True)
    t_start = time.perf_counter()
    # process CPU time counts every thread of this process: equal budgets mean equal work on a shared machine
    limit_clock = time.process_time if config.time_limit_clock == "cpu" else time.perf_counter
    limit_start = limit_clock()
    acc: dict[str, float] = {}
    n_acc, items, t_window = 0, 0, time.perf_counter()
    stream = _data_stream(task, config.seed, epoch, position, rank, world, config.batch_size)
    try:
        while step < config.steps:
            epoch, position, batch = next(stream)
            model.train()
            lr = scheduler.get_last_lr()[0]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss, info = task.loss(ddp_model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            stats = distributed.all_reduce_sum(torch.stack([loss.detach().float(), grad_norm.float()]))
            loss_v, grad_v = (stats / world).tolist()
            if not (math.isfinite(loss_v) and math.isfinite(grad_v)):
                raise TrainingDiverged(step + 1, loss_v, grad_v, last_good)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            for e in posthoc:
                e.update(model)
            step += 1
            bar.update(1)

            n_acc += 1
            counted = _count_items(batch, world)
            items += counted if counted is not None else config.batch_size
            for k, v in {**info, "loss": loss_v, "grad_norm": grad_v}.items():
                acc[k] = acc.get(k, 0.0) + float(v)

            if step % config.log_every == 0 or step == config.steps:
                now = time.perf_counter()
                record = {"kind": "train", "step": step, "epoch": epoch, "lr": lr,
                          **{k: v / n_acc for k, v in acc.items()},
                          "items_per_s": items / max(now - t_window, 1e-9), "time_s": now - t_start}
                last_metrics = {**last_metrics, **record}
                if main:
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
                acc, n_acc, items, t_window = {}, 0, 0, time.perf_counter()

            if evaluate is not None and step % config.eval_every == 0:
                if main:
                    scores = _evaluate(evaluate, model, ema, step)
                    last_metrics.update(scores)
                    metrics_file.write(json.dumps({"kind": "eval", "step": step, **scores}) + "\n")
                    metrics_file.flush()
                    log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in scores.items()))
                distributed.barrier()
                t_window = time.perf_counter()

            out_of_time = False
            if config.time_limit_s:
                # every rank must agree to stop at the same step
                late = float(limit_clock() - limit_start > config.time_limit_s)
                out_of_time = bool(distributed.all_reduce_sum(torch.tensor([late], device=device)).item() > 0)
            if posthoc and (step % pc.snapshot_every == 0 or step == config.steps or out_of_time):
                # before the checkpoint: a crash in between loses nothing, the resumed run rewrites them
                for e in posthoc:
                    write_snapshot(snapshot_dir, e, model)
            if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
                rngs = distributed.all_gather_object(rng_state())
                if main:
                    extra = {"epoch": epoch, "batches_in_epoch": position, "world_size": world, "rng": rngs,
                             "metrics": last_metrics}
                    last_good = str(save_checkpoint(ckpt_root, model, ema, optimizer, scheduler, step,
                                                    config_dict, extra, keep_last=config.keep_last,
                                                    posthoc_emas=posthoc))
                distributed.barrier()
                t_window = time.perf_counter()
            if out_of_time:
                log.info("%s time limit of %.0f s reached at step %d: checkpoint written, stopping",
                         config.time_limit_clock, config.time_limit_s, step)
                break
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    return last_metrics


def _evaluate(evaluate, model: nn.Module, ema: EMA | None, step: int) -> dict[str, float]:
    """``task.evaluate`` with the EMA weights swapped in, restoring the weights and RNG streams afterwards."""
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()} if ema is not None else None
    was_training = model.training
    try:
        if ema is not None:
            ema.copy_to(model)
        with _preserved_rng():
            scores = evaluate(model, step) or {}
    finally:
        if backup is not None:
            model.load_state_dict(backup)
        model.train(was_training)
    return {k: float(v) for k, v in scores.items()}
