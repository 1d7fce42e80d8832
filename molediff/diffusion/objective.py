"""Training objective and the variational bound (negative ELBO) on −log p(x).

The model is any callable ``eps_fn(z_t, t) → ε̂`` (bind masks and conditioning with a closure).  Both
functions below return *unreduced* terms; the caller chooses how to reduce (per image, per molecule…).

Bound (VDM eq. 11–17, discrete time with T steps, t_i = i / T):

    −log p(x) ≤ KL(q(z_1 | x) ‖ N(0, I))                                   prior
              + Σ_{i=1}^{T} ½ (SNR_{i−1} − SNR_i) ‖x − x̂(z_{t_i})‖²          diffusion
              − log p(x | z_0)                                              decoder

with ½ (SNR_s − SNR_t) ‖x − x̂‖² = ½ expm1(λ_s − λ_t) ‖ε − ε̂‖².  Dimensions count the space's degrees of
freedom (3(N − 1) for zero-centre-of-mass coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.special import log_ndtr

from ..utils import progress
from .process import predict_x0, q_sample
from .schedule import NoiseSchedule
from .space import EuclideanSpace, expand_like

__all__ = [
    "EpsFn", "sample_time", "epsilon_loss", "truncated_snr_weight", "min_snr_weight", "prior_kl", "diffusion_kl",
    "gaussian_decoder_nll", "discretized_gaussian_log_prob", "discretized_decoder_nll",
    "categorical_decoder_log_prob", "vlb", "bits_per_dim",
]

EpsFn = Callable[[Tensor, Tensor], Tensor]
Decoder = Callable[..., Tensor]


def sample_time(batch_size: int, schedule: NoiseSchedule, generator: torch.Generator | None = None,
                device=None, lowest: int = 0, highest: int | None = None) -> Tensor:
    """Uniform grid times t = i / T with i ∈ {lowest, …, highest} (``highest`` defaults to T); ``[B]`` float64.

    A low-noise refiner trains on ``highest`` < T alone. ValueError unless 0 <= lowest <= highest <= T.
    """
    highest = schedule.T if highest is None else highest
    if not 0 <= lowest <= highest <= schedule.T:
        raise ValueError(f"need 0 <= lowest <= highest <= T = {schedule.T}, got {lowest}, {highest}")
    i = torch.randint(lowest, highest + 1, (batch_size,), generator=generator, device=device)
    return i.to(torch.float64) / schedule.T


def epsilon_loss(eps_fn: EpsFn, x: Tensor, schedule: NoiseSchedule, space: EuclideanSpace,
                 mask: Tensor | None = None, t: Tensor | None = None, generator=None,
                 weighting: Callable[[Tensor], Tensor] | None = None,
                 return_x0: bool = False) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Elementwise w(λ_t) ‖ε̂(z_t, t) − ε‖², zero at padding; same shape as ``x``.

    ``t`` defaults to uniform grid times; ``weighting`` maps log-SNR ``[B]`` to per-sample weights.
    The network sees ``space.wrap(z_t)`` (z_t itself in the Euclidean spaces); on the torus the target stays the
    unwrapped ε, as in FoldingDiff (Wu et al. 2022, eq. 2–3).
    ``return_x0=True`` also returns the implied clean estimate x̂ = (z_t − σ_t ε̂) / α_t (same shape as ``x``)
    and the times ``t`` ``[B]``, for auxiliary losses on x̂.
    """
    x = space.project(x, mask)
    if t is None:
        t = sample_time(x.shape[0], schedule, generator if isinstance(generator, torch.Generator) else None,
                        x.device)
    noise = space.randn(x.shape, mask, generator, x.dtype, x.device)
    z_t = space.wrap(q_sample(x, t, schedule, noise), mask)
    eps_hat = eps_fn(z_t, t.to(x.dtype))
    err = space.project(eps_hat - noise, mask) ** 2
    if weighting is not None:
        err = err * expand_like(weighting(schedule.log_snr(t)).to(err.dtype), err)
    if return_x0:
        return err, predict_x0(z_t, t, schedule, eps_hat), t
    return err


