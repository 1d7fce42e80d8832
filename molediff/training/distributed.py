"""Small helpers around ``torch.distributed`` for runs launched by ``torchrun``.

``torchrun`` sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; without them (or with
WORLD_SIZE=1) everything here degrades to a single process.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def env_world_size() -> int:
    """WORLD_SIZE from the launcher's environment (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """RANK from the launcher's environment (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(backend: str | None = None, timeout_s: float = 1800) -> bool:
    """Join the process group described by the environment when WORLD_SIZE > 1 and none exists yet.

    ``backend`` defaults to NCCL when CUDA is available and gloo otherwise. Returns True when this call
    created the group (the caller should then call ``cleanup()``).
    """
    if env_world_size() <= 1 or is_initialized():
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (no-op in a single process)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj) -> list:
    """Every process's ``obj``, indexed by rank (``[obj]`` in a single process)."""
    if not is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()
