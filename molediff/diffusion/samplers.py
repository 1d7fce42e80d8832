"""Samplers: pure functions of (ε-model, starting noise, schedule, space).

Each takes ``eps_fn(z_t, t) → ε̂`` (t ``[B]`` in [0, 1]) and ``z_1``, walks the descending grid
``schedule.timesteps(steps, spacing)`` (any ``steps`` ≤ T) and returns x̂(z_0), the model's mean
prediction of the data from the last latent.  The stochastic samplers default to uniform spacing, Heun to
Karras et al.'s ρ = 7 spacing and DPM-Solver++ to even log-SNR steps.  The space projects every update
(zero centre of mass for molecules) and draws the fresh noise of stochastic samplers; ``generator`` may be
one ``torch.Generator`` or one per sample. ``space.wrap`` maps the state back onto the space: on the starting
noise, after every update (before the guide) and on the result. It is the identity for the Euclidean spaces;
``TorusSpace`` wraps angles into [−π, π), which makes all four samplers run on the torus unchanged (with the
approximation its docstring states).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..utils import progress
from .objective import EpsFn
from .process import posterior_from_eps, predict_x0
from .schedule import NoiseSchedule
from .space import EuclideanSpace, expand_like

Guide = Callable[[Tensor, Tensor], Tensor]
"""``guide(z_t, t) → z_t``: applied to the state after every update and to the result (t = 0), e.g. to
hold known entries at their forward-noised values (inpainting by replacement)."""

__all__ = ["ddpm_sample", "ddim_sample", "heun_sample", "dpm_solver_2m_sample", "SAMPLERS", "sample"]


def _grid(schedule: NoiseSchedule, steps: int | None, z: Tensor, spacing: str) -> list[Tensor]:
    return [t.expand(z.shape[0]).to(z.device) for t in schedule.timesteps(steps, spacing)]


def _guided(guide: Guide | None, z: Tensor, t: Tensor) -> Tensor:
    return z if guide is None else guide(z, t)


def _final(eps_fn: EpsFn, z: Tensor, t: Tensor, schedule: NoiseSchedule, space: EuclideanSpace,
           mask: Tensor | None, guide: Guide | None, final_denoise: bool = True) -> Tensor:
    """x̂(z_0), mapped onto the space and guided; with ``final_denoise=False`` z_0 itself (no network call).

    The grid ends at t = 0, where σ_0 > 0 (σ_0 ≈ 0.003 for the polynomial schedule of precision 1e-5): x̂(z_0)
    removes that last bit of noise (EDM's p(x | z_0), Hoogeboom et al. 2022), as DDPM's Alg. 2 does with its
    last step; DDIM's x_0 (Song et al. 2021) is z_0 itself. Skipping it saves one network evaluation, which
    matters only to samplers of one or two steps (the conformer refiner's)."""
    if not final_denoise:
        return _guided(guide, space.wrap(z, mask), t)
    return _guided(guide, space.wrap(predict_x0(z, t, schedule, _eps(eps_fn, z, t, space, mask)), mask), t)


def _eps(eps_fn: EpsFn, z: Tensor, t: Tensor, space: EuclideanSpace, mask: Tensor | None) -> Tensor:
    return space.project(eps_fn(z, t.to(z.dtype)), mask)


def ddpm_sample(eps_fn: EpsFn, z: Tensor, schedule: NoiseSchedule, space: EuclideanSpace,
                steps: int | None = None, mask: Tensor | None = None, generator=None,
                spacing: str = "uniform", show_progress: bool = False,
                guide: Guide | None = None, final_denoise: bool = True, noise_scale: float = 1.0) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, Alg. 2): z_s ~ q(z_s | z_t, x = x̂(z_t)), for s < t on the grid.

    ``noise_scale`` γ multiplies the standard deviation of every step's fresh noise, z_s = μ + γ √var · ε
    (low-temperature sampling, as protein models use it: Genie, Lin & AlQuraishi 2023; Chroma, Ingraham et al.
    2023); γ = 1 is Alg. 2, γ = 0 follows the posterior means.
    """
    if noise_scale < 0:
        raise ValueError(f"DDPM noise_scale must be >= 0, got {noise_scale}")
    ts = _grid(schedule, steps, z, spacing)
    z = space.wrap(z, mask)
    for t, s in progress(list(zip(ts[:-1], ts[1:])), desc="DDPM", disable=None if show_progress else True, leave=False):
        mean, var = posterior_from_eps(z, _eps(eps_fn, z, t, space, mask), s, t, schedule)
        noise = space.randn(z.shape, mask, generator, z.dtype, z.device)
        z = _guided(guide, space.wrap(mean + noise_scale * var.sqrt() * noise, mask), s)
    return _final(eps_fn, z, ts[-1], schedule, space, mask, guide, final_denoise)


def ddim_sample(eps_fn: EpsFn, z: Tensor, schedule: NoiseSchedule, space: EuclideanSpace,
                steps: int | None = None, mask: Tensor | None = None, eta: float = 0.0, generator=None,
                spacing: str = "uniform", show_progress: bool = False,
                guide: Guide | None = None, final_denoise: bool = True) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12): z_s = α_s x̂ + √(σ_s² − c²) ε̂ + c ε, with c = η σ_s √(1 − SNR_t/SNR_s).

    η = 0 is the deterministic DDIM ODE step; η = 1 equals ancestral DDPM.
    """
    if eta < 0:
        raise ValueError(f"DDIM eta must be >= 0, got {eta}")
    ts = _grid(schedule, steps, z, spacing)
    z = space.wrap(z, mask)
    for t, s in progress(list(zip(ts[:-1], ts[1:])), desc="DDIM", disable=None if show_progress else True, leave=False):
        eps = _eps(eps_fn, z, t, space, mask)
        x_hat = predict_x0(z, t, schedule, eps)
        lam_s, lam_t = schedule.log_snr(s), schedule.log_snr(t)
        sigma2_s = torch.sigmoid(-lam_s)
        c2 = eta ** 2 * sigma2_s * -torch.expm1(lam_t - lam_s)
        z = (expand_like(schedule.alpha(s), z) * x_hat + expand_like((sigma2_s - c2).clamp(min=0).sqrt(), z) * eps)
        if eta > 0:
            z = z + expand_like(c2.sqrt(), z) * space.randn(z.shape, mask, generator, z.dtype, z.device)
        z = _guided(guide, space.wrap(z, mask), s)
    return _final(eps_fn, z, ts[-1], schedule, space, mask, guide, final_denoise)


def heun_sample(eps_fn: EpsFn, z: Tensor, schedule: NoiseSchedule, space: EuclideanSpace,
                steps: int | None = None, mask: Tensor | None = None, generator=None,
                spacing: str = "karras", show_progress: bool = False,
                guide: Guide | None = None, final_denoise: bool = True) -> Tensor:
    """Heun's second-order ODE solver (Karras et al. 2022, Alg. 1, deterministic).

    In the variables x̃ = z / α and σ̃ = σ / α = exp(−λ/2), the probability-flow ODE is dx̃/dσ̃ = ε̂.
    Each step takes an Euler step, then corrects with the slope at its end (two network calls per step,
    one on the final step). A space that wraps (the torus) wraps z = α x̃ after each step.
    """
    ts = _grid(schedule, steps, z, spacing)
    sig = [expand_like((-0.5 * schedule.log_snr(t)).exp(), z) for t in ts]
    alpha = [expand_like(schedule.alpha(t), z) for t in ts]
    wraps = getattr(space, "periodic", False)   # Euclidean spaces: x̃ is left bit for bit as it was
    x = space.wrap(z, mask) / alpha[0]
    for i in progress(range(len(ts) - 1), desc="Heun", disable=None if show_progress else True, leave=False):
        d = _eps(eps_fn, x * alpha[i], ts[i], space, mask)
        x_next = x + (sig[i + 1] - sig[i]) * d
        if i < len(ts) - 2:  # the last step (to t = 0) stays Euler, as in Karras et al.
            d_next = _eps(eps_fn, x_next * alpha[i + 1], ts[i + 1], space, mask)
            x_next = x + (sig[i + 1] - sig[i]) * 0.5 * (d + d_next)
        if guide is None and not wraps:
            x = x_next
        else:
            x = _guided(guide, space.wrap(x_next * alpha[i + 1], mask), ts[i + 1]) / alpha[i + 1]
    z = x * alpha[-1]
    return _final(eps_fn, z, ts[-1], schedule, space, mask, guide, final_denoise)


def dpm_solver_2m_sample(eps_fn: EpsFn, z: Tensor, schedule: NoiseSchedule, space: EuclideanSpace,
                         steps: int | None = None, mask: Tensor | None = None, generator=None,
                         spacing: str = "log_snr", show_progress: bool = False,
                guide: Guide | None = None, final_denoise: bool = True) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): multistep second order in the data prediction x̂.

    With h_i = (λ_{i} − λ_{i−1}) / 2 (half log-SNR steps, i.e. log(α/σ)):
        z_i = (σ_i/σ_{i−1}) z_{i−1} − α_i expm1(−h_i) D_i,   D_i = (1 + 1/(2r)) x̂_{i−1} − 1/(2r) x̂_{i−2},
    r = h_{i−1} / h_i; the first step is first order.  One network call per step.
    """
    ts = _grid(schedule, steps, z, spacing)
    z = space.wrap(z, mask)
    half_lam = [0.5 * schedule.log_snr(t) for t in ts]
    x_prev, h_prev = None, None
    for i in progress(range(len(ts) - 1), desc="DPM-Solver++", disable=None if show_progress else True, leave=False):
        x_hat = predict_x0(z, ts[i], schedule, _eps(eps_fn, z, ts[i], space, mask))
        h = half_lam[i + 1] - half_lam[i]
        if x_prev is None:
            d = x_hat
        else:
            r = expand_like(h_prev / h, z)
            d = (1 + 0.5 / r) * x_hat - (0.5 / r) * x_prev
        ratio = expand_like(schedule.sigma(ts[i + 1]) / schedule.sigma(ts[i]), z)
        z = space.project(ratio * z - expand_like(schedule.alpha(ts[i + 1]) * torch.expm1(-h), z) * d, mask)
        z = _guided(guide, space.wrap(z, mask), ts[i + 1])
        x_prev, h_prev = x_hat, h
    return _final(eps_fn, z, ts[-1], schedule, space, mask, guide, final_denoise)


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "heun": heun_sample,
    "dpm2m": dpm_solver_2m_sample,
}


def sample(name: str, eps_fn: EpsFn, z: Tensor, schedule: NoiseSchedule, space: EuclideanSpace,
           steps: int | None = None, mask: Tensor | None = None, generator=None, show_progress: bool = False,
           guide: Guide | None = None, **options) -> Tensor:
    """Run the sampler called ``name`` (``ddpm``, ``ddim``, ``heun``, ``dpm2m``); extra options (DDIM's
    ``eta``, DDPM's ``noise_scale``) pass through."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](eps_fn, z, schedule, space, steps=steps, mask=mask, generator=generator,
                          show_progress=show_progress, guide=guide, **options)
