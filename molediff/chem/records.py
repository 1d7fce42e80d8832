"""What the SDF and XYZ readers share: a file's text, numbers as chemistry files write them, element symbols, and
what becomes of one record.

A file's text: ``.gz`` is decompressed on the fly (a stream that breaks off part-way keeps what came before the
break and says so); a UTF-8 (or UTF-16) byte-order mark is dropped; CRLF and CR line endings read like LF.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .elements import SYMBOLS, atomic_number
from .molecule import Molecule


class Record(NamedTuple):
    """One record as a reader saw it: ``result`` is a Molecule or the reason it was skipped; ``note`` says how a
    molecule was read when that differs from the file (e.g. file bonds ignored); ``open_end`` marks a record that
    was still incomplete when the input ended (it may only be the victim of a cut-off file)."""

    id: str
    result: Molecule | str
    note: str | None = None
    open_end: bool = False


def read_text(path: Path) -> tuple[str, tuple[str, str] | None]:
    """(decoded text, stream problem) of a file; the problem is ``(kind, detail)`` when a ``.gz`` stream breaks
    off part-way (its text is then what was decompressed before the break). ValueError (one line) when nothing
    can be read at all."""
    problem = None
    try:
        if path.name.lower().endswith(".gz"):
            data, problem = _gunzip(path)
        else:
            data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read file ({e.strerror or e})") from None
    if problem is not None and not data:
        raise ValueError(f"cannot read file ({problem[1]})")
    return _decode(data), problem


def _gunzip(path: Path) -> tuple[bytes, tuple[str, str] | None]:
    chunks: list[bytes] = []
    problem = None
    with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as f:
        try:
            # read1, not read: a buffered read() drops the partial chunk when the stream breaks off inside it
            while chunk := f.read1(1 << 16):
                chunks.append(chunk)
        except EOFError:
            problem = ("truncated", "the gzip stream ends before its end marker")
        except (gzip.BadGzipFile, zlib.error) as e:
            problem = ("corrupt", f"bad gzip data ({e})")
        except OSError as e:
            if not chunks:
                raise
            problem = ("unreadable", f"read error ({e.strerror or e})")
    return b"".join(chunks), problem


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with BOM ("Unicode" in Windows editors)
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")  # -sig: a UTF-8 BOM must not become part of line 1


def text_lines(text: str, cut: bool = False) -> list[str]:
    """Lines without line terminators (LF, CRLF or CR). ``cut``: the text may end inside a line, which is dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\ufeff" in text:  # files concatenated with `cat` carry a BOM at the start of each part
        text = re.sub("^\ufeff+", "", text, flags=re.MULTILINE)
    lines = text.split("\n")
    if cut or lines[-1] == "":
        lines.pop()
    return lines



def as_float32(x: np.ndarray) -> np.ndarray:
    """float32 copy; values beyond float32's range become inf (then reported as non-finite), without a warning."""
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float64).astype(np.float32)


def unusable_reason(m: Molecule) -> str | None:
    """Why a molecule just read cannot be used (no atoms, non-finite coordinates), or None."""
    if m.num_atoms == 0:
        return "empty molecule (no atoms)"
    if not np.all(np.isfinite(m.positions)):
        return "non-finite coordinates (NaN or inf)"
    return None


_ODD_EXPONENT = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:\*\^|[dD])([+-]?\d+)")


def parse_number(token: str) -> float:
    """A coordinate: plain/scientific notation, Mathematica ``1.2*^-6`` (raw QM9) or Fortran ``1.2D-06``; also
    nan/inf (reported later as non-finite). ValueError otherwise."""
    if "_" not in token:  # Python's float would read "1_0" as 10
        with contextlib.suppress(ValueError):
            return float(token)
    m = _ODD_EXPONENT.fullmatch(token)
    if m:
        return float(f"{m.group(1)}e{m.group(2)}")
    raise ValueError(f"not a number: {token!r}")


def is_element(symbol: str) -> bool:
    """Whether ``symbol`` names an element (as ``atomic_number`` reads symbols)."""
    try:
        atomic_number(symbol)
        return True
    except ValueError:
        return False


def check_writable(m: Molecule, k: int) -> None:
    """ValueError naming molecule ``k`` (or its name) when it cannot be written: no atoms, non-finite coordinates,
    an atomic number outside 1..118."""
    label = m.name or f"molecule {k}"
    if m.num_atoms == 0:
        raise ValueError(f"cannot write {label}: no atoms")
    if not np.all(np.isfinite(m.positions)):
        raise ValueError(f"cannot write {label}: non-finite coordinates")
    z = m.atomic_numbers
    if np.any((z < 1) | (z >= len(SYMBOLS))):
        raise ValueError(f"cannot write {label}: invalid atomic number {int(z[(z < 1) | (z >= len(SYMBOLS))][0])}")
