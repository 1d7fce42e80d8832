"""RDKit's log messages caught, and condensed into the one-line reasons molediff reports.

``rdkit_errors`` collects what RDKit logs during a block (wherever RDKit's logging points) instead of letting it
reach stderr; ``rdkit_reason`` turns those messages, or an exception RDKit raised, into one line without stack
frames. Every reader, checker and pipeline step that reports why RDKit failed goes through these two.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable

_CAPTURE_LOCK = threading.RLock()
_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ?", re.MULTILINE)


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


@contextlib.contextmanager
def rdkit_errors():
    """Collect RDKit's log messages (a list of one-line str, filled when the block exits) instead of printing them.

    RDKit logs to C++ ``std::cerr`` (file descriptor 2) by default, to ``sys.stderr`` after ``rdBase.WrapLogs`` /
    ``LogToPythonStderr``, or to the ``rdkit`` Python logger after ``LogToPythonLogger``. All three are redirected
    for the duration of the block without changing RDKit's own log configuration (``rdBase.CaptureErrorLog`` misses
    warnings and fails to decode messages that quote a cut UTF-8 character; ``LogToPythonLogger`` would re-enable
    logs a user disabled). Not safe against other threads writing to stderr at the same moment: their output
    would be captured too.
    """
    from rdkit import rdBase

    messages: list[str] = []
    raw: list[str] = []
    with _CAPTURE_LOCK, contextlib.ExitStack() as stack:
        if sys.stderr is not None:
            sys.stderr.flush()  # what Python already wrote belongs to the real stderr, not to the capture
        status = rdBase.LogStatus()
        for level in ("rdApp.warning", "rdApp.error"):  # reasons need RDKit's words even if the user muted them
            if f"{level}:disabled" in status:
                rdBase.EnableLog(level)
                stack.callback(rdBase.DisableLog, level)
        logger = logging.getLogger("rdkit")
        saved = logger.handlers[:], logger.propagate
        logger.handlers, logger.propagate = [_ListHandler(raw)], False
        stack.callback(_restore_logger, logger, saved)
        py_stderr = io.StringIO()
        stack.enter_context(contextlib.redirect_stderr(py_stderr))
        fd_text = stack.enter_context(_redirect_fd2())
        try:
            yield messages
        finally:
            stack.close()
            raw.append(py_stderr.getvalue())
            raw.extend(fd_text)
            for text in raw:
                for msg in _split_messages(text):
                    if msg not in messages:  # a tee (WrapLogs) delivers the same message twice
                        messages.append(msg)


def _restore_logger(logger: logging.Logger, saved) -> None:
    logger.handlers, logger.propagate = saved


_FD_SINK: dict[str, object] = {"pid": None, "fd": None, "busy": False}


def _new_sink() -> int:
    """A descriptor of a new anonymous temporary file."""
    with tempfile.TemporaryFile() as tmp:
        return os.dup(tmp.fileno())


@contextlib.contextmanager
def _redirect_fd2():
    """File descriptor 2 into a temporary file for the block; yields a list that gets the captured text (empty if
    fd 2 cannot be redirected). One sink file per process is reused: creating one costs more than parsing a record."""
    # a nested capture (busy sink) gets a file of its own; after a fork the inherited sink belongs to the parent
    reuse = not _FD_SINK["busy"]
    try:
        if reuse and _FD_SINK["pid"] != os.getpid():
            if _FD_SINK["fd"] is not None:
                os.close(_FD_SINK["fd"])  # this process's copy of the parent's descriptor
            _FD_SINK.update(pid=None, fd=None)
            _FD_SINK.update(fd=_new_sink(), pid=os.getpid())
        sink = _FD_SINK["fd"] if reuse else _new_sink()
    except OSError:
        yield []
        return
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (a daemon): nothing to capture from it
        if not reuse:
            os.close(sink)
        yield []
        return
    captured: list[str] = []
    if reuse:
        _FD_SINK["busy"] = True
    try:
        os.ftruncate(sink, 0)
        os.lseek(sink, 0, os.SEEK_SET)
        os.dup2(sink, 2)
        yield captured
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        size = os.lseek(sink, 0, os.SEEK_END)
        os.lseek(sink, 0, os.SEEK_SET)
        captured.append(os.read(sink, size).decode("utf-8", errors="replace") if size else "")
        if reuse:
            _FD_SINK["busy"] = False
        else:
            os.close(sink)


_STACK_FRAME = re.compile(r"\d+# ")


def _split_messages(text: str) -> list[str]:
    """One-line messages from RDKit log text: timestamps dropped, invariant-violation reports condensed to their
    kind, expression and failed condition (no source paths, no stack trace)."""
    out = []
    for chunk in _TIMESTAMP.split(text):
        keep = []
        for line in chunk.splitlines():
            line = line.strip()
            if line.startswith("Stacktrace:"):
                break
            # a frame of that stack trace arriving as its own log record (RDKit logging through Python's logger,
            # as after rdBase.LogToPythonLogger(), which e.g. importing posebusters calls)
            if _STACK_FRAME.match(line):
                continue
            if line and line.strip("*-") and not line.startswith("Violation occurred on line"):
                keep.append(line)
        if keep:
            out.append(": ".join(keep))
    return out



def rdkit_reason(source: Iterable[str] | BaseException, *, echo: str = "", limit: int = 300) -> str:
    """One line saying why RDKit failed, from the messages ``rdkit_errors`` collected or from an exception.

    Messages: RDKit's ``SMILES Parse Error:`` prefix, echoes of the input (``echo``, e.g. the SMILES itself), the
    caret lines that point into it, ``Failed parsing SMILES`` and repeats are dropped; the rest are joined by
    ``"; "``. An exception gives its first line, except RDKit's ``Invariant Violation``, which keeps the next line
    too because that one says what went wrong (``Invariant Violation: bad direction in linearSearch``); an
    exception without a message gives its type's name. Cut to ``limit`` characters (ending ``...``). Returns ""
    when no message remains (callers say ``no message from RDKit`` or the like).
    """
    if isinstance(source, BaseException):
        lines = [ln.strip() for ln in str(source).splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].lower().startswith("invariant violation"):
            lines = [f"{lines[0]}: {lines[1]}"]
        return _condense(lines[:1], echo, limit) or type(source).__name__
    return _condense(source, echo, limit)


def _condense(messages: Iterable[str], echo: str, limit: int) -> str:
    keep: list[str] = []
    for msg in messages:
        msg = msg.removeprefix("SMILES Parse Error: ").strip().rstrip(":")
        if not msg or msg == echo or not msg.strip("~^ ") or msg.startswith("Failed parsing SMILES"):
            continue
        if msg not in keep:
            keep.append(msg)
    reason = "; ".join(keep)
    return reason if len(reason) <= limit else reason[:limit - 3] + "..."
