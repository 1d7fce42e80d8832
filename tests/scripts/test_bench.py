"""scripts/_bench.py's peak-memory helper: it follows this process's own high-water mark, and a child started by
a big parent reports its own peak, not the parent's (what ``ru_maxrss`` gets wrong after fork + exec)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, load_script

MIB = 1024   # kB


@pytest.fixture(scope="module")
def bench():
    return load_script(ROOT / "scripts" / "_bench.py", "_bench")


def vm_rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_peak_rss_follows_this_processs_high_water_mark(bench):
    before = bench.peak_rss_kb()
    assert before >= vm_rss_kb() > 0
    block = np.ones((before - vm_rss_kb() + 64 * MIB) * 1024 // 8)   # touched: 64 MiB beyond the earlier peak
    peak = bench.peak_rss_kb()
    assert peak >= vm_rss_kb() and peak - before >= 32 * MIB
    del block                                                # large: given back to the system at once
    # a high-water mark: freeing does not lower it (Linux's RSS counters are approximate to a few pages)
    assert vm_rss_kb() < peak - 32 * MIB and bench.peak_rss_kb() >= peak - MIB


@pytest.mark.slow
def test_a_child_of_a_big_parent_reports_its_own_peak(bench):
    block = np.ones(512 * 2**20 // 8)                        # this process: at least 512 MiB resident
    assert bench.peak_rss_kb() >= 512 * MIB
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); from _bench import peak_rss_kb; " \
           "print(peak_rss_kb())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0 < child < 128 * MIB                             # a bare interpreter, not the parent's 512 MiB
    del block
