"""Conformer diffusion on the point-cloud layer: p(coordinates | molecular graph).

The atom types (and formal charges) are given, clean, as node features ``[one-hot · type_scale |
atomic number · charge_scale]``; only the coordinates diffuse, in the zero-centre-of-mass space
(GeoDiff, Xu et al. 2022; torsional diffusion and ET-Flow diffuse other parameterisations of the same
conditional). Edge features of the graph (bond type, hop distance) enter the denoiser through its
``edge_attr`` when ``edge_features > 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..chem.features import AtomTypeEncoding, check_vocabulary
from ..pointcloud import PointCloudConfig, PointCloudDiffusion


@dataclass(frozen=True)
class ConformerDiffusionConfig(PointCloudConfig):
    """Everything needed to rebuild a conformer model; saved beside its weights.

    Attributes (besides the schedule, context width and denoiser of ``PointCloudConfig``):
        vocabulary: atomic numbers of the one-hot atom types, in one-hot order.
        type_scale, charge_scale, include_charges: the node-feature encoding (``molediff.chem.features``).
        edge_features: E, channels of the given edge features ``[B, N, N, E]`` (0: none).
        max_atoms: the largest molecule accepted (drug-like molecules with hydrogens need 150 or more).
    """

    vocabulary: tuple[int, ...] = (1, 6, 7, 8, 9)
    type_scale: float = 0.25
    charge_scale: float = 0.1
    include_charges: bool = True
    edge_features: int = 0
    max_atoms: int = 150

    denoiser_set_by_model: ClassVar[tuple[str, ...]] = ("in_node_features", "context_features", "edge_features")

    def __post_init__(self):
        super().__post_init__()
        check_vocabulary(self.vocabulary)
        if self.max_atoms < 1 or self.edge_features < 0:
            raise ValueError(f"max_atoms must be >= 1 and edge_features >= 0, got {self.max_atoms}, "
                             f"{self.edge_features}")


class ConformerDiffusion(PointCloudDiffusion):
    """p(positions | atom types, graph): coordinates diffuse, the graph conditions the denoiser."""

    config_class = ConformerDiffusionConfig

    def __init__(self, config: ConformerDiffusionConfig):
        atoms = AtomTypeEncoding(config.vocabulary, config.type_scale, config.charge_scale, config.include_charges)
        super().__init__(config.build_denoiser(atoms.width, edge_features=config.edge_features),
                         config.build_schedule(), diffused_features=0, max_nodes=config.max_atoms,
                         loss_weighting=config.build_loss_weighting())
        self.config = config
        self.atom_encoding = atoms

    def node_features(self, type_index: Tensor, mask: Tensor, dtype=torch.float32) -> Tensor:
        """The given node features ``[B, N, K (+1)]`` (``molediff.chem.features``), zero at padding."""
        return self.atom_encoding(type_index, mask, dtype)

    def forward(self, positions: Tensor, type_index: Tensor, mask: Tensor, edge_attr: Tensor | None = None,
                context: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Per-molecule ε-loss ``[B]`` on the coordinates given the graph.

        Shapes: positions [B, N, 3] (Å), type_index [B, N], mask [B, N], edge_attr [B, N, N, E] → [B]
        """
        if positions.shape[:2] != mask.shape:
            raise ValueError(f"positions {tuple(positions.shape)} and mask {tuple(mask.shape)} must agree")
        if not torch.isfinite(positions[mask]).all():
            raise ValueError("molecule positions contain NaN or infinite values")
        x = self.space.project(positions * mask.unsqueeze(-1).to(positions.dtype), mask)
        return self.loss(x, mask, context, self.node_features(type_index, mask, positions.dtype), edge_attr,
                         generator=generator)

    @torch.no_grad()
    def sample(self, type_index: Tensor, mask: Tensor, sampler: str = "ddpm", steps: int | None = None,
               seeds: Sequence[int] | None = None, edge_attr: Tensor | None = None, context: Tensor | None = None,
               show_progress: bool = False, **sampler_options) -> Tensor:
        """One conformer per molecule of the batch: positions ``[B, N, 3]`` (Å, zero CoM, 0 at padding).

        Shapes: type_index [B, N], mask [B, N] bool (real atoms first), edge_attr [B, N, N, E].
        """
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        mask = mask.to(device)
        counts = mask.sum(1)
        if not bool((mask == (torch.arange(mask.shape[1], device=device)[None] < counts[:, None])).all()):
            raise ValueError("the mask must mark each molecule's atoms first, padding last")
        n = int(counts.max()) if counts.numel() else 0
        feats = self.node_features(type_index.to(device), mask, dtype)[:, :n]
        if edge_attr is not None:
            edge_attr = edge_attr[:, :n, :n]
        x, out_mask = self.sample_state(counts, sampler, steps, seeds, context=context, given_features=feats,
                                        edge_attr=edge_attr, show_progress=show_progress, **sampler_options)
        return x[..., :3] * out_mask.unsqueeze(-1)
