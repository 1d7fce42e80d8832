"""Cα backbones diffused in internal coordinates on the torus: p(θ, τ | chain length).

A chain of L residues is its L − 2 virtual bond angles θ and L − 3 virtual dihedrals τ (``proteins.angles``),
packed as ``[L − 2, 2]`` and diffused in the core's ``TorusSpace`` (FoldingDiff, Wu et al. 2022: the forward
marginal wrap(α_t x + σ_t ε), the ε-loss with the unwrapped ε as target, every sampler step wrapped). Every
Cα–Cα bond is ``bond_length`` (3.80 Å) by construction, so sampled chains have exact spacing; coordinates
come back by NeRF placement.

The denoiser (:class:`AngleTransformer`) is a small pre-norm transformer over the L − 2 angle positions:
input sin/cos of the noisy (θ, τ) and the two "this angle exists" flags, a sinusoidal embedding of t added
to every position, self-attention with rotary position embeddings (Su et al. 2021, RoFormer; relative
positions only, so a chain's output does not depend on the padding after it) and key-padding masks,
output ε̂ per angle. It is FoldingDiff's BERT-style encoder in miniature (theirs: 12 layers × 384, relative
position keys; this: 4 × 128 by default).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..diffusion import SCHEDULES, NoiseSchedule, TorusSpace, epsilon_loss, make_schedule, sample
from ..pointcloud import draw_sizes, sample_by_seed, sample_seeds, seed_generators, unpad_points
from ..utils import build_config
from .angles import CA_CA, angle_mask, angles_to_chain, chain_to_angles, lengths_from_mask
from .guidance import ChainGuide

__all__ = ["ProteinAngleConfig", "AngleTransformer", "ProteinAngleDiffusion", "MIN_LENGTH"]

MIN_LENGTH = 4
"""The shortest chain with a dihedral (residues)."""


@dataclass(frozen=True)
class ProteinAngleConfig:
    """Everything needed to rebuild an angle model; saved beside its weights.

    Attributes:
        schedule, T, schedule_options: the noise schedule (``molediff.diffusion.make_schedule``); FoldingDiff
            uses the cosine schedule with T = 1000.
        max_length: the longest chain (residues) the model samples; training crops windows of at most this.
        hidden: transformer width d (a multiple of ``heads``, with d / heads even for the rotary embedding).
        layers: transformer blocks.
        heads: attention heads.
        ffn_multiplier: the feed-forward hidden width is ffn_multiplier · d.
        rotary_base: the rotary embedding's base period (positions).
        bond_length: Å, every Cα–Cα bond of a sampled chain.
        length_histogram: {chain length: count} of the training windows; ``sample_lengths`` draws from it.
    """

    schedule: str = "cosine"
    T: int = 1000
    schedule_options: dict = field(default_factory=dict)
    max_length: int = 128
    hidden: int = 128
    layers: int = 4
    heads: int = 8
    ffn_multiplier: int = 2
    rotary_base: float = 10000.0
    bond_length: float = CA_CA
    length_histogram: dict[int, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {self.schedule!r}; choose one of {sorted(SCHEDULES)}")
        if self.T < 1 or self.layers < 1 or self.heads < 1 or self.ffn_multiplier < 1:
            raise ValueError(f"need T, layers, heads and ffn_multiplier >= 1, got {self.T}, {self.layers}, "
                             f"{self.heads}, {self.ffn_multiplier}")
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise ValueError(f"model.hidden ({self.hidden}) must be a multiple of model.heads ({self.heads}) with an "
                             "even width per head (rotary embedding)")
        if self.max_length < MIN_LENGTH:
            raise ValueError(f"model.max_length must be >= {MIN_LENGTH}, got {self.max_length}")
        if not self.bond_length > 0 or not self.rotary_base > 1:
            raise ValueError(f"need bond_length > 0 and rotary_base > 1, got {self.bond_length}, {self.rotary_base}")
        bad = [n for n in self.length_histogram if not MIN_LENGTH <= int(n) <= self.max_length]
        if bad:
            raise ValueError(f"chain lengths must lie in {MIN_LENGTH}..{self.max_length}, the histogram has "
                             f"{sorted(bad)}")

    def build_schedule(self) -> NoiseSchedule:
        return make_schedule(self.schedule, T=self.T, **self.schedule_options)

    def to_dict(self) -> dict:
        """JSON-ready data (integer keys → strings); ``from_dict`` reads it back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> ProteinAngleConfig:
        """From a YAML ``model`` section or stored metadata; ValueError naming unknown keys or bad values."""
        return build_config(cls, d, "model.")


