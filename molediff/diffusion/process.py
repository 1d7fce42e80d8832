"""The forward process q(z_t | x) and the posterior q(z_s | z_t, x) for any s < t (notation in
``schedule.py``).

Posterior between s < t (VDM eq. 28–33, written with r = 1 − SNR_t / SNR_s = −expm1(λ_t − λ_s), which is
stable when s and t are close):

    mean = (α_s / α_t)(1 − r) z_t + α_s r x,     variance = σ_s² r
"""

from __future__ import annotations

import torch
from torch import Tensor

from .schedule import NoiseSchedule
from .space import expand_like

__all__ = ["q_sample", "posterior", "predict_x0", "posterior_from_eps", "clip_denoised", "eps_from_v"]


def _per_sample_time(t: Tensor | float, x: Tensor) -> Tensor:
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


def q_sample(x: Tensor, t: Tensor | float, schedule: NoiseSchedule, noise: Tensor) -> Tensor:
    """z_t = α_t x + σ_t ε.  Shapes: x, noise ``[B, ...]``; t scalar or ``[B]``."""
    t = _per_sample_time(t, x)
    return expand_like(schedule.alpha(t), x) * x + expand_like(schedule.sigma(t), x) * noise


def predict_x0(z_t: Tensor, t: Tensor | float, schedule: NoiseSchedule, eps: Tensor) -> Tensor:
    """x̂ = (z_t − σ_t ε̂) / α_t."""
    t = _per_sample_time(t, z_t)
    return (z_t - expand_like(schedule.sigma(t), z_t) * eps) / expand_like(schedule.alpha(t), z_t)


def eps_from_v(v_fn, schedule: NoiseSchedule):
    """The ε-model of a network that predicts v = α_t ε − σ_t x (Salimans & Ho 2022, §4 and App. D):
    ``eps(z_t, t) = σ_t z_t + α_t v̂(z_t, t)``, so samplers, the ε-loss and the bound use it unchanged.

    As α_t → 0 the ε̂ tends to z_t whatever the network does, so x̂ = α_t z_t − σ_t v̂ stays bounded: what an
    ε-network learns only slowly (and a network that sees local neighbourhoods alone cannot). Shapes: z_t
    ``[B, ...]``, t ``[B]`` or scalar.
    """
    def eps(z: Tensor, t: Tensor | float) -> Tensor:
        tt = _per_sample_time(t, z)
        alpha = expand_like(schedule.alpha(tt), z).to(z.dtype)
        sigma = expand_like(schedule.sigma(tt), z).to(z.dtype)
        return sigma * z + alpha * v_fn(z, t)

    return eps


def clip_denoised(eps_fn, schedule: NoiseSchedule, low: float = -1.0, high: float = 1.0):
    """The ε-model whose clean estimate is clipped to the data's range: ``eps(z_t, t) → ε̃`` with
    x̂(z_t, ε̃) = clip(x̂(z_t, ε̂), low, high), i.e. ε̃ = ε̂ + α_t (x̂ − clip(x̂)) / σ_t (equal to ε̂ where nothing
    is clipped).

    DDPM's sampler clips x̂ to [−1, 1] at every step (Ho et al. 2020, official code: ``clip_denoised``;
    diffusers: ``clip_sample=True``, with ``use_clipped_model_output`` for DDIM). Any core sampler run with the
    wrapped model does the same; without it an undertrained image model's x̂ = (z − σ ε̂) / α explodes at
    high noise (α_T ≈ 0.006 on DDPM's schedule), where a small error in ε̂ is amplified 150-fold.
    Shapes: z_t, ε̂ ``[B, ...]``, t ``[B]`` or scalar.
    """
    if not low < high:
        raise ValueError(f"clip_denoised needs low < high, got {low}, {high}")

    def eps_clipped(z: Tensor, t: Tensor | float) -> Tensor:
        eps = eps_fn(z, t)
        x0 = predict_x0(z, t, schedule, eps)
        tt = _per_sample_time(t, z)
        ratio = expand_like(schedule.alpha(tt) / schedule.sigma(tt), z).to(z.dtype)
        return eps + ratio * (x0 - x0.clamp(low, high))

    return eps_clipped


def posterior(z_t: Tensor, x: Tensor, s: Tensor | float, t: Tensor | float,
              schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """Mean ``[B, ...]`` and variance ``[B, 1, …]`` of q(z_s | z_t, x) for s < t."""
    s, t = _per_sample_time(s, z_t), _per_sample_time(t, z_t)
    if bool((s >= t).any()):
        raise ValueError("posterior q(z_s | z_t, x) needs s < t for every sample")
    lam_s, lam_t = schedule.log_snr(s), schedule.log_snr(t)
    r = -torch.expm1(lam_t - lam_s)
    alpha_s, alpha_t = torch.sigmoid(lam_s).sqrt(), torch.sigmoid(lam_t).sqrt()
    mean = expand_like(alpha_s / alpha_t * (1 - r), z_t) * z_t + expand_like(alpha_s * r, x) * x
    variance = expand_like(torch.sigmoid(-lam_s) * r, z_t)
    return mean, variance


def posterior_from_eps(z_t: Tensor, eps: Tensor, s: Tensor | float, t: Tensor | float,
                       schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """p(z_s | z_t) of the ε-parametrised reverse model: q(z_s | z_t, x = x̂(z_t, ε̂))."""
    return posterior(z_t, predict_x0(z_t, t, schedule, eps), s, t, schedule)
