"""The in-memory form of a 3D molecule (``Molecule``) and a compact dataset of many (``MoleculeDataset``).

Bond orders are 1, 2 or 3 (Kekulé form). The value 4 marks an aromatic bond only where a file gave
aromatic bonds that could not be kekulised; molediff's own bond perception never produces 4.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .elements import SYMBOLS


@dataclass
class Molecule:
    """One 3D molecule. Positions are in Ångström.

    Shapes: atomic_numbers [n] int64, positions [n, 3] float32, bonds [m, 3] int64 rows (i, j, order)
    with i < j, formal_charges [n] int64. ``bonds`` is None when unknown (then they are perceived from
    3D where needed); an empty [0, 3] array means "known to have no bonds".
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    name: str = ""
    smiles: str | None = None
    bonds: np.ndarray | None = None
    formal_charges: np.ndarray | None = None

    def __post_init__(self):
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float32).reshape(-1, 3)
        if len(self.positions) != len(self.atomic_numbers):
            raise ValueError(f"molecule {self.name!r}: {len(self.atomic_numbers)} atoms but "
                             f"{len(self.positions)} positions")
        if self.bonds is not None:
            self.bonds = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 3)
        if self.formal_charges is not None:
            self.formal_charges = np.asarray(self.formal_charges, dtype=np.int64).reshape(-1)

    @property
    def num_atoms(self) -> int:
        return int(len(self.atomic_numbers))

    @property
    def formula(self) -> str:
        """Hill formula, e.g. ``C2H6O``."""
        zs, counts = np.unique(self.atomic_numbers, return_counts=True)
        count = {SYMBOLS[int(z)] if 0 < z < len(SYMBOLS) else "*": int(c) for z, c in zip(zs, counts)}
        if "C" in count:
            order = [k for k in ("C", "H") if k in count] + sorted(k for k in count if k not in ("C", "H"))
        else:
            order = sorted(count)
        return "".join(f"{k}{count[k] if count[k] > 1 else ''}" for k in order)

    def bond_matrix(self) -> np.ndarray | None:
        """[n, n] int64 symmetric bond-order matrix from ``bonds`` (None if bonds are unknown)."""
        if self.bonds is None:
            return None
        n = self.num_atoms
        a = np.zeros((n, n), dtype=np.int64)
        i, j, o = self.bonds.T
        a[i, j] = o
        a[j, i] = o
        return a

    def to_pyg(self):
        """A ``torch_geometric.data.Data`` with ``pos`` [n, 3] float32, ``z`` [n] int64 and, when bonds are
        known, ``edge_index`` [2, 2m] (both directions) with ``edge_attr`` [2m] int64 bond orders; also
        ``charge`` [n] if formal charges are known, ``name`` and ``smiles``."""
        import torch
        from torch_geometric.data import Data

        data = Data(pos=torch.from_numpy(self.positions.copy()), z=torch.from_numpy(self.atomic_numbers.copy()))
        if self.bonds is not None:
            b = torch.from_numpy(self.bonds.copy())
            data.edge_index = torch.cat([b[:, :2].T, b[:, [1, 0]].T], dim=1).contiguous()
            data.edge_attr = torch.cat([b[:, 2], b[:, 2]])
        if self.formal_charges is not None:
            data.charge = torch.from_numpy(self.formal_charges.copy())
        data.name = self.name
        if self.smiles is not None:
            data.smiles = self.smiles
        return data


