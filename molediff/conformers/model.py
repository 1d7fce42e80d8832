"""Conformer diffusion on the point-cloud layer: p(coordinates | molecular graph).

The atom types (and formal charges) are given, clean, as node features ``[one-hot · type_scale |
atomic number · charge_scale]``; only the coordinates diffuse, in the zero-centre-of-mass space
(GeoDiff, Xu et al. 2022; torsional diffusion and ET-Flow diffuse other parameterisations of the same
conditional). Further per-atom graph features ``[B, N, node_features]`` (charge, aromaticity, hybridisation,
ring membership, H count: ``molediff.conformers.graph``) are appended to them when ``node_features > 0``, and
edge features of the graph (bond type, hop distance, same ring) enter the denoiser through its ``edge_attr``
when ``edge_features > 0``.

A refiner (SDEdit from force-field or ETKDG geometry, ``molediff.conformers.refine``) only ever sees low noise;
``t_max < 1`` trains it on those times alone: t uniform on the grid ``{0, 1/T, …, round(t_max·T)/T}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..chem.features import AtomTypeEncoding, check_vocabulary
from ..diffusion import sample_time
from ..pointcloud import PointCloudConfig, PointCloudDiffusion


@dataclass(frozen=True)
class ConformerDiffusionConfig(PointCloudConfig):
    """Everything needed to rebuild a conformer model; saved beside its weights.

    Attributes (besides the schedule, context width and denoiser of ``PointCloudConfig``):
        vocabulary: atomic numbers of the one-hot atom types, in one-hot order.
        type_scale, charge_scale, include_charges: the node-feature encoding (``molediff.chem.features``).
        node_features: G, channels of given per-atom graph features ``[B, N, G]`` appended to the atom-type
            encoding (0: none; the conformer task uses ``molediff.conformers.graph.NODE_FEATURES``).
        edge_features: E, channels of the given edge features ``[B, N, N, E]`` (0: none; the conformer task
            uses ``molediff.conformers.graph.EDGE_FEATURES``).
        t_max: training times are drawn uniformly on the grid up to ``round(t_max · T) / T`` (1: all times,
            as the ε-objective does by default; a refiner trained on low noise uses less).
        max_atoms: the largest molecule accepted (drug-like molecules with hydrogens need 150 or more).
    """

    vocabulary: tuple[int, ...] = (1, 6, 7, 8, 9)
    type_scale: float = 0.25
    charge_scale: float = 0.1
    include_charges: bool = True
    node_features: int = 0
    edge_features: int = 0
    t_max: float = 1.0
    max_atoms: int = 150

    denoiser_set_by_model: ClassVar[tuple[str, ...]] = ("in_node_features", "context_features", "edge_features")

    def __post_init__(self):
        super().__post_init__()
        check_vocabulary(self.vocabulary)
        if self.max_atoms < 1 or self.edge_features < 0 or self.node_features < 0:
            raise ValueError(f"max_atoms must be >= 1 and node_features, edge_features >= 0, got "
                             f"{self.max_atoms}, {self.node_features}, {self.edge_features}")
        if not 0.0 < self.t_max <= 1.0 or round(self.t_max * self.T) < 1:
            raise ValueError(f"t_max must lie in (0, 1] and cover at least one grid step (t_max · T >= 0.5), "
                             f"got t_max={self.t_max} with T={self.T}")

    @property
    def t_max_index(self) -> int:
        """The largest grid index i (t = i / T) drawn in training."""
        return round(self.t_max * self.T)


class ConformerDiffusion(PointCloudDiffusion):
    """p(positions | atom types, graph): coordinates diffuse, the graph conditions the denoiser."""

    config_class = ConformerDiffusionConfig

    def __init__(self, config: ConformerDiffusionConfig):
        atoms = AtomTypeEncoding(config.vocabulary, config.type_scale, config.charge_scale, config.include_charges)
        super().__init__(config.build_denoiser(atoms.width + config.node_features,
                                               edge_features=config.edge_features),
                         config.build_schedule(), diffused_features=0, max_nodes=config.max_atoms,
                         loss_weighting=config.build_loss_weighting(), prediction=config.prediction)
        self.config = config
        self.atom_encoding = atoms

    def node_features(self, type_index: Tensor, mask: Tensor, dtype=torch.float32,
                      graph_features: Tensor | None = None) -> Tensor:
        """The given node features ``[B, N, K (+1) + G]``: the atom-type encoding (``molediff.chem.features``)
        followed by the graph features ``graph_features [B, N, G]`` when the model takes them; zero at padding.

        ValueError when ``graph_features`` is missing (G > 0), given to a model without them, or has the wrong
        shape.
        """
        atoms = self.atom_encoding(type_index, mask, dtype)
        g = self.config.node_features
        if graph_features is None:
            if g:
                raise ValueError(f"this model takes {g} per-atom graph features (node_features [B, N, {g}])")
            return atoms
        if not g:
            raise ValueError("this model takes no per-atom graph features (config.node_features = 0)")
        if tuple(graph_features.shape) != (*mask.shape, g):
            raise ValueError(f"node_features must be [B, N, G] = {[*mask.shape, g]}, got "
                             f"{list(graph_features.shape)}")
        graph = graph_features.to(device=atoms.device, dtype=dtype) * mask.unsqueeze(-1).to(dtype)
        return torch.cat([atoms, graph], -1)

    def training_time(self, batch_size: int, device=None, generator=None) -> Tensor | None:
        """Times ``[B]`` (float64) uniform on the grid up to ``t_max``; None when t_max = 1 (the ε-objective's
        own draw over all times)."""
        if self.config.t_max >= 1.0:
            return None
        gen = generator if isinstance(generator, torch.Generator) else None
        return sample_time(batch_size, self.schedule, gen, device, highest=self.config.t_max_index)

    def forward(self, positions: Tensor, type_index: Tensor, mask: Tensor, node_features: Tensor | None = None,
                edge_attr: Tensor | None = None, context: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """Per-molecule ε-loss ``[B]`` on the coordinates given the graph, at times up to ``config.t_max``.

        Shapes: positions [B, N, 3] (Å), type_index [B, N], mask [B, N], node_features [B, N, G] (the graph
        features; None when G = 0), edge_attr [B, N, N, E] (None when E = 0) → [B]
        """
        if positions.shape[:2] != mask.shape:
            raise ValueError(f"positions {tuple(positions.shape)} and mask {tuple(mask.shape)} must agree")
        if not torch.isfinite(positions[mask]).all():
            raise ValueError("molecule positions contain NaN or infinite values")
        x = self.space.project(positions * mask.unsqueeze(-1).to(positions.dtype), mask)
        feats = self.node_features(type_index, mask, positions.dtype, node_features)
        if edge_attr is not None:
            edge_attr = edge_attr.to(positions.dtype)
        t = self.training_time(x.shape[0], x.device, generator)
        return self.loss(x, mask, context, feats, edge_attr, generator=generator, t=t)

    @torch.no_grad()
    def sample(self, type_index: Tensor, mask: Tensor, sampler: str = "ddpm", steps: int | None = None,
               seeds: Sequence[int] | None = None, edge_attr: Tensor | None = None, context: Tensor | None = None,
               show_progress: bool = False, node_features: Tensor | None = None, **sampler_options) -> Tensor:
        """One conformer per molecule of the batch from noise: positions ``[B, N, 3]`` (Å, zero CoM, 0 at padding).

        Shapes: type_index [B, N], mask [B, N] bool (real atoms first), edge_attr [B, N, N, E], node_features
        [B, N, G] (graph features, when the model takes them).
        """
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        mask = mask.to(device)
        counts = mask.sum(1)
        if not bool((mask == (torch.arange(mask.shape[1], device=device)[None] < counts[:, None])).all()):
            raise ValueError("the mask must mark each molecule's atoms first, padding last")
        n = int(counts.max()) if counts.numel() else 0
        feats = self.node_features(type_index.to(device), mask, dtype,
                                   None if node_features is None else node_features.to(device))[:, :n]
        if edge_attr is not None:
            edge_attr = edge_attr[:, :n, :n]
        x, out_mask = self.sample_state(counts, sampler, steps, seeds, context=context, given_features=feats,
                                        edge_attr=edge_attr, show_progress=show_progress, **sampler_options)
        return x[..., :3] * out_mask.unsqueeze(-1)
