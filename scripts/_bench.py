"""What the benchmark scripts share: the line that says where a benchmark ran, device-synchronised timing, the
process's peak memory and Markdown table lines. Torch (imported when first needed) and the standard library only,
so the GPU jobs in ``scripts/gpu`` import it on a bare device machine too.

A script in ``scripts/`` imports it as ``from _bench import ...``: Python puts a script's own folder first on
``sys.path``. A script loaded by path (the tests' ``load_script``) or one in ``scripts/gpu`` adds that folder
itself.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return name


def machine(device=None, rdkit: bool = False) -> str:
    """One line saying where a benchmark ran: the GPU's name for a CUDA ``device`` (a ``torch.device`` or its
    name), else the CPU's model; the logical CPUs, the Python and torch versions (and RDKit's with ``rdkit``),
    torch's CPU threads and ``OMP_NUM_THREADS``."""
    import torch

    device = torch.device(device if device is not None else "cpu")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    versions = f"Python {platform.python_version()}, torch {torch.__version__}"
    if rdkit:
        from rdkit import rdBase

        versions += f", RDKit {rdBase.rdkitVersion}"
    return (f"{where}, {os.cpu_count()} logical CPUs, {versions}, {torch.get_num_threads()} torch threads "
            f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")


def synchronize(device) -> None:
    """Wait for the work queued on a CUDA ``device``; nothing elsewhere. CUDA kernels run asynchronously, so a
    clock read without it measures their launch, not their work."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Wall time (s) of a ``with`` block in ``seconds``, the ``device`` synchronised at both ends (None: no device
    work to wait for)::

        with Stopwatch(device) as watch:
            model.sample(...)
        print(watch.seconds)
    """

    def __init__(self, device=None) -> None:
        self.device = device
        self.seconds = float("nan")

    def __enter__(self) -> Stopwatch:
        if self.device is not None:
            synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device is not None:
            synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def seconds_per_call(step: Callable[[], object], calls: int, device=None) -> float:
    """Mean wall time (s) of ``calls`` calls of ``step()`` in a row, timed as one ``Stopwatch`` block (NaN for no
    calls: a warm-up of none)."""
    with Stopwatch(device) as watch:
        for _ in range(calls):
            step()
    return watch.seconds / calls if calls else float("nan")


def peak_rss_kb() -> int:
    """This process's peak resident set size (kB, as Linux counts: KiB): ``VmHWM`` of ``/proc/self/status``, the
    high-water mark of its own address space. ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` would not do: Linux
    carries the parent's peak over ``fork`` + ``exec``, so a child started by a big parent (a benchmark's case in a
    fresh process) reports at least the parent's peak. Linux only: OSError where there is no ``/proc``."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def table_row(cells: Sequence[object]) -> str:
    """One Markdown table row: ``| a | b |``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table_header(columns: Sequence[str], align: str = "") -> str:
    """A Markdown table's header row and rule (two lines). ``align``: one character a column, ``r`` for a
    right-aligned one (``---:``), anything else (or none) for the default."""
    rule = "".join("|---:" if a == "r" else "|---" for a in align.ljust(len(columns))) + "|"
    return table_row(columns) + "\n" + rule
