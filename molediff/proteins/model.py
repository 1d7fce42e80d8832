"""Cα backbone diffusion on the point-cloud layer: p(Cα coordinates | chain length).

A chain of L residues is a cloud of L Cα points. Only the coordinates diffuse (no diffused features), in the
zero-centre-of-mass space, divided by ``coord_scale`` (10 Å: the per-axis spread of Cα coordinates about
their centre is Rg/√3 ≈ 8–11 Å for 50–256 residues, so the scaled data has about unit variance, as the noise
schedule assumes). The denoiser sees every pair (``graph: full``, the dense [B, L, L] edges) or, with
``graph: radius``, the EGNN's sparse radius graph: residues closer than ``graph_radius`` Å in the noisy input
plus the chain neighbours |i − j| ≤ ``graph_sequence_neighbours`` (about 25 edges per residue at 10 Å instead
of L − 1; much faster at L = 256 on CPU). It is told the chain's order through invariant inputs only, so the
model stays E(3)-equivariant:

* given node features ``[B, L, G]``: a constant 1, sin/cos of π·k·i/(L−1) for k = 1..K (where the residue lies
  along the chain) and log L / log max_length (how long the chain is); G = 2 + 2K;
* edge features ``[B, L, L, E]`` for j → i: the sequence offset o = clip(j − i, ±32) / 32, sin/cos of
  π·k·o/2 for k = 1..K_e and a flag for chain neighbours |j − i| = 1; E = 2 + 2K_e. The offset is signed,
  so the model knows the chain's direction (N → C).

This is the setting of Cα-only diffusion models such as Trippe et al. 2023 (ProtDiff/SMCDiff) and the
EGNN-based backbone models, kept here as small as the point-cloud layer allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..pointcloud import PointCloudConfig, PointCloudDiffusion, draw_sizes


@dataclass(frozen=True)
class ProteinBackboneConfig(PointCloudConfig):
    """Everything needed to rebuild a Cα backbone model; saved beside its weights.

    Attributes (besides the schedule, context width and denoiser of ``PointCloudConfig``):
        coord_scale: Å per model unit (coordinates are divided by it).
        max_length: the longest chain accepted (residues).
        index_frequencies: K, sinusoidal frequencies of the residue position (node features G = 2 + 2K).
        offset_clip: sequence offsets j − i are clipped to ±offset_clip.
        offset_frequencies: K_e, sinusoidal frequencies of the clipped offset (edge features E = 2 + 2K_e).
        length_histogram: {chain length: count} of the training set; sampling draws lengths from it.
        graph: ``"full"`` (every pair, dense) or ``"radius"`` (the EGNN's sparse radius graph; egnn only).
        graph_radius: the radius graph's cutoff in Å (the denoiser gets ``graph_radius / coord_scale``).
        graph_sequence_neighbours: residues at most this far apart in the chain are always joined.
    """

    coord_scale: float = 10.0
    max_length: int = 256
    index_frequencies: int = 4
    offset_clip: int = 32
    offset_frequencies: int = 3
    length_histogram: dict[int, int] = field(default_factory=dict)
    graph: str = "full"
    graph_radius: float = 10.0
    graph_sequence_neighbours: int = 2
    denoiser: dict = field(default_factory=lambda: {"name": "egnn", "hidden": 64, "layers": 4,
                                                    "aggregation_normalisation": 32.0})

    denoiser_set_by_model: ClassVar[tuple[str, ...]] = ("in_node_features", "context_features", "edge_features",
                                                        "graph", "radius_cutoff", "keep_sequence_neighbours")

    def __post_init__(self):
        super().__post_init__()
        if not self.coord_scale > 0 or self.max_length < 2 or self.offset_clip < 1:
            raise ValueError(f"need coord_scale > 0, max_length >= 2 and offset_clip >= 1, got {self.coord_scale}, "
                             f"{self.max_length}, {self.offset_clip}")
        if self.index_frequencies < 0 or self.offset_frequencies < 0:
            raise ValueError("index_frequencies and offset_frequencies must be >= 0")
        bad = [n for n in self.length_histogram if not 2 <= int(n) <= self.max_length]
        if bad:
            raise ValueError(f"chain lengths must lie in 2..{self.max_length}, the histogram has {sorted(bad)}")
        if self.graph not in ("full", "radius"):
            raise ValueError(f"model.graph must be 'full' or 'radius', got {self.graph!r}")
        if self.graph == "radius":
            if self.denoiser.get("name") != "egnn":
                raise ValueError(f"model.graph 'radius' needs the egnn denoiser, got {self.denoiser.get('name')!r}")
            if not self.graph_radius > 0 or self.graph_sequence_neighbours < 0:
                raise ValueError(f"need graph_radius > 0 and graph_sequence_neighbours >= 0, got "
                                 f"{self.graph_radius}, {self.graph_sequence_neighbours}")

    def graph_options(self) -> dict:
        """The denoiser fields of the graph: none for the full graph (its config stays as before)."""
        if self.graph == "full":
            return {}
        return {"graph": "radius", "radius_cutoff": self.graph_radius / self.coord_scale,
                "keep_sequence_neighbours": self.graph_sequence_neighbours}

    @property
    def node_features(self) -> int:
        return 2 + 2 * self.index_frequencies

    @property
    def edge_features(self) -> int:
        return 2 + 2 * self.offset_frequencies


class ProteinBackboneDiffusion(PointCloudDiffusion):
    """Cα coordinates given the chain length; see the module docstring for the features."""

    config_class = ProteinBackboneConfig
    sample_noun = "chains"
    progress_desc = "sampling chains"

    def __init__(self, config: ProteinBackboneConfig):
        super().__init__(config.build_denoiser(config.node_features, edge_features=config.edge_features,
                                               **config.graph_options()),
                         config.build_schedule(), diffused_features=0, max_nodes=config.max_length,
                         loss_weighting=config.build_loss_weighting(), prediction=config.prediction)
        self.config = config

    # -- features -------------------------------------------------------------------------------------
    def node_features(self, mask: Tensor, dtype=torch.float32) -> Tensor:
        """Given node features ``[B, N, 2 + 2K]`` from the mask [B, N] (residues first), zero at padding."""
        lengths = mask.sum(1, keepdim=True).to(dtype)                              # [B, 1]
        index = torch.arange(mask.shape[1], device=mask.device, dtype=dtype)[None]  # [1, N]
        frac = index / (lengths - 1).clamp(min=1)                                  # 0 at the N-, 1 at the C-terminus
        k = torch.arange(1, self.config.index_frequencies + 1, device=mask.device, dtype=dtype)
        angle = math.pi * frac.unsqueeze(-1) * k                                  # [B, N, K]
        log_len = (lengths.clamp(min=1).log() / math.log(self.config.max_length)).expand_as(frac)
        feats = torch.cat([torch.ones_like(frac).unsqueeze(-1), angle.sin(), angle.cos(), log_len.unsqueeze(-1)], -1)
        return feats * mask.unsqueeze(-1).to(dtype)

    def edge_features(self, mask: Tensor, dtype=torch.float32) -> Tensor:
        """Given edge features ``[B, N, N, 2 + 2K_e]`` of the sequence offset j − i, zero where i or j is padding."""
        n = mask.shape[1]
        index = torch.arange(n, device=mask.device)
        offset = (index[None, :] - index[:, None]).to(dtype)                     # [N, N]: j − i
        clip = self.config.offset_clip
        o = offset.clamp(-clip, clip) / clip
        k = torch.arange(1, self.config.offset_frequencies + 1, device=mask.device, dtype=dtype)
        angle = 0.5 * math.pi * o.unsqueeze(-1) * k
        feats = torch.cat([o.unsqueeze(-1), (offset.abs() == 1).to(dtype).unsqueeze(-1), angle.sin(), angle.cos()],
                          -1)
        pair = (mask[:, :, None] & mask[:, None, :]).to(dtype).unsqueeze(-1)
        return feats.unsqueeze(0) * pair

    # -- training -------------------------------------------------------------------------------------
    def forward(self, coords: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-chain ε-loss ``[B]``.

        Shapes: coords [B, N, 3] (Å, any origin; padding ignored), mask [B, N] bool with residues first.
        ValueError for mismatched shapes or non-finite coordinates of real residues.
        """
        if coords.shape[:2] != mask.shape or coords.shape[-1] != 3:
            raise ValueError(f"coords {tuple(coords.shape)} must be [B, N, 3] with mask {tuple(mask.shape)}")
        if not torch.isfinite(coords[mask]).all():
            raise ValueError("chain coordinates contain NaN or infinite values")
        x = torch.where(mask.unsqueeze(-1), coords / self.config.coord_scale, torch.zeros((), dtype=coords.dtype))
        x = self.space.project(x, mask)
        return self.loss(x, mask, given_features=self.node_features(mask, coords.dtype),
                         edge_attr=self.edge_features(mask, coords.dtype), generator=generator)

    # -- sampling -------------------------------------------------------------------------------------
    def sample_lengths(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` chain lengths ``[n]`` drawn from the training length histogram."""
        return draw_sizes(self.config.length_histogram, n, generator, what="chain length")

    @torch.no_grad()
    def sample(self, lengths: Sequence[int] | Tensor, sampler: str = "ddpm", steps: int | None = None,
               seeds: Sequence[int] | None = None, show_progress: bool = False,
               **sampler_options) -> tuple[Tensor, Tensor]:
        """One Cα trace per entry of ``lengths``: ``(coords [B, N, 3] Å with zero centre, mask [B, N])``.

        ``seeds[i]`` seeds chain i alone. ValueError for a length outside 2..max_length.
        """
        lengths = torch.as_tensor(lengths, dtype=torch.long).flatten()
        if lengths.numel() and not (2 <= int(lengths.min()) and int(lengths.max()) <= self.config.max_length):
            raise ValueError(f"chain lengths must lie in 2..{self.config.max_length}, got "
                             f"{int(lengths.min())}..{int(lengths.max())}")
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        n = int(lengths.max()) if lengths.numel() else 0
        mask = torch.arange(n, device=device)[None] < lengths.to(device)[:, None]
        x, mask = self.sample_state(lengths, sampler, steps, seeds, given_features=self.node_features(mask, dtype),
                                    edge_attr=self.edge_features(mask, dtype), show_progress=show_progress,
                                    **sampler_options)
        return x[..., :3] * self.config.coord_scale * mask.unsqueeze(-1), mask

    def sample_chains(self, lengths: Sequence[int] | Tensor, seeds: Sequence[int], batch_size: int = 16,
                      show_progress: bool = False, **sample_options) -> list[np.ndarray]:
        """Sample many chains in batches of similar length; ``[L_i, 3]`` float32 arrays (Å) in input order.

        Chain i depends on ``seeds[i]`` alone, not on the batch size or order (``PointCloudDiffusion.sample_many``).
        ValueError when the seed count does not match ``lengths``.
        """
        return self.sample_many(lengths, seeds, batch_size, show_progress, **sample_options)
