"""SDF (MDL V2000/V3000 mol blocks through RDKit): records read into ``Molecule``s, tolerating bad ones, and
molecules written.

Reading: bonds are kekulised (orders 1/2/3); an aromatic bond that cannot be kekulised is kept as 4. A record
whose file bonds molediff cannot represent (dative, hydrogen, query or zero-order bonds), or that RDKit refuses
while its atom block is sound, is still read with ``bonds=None`` (bonds are then perceived from 3D) and a note,
unless ``require_bonds`` asks for file bonds. Reasons are one line, e.g. ``unknown element 'Xx'``,
``truncated record: 12 atoms declared, 7 found``, ``RDKit could not parse the record: <RDKit's message>``; RDKit's
log messages never reach stderr (they end up in the reason or note of their record).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import numpy as np

from .elements import METALS, atomic_number
from .molecule import Molecule
from .rdkit_log import rdkit_errors, rdkit_reason
from .records import Record, as_float32, check_writable, is_element, parse_number, unusable_reason

SDF_SUFFIXES = (".sdf", ".sd", ".mol")


def split_sdf(lines: list[str]) -> Iterator[tuple[list[str], bool]]:
    """(lines of one record, whether a ``$$$$`` line closed it); blank stretches between records are no record."""
    block: list[str] = []
    for line in lines:
        if line.strip() == "$$$$":
            yield block, True
            block = []
        else:
            block.append(line)
    if any(line.strip() for line in block):
        yield block, False  # a last record without $$$$ still counts


_PSEUDO_ATOMS = ("R", "R#", "*", "A", "Q", "L", "LP", "AH", "QH", "X", "XH", "M", "MH")


def _ctab_atoms(lines: list[str]) -> tuple[list[str], np.ndarray] | str:
    """Element symbols and [n, 3] float64 coordinates of a V2000 or V3000 mol block (lines from the title on),
    or the reason the atom block is unusable (malformed counts line, truncated block, bad coordinates)."""
    if len(lines) < 4:
        return "truncated record: no counts line"
    if "V3000" in lines[3]:
        return _v3000_atoms(lines)
    counts = lines[3]
    if not counts.isascii():
        return f"malformed counts line {counts.strip()[:40]!r} (non-ASCII characters)"
    try:
        n_atoms = int(counts[0:3])
        int(counts[3:6])
    except ValueError:
        return f"malformed counts line {counts.strip()[:40]!r}"
    atom_lines = lines[4:4 + n_atoms]
    if len(atom_lines) < n_atoms:
        return f"truncated record: {n_atoms} atoms declared, {len(atom_lines)} found"
    symbols, xyz = [], np.zeros((n_atoms, 3))
    for k, ln in enumerate(atom_lines):
        if not ln.isascii():  # RDKit cuts fixed columns by bytes: a multi-byte character shifts them
            return f"malformed atom line {k + 1} (non-ASCII characters)"
        try:
            xyz[k] = _v2000_coordinates(ln)
        except ValueError:
            return f"malformed coordinates on atom line {k + 1}"
        symbols.append(ln[31:34].strip())
    if len(lines) > 4 + n_atoms and _is_v2000_atom_line(lines[4 + n_atoms]):
        # a count too low would make RDKit read an atom as a bond; reading the atoms alone would lose one silently
        return f"atom count mismatch: {n_atoms} atoms declared, but line {5 + n_atoms} of the record is one more atom"
    return symbols, xyz


def _v2000_coordinates(line: str) -> list[float]:
    """x, y, z of a V2000 atom line (fixed columns); ValueError if they are not numbers."""
    return [parse_number(line[0:10].strip()), parse_number(line[10:20].strip()), parse_number(line[20:30].strip())]


def _is_v2000_atom_line(line: str) -> bool:
    try:
        _v2000_coordinates(line)
    except ValueError:
        return False
    return bool(line[31:34].strip())


def _v3000_atoms(lines: list[str]) -> tuple[list[str], np.ndarray] | str:
    """``_ctab_atoms`` for a V3000 block: the atom lines between BEGIN ATOM and END ATOM, checked against COUNTS."""
    body: list[str] = []
    pending = ""
    for ln in lines[4:]:
        if ln.startswith("M  END"):
            break
        if not ln.startswith("M  V30 "):
            continue
        text = pending + ln[7:].rstrip()
        if text.endswith("-"):  # V3000 continues a long line on the next one
            pending = text[:-1]
            continue
        pending = ""
        body.append(text.strip())
    upper = [b.upper() for b in body]
    counts = next((b for b, u in zip(body, upper) if u.startswith("COUNTS")), None)
    if counts is None:
        return "truncated record: no V3000 COUNTS line"
    try:
        n_atoms = int(counts.split()[1])
    except (IndexError, ValueError):
        return f"malformed counts line {counts[:40]!r}"
    if "BEGIN ATOM" not in upper:
        return f"truncated record: {n_atoms} atoms declared, 0 found"
    start = upper.index("BEGIN ATOM") + 1
    end = upper.index("END ATOM", start) if "END ATOM" in upper[start:] else len(body)
    atom_lines = body[start:end]
    if len(atom_lines) != n_atoms:
        problem = "truncated record" if len(atom_lines) < n_atoms else "atom count mismatch"
        return f"{problem}: {n_atoms} atoms declared, {len(atom_lines)} found"
    symbols, xyz = [], np.zeros((n_atoms, 3))
    for k, ln in enumerate(atom_lines):
        parts = ln.split()  # index, type, x, y, z, atom-atom map, KEY=VALUE...
        if not ln.isascii():
            return f"malformed atom line {k + 1} (non-ASCII characters)"
        if len(parts) < 5:
            return f"malformed atom line {k + 1}: {ln[:40]!r}"
        try:
            xyz[k] = [parse_number(v) for v in parts[2:5]]
        except ValueError:
            return f"malformed coordinates on atom line {k + 1}"
        symbols.append(parts[1])
    return symbols, xyz


def precheck_molblock(lines: list[str]) -> str | None:
    """Reasons RDKit would only report vaguely: truncated blocks, non-numeric coordinates, unknown elements."""
    atoms = _ctab_atoms(lines)
    if isinstance(atoms, str):
        return atoms
    symbols, xyz = atoms
    if not np.all(np.isfinite(xyz)):
        return "non-finite coordinates (NaN or inf)"
    for sym in symbols:
        # V3000 atom lists ([C,N]) and quoted types are RDKit's to judge
        if sym and sym.upper() not in _PSEUDO_ATOMS and not sym.startswith(("[", '"', "NOT")) and not is_element(sym):
            return f"unknown element {sym!r}"
    if "V3000" not in lines[3]:
        n_atoms, n_bonds = len(symbols), int(lines[3][3:6])
        if len(lines) < 4 + n_atoms + n_bonds:
            return f"truncated record: {n_bonds} bonds declared, {max(0, len(lines) - 4 - n_atoms)} found"
        lines = lines[4 + n_atoms:]
    if not any(ln.startswith("M  END") for ln in lines):
        return "truncated record: no 'M  END' line"
    return None


def sdf_records(lines: list[str], filename: str, require_bonds: bool = False) -> Iterator[Record]:
    for k, (block, terminated) in enumerate(split_sdf(lines), start=1):
        title = block[0].strip() if block else ""
        record = f"{filename}:{k}" + (f" ({title})" if title else "")
        reason = precheck_molblock(block)
        if reason:
            yield Record(record, reason, open_end=not terminated)
            continue
        result, note = _read_molblock(block, title, require_bonds)
        yield Record(record, result, note, open_end=not terminated and isinstance(result, str))


def _mol_from_block(text: str, strict: bool):
    """RDKit molecule (unsanitised, hydrogens kept) or None, and RDKit's messages (list of str)."""
    from rdkit import Chem

    failure = []
    with rdkit_errors() as messages:
        try:
            mol = Chem.MolFromMolBlock(text, sanitize=False, removeHs=False, strictParsing=strict)
        except Exception as e:  # the wrapper returns None on parse errors; this guards against anything else
            mol = None
            failure.append(f"{type(e).__name__}: {rdkit_reason(e)}")
    return mol, messages + failure


