"""Small shared helpers: typed configs from plain data, atomic file output, usage errors, progress bars, devices,
the bf16 rule, the shipped weights and the cache directory. Use these rather than re-writing them."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import tempfile
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm


# ------------------------------------------------------------------------------------------ typed configs
def build_config(cls, data, section: str = ""):
    """A frozen dataclass ``cls`` from plain data (YAML/JSON), with every value checked against its annotation.

    One builder for every config section (training, optimiser, model, denoiser, data), so that a typo such as
    ``datset: files`` fails at once instead of silently falling back to a default. ``section`` prefixes key
    names in messages (``"data."``). Nested dataclass fields are built recursively.

    Raises ValueError naming the section, the offending key and the allowed keys, for unknown or missing keys
    and for values of the wrong type; the dataclass's own ``__post_init__`` checks run as usual.
    """
    where = section.rstrip(".") or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config section {where!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(section + k) for k in unknown)} in section {where!r}; "
                         f"allowed: {', '.join(sorted(fields))}")
    missing = [k for k, f in fields.items() if k not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"config section {where!r} is missing required keys {[section + k for k in missing]}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _typed_value(value, hints[key], section + key)
    return cls(**kwargs)


def _typed_value(value, tp, where: str):
    """``value`` converted to the annotation ``tp``, or a ValueError naming the key ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for inner in (a for a in args if a is not type(None)):
            try:
                return _typed_value(value, inner, where)
            except ValueError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, where + ".")
    if tp is typing.Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict or origin is dict:
        if value is None:
            return {}
        if isinstance(value, dict):
            if origin is None:
                return dict(value)
            key_type, value_type = typing.get_args(tp)
            # JSON turns integer keys into strings: accept "17" for an int key.
            return {_typed_value(int(k) if key_type is int and isinstance(k, str) and k.lstrip("-").isdigit()
                                 else k, key_type, f"{where}[{k!r}]"): _typed_value(v, value_type, f"{where}[{k!r}]")
                    for k, v in value.items()}
    elif origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_typed_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(_typed_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    name = getattr(tp, "__name__", str(tp))
    raise ValueError(f"config key {where!r} must be {name}, got {value!r}")


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


# ------------------------------------------------------------------------------------------ usage errors
class UsageError(ValueError):
    """An argument the user can fix: a bad value, options that do not go together, an output that cannot be
    written. Commands raise it before loading anything; the CLI prints it with ``report_usage_error`` (one line
    and a ``--help`` hint) and exits with 2, argparse's status for usage errors. A ValueError, so that callers
    that catch ValueError keep working."""


def report_usage_error(prog: str, message: str) -> int:
    """Print ``message`` on stderr as one usage-error line of the command ``prog`` (e.g. ``"molediff generate"``)
    with a hint to its ``--help``; returns 2, the exit status of a usage error. The one format of every
    command's usage errors, argparse's own included."""
    print(f"{prog}: error: {' '.join(str(message).split())} (see '{prog} --help')", file=sys.stderr)
    return 2


class LazyChoices:
    """argparse ``choices`` read on first use from ``"package.module:NAME"`` (a dict's keys or a list), so that
    building a command's parser imports no torch: a wrong argument is refused at once, and the names have one
    home (e.g. ``LazyChoices("molediff.diffusion:SAMPLERS")``). Only a given value or ``--help`` imports them;
    give the argument a ``metavar``, or argparse lists the choices when the argument is added."""

    def __init__(self, target: str):
        self.target = target

    def names(self) -> list[str]:
        import importlib

        module, _, name = self.target.partition(":")
        return sorted(getattr(importlib.import_module(module), name))

    def __contains__(self, value) -> bool:
        return value in self.names()

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def check_output_path(path: str | os.PathLike, what: str = "output", directory: bool = False) -> Path:
    """Check, before any work is done, that a file (or with ``directory`` a folder to create or fill) can be
    written at ``path``; returns it as a Path.

    UsageError (a ValueError) with a plain message when ``path`` is a directory (a file, for ``directory``),
    when a parent is an existing file, or when the nearest existing directory does not take a new file: not
    writable, or refusing in fact (read-only or virtual file systems, where ``os.access`` still says yes to
    root). Missing parents are created on writing.
    """
    target = Path(path)
    if directory:
        if target.exists() and not target.is_dir():
            raise UsageError(f"{what} {str(path)!r} is a file; give a folder")
    elif target.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a directory; give a file name")
    parent = target if directory else target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{what} {str(path)!r} cannot be written: {str(parent)!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {str(path)!r} cannot be written: no permission to write in {str(parent)!r}")
    try:   # the real test: os.access answers for permissions only
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise UsageError(f"{what} {str(path)!r} cannot be written: {str(parent)!r} takes no new file "
                         f"({e.strerror})") from None
    return target


def _default_permissions(path: str) -> None:
    """mkstemp creates files readable by the owner only; give outputs the usual 0666 & ~umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


class _LogLines:
    """A file-like sink for tqdm that turns each refreshed status line into one log record."""

    _ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

    def __init__(self, logger_name: str = "molediff.progress"):
        import logging

        self.log = logging.getLogger(logger_name)
        self.last = ""

    def write(self, text: str) -> None:
        # tqdm moves the cursor between nested bars and repeats the final state on close: neither is news in a log
        line = self._ESCAPES.sub("", text).strip("\r\n ")
        if line and line != self.last:
            self.log.info("%s", line)
            self.last = line

    def flush(self) -> None:
        pass


class _LogBar(tqdm):
    """A tqdm bar whose status lines go to the log (``_LogLines``), at most one per ``mininterval``.

    tqdm's monitor thread refreshes a bar whose ``miniters`` grew above 1 (dynamic miniters) once ``maxinterval``
    (10 s) has passed since its last line: every minute's line came again 10-20 s later. ``miniters=1`` turns
    dynamic miniters off, so the monitor leaves these bars alone."""

    def __init__(self, iterable=None, *, total=None, desc="", interval: float = 60.0, **kwargs):
        kwargs.pop("leave", None)
        kwargs.pop("dynamic_ncols", None)
        super().__init__(iterable, total=total, desc=desc, file=_LogLines(), mininterval=interval, delay=interval,
                         miniters=1, ascii=True, ncols=100, **kwargs)

    @staticmethod
    def open_bars() -> int:
        return sum(isinstance(bar, _LogBar) and not bar.disable for bar in list(tqdm._instances))


LOG_PROGRESS_INTERVAL = 60.0
"""Seconds between two progress lines where stderr is not a terminal (and before the first)."""


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             disable: bool | None = None, **kwargs):
    """A progress bar for long work.

    On a terminal: a tqdm bar on stderr. Elsewhere (logs, pipes, CI): one line per minute on the
    ``molediff.progress`` logger (the CLI prints them as the bar alone), none for work that ends within its first
    minute, and one bar at a time: a bar opened inside another (a sampler's steps inside the count of samples)
    stays silent there. ``disable=True`` hides it; ``disable=False`` forces the bar on stderr.
    """
    if disable is True:
        return tqdm(iterable, total=total, desc=desc, disable=True, **kwargs)
    if disable is False or sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, **kwargs)
    if _LogBar.open_bars():
        kwargs.pop("leave", None)
        return tqdm(iterable, total=total, desc=desc, disable=True, **kwargs)
    return _LogBar(iterable, total=total, desc=desc, interval=LOG_PROGRESS_INTERVAL, **kwargs)


def read_npz(path: str | os.PathLike, keys: Iterable[str], what: str) -> dict:
    """The arrays ``keys`` that the ``.npz`` file ``path`` holds (numpy only, no pickles; absent keys are left
    out: the caller says which are required). FileNotFoundError ``"{what} {path} does not exist"``; ValueError
    for a file numpy cannot read (not a zip, cut off, pickled)."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in keys if k in f.files}
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path} is not a readable .npz file ({' '.join(str(e).split())})") from None


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` for a command's ``--threads`` (None: leave torch's choice);
    ValueError below 1."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError("--threads must be at least 1")
    import torch

    torch.set_num_threads(threads)


def check_device(device) -> None:
    """UsageError (a ValueError) with a clear message when ``device`` is not a torch device or names an
    accelerator this torch cannot use."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UsageError(f"--device {device!r} is not a torch device, e.g. cpu or cuda ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but this torch build has no usable CUDA device; "
                         f"use --device cpu")


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX), where bf16 autocast speeds the
    dense edge tensors up about 2×; elsewhere bf16 is emulated and slower than float32. Reads the Linux CPU
    flags; False where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def _device_type(device) -> str:
    """``"cuda"`` for ``torch.device("cuda:1")``, ``"cuda:1"`` or ``"cuda"`` (no torch import)."""
    return str(getattr(device, "type", device)).partition(":")[0]


def native_bf16(device) -> bool:
    """True when ``device`` (a ``torch.device``, its name such as ``"cuda:0"``, or its type) computes bfloat16 in
    hardware: CUDA, or a CPU with ``cpu_has_native_bf16``. Where this is False, bf16 autocast is emulated and slower
    than float32."""
    device_type = _device_type(device)
    return device_type == "cuda" or (device_type == "cpu" and cpu_has_native_bf16())


PRECISIONS = ("auto", "fp32", "bf16")
"""The values of every sampling command's ``--precision`` (``add_precision_argument``)."""


def use_bf16(precision: str | bool | None, device) -> bool:
    """Whether a network runs under bfloat16 autocast on ``device``: the one rule of every sampling command and API.

    ``precision`` is ``"auto"`` (bf16 where ``device`` computes it natively, ``native_bf16``: there it is about 2×
    faster; elsewhere it is emulated and slower, so float32), ``"fp32"`` (never) or ``"bf16"`` (always); the Python
    APIs' ``bf16=`` arguments say the same with None (auto), False (fp32) and True (bf16). ``device``: a
    ``torch.device`` or its name. ValueError for any other ``precision``.
    """
    if precision is None or precision == "auto":
        return native_bf16(device)
    if precision is True or precision == "bf16":
        return True
    if precision is False or precision == "fp32":
        return False
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def add_precision_argument(parser, default: str = "auto", applies_to: str = "") -> None:
    """Add ``--precision auto|fp32|bf16`` (``use_bf16``'s rule) to a sampling command's argparse ``parser``, with
    the one help text of every command; ``applies_to`` prefixes it (e.g. ``"with --fd: "``)."""
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help=f"{applies_to}bf16 runs the network under bfloat16 autocast (about 2x faster on GPUs "
                             f"and on CPUs with native bf16, AVX-512 BF16 or AMX; slower where it is emulated); the "
                             f"sampler's state and updates keep full precision; fp32 runs it in float32; auto = bf16 "
                             f"where the device computes it natively, else fp32 (default: %(default)s). Not the "
                             f"storage type of weights files ('molediff export --precision')")


PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
"""Weights shipped inside the package, one ``NAME.safetensors`` and one card ``NAME.md`` per model."""


def shipped_weights() -> list[str]:
    """The NAMEs of the weights shipped in this installation (``PRETRAINED_DIR/NAME.safetensors``), sorted."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))


def pretrained_path(name: str) -> Path:
    """The shipped weights file ``NAME.safetensors`` (the one lookup of shipped weights; imports no torch, so that
    model-free paths can ask whether weights are shipped). FileNotFoundError naming the weights that are shipped."""
    path = PRETRAINED_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no weights named {name!r} are shipped in this installation; shipped: "
                                f"{', '.join(shipped_weights()) or 'none'}")
    return path


def cache_dir() -> Path:
    """User cache directory for derived data (MOLEDIFF_CACHE overrides; defaults to ~/.cache/molediff)."""
    root = os.environ.get("MOLEDIFF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "molediff")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p
