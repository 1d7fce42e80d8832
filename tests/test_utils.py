"""Atomic outputs: a failed write leaves the previous file intact and no temporary files behind."""

import os

import pytest

from molediff.utils import UsageError, atomic_path, atomic_write, check_output_path


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_write(target) as f:
        f.write("first")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half-written")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "first"
    assert os.listdir(tmp_path) == ["out.txt"]
    assert oct(target.stat().st_mode & 0o077) != "0o0"  # not the owner-only mode of mkstemp


def test_atomic_path_for_writers_that_take_a_filename(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"\x00\x01")
        assert not target.exists()
    assert target.read_bytes() == b"\x00\x01"


def test_progress_off_a_terminal_logs_plain_lines_once(caplog):
    from molediff.utils import _LogLines

    sink = _LogLines()
    with caplog.at_level("INFO", logger="molediff.progress"):
        for text in ("\rsampling:  50%|#####     | 10/20", "\x1b[A", "\rsampling: 100%|##########| 20/20",
                     "\rsampling: 100%|##########| 20/20\n"):
            sink.write(text)
    assert [r.getMessage() for r in caplog.records] == ["sampling:  50%|#####     | 10/20",
                                                        "sampling: 100%|##########| 20/20"]


def test_progress_off_a_terminal_is_one_bar_and_no_line_comes_twice(monkeypatch, caplog):
    """Issue 23: progress lines off a terminal came again 10-20 s after each one (tqdm's monitor thread refreshed
    bars with dynamic miniters), and a sampler's steps logged lines of their own inside the count of samples.
    A fake clock runs 4 minutes of work, with tqdm's monitor checking every millisecond of real time."""
    import io
    import sys
    import time

    import tqdm._monitor
    import tqdm.std

    from molediff import utils

    clock = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])
    monkeypatch.setattr(tqdm._monitor, "time", lambda: clock[0])
    monkeypatch.setattr(sys, "stderr", io.StringIO())          # not a terminal
    monitor = tqdm._monitor.TMonitor(utils.tqdm, 0.001)
    try:
        with caplog.at_level("INFO", logger="molediff.progress"):
            bar = utils.progress(total=40, desc="samples", unit="mol")
            for _ in range(40):
                for _ in utils.progress(range(3), desc="steps", leave=False):
                    clock[0] += 2.0
                    time.sleep(0.003)                          # let the monitor look
                bar.update(1)
                time.sleep(0.003)
            bar.close()
    finally:
        monitor.exit()
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(line.startswith("samples:") for line in lines), lines      # one bar: no 'steps' lines
    assert len(lines) <= 240 / 60 + 1, lines                                          # one a minute, no repeats
    counts = [int(line.split("|")[2].split("/")[0]) for line in lines]
    assert counts == sorted(set(counts)), lines


def test_output_paths_are_checked_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "file.txt").write_text("x")
    assert check_output_path(tmp_path / "new" / "deeper" / "out.sdf") == tmp_path / "new" / "deeper" / "out.sdf"
    assert check_output_path(tmp_path / "folder", "--output", directory=True) == tmp_path / "folder"
    assert check_output_path(tmp_path, "--output", directory=True) == tmp_path          # an existing folder
    with pytest.raises(UsageError, match="'.*' is a directory; give a file name"):
        check_output_path(tmp_path)
    with pytest.raises(UsageError, match="--output '.*file.txt' is a file; give a folder"):
        check_output_path(tmp_path / "file.txt", "--output", directory=True)
    with pytest.raises(UsageError, match="is a file, not a directory"):
        check_output_path(tmp_path / "file.txt" / "out.sdf")
    assert not (tmp_path / "new").exists() and not (tmp_path / "folder").exists()       # nothing is created

    # a directory that passes os.access but takes no file (a read-only mount, /proc as root): the probe says so
    import molediff.utils as utils

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(utils.tempfile, "TemporaryFile", refuse)
    with pytest.raises(UsageError, match=r"--json '.*out.json' cannot be written: .* takes no new file "
                                         r"\(Read-only file system\)"):
        check_output_path(tmp_path / "out.json", "--json")