def _read_molblock(block: list[str], title: str, require_bonds: bool) -> tuple[Molecule | str, str | None]:
    """A Molecule and a note (or None), or the reason the record is unusable."""
    text = "\n".join(block) + "\n"
    mol, messages = _mol_from_block(text, strict=True)
    note = None
    if mol is None:
        why = rdkit_reason(messages) or "no message from RDKit"
        mol, _ = _mol_from_block(text, strict=False)
        if mol is not None:
            note = f"read with RDKit's lenient parser; the strict one refused it ({why})"
        elif require_bonds:
            return f"RDKit could not parse the record: {why}", None
        else:
            m = _atoms_only(block, title)
            if isinstance(m, str):
                return f"RDKit could not parse the record: {why}", None
            return m, f"RDKit could not parse the record ({why}); read atoms and coordinates only, " \
                      f"bonds will be perceived from 3D"
    notes: list[str] = [note] if note else []
    result = _from_rdkit(mol, title, require_bonds=require_bonds, notes=notes)
    return result, ("; ".join(notes) or None) if isinstance(result, Molecule) else None


def _atoms_only(block: list[str], title: str) -> Molecule | str:
    """A Molecule (bonds unknown, charges unknown) from the atom block alone, or the reason that fails too."""
    atoms = _ctab_atoms(block)
    if isinstance(atoms, str):
        return atoms
    symbols, xyz = atoms
    z = np.zeros(len(symbols), dtype=np.int64)
    for k, sym in enumerate(symbols):
        try:
            z[k] = atomic_number(sym)
        except ValueError:
            return f"unknown element {sym!r}"
    reason = _not_3d(xyz, flagged_3d=block[1][20:22].upper() == "3D")  # RDKit's rule for the 3D flag
    if reason:
        return reason
    m = Molecule(atomic_numbers=z, positions=as_float32(xyz), name=title)
    return unusable_reason(m) or m


