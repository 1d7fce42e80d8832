"""Read and write molecules as SDF (MDL V2000/V3000 via RDKit) and XYZ (multi-frame), tolerating bad records.

``read_molecules`` never raises because of one bad record: it returns the molecules it could read and
a list of ``(record id, reason)`` pairs for the rest, where the record id is ``file:N`` (N counts
records from 1) followed by the record's title when it has one. Reasons are one line, e.g.
``unknown element 'Xx'``, ``non-finite coordinates``, ``empty molecule (no atoms)``,
``truncated record: 12 atoms declared, 7 found``.

Bonds read from SDF are kekulised (orders 1/2/3); an aromatic bond that cannot be kekulised is kept as 4.
Files ending in ``.gz`` are decompressed on the fly.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .elements import SYMBOLS, atomic_number
from .molecule import Molecule

log = logging.getLogger(__name__)

SDF_SUFFIXES = (".sdf", ".sd", ".mol")
XYZ_SUFFIXES = (".xyz",)


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


def _read_text(path: Path) -> str:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read file ({e})") from None


def read_molecules(path: str | os.PathLike) -> tuple[list[Molecule], list[tuple[str, str]]]:
    """All molecules in an SDF/XYZ file or a folder of them, plus ``(record id, reason)`` for each record
    that could not be read. Raises FileNotFoundError / ValueError only when ``path`` itself is unusable."""
    molecules: list[Molecule] = []
    errors: list[tuple[str, str]] = []
    for f in molecule_files(path):
        try:
            text = _read_text(f)
        except ValueError as e:
            errors.append((f.name, str(e).split(": ", 1)[-1]))
            continue
        reader = _sdf_records if _kind(f) == "sdf" else _xyz_records
        for record, result in reader(text, f.name):
            if isinstance(result, Molecule):
                molecules.append(result)
            else:
                errors.append((record, result))
    return molecules, errors


def _check(m: Molecule) -> str | None:
    if m.num_atoms == 0:
        return "empty molecule (no atoms)"
    if not np.all(np.isfinite(m.positions)):
        return "non-finite coordinates (NaN or inf)"
    return None


# -- SDF ----------------------------------------------------------------------------------------------
def _split_sdf(text: str) -> Iterator[str]:
    block: list[str] = []
    for line in text.splitlines():
        if line.strip() == "$$$$":
            yield "\n".join(block) + "\n"
            block = []
        else:
            block.append(line)
    if any(line.strip() for line in block):
        yield "\n".join(block) + "\n"


def _precheck_molblock(block: str) -> str | None:
    """Reasons RDKit would only report vaguely: truncated V2000 blocks and non-numeric coordinates."""
    lines = block.splitlines()
    if len(lines) < 4:
        return "truncated record: no counts line"
    counts = lines[3]
    if "V3000" in counts:
        return None if any(ln.startswith("M  END") for ln in lines) else "truncated record: no 'M  END' line"
    try:
        n_atoms, n_bonds = int(counts[0:3]), int(counts[3:6])
    except ValueError:
        return f"malformed counts line {counts.strip()[:40]!r}"
    atom_lines = lines[4:4 + n_atoms]
    if len(atom_lines) < n_atoms:
        return f"truncated record: {n_atoms} atoms declared, {len(atom_lines)} found"
    for k, ln in enumerate(atom_lines):
        try:
            xyz = [float(ln[0:10]), float(ln[10:20]), float(ln[20:30])]
        except ValueError:
            return f"malformed coordinates on atom line {k + 1}"
        if not all(np.isfinite(xyz)):
            return "non-finite coordinates (NaN or inf)"
        sym = ln[31:34].strip()
        if sym and sym not in ("R", "R#", "*", "A", "Q", "L", "LP") and not _known(sym):
            return f"unknown element {sym!r}"
    if len(lines) < 4 + n_atoms + n_bonds:
        return f"truncated record: {n_bonds} bonds declared, {max(0, len(lines) - 4 - n_atoms)} found"
    if not any(ln.startswith("M  END") for ln in lines[4 + n_atoms:]):
        return "truncated record: no 'M  END' line"
    return None


def _known(sym: str) -> bool:
    try:
        atomic_number(sym)
        return True
    except ValueError:
        return False


@contextlib.contextmanager
def _rdkit_errors():
    """Collect RDKit's error messages (list of str) instead of printing them."""
    from rdkit import rdBase

    messages: list[str] = []
    capture_cls = getattr(rdBase, "CaptureErrorLog", None)
    if capture_cls is None:
        with rdBase.BlockLogs():
            yield messages
        return
    with capture_cls() as capture:
        yield messages
    text = capture.messages
    messages.extend(m.split("] ", 1)[-1].strip() for m in (text if isinstance(text, list) else text.splitlines())
                    if m.strip())


