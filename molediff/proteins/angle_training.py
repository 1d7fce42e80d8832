"""The angle-space backbone training task for ``molediff train`` (task ``protein_angles``).

The chains are the protein task's (``ProteinDataConfig``: the same folder, length range and homology split).
Each epoch, a chain longer than ``model.max_length`` residues (FoldingDiff: 128) contributes one random
window of that many consecutive residues, drawn afresh per (seed, epoch), so over the epochs the model sees
every part of every long chain; shorter chains are used whole. With ``data.balance: clusters`` an epoch visits
one chain per homology cluster (``ProteinSet.epoch_chains``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .angle_model import MIN_LENGTH, ProteinAngleConfig, ProteinAngleDiffusion
from .data import ProteinDataConfig, ProteinSet, load_proteins
from .training import ChainBatch, ProteinTask, collate_chains


def crop_windows(lengths: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """Start residue ``[M]`` int64 of one random window of ``min(L, window)`` residues per chain (0 for chains
    that fit): uniform over the L − window + 1 possible starts."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.floor(rng.random(len(lengths)) * np.maximum(lengths - window + 1, 1)).astype(np.int64)


@dataclass
class ProteinAngleTask(ProteinTask):
    """The protein task's loss and (empty) evaluation for ``ProteinAngleDiffusion``, with cropped windows as
    batches."""

    model: ProteinAngleDiffusion
    dataset: ProteinSet

    @property
    def window(self) -> int:
        return self.model.config.max_length

    def batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> Iterator[ChainBatch]:
        """Windows of similar length together (``size_bucketed_batches`` on the cropped lengths); the windows
        of an epoch are fixed by (seed, epoch), so a resumed run sees the same data."""
        from ..data.batching import size_bucketed_batches

        chosen = self.dataset.epoch_chains(self.balance, seed, epoch)
        lengths = self.dataset.lengths[chosen]
        starts = crop_windows(lengths, self.window, np.random.default_rng([seed, epoch, 20]))
        cropped = np.minimum(lengths, self.window)
        for idx in size_bucketed_batches(cropped, batch_size, seed, epoch, rank, world_size):
            yield collate_chains([self.dataset[int(chosen[i])].coords[starts[i]:starts[i] + self.window]
                                  for i in idx])


def build_task(config) -> ProteinAngleTask:
    """``molediff train`` entry: ``model`` is a ``ProteinAngleConfig`` (its length histogram is filled from
    the training windows when absent), ``data`` a ``ProteinDataConfig``; both are checked before reading."""
    from ..pointcloud import size_histogram
    from ..utils import build_config

    model_cfg = ProteinAngleConfig.from_dict(config.model)
    data = build_config(ProteinDataConfig, config.data, "data.")
    if data.min_length < MIN_LENGTH:
        raise ValueError(f"data.min_length must be >= {MIN_LENGTH} (a chain needs a dihedral), got {data.min_length}")
    dataset = load_proteins(data)
    if not model_cfg.length_histogram:
        hist = size_histogram(np.minimum(dataset.lengths, model_cfg.max_length))
        model_cfg = ProteinAngleConfig.from_dict({**model_cfg.to_dict(), "length_histogram": hist})
    return ProteinAngleTask(model=ProteinAngleDiffusion(model_cfg), dataset=dataset, balance=data.balance)
