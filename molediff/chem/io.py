"""Read molecules from SDF/XYZ files (optionally ``.gz``) or folders of them, tolerating bad records.

``read_molecules`` never raises because of one bad record: it returns the molecules it could read and
a list of ``(record id, reason)`` pairs for the rest, where the record id is ``file:N`` (N counts
records from 1) followed by the record's title when it has one. Reasons are one line, e.g.
``unknown element 'Xx'``, ``non-finite coordinates``, ``empty molecule (no atoms)``,
``truncated record: 12 atoms declared, 7 found``, ``RDKit could not parse the record: <RDKit's message>``.
Problems of a whole file are reported under the bare file name: ``cannot read file (...)``,
``empty file (no records)``, ``file is truncated after record N: ...`` (a cut-off ``.gz``; the records
before the cut are kept).

The formats live in ``chem.sdf`` and ``chem.xyz`` (readers and writers), what they share (a file's text:
``.gz``, byte-order marks, line endings; numbers; a record's outcome) in ``chem.records``, and RDKit's log
capture in ``chem.rdkit_log``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .molecule import Molecule
from .records import read_text, text_lines
from .sdf import SDF_SUFFIXES, sdf_records
from .xyz import XYZ_SUFFIXES, xyz_records

log = logging.getLogger(__name__)


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(SDF_SUFFIXES):
        return "sdf"
    if name.endswith(XYZ_SUFFIXES):
        return "xyz"
    return None


def molecule_files(path: str | os.PathLike) -> list[Path]:
    """The SDF/XYZ files named by ``path`` (a file, or a folder searched recursively, sorted by name)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and _kind(f))
        if not files:
            raise ValueError(f"no .sdf/.sd/.mol/.xyz files in folder {p}")
        return files
    if _kind(p) is None:
        raise ValueError(f"{p}: unknown file type; expected .sdf, .sd, .mol or .xyz (optionally .gz)")
    return [p]


def read_molecules(path: str | os.PathLike, *, require_bonds: bool = False,
                   notes: list[tuple[str, str]] | None = None) -> tuple[list[Molecule], list[tuple[str, str]]]:
    """All molecules in an SDF/XYZ file (optionally ``.gz``) or a folder of them, plus ``(record id, reason)`` for
    each record that could not be read and for each file that could not be read (completely).

    Every record of a file ends up either in the molecules or in the errors; a cut-off ``.gz`` keeps the records
    before the cut and adds one error ``file is truncated after record N: ...`` under the file name.

    ``require_bonds``: an SDF record whose file bonds cannot be used (dative bond, query bond, a bond block RDKit
    refuses) is an error instead of a molecule with ``bonds=None``. ``notes``, when given, receives
    ``(record id, note)`` for molecules that were read with a caveat (these are also logged as warnings).

    Raises FileNotFoundError / ValueError only when ``path`` itself is unusable (missing, unknown file type,
    folder without molecule files); problems inside files never raise.
    """
    molecules: list[Molecule] = []
    errors: list[tuple[str, str]] = []
    for f in molecule_files(path):
        try:
            text, stream_problem = read_text(f)
        except ValueError as e:
            errors.append((f.name, str(e)))
            continue
        if not text.strip() and stream_problem is None:
            errors.append((f.name, "empty file (no records)" if not text else "no records (only whitespace)"))
            continue
        reader = sdf_records if _kind(f) == "sdf" else xyz_records
        records = list(reader(text_lines(text, cut=stream_problem is not None), f.name, require_bonds))
        if stream_problem is not None and records and records[-1].open_end:
            records.pop()  # the record the stream was cut in: covered by the truncation error below
        for rec in records:
            if isinstance(rec.result, Molecule):
                molecules.append(rec.result)
                if rec.note:
                    log.warning("%s: %s", rec.id, rec.note)
                    if notes is not None:
                        notes.append((rec.id, rec.note))
            else:
                errors.append((rec.id, rec.result))
        if stream_problem is not None:
            kind, detail = stream_problem
            errors.append((f.name, f"file is {kind} after record {len(records)}: {detail}; the rest is lost"))
    return molecules, errors