def _sdf_records(text: str, filename: str):
    from rdkit import Chem

    for k, block in enumerate(_split_sdf(text), start=1):
        title = block.splitlines()[0].strip() if block.strip() else ""
        record = f"{filename}:{k}" + (f" ({title})" if title else "")
        reason = _precheck_molblock(block)
        if reason:
            yield record, reason
            continue
        with _rdkit_errors() as messages:
            mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False, strictParsing=True)
        if mol is None:
            yield record, (messages[-1] if messages else "RDKit could not parse the record")
            continue
        result = _from_rdkit(mol, title)
        yield record, result


def _from_rdkit(mol, name: str) -> Molecule | str:
    """A Molecule from an RDKit molecule with a conformer, or a reason string."""
    from rdkit import Chem

    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    if len(z) == 0:
        return "empty molecule (no atoms)"
    if np.any(z == 0):
        return f"unknown element {mol.GetAtomWithIdx(int(np.argmax(z == 0))).GetSymbol()!r}"
    if mol.GetNumConformers() == 0:
        return "no coordinates"
    conf = mol.GetConformer()
    pos = np.asarray(conf.GetPositions(), dtype=np.float64)
    if not conf.Is3D() and np.all(pos[:, 2] == 0) and len(z) > 3:
        return "2D coordinates only (the record is flagged 2D)"
    kek = Chem.Mol(mol)
    with contextlib.suppress(Exception), _rdkit_errors():
        Chem.Kekulize(kek, clearAromaticFlags=True)
    orders = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3, Chem.BondType.AROMATIC: 4}
    bonds = []
    for b in kek.GetBonds():
        o = orders.get(b.GetBondType())
        if o is None:
            return f"unsupported bond type {b.GetBondType()!s} between atoms {b.GetBeginAtomIdx() + 1} and " \
                   f"{b.GetEndAtomIdx() + 1}"
        i, j = sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
        bonds.append((i, j, o))
    charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.int64)
    m = Molecule(atomic_numbers=z, positions=pos.astype(np.float32), name=name,
                 bonds=np.array(bonds, dtype=np.int64).reshape(-1, 3), formal_charges=charges)
    return _check(m) or m


# -- XYZ ----------------------------------------------------------------------------------------------
def _xyz_records(text: str, filename: str):
    lines = text.splitlines()
    pos = 0
    k = 0
    while pos < len(lines):
        if not lines[pos].strip():
            pos += 1
            continue
        k += 1
        record = f"{filename}:{k}"
        head = lines[pos].split()
        if len(head) != 1 or not head[0].isdigit():
            yield record, f"malformed XYZ header {lines[pos].strip()[:40]!r} (expected an atom count)"
            pos = _next_header(lines, pos + 1)
            continue
        n = int(head[0])
        title = lines[pos + 1].strip() if pos + 1 < len(lines) else ""
        if title:
            record += f" ({title[:60]})"
        body = lines[pos + 2:pos + 2 + n]
        if pos + 1 >= len(lines) or len(body) < n:
            yield record, f"truncated record: {n} atoms declared, {len(body)} found"
            break
        pos += 2 + n
        if n == 0:
            yield record, "empty molecule (no atoms)"
            continue
        yield record, _parse_xyz_atoms(body, title)


