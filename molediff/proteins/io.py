"""Protein structures in and out through biotite: PDB/mmCIF files read into chains of Cα atoms, and Cα traces
written (and read back) as PDB and mmCIF.

Reading rules (one chain = one author chain id of the first model):

* Structures are parsed with biotite (``PDBFile`` / ``CIFFile``, plain or ``.gz``), first model only, the
  first alternate location of every atom (``altloc="first"``).
* Residues: the 20 standard amino acids, plus selenomethionine (MSE), read as methionine (a crystallisation
  variant, not a different residue). Every other residue (ligands, water, modified amino acids) is removed;
  a residue without a Cα atom is removed too. A removed residue inside the chain leaves a gap that the
  break rule below catches.
* Chain breaks: consecutive kept Cα atoms farther apart than ``max_ca_gap`` (4.2 Å) make a break. With
  ``on_break="drop"`` (default) the chain is dropped; with ``"split"`` every unbroken segment is a chain
  of its own (named ``chain/segment``).
* Length: 40..256 residues (``min_length``, ``max_length``), checked after the break rule.

Every chain that is not kept is counted by its reason and a file that cannot be read at all (corrupt gzip,
not a structure, no protein) gives a one-line reason; the rest of the folder is still read.

Writing: a trace of L residues is written as chain A, residues numbered 1..L, residue name GLY (a Cα trace
carries no side chain), atom name CA, element C. PDB stores coordinates to 0.001 Å (``%8.3f``); biotite writes
mmCIF coordinates to the same precision.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..chem.records import read_text
from ..utils import atomic_write, progress

log = logging.getLogger(__name__)

__all__ = ["THREE_TO_ONE", "STRUCTURE_SUFFIXES", "ProteinChain", "structure_files", "read_ca_atoms",
           "chains_from_atoms", "read_chains", "ca_atom_array", "read_ca_traces", "write_ca_trace"]

THREE_TO_ONE = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G", "HIS": "H",
    "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S", "THR": "T", "TRP": "W",
    "TYR": "Y", "VAL": "V", "MSE": "M",
}
"""Residue names read as amino acids (MSE, selenomethionine, as M); everything else is dropped."""

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")


@dataclass
class ProteinChain:
    """One chain's Cα trace. ``coords`` [L, 3] float32 Å, ``sequence`` one-letter (length L)."""

    coords: np.ndarray
    sequence: str
    source: str
    chain_id: str

    @property
    def name(self) -> str:
        return f"{self.source}:{self.chain_id}"

    def __len__(self) -> int:
        return len(self.sequence)


