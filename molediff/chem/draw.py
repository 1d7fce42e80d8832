"""Pictures of molecules: a PNG grid of RDKit 2-D depictions, for looking at generated molecules."""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["draw_grid"]


def draw_grid(molecules: Sequence, path: str | os.PathLike, legends: Sequence[str] | None = None,
              per_row: int = 5, size: int = 250, max_molecules: int = 100) -> int:
    """Write a PNG grid of 2-D depictions of ``molecules`` (a molecule's own bonds where it has them, else bonds
    perceived from 3D with EDM's table; hydrogens hidden) with one legend line each; returns the number drawn (at
    most ``max_molecules``).

    A molecule that RDKit cannot depict (e.g. an impossible valence) is drawn from its bare graph without
    sanitisation, so every molecule gets a cell. The file is written atomically.
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem import Draw, rdDepictor

    from ..utils import atomic_path
    from .bonds import to_rdkit

    molecules = list(molecules)[:max_molecules]
    legends = list(legends or [getattr(m, "name", "") for m in molecules])[:len(molecules)]
    if not molecules:
        raise ValueError("no molecules to draw")
    mols = []
    with rdBase.BlockLogs():
        for m in molecules:
            mol = to_rdkit(m.atomic_numbers, m.positions, bonds=getattr(m, "bonds", None),
                           formal_charges=getattr(m, "formal_charges", None), conformer=False)
            try:
                Chem.SanitizeMol(mol)
                mol = Chem.RemoveHs(mol)
            except Exception:  # RDKit raises several error types for impossible chemistry: draw the raw graph
                mol.UpdatePropertyCache(strict=False)
                mol = Chem.RemoveHs(mol, sanitize=False)
            rdDepictor.Compute2DCoords(mol)
            mols.append(mol)
        image = Draw.MolsToGridImage(mols, molsPerRow=min(per_row, len(mols)), subImgSize=(size, size),
                                     legends=legends, returnPNG=False)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return len(mols)