def truncated_snr_weight(low: float = 0.0, high: float = math.inf) -> Callable[[Tensor], Tensor]:
    """ε-loss weight w = clip(SNR, low, high) / SNR, i.e. an x̂-loss ‖x − x̂‖² weighted by clip(SNR, low, high).

    Since ‖ε − ε̂‖² = SNR ‖x − x̂‖², the unweighted ε-loss weighs x̂ errors by SNR itself, most at low noise.
    ``high`` caps that (Min-SNR-γ, Hang et al. 2023, is ``high = γ``, ``low = 0``); ``low`` lifts the weight
    of the noisiest times (EQGAT-diff, Le et al. 2024, clips the x̂ weight to [0.05, 1.5]).
    """
    if not 0 <= low < high:
        raise ValueError(f"need 0 <= low < high, got low={low}, high={high}")
    return lambda log_snr: torch.clamp(log_snr.exp(), min=low, max=high) / log_snr.exp()


def min_snr_weight(gamma: float = 5.0) -> Callable[[Tensor], Tensor]:
    """Min-SNR-γ weighting for ε-prediction (Hang et al. 2023): w = min(SNR, γ) / SNR."""
    return truncated_snr_weight(0.0, gamma)


def prior_kl(x: Tensor, schedule: NoiseSchedule, space: EuclideanSpace, mask: Tensor | None = None) -> Tensor:
    """KL(q(z_1 | x) ‖ N(0, I)) per sample ``[B]`` in nats."""
    lam = schedule.log_snr(torch.ones(x.shape[0], dtype=torch.float64, device=x.device)).to(x.dtype)
    alpha2, sigma2 = torch.sigmoid(lam), torch.sigmoid(-lam)
    x = space.project(x, mask)
    return 0.5 * (alpha2 * space.sum(x ** 2, mask) + space.dof(x, mask) * (sigma2 - 1 - torch.log(sigma2)))


def diffusion_kl(eps_fn: EpsFn, x: Tensor, schedule: NoiseSchedule, space: EuclideanSpace,
                 mask: Tensor | None = None, t_index: Tensor | None = None, generator=None) -> Tensor:
    """Unbiased one-draw estimate per sample ``[B]`` of Σ_{i=1}^{T} KL(q(z_{s}|z_t,x) ‖ p(z_s|z_t)).

    Draws i uniformly from {1 … T} (or uses ``t_index``) and returns T · ½ expm1(λ_s − λ_t) ‖ε − ε̂‖².
    """
    x = space.project(x, mask)
    T = schedule.T
    if t_index is None:
        t_index = torch.randint(1, T + 1, (x.shape[0],), device=x.device,
                                generator=generator if isinstance(generator, torch.Generator) else None)
    if bool(((t_index < 1) | (t_index > T)).any()):
        raise ValueError(f"t_index must lie in 1..T={T}")
    t = t_index.to(torch.float64) / T
    s = (t_index - 1).to(torch.float64) / T
    noise = space.randn(x.shape, mask, generator, x.dtype, x.device)
    z_t = q_sample(x, t, schedule, noise)
    err = space.sum((eps_fn(z_t, t.to(x.dtype)) - noise) ** 2, mask)
    weight = 0.5 * torch.expm1(schedule.log_snr(s) - schedule.log_snr(t))
    return T * weight.to(x.dtype) * err


def gaussian_decoder_nll(x: Tensor, z_0: Tensor, eps_hat: Tensor, schedule: NoiseSchedule,
                         space: EuclideanSpace, mask: Tensor | None = None) -> Tensor:
    """−log N(x; x̂(z_0), σ_0²/α_0²) per sample ``[B]``: the continuous decoder for coordinates and
    features (EDM).  Its normaliser counts the space's degrees of freedom."""
    t0 = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    lam0 = schedule.log_snr(t0).to(x.dtype)
    x_hat = predict_x0(z_0, t0, schedule, eps_hat)
    sq = space.sum((space.project(x, mask) - x_hat) ** 2, mask)
    return 0.5 * space.dof(x, mask) * (math.log(2 * math.pi) - lam0) + 0.5 * lam0.exp() * sq


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor | float, bins: int = 256) -> Tensor:
    """log P(x) elementwise for data on ``bins`` levels in [−1, 1] under N(mean, std²) integrated over
    each level's bin; the outer bins extend to ±∞ (DDPM §3.3), so the levels' probabilities sum to 1."""
    half = 1.0 / (bins - 1)
    upper = (x - mean + half) / std
    lower = (x - mean - half) / std
    # Φ(u) − Φ(l) without cancellation: mirror to the left tail when the bin lies right of the mean.
    flip = lower > 0
    a = log_ndtr(torch.where(flip, -lower, upper))
    b = log_ndtr(torch.where(flip, -upper, lower))
    middle = a + torch.log1p(-torch.exp(b - a).clamp(max=1 - 1e-12))
    top, bottom = x > 1 - half, x < -1 + half
    return torch.where(bottom, log_ndtr(upper), torch.where(top, log_ndtr(-lower), middle))


