"""XYZ: multi-frame files read into ``Molecule``s, tolerating bad frames, and molecules written.

Plain multi-frame files, and raw QM9 files (``dsgdb9nsd_*.xyz``: a 5th column of Mulliken charges, Mathematica
exponents such as ``1.2*^-6``, and three trailing lines of frequencies, SMILES and InChI). Raw QM9 frames are named
``gdb <index>``. A frame whose atom count disagrees with its atom lines is reported with its line number and
reading resumes at the next frame.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence

import numpy as np

from .elements import SYMBOLS, atomic_number
from .molecule import Molecule
from .records import Record, as_float32, check_writable, is_element, parse_number, unusable_reason

XYZ_SUFFIXES = (".xyz",)
_QM9_TITLE = re.compile(r"gdb\s+\d+(\s|$)")  # raw QM9: "gdb <index>\t<15 properties>"


def _atom_count(line: str) -> int | None:
    """The atom count if ``line`` is an XYZ count line (a single non-negative integer), else None."""
    parts = line.split()
    if len(parts) == 1 and parts[0].isascii() and parts[0].isdigit():
        return int(parts[0])
    return None


def _looks_like_atom(line: str) -> bool:
    """Whether ``line`` reads as an XYZ atom line (element symbol or number, then three numbers)."""
    parts = line.split()
    if len(parts) < 4:
        return False
    sym = parts[0]
    if not (is_element(sym) or (sym.isascii() and sym.isdigit() and 1 <= int(sym) < len(SYMBOLS))):
        return False
    try:
        [parse_number(v) for v in parts[1:4]]
    except ValueError:
        return False
    return True


def xyz_records(lines: list[str], filename: str, require_bonds: bool = False) -> Iterator[Record]:
    """Frames of a multi-frame XYZ file (``require_bonds`` is unused: XYZ has no bonds)."""
    pos = 0
    k = 0
    while pos < len(lines):
        if not lines[pos].strip():
            pos += 1
            continue
        k += 1
        record = f"{filename}:{k}"
        start = pos
        n = _atom_count(lines[pos])
        if n is None:
            yield Record(record, f"malformed XYZ header {lines[pos].strip()[:40]!r} on line {pos + 1} "
                                  f"(expected an atom count)")
            pos = _next_header(lines, pos + 1)
            continue
        if pos + 1 >= len(lines):
            yield Record(record, "empty molecule (no atoms)" if n == 0 else
                          f"truncated record: {n} atoms declared, 0 found", open_end=n > 0)
            break
        title = lines[pos + 1].strip()
        qm9 = _QM9_TITLE.match(title) is not None
        if qm9:  # the "title" of raw QM9 is its 15 properties: the name is "gdb <index>"
            title = " ".join(title.split()[:2])
        if title:
            record += f" ({title[:60]})"
        body_start = pos + 2
        end = body_start
        # a count line or blank line inside the atom block means the count is too high and another frame starts
        while end < min(body_start + n, len(lines)) and lines[end].strip() and _atom_count(lines[end]) is None:
            end += 1
        body = lines[body_start:end]
        if len(body) < n:
            if end >= len(lines):
                yield Record(record, f"truncated record: {n} atoms declared, {len(body)} found", open_end=True)
                break
            yield Record(record, f"truncated record: {n} atoms declared, {len(body)} found before line {end + 1} "
                                  f"(frame starts on line {start + 1})")
            pos = end
            continue
        pos = end
        if pos < len(lines) and _looks_like_atom(lines[pos]):
            yield Record(record, f"atom count mismatch: {n} atoms declared, but line {pos + 1} is one more atom "
                                  f"(frame starts on line {start + 1})")
            pos = _next_header(lines, pos)
            continue
        if qm9:  # raw QM9: frequencies, SMILES and InChI lines follow the atoms
            for _ in range(3):
                if pos < len(lines) and lines[pos].strip() and _atom_count(lines[pos]) is None:
                    pos += 1
        if n == 0:
            yield Record(record, "empty molecule (no atoms)")
            continue
        yield Record(record, _parse_xyz_atoms(body, title))


def _next_header(lines: list[str], start: int) -> int:
    for i in range(start, len(lines)):
        if _atom_count(lines[i]) is not None:
            return i
    return len(lines)


def _parse_xyz_atoms(body: list[str], title: str) -> Molecule | str:
    z = np.zeros(len(body), dtype=np.int64)
    x = np.zeros((len(body), 3), dtype=np.float64)
    for i, line in enumerate(body):
        parts = line.split()  # symbol, x, y, z and possibly more columns (raw QM9: Mulliken charge), ignored
        if len(parts) < 4:
            return f"malformed atom line {i + 1}: {line.strip()[:40]!r}"
        sym = parts[0]
        try:
            zi = int(sym) if sym.isascii() and sym.isdigit() else atomic_number(sym)
        except ValueError:
            zi = 0
        if not 1 <= zi < len(SYMBOLS):  # checked before storing: a long digit string would overflow int64
            return f"unknown element {sym!r} on atom line {i + 1}"
        z[i] = zi
        try:
            x[i] = [parse_number(v) for v in parts[1:4]]
        except ValueError:
            return f"malformed coordinates on atom line {i + 1}"
    m = Molecule(atomic_numbers=z, positions=as_float32(x), name=title)
    return unusable_reason(m) or m



def write_xyz(path: str | os.PathLike, molecules: Sequence[Molecule]) -> None:
    """Write molecules to one multi-frame XYZ file atomically (title line = molecule name)."""
    from ..utils import atomic_write

    out = []
    for k, m in enumerate(molecules):
        check_writable(m, k)
        out.append(f"{m.num_atoms}\n{(m.name or '').replace(chr(10), ' ')}\n")
        out.extend(f"{SYMBOLS[int(z)]:<2s} {p[0]:14.8f} {p[1]:14.8f} {p[2]:14.8f}\n"
                   for z, p in zip(m.atomic_numbers, m.positions.astype(np.float64)))
    with atomic_write(path) as f:
        f.write("".join(out))
