"""The domain-agnostic diffusion core: schedule (by log-SNR) → forward process → objective → samplers.

Nothing here knows about atoms, residues or pixels; a domain supplies a backbone (wrapped as
``eps_fn(z_t, t)``), a space (``EuclideanSpace``, ``ZeroCoMSpace``, ``ZeroCoMGraphSpace`` for a point cloud with
symmetric edge features, or ``TorusSpace`` for angles) and its data.
"""

from .objective import (
    bits_per_dim,
    categorical_decoder_log_prob,
    diffusion_kl,
    discretized_decoder_nll,
    discretized_gaussian_log_prob,
    epsilon_loss,
    gaussian_decoder_nll,
    min_snr_weight,
    prior_kl,
    sample_time,
    truncated_snr_weight,
    vlb,
)
from .process import clip_denoised, eps_from_v, posterior, posterior_from_eps, predict_x0, q_sample
from .samplers import SAMPLERS, ddim_sample, ddpm_sample, dpm_solver_2m_sample, heun_sample, sample
from .schedule import (
    SCHEDULES,
    CosineSchedule,
    LinearBetaSchedule,
    NoiseSchedule,
    PolynomialSchedule,
    make_schedule,
)
from .space import EuclideanSpace, TorusSpace, ZeroCoMGraphSpace, ZeroCoMSpace, expand_like, randn, wrap_angle

__all__ = [
    "SCHEDULES", "NoiseSchedule", "LinearBetaSchedule", "CosineSchedule", "PolynomialSchedule", "make_schedule",
    "EuclideanSpace", "ZeroCoMSpace", "ZeroCoMGraphSpace", "TorusSpace", "expand_like", "randn", "wrap_angle",
    "q_sample", "posterior", "posterior_from_eps", "predict_x0", "clip_denoised", "eps_from_v",
    "epsilon_loss", "sample_time", "min_snr_weight", "truncated_snr_weight", "prior_kl", "diffusion_kl",
    "gaussian_decoder_nll",
    "discretized_gaussian_log_prob", "discretized_decoder_nll", "categorical_decoder_log_prob", "vlb",
    "bits_per_dim",
    "SAMPLERS", "sample", "ddpm_sample", "ddim_sample", "heun_sample", "dpm_solver_2m_sample",
]
