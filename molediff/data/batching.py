"""Dense, padded molecule batches for the models (and conversion from PyG graph batches), and the
size-bucketed order in which training visits a dataset.

Naming: ``atomic_numbers`` are atomic numbers (Z); a ``vocabulary`` is the tuple of atomic numbers that
defines the one-hot order (e.g. ``QM9_VOCABULARY`` = H, C, N, O, F); ``type_index`` is an index into a
vocabulary.

Shapes: positions [B, N, 3] float32 (zeros at padding), type_index [B, N] int64 (index into the
vocabulary, 0 at padding), atomic_numbers [B, N] int64 (0 at padding), mask [B, N] bool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .qm9 import QM9_VOCABULARY

BUCKET_WINDOW = 32
"""``size_bucketed_batches`` sorts molecules by size within windows of this many batches."""


@dataclass
class DenseMoleculeBatch:
    """B molecules padded to N atoms; ``mask`` marks real atoms.

    ``positions`` [B, N, 3] float32, ``type_index`` [B, N] int64 (index into the vocabulary the batch was
    collated with), ``atomic_numbers`` [B, N] int64, ``mask`` [B, N] bool; padding is 0 everywhere.
    """

    positions: torch.Tensor
    type_index: torch.Tensor
    atomic_numbers: torch.Tensor
    mask: torch.Tensor

    def to(self, device) -> DenseMoleculeBatch:
        """Every tensor field on ``device`` (subclasses' extra fields too), as the same class."""
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})

    def __len__(self) -> int:
        return self.positions.shape[0]


def _format_vocabulary(vocabulary: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(a) for a in vocabulary)


def collate_dense(molecules: Sequence, vocabulary: Sequence[int] = QM9_VOCABULARY,
                  max_atoms: int | None = None) -> DenseMoleculeBatch:
    """Pad molecules into one ``DenseMoleculeBatch`` of N = ``max_atoms`` (or the largest molecule) atoms.

    ``vocabulary`` lists atomic numbers; an atom's ``type_index`` is the position of its atomic number in
    it. ValueError naming the molecule for an element outside the vocabulary or more than ``max_atoms``
    atoms.
    """
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[np.asarray(vocabulary, dtype=np.int64)] = np.arange(len(vocabulary))
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
    type_index = np.zeros((b, n_max), dtype=np.int64)
    mask = np.zeros((b, n_max), dtype=bool)
    for k, m in enumerate(molecules):
        n = counts[k]
        zk = np.asarray(m.atomic_numbers, dtype=np.int64)
        t = lookup[np.clip(zk, 0, 255)]
        if np.any(t < 0) or np.any((zk < 0) | (zk > 255)):
            bad = int(zk[(t < 0) | (zk < 0) | (zk > 255)][0])
            raise ValueError(f"molecule {m.name or k!r} has atomic number {bad}, not in the vocabulary "
                             f"{_format_vocabulary(vocabulary)}")
        pos[k, :n] = m.positions
        z[k, :n] = zk
        type_index[k, :n] = t
        mask[k, :n] = True
    return DenseMoleculeBatch(torch.from_numpy(pos), torch.from_numpy(type_index), torch.from_numpy(z),
                              torch.from_numpy(mask))


def from_pyg_batch(batch, vocabulary: Sequence[int] = QM9_VOCABULARY) -> DenseMoleculeBatch:
    """Dense batch from a ``torch_geometric`` Batch with ``pos`` [n, 3], ``z`` [n] (atomic numbers) and
    ``batch`` [n]; ``type_index`` as in ``collate_dense``."""
    from torch_geometric.utils import to_dense_batch

    pos, mask = to_dense_batch(batch.pos.float(), batch.batch)
    z, _ = to_dense_batch(batch.z.long(), batch.batch)
    lookup = torch.full((256,), -1, dtype=torch.long, device=z.device)
    lookup[torch.as_tensor(vocabulary, dtype=torch.long, device=z.device)] = torch.arange(len(vocabulary),
                                                                                         device=z.device)
    type_index = lookup[z.clamp(0, 255)]
    if bool(((type_index < 0) & mask).any()):
        bad = int(z[(type_index < 0) & mask][0])
        raise ValueError(f"atomic number {bad} is not in the vocabulary {_format_vocabulary(vocabulary)}")
    type_index = torch.where(mask, type_index, torch.zeros_like(type_index))
    return DenseMoleculeBatch(pos, type_index, torch.where(mask, z, torch.zeros_like(z)), mask)


def size_bucketed_batches(sizes: np.ndarray, batch_size: int, seed: int, epoch: int, rank: int = 0,
                          world_size: int = 1) -> Iterator[np.ndarray]:
    """Rank ``rank``'s share of each global batch of one epoch, as dataset indices, in an order fixed by
    (seed, epoch).

    ``sizes`` [M] are the molecules' atom counts. Each yielded array is [batch_size // world_size] int64:
    rank r gets positions ``r * per_rank:(r + 1) * per_rank`` of the global batch, so the ranks' shares
    partition it.

    Why: the models work on dense batches padded to the largest molecule (edge tensors [B, N, N]), so a
    batch mixing a 5-atom and a 29-atom molecule wastes most of its pairs. Molecules are therefore
    grouped by size, yet every epoch still visits each molecule at most once in a fresh order:

    1. ``rng = np.random.default_rng([seed, epoch])``; ``order = rng.permutation(M)``;
    2. ``order`` is cut into windows of ``32 * batch_size`` molecules; each window is sorted by size
       (stable sort) and split into full batches of ``batch_size`` (a window's remainder, and any tail
       shorter than one batch, are left out of this epoch);
    3. the batches are visited in the order ``rng.permutation(number of batches)`` (the same ``rng``).

    On QM9 this cuts the padding about in half. ``MoleculeTask.batches`` uses this order (checkpoints
    resume mid-epoch by counting batches, so the order must not change). ValueError when ``batch_size``
    does not divide evenly over ``world_size`` processes or ``rank`` is outside ``0..world_size-1``.
    """
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch size ({batch_size}) and world size ({world_size}) must be positive")
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} must divide evenly over {world_size} processes")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    sizes = np.asarray(sizes).reshape(-1)
    return _bucketed(sizes, batch_size, seed, epoch, rank, batch_size // world_size)


def _bucketed(sizes: np.ndarray, batch_size: int, seed: int, epoch: int, rank: int,
              per_rank: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(sizes))
    window = BUCKET_WINDOW * batch_size
    batches = []
    for start in range(0, len(order) - batch_size + 1, window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(sizes[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size))
    for b in rng.permutation(len(batches)):
        yield batches[b][rank * per_rank:(rank + 1) * per_rank].astype(np.int64, copy=False)


def molecule_batches(dataset, vocabulary: Sequence[int], batch_size: int, seed: int, epoch: int, rank: int = 0,
                     world_size: int = 1) -> Iterator[DenseMoleculeBatch]:
    """Rank ``rank``'s share of each global batch of a molecule dataset, molecules of similar size together
    (``size_bucketed_batches``), padded by ``collate_dense``: the ``batches`` of every molecule task."""
    for idx in size_bucketed_batches(np.asarray(dataset.atom_counts), batch_size, seed, epoch, rank, world_size):
        yield collate_dense([dataset[int(i)] for i in idx], vocabulary=vocabulary)
