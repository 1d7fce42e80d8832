"""Dense, padded molecule batches for the models (and conversion from PyG graph batches).

Shapes: positions [B, N, 3] float32 (zeros at padding), atom_types [B, N] int64 (index into the
atom-type vocabulary, 0 at padding), atomic_numbers [B, N] int64 (0 at padding), mask [B, N] bool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .qm9 import QM9_ATOM_TYPES


@dataclass
class DenseMoleculeBatch:
    """B molecules padded to N atoms; ``mask`` marks real atoms."""

    positions: torch.Tensor
    atom_types: torch.Tensor
    atomic_numbers: torch.Tensor
    mask: torch.Tensor

    def to(self, device) -> DenseMoleculeBatch:
        return DenseMoleculeBatch(self.positions.to(device), self.atom_types.to(device),
                                  self.atomic_numbers.to(device), self.mask.to(device))

    def __len__(self) -> int:
        return self.positions.shape[0]


def collate_dense(molecules: Sequence, atom_types: Sequence[int] = QM9_ATOM_TYPES,
                  max_atoms: int | None = None) -> DenseMoleculeBatch:
    """Pad molecules into one ``DenseMoleculeBatch``. ``atom_types`` lists the atomic numbers of the
    vocabulary (type index = position in it). ValueError naming the molecule for an element outside the
    vocabulary or more than ``max_atoms`` atoms."""
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[np.asarray(atom_types, dtype=np.int64)] = np.arange(len(atom_types))
    counts = [len(m.atomic_numbers) for m in molecules]
    n_max = max(counts, default=0)
    if max_atoms is not None:
        too_big = [k for k, c in enumerate(counts) if c > max_atoms]
        if too_big:
            m = molecules[too_big[0]]
            raise ValueError(f"molecule {m.name or too_big[0]!r} has {counts[too_big[0]]} atoms, more than "
                             f"max_atoms={max_atoms}")
        n_max = max_atoms
    b = len(molecules)
    pos = np.zeros((b, n_max, 3), dtype=np.float32)
    z = np.zeros((b, n_max), dtype=np.int64)
    types = np.zeros((b, n_max), dtype=np.int64)
    mask = np.zeros((b, n_max), dtype=bool)
    for k, m in enumerate(molecules):
        n = counts[k]
        zk = np.asarray(m.atomic_numbers, dtype=np.int64)
        t = lookup[np.clip(zk, 0, 255)]
        if np.any(t < 0) or np.any((zk < 0) | (zk > 255)):
            bad = int(zk[(t < 0) | (zk < 0) | (zk > 255)][0])
            raise ValueError(f"molecule {m.name or k!r} has atomic number {bad}, not in the atom types "
                             f"{tuple(int(a) for a in atom_types)}")
        pos[k, :n] = m.positions
        z[k, :n] = zk
        types[k, :n] = t
        mask[k, :n] = True
    return DenseMoleculeBatch(torch.from_numpy(pos), torch.from_numpy(types), torch.from_numpy(z),
                              torch.from_numpy(mask))


def from_pyg_batch(batch, atom_types: Sequence[int] = QM9_ATOM_TYPES) -> DenseMoleculeBatch:
    """Dense batch from a ``torch_geometric`` Batch with ``pos`` [n, 3], ``z`` [n] and ``batch`` [n]."""
    from torch_geometric.utils import to_dense_batch

    pos, mask = to_dense_batch(batch.pos.float(), batch.batch)
    z, _ = to_dense_batch(batch.z.long(), batch.batch)
    lookup = torch.full((256,), -1, dtype=torch.long, device=z.device)
    lookup[torch.as_tensor(atom_types, dtype=torch.long, device=z.device)] = torch.arange(len(atom_types),
                                                                                         device=z.device)
    types = lookup[z.clamp(0, 255)]
    if bool(((types < 0) & mask).any()):
        bad = int(z[(types < 0) & mask][0])
        raise ValueError(f"atomic number {bad} is not in the atom types {tuple(int(a) for a in atom_types)}")
    types = torch.where(mask, types, torch.zeros_like(types))
    return DenseMoleculeBatch(pos, types, torch.where(mask, z, torch.zeros_like(z)), mask)
