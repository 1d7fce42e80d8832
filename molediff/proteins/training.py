"""The Cα backbone training task for ``molediff train`` (task ``proteins``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..pointcloud import size_histogram
from .data import ProteinDataConfig, ProteinSet, load_proteins
from .model import ProteinBackboneConfig, ProteinBackboneDiffusion


@dataclass
class ChainBatch:
    """B chains padded to N residues: ``coords`` [B, N, 3] float32 Å (0 at padding), ``mask`` [B, N] bool."""

    coords: torch.Tensor
    mask: torch.Tensor

    def to(self, device) -> ChainBatch:
        return ChainBatch(self.coords.to(device), self.mask.to(device))

    def __len__(self) -> int:
        return self.coords.shape[0]


def collate_chains(chains: Sequence[np.ndarray]) -> ChainBatch:
    """Pad Cα traces (each [L, 3]) into one ``ChainBatch``."""
    n = max(len(c) for c in chains)
    coords = np.zeros((len(chains), n, 3), dtype=np.float32)
    mask = np.zeros((len(chains), n), dtype=bool)
    for b, c in enumerate(chains):
        coords[b, :len(c)] = c
        mask[b, :len(c)] = True
    return ChainBatch(torch.from_numpy(coords), torch.from_numpy(mask))


def length_histogram(proteins: ProteinSet) -> dict[int, int]:
    """{chain length: number of chains}."""
    return size_histogram(np.asarray(proteins.lengths))


@dataclass
class ProteinTask:
    """Implements the trainer's task protocol for ``ProteinBackboneDiffusion`` (no periodic evaluation yet)."""

    model: ProteinBackboneDiffusion
    dataset: ProteinSet
    balance: str = "none"   # ProteinDataConfig.balance

    def loss(self, model: nn.Module, batch: ChainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        batch = batch.to(device)
        loss = model(batch.coords, batch.mask).mean()
        return loss, {"loss": float(loss.detach())}

    def batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> Iterator[ChainBatch]:
        """Chains of similar length together (``molediff.data.batching.size_bucketed_batches``): the dense
        [B, N, N] edges cost the square of the longest chain of a batch."""
        from ..data.batching import size_bucketed_batches

        chosen = self.dataset.epoch_chains(self.balance, seed, epoch)
        for idx in size_bucketed_batches(self.dataset.lengths[chosen], batch_size, seed, epoch, rank, world_size):
            yield collate_chains([self.dataset[int(chosen[i])].coords for i in idx])

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        return {}


def build_task(config) -> ProteinTask:
    """``molediff train`` entry: ``model`` is a ``ProteinBackboneConfig`` (its length histogram is filled from
    the training chains when absent), ``data`` a ``ProteinDataConfig``; both are checked before reading."""
    from ..utils import build_config

    model_cfg = ProteinBackboneConfig.from_dict(config.model)
    data = build_config(ProteinDataConfig, config.data, "data.")
    if model_cfg.context_features:
        raise ValueError("the protein task has no conditioning data; set model.context_features to 0")
    if data.max_length > model_cfg.max_length:
        raise ValueError(f"data.max_length {data.max_length} exceeds model.max_length {model_cfg.max_length}")
    dataset = load_proteins(data)
    if not model_cfg.length_histogram:
        model_cfg = ProteinBackboneConfig.from_dict({**model_cfg.to_dict(),
                                                     "length_histogram": length_histogram(dataset)})
    return ProteinTask(model=ProteinBackboneDiffusion(model_cfg), dataset=dataset, balance=data.balance)
