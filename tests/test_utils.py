"""Atomic outputs: a failed write leaves the previous file intact and no temporary files behind."""

import os

import pytest

from molediff.utils import atomic_path, atomic_write


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
