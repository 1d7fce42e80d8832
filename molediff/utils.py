"""Small shared helpers: atomic file output and progress bars. Use these rather than re-writing them."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary filename beside ``path`` for code that writes by name (safetensors, numpy,
    matplotlib); the file is moved into place only if the block succeeds, so a crash or exception
    mid-write leaves any previous file at ``path`` untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        _default_permissions(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """``open(path, mode)`` that replaces ``path`` atomically when the block succeeds (see atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def _default_permissions(path: str) -> None:
    """mkstemp creates files readable by the owner only; give outputs the usual 0666 & ~umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             disable: bool | None = None, **kwargs):
    """tqdm progress bar on stderr; hidden when stderr is not a terminal unless forced with disable=False."""
    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, **kwargs)


def check_device(device) -> None:
    """ValueError with a clear message when ``device`` names an accelerator this torch cannot use."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but this torch build has no usable CUDA device; "
                         f"use --device cpu")


def cache_dir() -> Path:
    """User cache directory for derived data (MOLEDIFF_CACHE overrides; defaults to ~/.cache/molediff)."""
    root = os.environ.get("MOLEDIFF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "molediff")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p