# ------------------------------------------------------------------------------------------- network
def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[B, dim]`` of t ``[B]`` in [0, 1], read as 1000 t (Vaswani et al. 2017 §3.5;
    DDPM's time embedding): [cos(1000 t f_k), sin(1000 t f_k)], f_k = max_period^(−k / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rotary(x: Tensor, base: float) -> Tensor:
    """Rotary position embedding (Su et al. 2021, eq. 34) of ``x [B, H, M, D]`` (D even): channel pairs
    (2i, 2i+1) at position m are rotated by m · base^(−2i/D), so q·k depends only on the offset."""
    d = x.shape[-1]
    pos = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)
    freqs = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    ang = pos[:, None] * freqs[None]                                       # [M, D/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, base: float):
        super().__init__()
        self.heads, self.base = heads, base
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ffn * d), nn.GELU(), nn.Linear(ffn * d, d))

    def forward(self, h: Tensor, key_mask: Tensor) -> Tensor:
        B, M, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, M, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, self.base), rotary(k, self.base)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        h = h + self.out(att.transpose(1, 2).reshape(B, M, d))
        return h + self.ff(self.norm2(h))


class AngleTransformer(nn.Module):
    """ε̂ for packed noisy angles: ``forward(z [B, M, 2], t [B], amask [B, M, 2]) → [B, M, 2]``.

    z in radians (any branch: only sin/cos are read), t in [0, 1], ``amask`` the existing angles
    (``proteins.angles.angle_mask``); positions with no angle (padding) are masked out of the attention keys
    and their output is 0. A chain's output does not depend on the other chains or on its padding.
    """

    def __init__(self, config: ProteinAngleConfig):
        super().__init__()
        d = config.hidden
        self.embed = nn.Linear(6, d)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(_Block(d, config.heads, config.ffn_multiplier, config.rotary_base)
                                    for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 2)

    def forward(self, z: Tensor, t: Tensor, amask: Tensor) -> Tensor:
        m = amask.to(z.dtype)
        feats = torch.cat([torch.sin(z) * m, torch.cos(z) * m, m], dim=-1)            # [B, M, 6]
        t = t.expand(z.shape[0]) if t.dim() == 0 else t
        h = self.embed(feats) + self.time(timestep_embedding(t, self.embed.out_features).to(z.dtype))[:, None]
        key_mask = amask[..., 0]
        for block in self.blocks:
            h = block(h, key_mask)
        return self.head(self.norm(h)) * m


