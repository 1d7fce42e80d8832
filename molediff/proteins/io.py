"""Writing (and reading back) Cα traces as PDB and mmCIF through biotite.

A trace of L residues is written as chain A, residues numbered 1..L, residue name GLY (a Cα trace carries no
side chain), atom name CA, element C. PDB stores coordinates to 0.001 Å (``%8.3f``); biotite writes mmCIF
coordinates to the same precision.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..utils import atomic_write

__all__ = ["ca_atom_array", "read_ca_traces", "write_ca_trace"]


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
    from .data import chains_from_atoms, read_ca_atoms, structure_files

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