def _not_3d(pos: np.ndarray, flagged_3d: bool) -> str | None:
    """Why coordinates [n, 3] of a record flagged 2D (header not "3D", every z zero) are no 3D structure, or None.
    Up to 3 atoms always lie in a plane, so those pass."""
    if flagged_3d or len(pos) <= 3 or np.any(pos[:, 2] != 0):
        return None
    if np.all(pos == pos[0]):  # said first: "2D" would hide that there are no coordinates at all
        return "collapsed: all atoms at one point, no 3D coordinates (the record is flagged 2D)"
    return "2D coordinates only (the record is flagged 2D)"


def _from_rdkit(mol, name: str, require_bonds: bool = False, notes: list[str] | None = None) -> Molecule | str:
    """A Molecule from an RDKit molecule with a conformer, or a reason string.

    Bonds other than single/double/triple/aromatic (dative, hydrogen, query, zero-order) make the record an error
    when ``require_bonds``; otherwise its bonds become unknown (None) and ``notes`` (if given) gets a line why.
    """
    from rdkit import Chem

    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    if len(z) == 0:
        return "empty molecule (no atoms)"
    if np.any(z == 0):
        try:
            symbol = mol.GetAtomWithIdx(int(np.argmax(z == 0))).GetSymbol()
        except UnicodeDecodeError:  # RDKit hands out bytes of the file as they are
            symbol = "?"
        return f"unknown element {symbol!r}"
    if mol.GetNumConformers() == 0:
        return "no coordinates"
    conf = mol.GetConformer()
    pos = np.asarray(conf.GetPositions(), dtype=np.float64)
    reason = _not_3d(pos, flagged_3d=conf.Is3D())
    if reason:
        return reason
    kek = mol
    if any(b.GetBondType() == Chem.BondType.AROMATIC for b in mol.GetBonds()):  # the common case has none: skip
        kek = Chem.Mol(mol)
        with contextlib.suppress(Exception), rdkit_errors():
            Chem.Kekulize(kek, clearAromaticFlags=True)
    orders = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3, Chem.BondType.AROMATIC: 4}
    bonds: list[tuple[int, int, int]] | None = []
    dative = 0
    for b in kek.GetBonds():
        o = orders.get(b.GetBondType())
        if b.GetBondType() == Chem.BondType.DATIVE and not b.HasQuery() and \
                (b.GetBeginAtom().GetAtomicNum() in METALS or b.GetEndAtom().GetAtomicNum() in METALS):
            # a ligand's bond to a metal (molediff conformers --allow-unvalidated-elements writes them): kept as a
            # single bond, so the file reads, and valence-based checks say what they make of the complex
            o, dative = 1, dative + 1
        if o is None or b.HasQuery():
            mdl = f" (MDL type {b.GetIntProp('_MolFileBondType')})" if b.HasProp("_MolFileBondType") else ""
            why = f"unsupported bond type {b.GetBondType()!s}{mdl} between atoms {b.GetBeginAtomIdx() + 1} and " \
                  f"{b.GetEndAtomIdx() + 1}"
            if require_bonds:
                return why
            if notes is not None:
                notes.append(f"file bonds not used: {why}; bonds will be perceived from 3D")
            bonds = None
            break
        i, j = sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
        bonds.append((i, j, o))
    if dative and bonds is not None and notes is not None:
        notes.append(f"{dative} dative bond{'s' if dative > 1 else ''} read as single bond{'s' if dative > 1 else ''} "
                     f"(valence checks count {'them' if dative > 1 else 'it'})")
    charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.int64)
    m = Molecule(atomic_numbers=z, positions=as_float32(pos), name=name,
                 bonds=None if bonds is None else np.array(bonds, dtype=np.int64).reshape(-1, 3),
                 formal_charges=charges)
    return unusable_reason(m) or m



def molblock(m: Molecule) -> str:
    """The MDL V2000 block of a molecule; bonds are perceived from 3D (EDM's table) when absent."""
    from rdkit import Chem

    from .bonds import to_rdkit

    mol = to_rdkit(m.atomic_numbers, m.positions, bonds=m.bonds, formal_charges=m.formal_charges)
    mol.UpdatePropertyCache(strict=False)
    mol.SetProp("_Name", (m.name or "").replace("\n", " "))
    with rdkit_errors():
        return Chem.MolToMolBlock(mol, kekulize=False, includeStereo=False)


def write_sdf(path: str | os.PathLike, molecules: Sequence[Molecule]) -> None:
    """Write molecules to one SDF file atomically (bonds perceived from 3D where a molecule has none)."""
    from ..utils import atomic_write

    blocks = []
    for k, m in enumerate(molecules):
        check_writable(m, k)
        block = molblock(m)
        if m.smiles:
            block += f">  <SMILES>\n{m.smiles}\n\n"
        blocks.append(block + "$$$$\n")
    with atomic_write(path) as f:
        f.write("".join(blocks))