def _ranges(offsets: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(offsets[i], offsets[i+1])`` for each i in ``indices`` (vectorised)."""
    starts, stops = offsets[indices], offsets[indices + 1]
    lengths = stops - starts
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(lengths.sum(), dtype=np.int64) + shift


class MoleculeDataset(Sequence):
    """Many molecules stored as flat arrays plus offsets (no pickles), saved and loaded as one ``.npz``.

    Arrays: ``atomic_numbers`` [T] uint8, ``positions`` [T, 3] float32, ``offsets`` [len + 1] int64 (atoms of
    molecule k are ``offsets[k]:offsets[k+1]``), optional ``names`` / ``smiles`` [len] str ('' = unknown),
    optional ``bonds`` [M, 3] int64 with per-molecule atom indices and ``bond_offsets`` [len + 1], optional
    ``formal_charges`` [T] int8. Indexing returns a ``Molecule`` (a copy).
    """

    _KEYS = ("atomic_numbers", "positions", "offsets", "names", "smiles", "bonds", "bond_offsets", "formal_charges")

    def __init__(self, atomic_numbers, positions, offsets, names=None, smiles=None, bonds=None, bond_offsets=None,
                 formal_charges=None):
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=np.uint8)
        self.positions = np.asarray(positions, dtype=np.float32).reshape(-1, 3)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        n = len(self.offsets) - 1
        if n < 0 or self.offsets[0] != 0 or self.offsets[-1] != len(self.atomic_numbers) \
                or len(self.positions) != len(self.atomic_numbers) or np.any(np.diff(self.offsets) < 0):
            raise ValueError("inconsistent MoleculeDataset arrays (offsets do not match atoms/positions)")
        self.names = None if names is None else np.asarray(names, dtype=str)
        self.smiles = None if smiles is None else np.asarray(smiles, dtype=str)
        for key in ("names", "smiles"):
            v = getattr(self, key)
            if v is not None and len(v) != n:
                raise ValueError(f"MoleculeDataset {key} has {len(v)} entries for {n} molecules")
        if (bonds is None) != (bond_offsets is None):
            raise ValueError("MoleculeDataset needs both bonds and bond_offsets, or neither")
        self.bonds = None if bonds is None else np.asarray(bonds, dtype=np.int64).reshape(-1, 3)
        self.bond_offsets = None if bond_offsets is None else np.asarray(bond_offsets, dtype=np.int64)
        if self.bond_offsets is not None and (len(self.bond_offsets) != n + 1 or
                                              self.bond_offsets[-1] != len(self.bonds)):
            raise ValueError("inconsistent MoleculeDataset bond arrays")
        self.formal_charges = None if formal_charges is None else np.asarray(formal_charges, dtype=np.int8)
        if self.formal_charges is not None and len(self.formal_charges) != len(self.atomic_numbers):
            raise ValueError("MoleculeDataset formal_charges must have one entry per atom")

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_molecules(cls, molecules: Iterable[Molecule]) -> MoleculeDataset:
        """Pack molecules. Bonds / charges are kept only if every molecule has them."""
        molecules = list(molecules)
        counts = np.array([m.num_atoms for m in molecules], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        def cat(xs, shape):
            return (np.concatenate(xs) if xs else np.zeros(shape))
        z = cat([m.atomic_numbers for m in molecules], (0,))
        if np.any((z < 0) | (z > 255)):
            raise ValueError("atomic numbers must be in 0..255")
        pos = cat([m.positions for m in molecules], (0, 3))
        names = [m.name for m in molecules]
        smiles = [m.smiles or "" for m in molecules]
        bonds = bond_offsets = charges = None
        if molecules and all(m.bonds is not None for m in molecules):
            bonds = cat([m.bonds for m in molecules], (0, 3))
            bond_offsets = np.concatenate([[0], np.cumsum([len(m.bonds) for m in molecules])])
        if molecules and all(m.formal_charges is not None for m in molecules):
            charges = cat([m.formal_charges for m in molecules], (0,))
        return cls(z, pos, offsets, names=names, smiles=smiles if any(smiles) else None, bonds=bonds,
                   bond_offsets=bond_offsets, formal_charges=charges)

    # -- sequence protocol ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def atom_counts(self) -> np.ndarray:
        """[len] int64 number of atoms of each molecule."""
        return np.diff(self.offsets)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.subset(np.arange(len(self))[index])
        k = int(index)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(f"molecule index {index} out of range for {len(self)} molecules")
        lo, hi = self.offsets[k], self.offsets[k + 1]
        bonds = None
        if self.bonds is not None:
            bonds = self.bonds[self.bond_offsets[k]:self.bond_offsets[k + 1]].copy()
        smiles = str(self.smiles[k]) if self.smiles is not None and self.smiles[k] else None
        return Molecule(atomic_numbers=self.atomic_numbers[lo:hi].astype(np.int64),
                        positions=self.positions[lo:hi].copy(),
                        name=str(self.names[k]) if self.names is not None else "",
                        smiles=smiles, bonds=bonds,
                        formal_charges=None if self.formal_charges is None
                        else self.formal_charges[lo:hi].astype(np.int64))

    def subset(self, indices) -> MoleculeDataset:
        """A new dataset holding molecules ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset index out of range for {len(self)} molecules")
        idx = np.where(idx < 0, idx + len(self), idx)
        atoms = _ranges(self.offsets, idx)
        counts = self.atom_counts[idx]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        bonds = bond_offsets = None
        if self.bonds is not None:
            bonds = self.bonds[_ranges(self.bond_offsets, idx)]
            bond_offsets = np.concatenate([[0], np.cumsum(np.diff(self.bond_offsets)[idx])]).astype(np.int64)
        return MoleculeDataset(self.atomic_numbers[atoms], self.positions[atoms], offsets,
                               names=None if self.names is None else self.names[idx],
                               smiles=None if self.smiles is None else self.smiles[idx],
                               bonds=bonds, bond_offsets=bond_offsets,
                               formal_charges=None if self.formal_charges is None else self.formal_charges[atoms])

    def __repr__(self) -> str:
        return f"MoleculeDataset({len(self)} molecules, {len(self.atomic_numbers)} atoms)"

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, compress: bool = False) -> None:
        """Write all arrays to one ``.npz`` file, atomically (no pickled objects)."""
        from ..utils import atomic_write

        arrays = {k: getattr(self, k) for k in self._KEYS if getattr(self, k) is not None}
        with atomic_write(path, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> MoleculeDataset:
        """Read a file written by ``save``."""
        from ..utils import read_npz

        arrays = read_npz(path, cls._KEYS, "dataset file")
        missing = {"atomic_numbers", "positions", "offsets"} - set(arrays)
        if missing:
            raise ValueError(f"{path} is not a molediff dataset: missing {sorted(missing)}")
        return cls(**arrays)
