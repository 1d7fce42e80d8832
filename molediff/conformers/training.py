"""The conformer training task for ``molediff train`` (task ``conformers``): coordinates given the graph."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..data.sources import MoleculeDataConfig, load_molecule_dataset
from .model import ConformerDiffusion, ConformerDiffusionConfig


@dataclass
class ConformerTask:
    """Implements the trainer's task protocol for ``ConformerDiffusion`` (no periodic evaluation yet)."""

    model: ConformerDiffusion
    dataset: object

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        batch = batch.to(device)
        loss = model(batch.positions, batch.type_index, batch.mask).mean()
        return loss, {"loss": float(loss.detach())}

    def batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> Iterator:
        from ..data.batching import molecule_batches

        yield from molecule_batches(self.dataset, self.model.config.vocabulary, batch_size, seed, epoch, rank,
                                    world_size)


def build_task(config) -> ConformerTask:
    """``molediff train`` entry: ``model`` is a ``ConformerDiffusionConfig``, ``data`` a ``MoleculeDataConfig``."""
    from ..utils import build_config

    model_cfg = ConformerDiffusionConfig.from_dict(config.model)
    data = build_config(MoleculeDataConfig, config.data, "data.")
    if model_cfg.edge_features or model_cfg.context_features:
        raise ValueError("the conformer task does not build edge features or context from data yet; set "
                         "model.edge_features and model.context_features to 0")
    dataset = load_molecule_dataset(data, model_cfg.vocabulary, model_cfg.max_atoms)
    return ConformerTask(model=ConformerDiffusion(model_cfg), dataset=dataset)