def discretized_decoder_nll(x: Tensor, z_0: Tensor, eps_hat: Tensor, schedule: NoiseSchedule,
                            space: EuclideanSpace, mask: Tensor | None = None) -> Tensor:
    """−log P(x | z_0) per sample for 8-bit data scaled to [−1, 1] (DDPM's image decoder)."""
    t0 = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    std = expand_like((-0.5 * schedule.log_snr(t0)).exp(), x)
    log_p = discretized_gaussian_log_prob(x, predict_x0(z_0, t0, schedule, eps_hat), std)
    return -space.sum(log_p, mask)


def categorical_decoder_log_prob(onehot: Tensor, estimate: Tensor, std: Tensor | float) -> Tensor:
    """log p(category | z_0) per element ``[..., K] → [...]`` for one-hot data (EDM's categorical
    decoder): each category's mass is N(estimate_k, std²) integrated over [1 − ½, 1 + ½], then normalised
    over the K categories."""
    upper, lower = (estimate - 0.5) / std, (estimate - 1.5) / std
    a, b = log_ndtr(upper), log_ndtr(lower)
    log_mass = a + torch.log1p(-torch.exp(b - a).clamp(max=1 - 1e-12))
    log_probs = log_mass - torch.logsumexp(log_mass, dim=-1, keepdim=True)
    return (log_probs * onehot).sum(-1)


def vlb(eps_fn: EpsFn, x: Tensor, schedule: NoiseSchedule, space: EuclideanSpace,
        mask: Tensor | None = None, decoder: Decoder = gaussian_decoder_nll, generator=None,
        t_index: Tensor | None = None, full_chain: bool = False, show_progress: bool = False) -> dict[str, Tensor]:
    """The bound's three terms and their sum, each per sample ``[B]`` in nats.

    ``decoder(x, z_0, ε̂, schedule, space, mask)`` gives −log p(x | z_0); use ``gaussian_decoder_nll``
    for continuous data and ``discretized_decoder_nll`` for 8-bit pixels. The diffusion term is the one-draw
    estimate of ``diffusion_kl`` (at ``t_index`` when given), or with ``full_chain=True`` the sum over every
    step i = 1 … T with one noise draw each (T network calls; DDPM's reported bits/dim).
    """
    if full_chain and t_index is not None:
        raise ValueError("full_chain sums over every step: give no t_index")
    x = space.project(x, mask)
    t0 = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    noise = space.randn(x.shape, mask, generator, x.dtype, x.device)
    z_0 = q_sample(x, t0, schedule, noise)
    if full_chain:
        diffusion = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in progress(range(1, schedule.T + 1), desc="bound", disable=None if show_progress else True,
                          leave=False):
            step = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            # diffusion_kl returns T × the term of step i (its one-draw estimate of the whole sum)
            diffusion += diffusion_kl(eps_fn, x, schedule, space, mask, step, generator) / schedule.T
    else:
        diffusion = diffusion_kl(eps_fn, x, schedule, space, mask, t_index, generator)
    terms = {
        "prior": prior_kl(x, schedule, space, mask),
        "diffusion": diffusion,
        "decoder": decoder(x, z_0, eps_fn(z_0, t0.to(x.dtype)), schedule, space, mask),
    }
    terms["total"] = terms["prior"] + terms["diffusion"] + terms["decoder"]
    return terms


def bits_per_dim(nats: Tensor, dof: Tensor | float) -> Tensor:
    """Convert a per-sample NLL in nats to bits per degree of freedom."""
    return nats / (torch.as_tensor(dof, dtype=nats.dtype) * math.log(2.0))
