"""Image diffusion on the shared core: a U-Net ε-network bound to a schedule in a plain Euclidean space.

Images are ``[B, C, H, W]`` floats in [−1, 1] (8-bit pixels p ↦ 2p/255 − 1, as DDPM). Everything
diffusion-specific comes from ``molediff.diffusion``: the schedule (by name), the ε-loss, the bound with the
discretized 8-bit decoder, bits/dim and the samplers.

With the ``linear`` schedule the grid t_i = i/T holds T + 1 noisy levels whose β are
linspace(β_1, β_T', T + 1) (see ``LinearBetaSchedule``), so DDPM's 1000-step chain (β linear from 1e-4 to
0.02 over 1000 steps) is ``T = 999``: molediff's t = k/999 is DDPM's step k + 1 (diffusers' integer timestep
k), and a full ancestral chain makes 1000 network calls, as DDPM's does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..diffusion import (
    SCHEDULES,
    EuclideanSpace,
    NoiseSchedule,
    bits_per_dim,
    clip_denoised,
    discretized_decoder_nll,
    eps_from_v,
    epsilon_loss,
    make_schedule,
    sample,
    vlb,
)
from ..utils import build_config
from .unet import UNet, UNetConfig

__all__ = ["ImageDiffusionConfig", "ImageDiffusion", "to_model_range", "to_uint8"]


def to_model_range(images: Tensor) -> Tensor:
    """uint8 pixels ``[B, C, H, W]`` → float32 in [−1, 1] (p ↦ 2p/255 − 1)."""
    return images.to(torch.float32) * (2.0 / 255.0) - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """Model-range floats ``[B, C, H, W]`` → uint8 pixels, clipped to [−1, 1] and rounded."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@dataclass(frozen=True)
class ImageDiffusionConfig:
    """An image model: the noise schedule and the U-Net; saved beside its weights.

    Attributes:
        schedule, T, schedule_options: the noise schedule (``molediff.diffusion.make_schedule``); the default
            is DDPM's: linear β from 1e-4 to 0.02 over 1000 noisy levels (T = 999, see the module docstring).
        unet: the network (``UNetConfig``; presets in ``molediff.images.unet.UNET_PRESETS``).
        prediction: ``eps`` (DDPM: the U-Net predicts ε) or ``v`` (the U-Net predicts v = α_t ε − σ_t x,
            Salimans & Ho 2022; read through ``molediff.diffusion.eps_from_v``, the objective stays the ε-loss).
            ``v`` is what a short (CPU) training run needs: an ε-network's small errors at high noise are
            amplified 1/α_T ≈ 160-fold in x̂, and deterministic samplers (DDIM) then draw noise.
    """

    schedule: str = "linear"
    T: int = 999
    schedule_options: dict = field(default_factory=dict)
    unet: UNetConfig = field(default_factory=UNetConfig)
    prediction: str = "eps"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {self.schedule!r}; choose one of {sorted(SCHEDULES)}")
        if self.T < 1:
            raise ValueError(f"T must be >= 1, got {self.T}")
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {self.prediction!r}")
        self.build_schedule()  # checks the schedule options

    def build_schedule(self) -> NoiseSchedule:
        return make_schedule(self.schedule, T=self.T, **self.schedule_options)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["unet"] = self.unet.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ImageDiffusionConfig:
        """From a YAML ``model`` section or stored metadata; ValueError naming unknown keys or bad values."""
        return build_config(cls, d, "model.")


class ImageDiffusion(nn.Module):
    """A U-Net ε-model on the core: ``forward``/``loss`` for training, ``sample`` and ``nll`` for use.

    Shapes: images ``x [B, C, H, W]`` in [−1, 1] with C, H, W those of ``config.unet``.
    """

    config_class = ImageDiffusionConfig

    def __init__(self, config: ImageDiffusionConfig):
        super().__init__()
        self.config = config
        self.net = UNet(config.unet)
        self.schedule = config.build_schedule()
        self.space = EuclideanSpace()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        u = self.config.unet
        return (u.in_channels, u.image_size, u.image_size)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"images must be [B, {', '.join(map(str, self.image_shape))}], got {tuple(x.shape)}")

    # -- the ε-model ----------------------------------------------------------------------------------
    def eps_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        """``eps(z_t [B, C, H, W], t [B]) → ε̂`` for the core's samplers, loss and bound."""
        return eps_from_v(self.net, self.schedule) if self.config.prediction == "v" else self.net

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-image ε-loss ``[B]``: ‖ε̂(z_t, t) − ε‖² averaged over pixels, t uniform on the grid."""
        self._check(x)
        err = epsilon_loss(self.eps_fn(), x, self.schedule, self.space, generator=generator)
        return err.flatten(1).mean(1)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The training loss (``loss``), through ``forward`` so DDP sees the call."""
        return self.loss(x, generator)

    # -- likelihood -----------------------------------------------------------------------------------
    @torch.no_grad()
    def nll(self, x: Tensor, full_chain: bool = True, generator: torch.Generator | None = None,
            show_progress: bool = False) -> dict[str, Tensor]:
        """The bound on −log p(x) per image ``[B]`` in nats: ``prior``, ``diffusion``, ``decoder``, ``total``,
        plus ``bits_per_dim``, with DDPM's discretized 8-bit decoder.

        ``full_chain=True`` sums the diffusion term over all T steps (one noise draw each: T network calls per
        image); ``False`` uses the core's one-step unbiased estimate (``molediff.diffusion.vlb``).
        ``x`` must hold 8-bit values mapped to [−1, 1] (``to_model_range``).
        """
        self._check(x)
        terms = vlb(self.eps_fn(), x, self.schedule, self.space, decoder=discretized_decoder_nll,
                    generator=generator, full_chain=full_chain, show_progress=show_progress)
        terms["bits_per_dim"] = bits_per_dim(terms["total"], self.space.dof(x))
        return terms

    # -- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, sampler: str = "ddpm", steps: int | None = None, seeds: Sequence[int] | None = None,
               show_progress: bool = False, clip: bool = True, **sampler_options) -> Tensor:
        """``n`` images ``[n, C, H, W]`` in [−1, 1] from the core sampler ``sampler`` (``ddpm``, ``ddim``,
        ``heun``, ``dpm2m``) with ``steps`` steps (default all T).

        ``seeds[i]`` seeds image i alone (default ``0..n−1``), so an image does not depend on its batch.
        ``clip`` clips the clean estimate x̂ to [−1, 1] at every step (``molediff.diffusion.clip_denoised``, as
        DDPM's sampler and diffusers' ``clip_sample`` do); ``False`` runs the plain ε-model.
        """
        if n < 1:
            raise ValueError(f"number of images must be at least 1, got {n}")
        seeds = list(range(n)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} images")
        param = next(self.parameters())
        gens = [torch.Generator(device=param.device).manual_seed(s) for s in seeds]
        z = self.space.randn((n, *self.image_shape), None, gens, param.dtype, param.device)
        eps = clip_denoised(self.eps_fn(), self.schedule) if clip else self.eps_fn()
        x = sample(sampler, eps, z, self.schedule, self.space, steps, None, gens, show_progress, **sampler_options)
        return x.clamp(-1, 1)