def _next_header(lines: list[str], start: int) -> int:
    for i in range(start, len(lines)):
        parts = lines[i].split()
        if len(parts) == 1 and parts[0].isdigit():
            return i
    return len(lines)


def _parse_xyz_atoms(body: list[str], title: str) -> Molecule | str:
    z = np.zeros(len(body), dtype=np.int64)
    x = np.zeros((len(body), 3), dtype=np.float64)
    for i, line in enumerate(body):
        parts = line.split()
        if len(parts) < 4:
            return f"malformed atom line {i + 1}: {line.strip()[:40]!r}"
        sym = parts[0]
        try:
            z[i] = int(sym) if sym.isdigit() else atomic_number(sym)
        except ValueError:
            return f"unknown element {sym!r} on atom line {i + 1}"
        if not 1 <= z[i] < len(SYMBOLS):
            return f"unknown element {sym!r} on atom line {i + 1}"
        try:
            x[i] = [float(v) for v in parts[1:4]]
        except ValueError:
            return f"malformed coordinates on atom line {i + 1}"
    m = Molecule(atomic_numbers=z, positions=x.astype(np.float32), name=title)
    return _check(m) or m


# -- writers ------------------------------------------------------------------------------------------
def _writable(m: Molecule, k: int) -> None:
    label = m.name or f"molecule {k}"
    if m.num_atoms == 0:
        raise ValueError(f"cannot write {label}: no atoms")
    if not np.all(np.isfinite(m.positions)):
        raise ValueError(f"cannot write {label}: non-finite coordinates")
    z = m.atomic_numbers
    if np.any((z < 1) | (z >= len(SYMBOLS))):
        raise ValueError(f"cannot write {label}: invalid atomic number {int(z[(z < 1) | (z >= len(SYMBOLS))][0])}")


def molblock(m: Molecule) -> str:
    """The MDL V2000 block of a molecule; bonds are perceived from 3D (EDM's table) when absent."""
    from rdkit import Chem

    from .bonds import to_rdkit

    mol = to_rdkit(m.atomic_numbers, m.positions, bonds=m.bonds, formal_charges=m.formal_charges)
    mol.UpdatePropertyCache(strict=False)
    mol.SetProp("_Name", (m.name or "").replace("\n", " "))
    with _rdkit_errors():
        return Chem.MolToMolBlock(mol, kekulize=False, includeStereo=False)


def write_sdf(path: str | os.PathLike, molecules: Sequence[Molecule]) -> None:
    """Write molecules to one SDF file atomically (bonds perceived from 3D where a molecule has none)."""
    from ..utils import atomic_write

    blocks = []
    for k, m in enumerate(molecules):
        _writable(m, k)
        block = molblock(m)
        if m.smiles:
            block += f">  <SMILES>\n{m.smiles}\n\n"
        blocks.append(block + "$$$$\n")
    with atomic_write(path) as f:
        f.write("".join(blocks))


def write_xyz(path: str | os.PathLike, molecules: Sequence[Molecule]) -> None:
    """Write molecules to one multi-frame XYZ file atomically (title line = molecule name)."""
    from ..utils import atomic_write

    out = []
    for k, m in enumerate(molecules):
        _writable(m, k)
        out.append(f"{m.num_atoms}\n{(m.name or '').replace(chr(10), ' ')}\n")
        out.extend(f"{SYMBOLS[int(z)]:<2s} {p[0]:14.8f} {p[1]:14.8f} {p[2]:14.8f}\n"
                   for z, p in zip(m.atomic_numbers, m.positions.astype(np.float64)))
    with atomic_write(path) as f:
        f.write("".join(out))