# ------------------------------------------------------------------------------------------- model
class ProteinAngleDiffusion(nn.Module):
    """p(θ, τ | L) on the torus with the core's schedule, ε-loss and samplers; see the module docstring."""

    config_class = ProteinAngleConfig

    def __init__(self, config: ProteinAngleConfig):
        super().__init__()
        self.config = config
        self.net = AngleTransformer(config)
        self.schedule = config.build_schedule()
        self.space = TorusSpace()

    def eps_fn(self, amask: Tensor):
        """The ε-model ``eps(z_t, t)`` of chains with existing angles ``amask [B, M, 2]``, for the core."""
        return lambda z, t: self.net(z, t, amask)

    # -- training -------------------------------------------------------------------------------------
    def forward(self, coords: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-chain ε-loss ``[B]``: the mean over the chain's existing angles of ‖ε̂ − ε‖² (FoldingDiff eq. 3,
        squared), t uniform on the grid.

        Shapes: coords [B, N, 3] (Å; only the angles are read, so any frame and the chain's own bond lengths),
        mask [B, N] bool with residues first, every chain at least 4 residues. ValueError otherwise, or for
        non-finite coordinates of real residues.
        """
        if coords.dim() != 3 or coords.shape[:2] != mask.shape or coords.shape[-1] != 3:
            raise ValueError(f"coords {tuple(coords.shape)} must be [B, N, 3] with mask {tuple(mask.shape)}")
        if not torch.isfinite(coords[mask]).all():
            raise ValueError("chain coordinates contain NaN or infinite values")
        lengths = lengths_from_mask(mask)
        if int(lengths.min()) < MIN_LENGTH:
            raise ValueError(f"every chain needs at least {MIN_LENGTH} residues, got {int(lengths.min())}")
        coords = torch.where(mask[..., None], coords, torch.zeros((), dtype=coords.dtype))
        angles, amask, _ = chain_to_angles(coords, mask)
        err = epsilon_loss(self.eps_fn(amask), angles, self.schedule, self.space, mask=amask[..., 0],
                           generator=generator)
        m = amask.to(err.dtype)
        return (err * m).flatten(1).sum(1) / m.flatten(1).sum(1)

    # -- sampling -------------------------------------------------------------------------------------
    def sample_lengths(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` chain lengths ``[n]`` drawn from the training length histogram (ValueError if it is empty)."""
        return draw_sizes(self.config.length_histogram, n, generator, what="chain length")

    def check_lengths(self, lengths: Sequence[int] | Tensor) -> Tensor:
        """``lengths`` as a long tensor ``[B]``; ValueError naming the range for a length outside 4..max_length."""
        lengths = torch.as_tensor(lengths, dtype=torch.long).flatten()
        if lengths.numel() == 0:
            raise ValueError("no chain lengths given")
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < MIN_LENGTH or hi > self.config.max_length:
            raise ValueError(f"chain lengths must lie in {MIN_LENGTH}..{self.config.max_length} for this model, "
                             f"got {lo if lo < MIN_LENGTH else hi}")
        return lengths

    @torch.no_grad()
    def sample_angles(self, lengths: Sequence[int] | Tensor, seed: int = 0, seeds: Sequence[int] | None = None,
                      sampler: str = "ddpm", steps: int | None = None, show_progress: bool = False,
                      chain_guide: ChainGuide | None = None, **sampler_options) -> tuple[Tensor, Tensor]:
        """Packed angles ``[B, M, 2]`` (radians, θ in (−π, π) as sampled, τ in [−π, π)), M = max L − 2, and their
        ``angle_mask`` ``[B, M, 2]``. Chain i uses the generator of ``seeds[i]`` (default ``seed + i``) alone,
        so it does not depend on the batch. Any core sampler (``ddpm``, ``ddim``, ``heun``, ``dpm2m``) with its
        options (DDPM's ``noise_scale``, DDIM's ``eta``); ``chain_guide`` (``proteins.guidance.ChainGuide``)
        steers the low-noise steps away from clashes and extended chains through the sampler's guide hook."""
        lengths = self.check_lengths(lengths)
        seeds = sample_seeds(len(lengths), seeds, first=seed, what="chains")
        param = next(self.parameters())
        m = int(lengths.max()) - 2
        amask = angle_mask(lengths.to(param.device), m)
        gens = seed_generators(seeds, param.device)
        z = self.space.randn((len(lengths), m, 2), amask[..., 0], gens, param.dtype, param.device)
        if chain_guide is not None:
            sampler_options["guide"] = chain_guide.build(lengths.to(param.device), self.config.bond_length)
        x = sample(sampler, self.eps_fn(amask), z, self.schedule, self.space, steps=steps, mask=amask[..., 0],
                   generator=gens, show_progress=show_progress, **sampler_options)
        return x * amask.to(x.dtype), amask

    @torch.no_grad()
    def sample(self, lengths: Sequence[int] | Tensor, seed: int = 0, seeds: Sequence[int] | None = None,
               sampler: str = "ddpm", steps: int | None = None, show_progress: bool = False,
               chain_guide: ChainGuide | None = None, **sampler_options) -> tuple[Tensor, Tensor]:
        """Cα traces ``(coords [B, N, 3] Å, mask [B, N])``, N = max(lengths), zero at padding, every Cα–Cα at
        ``bond_length``; the angles of ``sample_angles`` placed by NeRF (x_0 at the origin). A bond angle is
        unsigned: a sampled θ in [−π, 0) is read as |θ| (rare: real θ lie in 80°–150°). ValueError for a length
        outside 4..max_length."""
        angles, amask = self.sample_angles(lengths, seed, seeds, sampler, steps, show_progress, chain_guide,
                                           **sampler_options)
        angles = torch.stack([angles[..., 0].abs(), angles[..., 1]], dim=-1)
        lengths = self.check_lengths(lengths).to(angles.device)
        coords = angles_to_chain(angles, lengths, self.config.bond_length)
        mask = torch.arange(coords.shape[1], device=coords.device)[None] < lengths[:, None]
        return coords, mask

    def sample_chains(self, lengths: Sequence[int] | Tensor, seeds: Sequence[int], batch_size: int = 16,
                      show_progress: bool = False, **sample_options) -> list[np.ndarray]:
        """Sample many chains in batches of similar length: ``[L_i, 3]`` float32 arrays (Å) in input order, as
        ``ProteinBackboneDiffusion.sample_chains``. Chain i depends on ``seeds[i]`` alone, not on the batch size
        or order. ``sample_options`` go to :meth:`sample` (sampler, steps, the sampler's options). ValueError for
        a length outside 4..max_length or a seed count that does not match."""
        lengths = self.check_lengths(lengths)
        return sample_by_seed(self.sample, lengths, seeds, batch_size, unpad_points, show_progress,
                              desc="sampling chains", what="chains", **sample_options)