# ------------------------------------------------------------------------------------------------ reading
def structure_files(path: str | os.PathLike) -> list[Path]:
    """The structure files of a folder (sorted; recursive) or the one file given; FileNotFoundError if none."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"protein data path {str(path)!r} does not exist")
    files = sorted(f for f in p.rglob("*") if f.is_file() and _suffix(f) in STRUCTURE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no .pdb/.ent/.cif/.mmcif files (optionally .gz) in {str(path)!r}")
    return files


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[1]


def _read_text(path: Path) -> str:
    """The file's text as molediff's molecule readers decode it (``.gz``, byte-order marks); a structure cut off
    inside its ``.gz`` stream is refused whole (a partial chain would pass for a short one)."""
    text, problem = read_text(path)
    if problem is not None:
        raise ValueError(f"not a readable gzip file ({problem[1]})")
    return text


def read_ca_atoms(path: str | os.PathLike):
    """The Cα atoms (atom name CA) of the first model of a PDB/mmCIF file as a biotite ``AtomArray``.

    PDB text is cut to its ATOM/HETATM records named CA before biotite parses it, which makes reading about
    ten times faster and changes nothing else. ValueError with a one-line reason for a file that cannot be
    read or holds no atoms.
    """
    path = Path(path)
    text = _read_text(path)
    with warnings.catch_warnings():
        # biotite warns when it guesses elements from atom names; only Cα atoms are kept, so that is moot.
        warnings.filterwarnings("ignore", message=".*elements were guessed", category=UserWarning)
        return _parse_ca_atoms(text, _suffix(path))


def _parse_ca_atoms(text: str, suffix: str):
    import biotite.structure as struc

    pdb_text = None
    if suffix not in (".cif", ".mmcif"):
        lines = [ln for ln in text.splitlines()
                 if (ln.startswith(("ATOM  ", "HETATM")) and ln[12:16].strip() == "CA")
                 or ln.startswith(("MODEL", "ENDMDL"))]
        if not any(ln.startswith(("ATOM", "HETATM")) for ln in lines):
            raise ValueError("no Cα atoms (no protein, or not a PDB file)")
        pdb_text = "\n".join(lines) + "\nEND\n"
    try:
        if pdb_text is None:
            from biotite.structure.io import pdbx

            atoms = pdbx.get_structure(pdbx.CIFFile.read(io.StringIO(text)), model=1, altloc="first")
        else:
            from biotite.structure.io import pdb

            atoms = pdb.PDBFile.read(io.StringIO(pdb_text)).get_structure(model=1, altloc="first")
    except ValueError as e:
        raise ValueError(f"not a readable structure: {' '.join(str(e).split())}") from None
    except Exception as e:  # biotite raises various types on garbage; the reason is what matters
        raise ValueError(f"not a readable structure: {type(e).__name__}: {' '.join(str(e).split())}") from None
    if isinstance(atoms, struc.AtomArrayStack):
        atoms = atoms[0]
    atoms = atoms[atoms.atom_name == "CA"]
    if atoms.array_length() == 0:
        raise ValueError("no Cα atoms")
    return atoms


def chains_from_atoms(atoms, source: str, min_length: int = 40, max_length: int = 256, max_ca_gap: float = 4.2,
                      on_break: str = "drop") -> tuple[list[ProteinChain], list[str]]:
    """Split Cα atoms into chains by the module's rules; returns ``(kept chains, reasons for the others)``.

    A residue is one (chain id, residue number, insertion code); its first Cα is used.
    """
    kept, reasons = [], []
    for chain_id in dict.fromkeys(atoms.chain_id.tolist()):
        a = atoms[atoms.chain_id == chain_id]
        aa = np.array([n in THREE_TO_ONE for n in a.res_name])
        if not aa.any():
            reasons.append("no standard amino acids")
            continue
        a = a[aa]
        key = np.array([f"{r}|{i}" for r, i in zip(a.res_id, a.ins_code)])
        _, first = np.unique(key, return_index=True)
        a = a[np.sort(first)]
        xyz = a.coord.astype(np.float32)
        seq = "".join(THREE_TO_ONE[n] for n in a.res_name)
        gaps = np.linalg.norm(np.diff(xyz, axis=0), axis=1) > max_ca_gap
        if gaps.any() and on_break == "drop":
            reasons.append("chain break")
            continue
        bounds = np.concatenate([[0], np.nonzero(gaps)[0] + 1, [len(seq)]])
        for k, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            name = chain_id if len(bounds) == 2 else f"{chain_id}/{k}"
            if e - s < min_length:
                reasons.append(f"shorter than {min_length}")
            elif e - s > max_length:
                reasons.append(f"longer than {max_length}")
            else:
                kept.append(ProteinChain(xyz[s:e].copy(), seq[s:e], source, name))
    return kept, reasons


def read_chains(path: str | os.PathLike, min_length: int = 40, max_length: int = 256, max_ca_gap: float = 4.2,
                on_break: str = "drop", show_progress: bool = False
                ) -> tuple[list[ProteinChain], Counter, list[tuple[str, str]]]:
    """Read every structure file under ``path``: ``(chains, chain reasons counted, [(file, reason)])``.

    A file that cannot be read is reported with its reason and skipped; logs "kept N of M chains".
    """
    chains, reasons, bad = [], Counter(), []
    for f in progress(structure_files(path), desc="reading structures", unit="file",
                      disable=None if show_progress else True):
        try:
            atoms = read_ca_atoms(f)
        except (ValueError, OSError) as e:
            bad.append((f.name, str(e)))
            continue
        kept, why = chains_from_atoms(atoms, f.name, min_length, max_length, max_ca_gap, on_break)
        chains.extend(kept)
        reasons.update(why)
    total = len(chains) + sum(reasons.values())
    log.info("kept %d of %d chains%s; %d unreadable files", len(chains), total,
             "".join(f", {n} {r}" for r, n in reasons.most_common()), len(bad))
    for name, reason in bad:
        log.warning("skipped %s: %s", name, reason)
    return chains, reasons, bad


# ------------------------------------------------------------------------------------------------ writing
def ca_atom_array(coords: np.ndarray, chain_id: str = "A"):
    """A biotite ``AtomArray`` of L Cα atoms from coordinates [L, 3] (Å); ValueError for a bad shape or
    non-finite coordinates."""
    import biotite.structure as struc

    x = np.asarray(coords, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != 3 or len(x) == 0:
        raise ValueError(f"a Cα trace must be [L, 3] with L >= 1, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the Cα trace has NaN or infinite coordinates")
    atoms = struc.AtomArray(len(x))
    atoms.coord = x
    atoms.chain_id[:] = chain_id
    atoms.res_id = np.arange(1, len(x) + 1)
    atoms.res_name[:] = "GLY"
    atoms.atom_name[:] = "CA"
    atoms.element[:] = "C"
    atoms.hetero[:] = False
    return atoms


def write_ca_trace(path: str | os.PathLike, coords: np.ndarray) -> Path:
    """Write one Cα trace [L, 3] (Å) as PDB (``.pdb``) or mmCIF (``.cif``), chosen by the extension; atomic.

    PDB's fixed columns hold coordinates in −999.999..9999.999 Å; ValueError outside that range, for another
    extension, or for a bad trace.
    """
    from biotite.structure.io import pdb, pdbx

    path = Path(path)
    atoms = ca_atom_array(coords)
    suffix = path.suffix.lower()
    if suffix == ".pdb":
        if atoms.coord.min() < -999.999 or atoms.coord.max() > 9999.999:
            raise ValueError(f"coordinates outside the PDB format's range; write {path.stem}.cif instead")
        f = pdb.PDBFile()
        f.set_structure(atoms)
    elif suffix == ".cif":
        f = pdbx.CIFFile()
        pdbx.set_structure(f, atoms)
    else:
        raise ValueError(f"a Cα trace is written as .pdb or .cif, got {path.name!r}")
    with atomic_write(path) as out:
        f.write(out)
    return path


def read_ca_traces(path: str | os.PathLike) -> tuple[list[np.ndarray], list[str], list[tuple[str, str]]]:
    """Every chain's Cα coordinates from a structure file or folder, whatever their geometry (no length or
    chain-break filter: this is for scoring). Returns ``(coords [L, 3] per chain, names, [(file, reason)])``.

    A structure written in two formats (``NAME.pdb`` beside ``NAME.cif``, as ``molediff protein sample`` writes
    them) is read once, from the PDB file, so that no chain counts twice.
    """
    files = structure_files(path)
    pdb_stems = {f.name.split(".")[0] for f in files if ".pdb" in f.name.lower() or ".ent" in f.name.lower()}
    files = [f for f in files if not (".cif" in f.name.lower() and f.name.split(".")[0] in pdb_stems)]
    coords, names, bad = [], [], []
    for f in files:
        try:
            atoms = read_ca_atoms(f)
        except (ValueError, OSError) as e:
            bad.append((f.name, str(e)))
            continue
        chains, _ = chains_from_atoms(atoms, f.name, min_length=1, max_length=10**9, max_ca_gap=float("inf"))
        if not chains:
            bad.append((f.name, "no amino-acid chain"))
        for c in chains:
            coords.append(c.coords)
            names.append(c.name)
    return coords, names, bad
