"""A DDPM-style U-Net ε-network for images (Ho et al. 2020, Appendix B; the PixelCNN++ backbone with
self-attention).

    x [B, C, H, W], t [B] in [0, 1]  →  ε̂ [B, C, H, W]

The time t (molediff's continuous diffusion time) is scaled by ``time_scale`` (1000, so the frequencies match
DDPM's integer steps), embedded with sinusoids and an MLP, and added inside every residual block. The
network is a plain backbone: it knows nothing of schedules; :class:`~molediff.images.model.ImageDiffusion`
binds it to the core.

Layout, for ``channel_mult`` = (m_0, …, m_{L−1}) and base width c:

    conv_in → for each level l: ``res_blocks`` × [ResBlock(c·m_l) (+ attention at the listed resolutions)],
    then a stride-2 down-sampling conv (except the last level) → middle: ResBlock, attention, ResBlock →
    for each level from the bottom: (``res_blocks`` + 1) × [ResBlock on the concatenated skip (+ attention)],
    then nearest-neighbour up-sampling + conv (except level 0) → GroupNorm, SiLU, conv_out.

The last conv of every residual block, every attention output projection and ``conv_out`` start at zero, as
in DDPM: an untrained network predicts ε̂ = 0 and every block starts as the identity.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils import build_config

__all__ = ["UNetConfig", "UNet", "UNET_PRESETS", "timestep_embedding"]


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild the U-Net; saved beside its weights.

    Attributes:
        image_size: H = W of the training images (attention placement is read from it).
        in_channels: C, image channels (3 for RGB).
        channels: base width c.
        channel_mult: width multiplier per level; one level per entry, L − 1 down-samplings.
        res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map sizes (pixels) at which a self-attention block follows each residual
            block; the middle block always has one.
        heads: attention heads (DDPM: 1).
        dropout: dropout before the second conv of each residual block.
        groups: GroupNorm groups; every width must divide by it.
        time_scale: t ∈ [0, 1] is multiplied by this before the sinusoidal embedding.
    """

    image_size: int = 32
    in_channels: int = 3
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    heads: int = 1
    dropout: float = 0.1
    groups: int = 32
    time_scale: float = 1000.0

    def __post_init__(self):
        if self.channels < 1 or self.in_channels < 1 or self.res_blocks < 1 or self.heads < 1 or self.groups < 1:
            raise ValueError("unet channels, in_channels, res_blocks, heads and groups must be at least 1")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ValueError(f"unet.channel_mult must list positive multipliers, got {list(self.channel_mult)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"unet.dropout must lie in [0, 1), got {self.dropout}")
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(f"unet.image_size {self.image_size} must divide by 2^{len(self.channel_mult) - 1} "
                             f"(one halving per level after the first)")
        widths = {self.channels * m for m in self.channel_mult}
        bad = sorted(w for w in widths if w % self.groups or w % self.heads)
        if bad:
            raise ValueError(f"unet widths {bad} must divide by groups={self.groups} and heads={self.heads}")
        if self.channels % 2:
            raise ValueError(f"unet.channels must be even (sinusoidal time embedding), got {self.channels}")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Feature-map size at each level."""
        return tuple(self.image_size // 2 ** i for i in range(len(self.channel_mult)))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        return build_config(cls, d, "unet.")


UNET_PRESETS: dict[str, UNetConfig] = {
    # DDPM's CIFAR-10 network (Ho et al. 2020, Appendix B): 35.7 M parameters.
    "ddpm": UNetConfig(),
    # A small network that trains on a CPU: about 1.6 M parameters.
    "small": UNetConfig(channels=32, channel_mult=(1, 2, 2), groups=8),
}
"""Named U-Net configurations (``UNET_PRESETS["ddpm"]``, ``UNET_PRESETS["small"]``)."""


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[B] → [B, dim]``: [sin(t ω_k), cos(t ω_k)], ω_k = max_period^(−k/(dim/2 − 1))
    (the Transformer's position encoding as DDPM uses it)."""
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * k / max(half - 1, 1))
    angle = t.float()[:, None] * freqs[None]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3 → + Linear(SiLU(time embedding)) → GroupNorm → SiLU → dropout → conv3×3,
    added to the input (through a 1×1 conv when the width changes)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H·W positions of a feature map, with a residual connection."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))       # [B, heads, HW, C/heads]
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Stride-2 conv3×3: [B, C, H, W] → [B, C, H/2, W/2]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then conv3×3: [B, C, H, W] → [B, C, 2H, 2W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Module):
    """One residual block, optionally followed by attention."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None):
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x)


class UNet(nn.Module):
    """The ε-network ``(x [B, C, H, W], t [B] or scalar in [0, 1]) → ε̂ [B, C, H, W]``.

    H and W must divide by 2^(L − 1); attention sits at the levels whose size at ``config.image_size`` is in
    ``config.attention_resolutions`` (on other input sizes it stays at the same levels).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        c, emb_dim, L = cfg.channels, 4 * cfg.channels, len(cfg.channel_mult)
        self.time_mlp = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(cfg.in_channels, c, 3, padding=1)

        def stage(cin: int, cout: int, level: int) -> Stage:
            attn = cfg.resolutions[level] in cfg.attention_resolutions
            return Stage(ResBlock(cin, cout, emb_dim, cfg.dropout, cfg.groups),
                         AttentionBlock(cout, cfg.heads, cfg.groups) if attn else None)

        skips, width = [c], c
        self.down = nn.ModuleList()
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.res_blocks):
                self.down.append(stage(width, c * mult, level))
                width = c * mult
                skips.append(width)
            if level < L - 1:
                self.down.append(Downsample(width))
                skips.append(width)
        self.mid = nn.ModuleList([ResBlock(width, width, emb_dim, cfg.dropout, cfg.groups),
                                  AttentionBlock(width, cfg.heads, cfg.groups),
                                  ResBlock(width, width, emb_dim, cfg.dropout, cfg.groups)])
        self.up = nn.ModuleList()
        for level in reversed(range(L)):
            for _ in range(cfg.res_blocks + 1):
                self.up.append(stage(width + skips.pop(), c * cfg.channel_mult[level], level))
                width = c * cfg.channel_mult[level]
            if level > 0:
                self.up.append(Upsample(width))
        self.norm_out = nn.GroupNorm(cfg.groups, width)
        self.conv_out = _zero(nn.Conv2d(width, cfg.in_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t * self.config.time_scale, self.config.channels).to(x.dtype))
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block in self.up:
            if isinstance(block, Stage):
                h = torch.cat([h, skips.pop()], dim=1)
            h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))
