"""Noise schedules, all parametrised by log-SNR.

Notation (variance-preserving diffusion, Kingma et al. 2021 "VDM"; Hoogeboom et al. 2022 "EDM"):

    t ∈ [0, 1]        diffusion time; the discrete grid is t_i = i / T, i = 0 … T
    λ(t)              log signal-to-noise ratio, strictly decreasing in t
    α_t² = sigmoid(λ) signal variance      (DDPM's ᾱ_t)
    σ_t² = sigmoid(−λ) noise variance       (α_t² + σ_t² = 1)
    SNR(t) = α_t² / σ_t² = exp(λ)
    z_t = α_t x + σ_t ε,   ε ~ N(0, I)      (the forward process q(z_t | x))

Every schedule is a table of λ at the T + 1 grid points.  Off-grid times are interpolated linearly in λ,
which is exact on the grid and lets continuous-time code (any t ∈ [0, 1]) and the T → ∞ limit use the same
object: build the table with a larger T.  Everything downstream (forward process, bound, samplers) only
reads λ, never β.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["NoiseSchedule", "LinearBetaSchedule", "CosineSchedule", "PolynomialSchedule", "make_schedule"]


class NoiseSchedule:
    """A log-SNR table λ_0 > λ_1 > … > λ_T on the grid t_i = i / T.

    Shapes: every method maps t of any shape to a tensor of the same shape and dtype.
    """

    def __init__(self, log_snr_table: Tensor):
        table = torch.as_tensor(log_snr_table, dtype=torch.float64).flatten()
        if table.numel() < 2:
            raise ValueError("a schedule needs at least T = 1 step (two log-SNR values)")
        if not torch.isfinite(table).all():
            raise ValueError("schedule log-SNR must be finite at every step; check the schedule parameters")
        if not (table[1:] < table[:-1]).all():
            raise ValueError("schedule log-SNR must strictly decrease with t; check the schedule parameters")
        self.table = table

    @property
    def T(self) -> int:
        """Number of discrete diffusion steps."""
        return self.table.numel() - 1

    def log_snr(self, t: Tensor) -> Tensor:
        """λ(t), linear interpolation of the table in t ∈ [0, 1]."""
        t = torch.as_tensor(t)
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
        table = self.table.to(t.device)
        u = t.to(torch.float64).clamp(0.0, 1.0) * self.T
        lo = u.floor().clamp(max=self.T - 1).long()
        frac = u - lo
        return (table[lo] * (1 - frac) + table[lo + 1] * frac).to(dtype)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sigmoid(self.log_snr(t)).sqrt()

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sigmoid(-self.log_snr(t)).sqrt()

    def alpha_bar(self, t: Tensor) -> Tensor:
        """DDPM's ᾱ_t = α_t²."""
        return torch.sigmoid(self.log_snr(t))

    def snr(self, t: Tensor) -> Tensor:
        return self.log_snr(t).exp()

    def timesteps(self, steps: int | None = None, spacing: str = "uniform", rho: float = 7.0) -> Tensor:
        """Descending sampling grid 1 = t_K > … > t_0 = 0 of ``steps`` + 1 points on the discrete grid.

        ``spacing`` places the intermediate points evenly in t (``uniform``, DDIM's skip), in log-SNR
        (``log_snr``), or in σ̃^{1/ρ} with σ̃ = σ/α (``karras``, Karras et al. 2022 eq. 5), which puts the
        steps where ODE solvers need them; each point is the nearest grid time, kept strictly descending.
        """
        steps = self.T if steps is None else int(steps)
        if not 1 <= steps <= self.T:
            raise ValueError(f"number of sampling steps must be in 1..T={self.T}, got {steps}")
        r = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        if spacing == "uniform":
            idx = torch.round((1 - r) * self.T)
        elif spacing in ("log_snr", "karras"):
            lam = self.table
            if spacing == "log_snr":
                targets = lam[-1] + r * (lam[0] - lam[-1])
            else:
                s_max, s_min = (-0.5 * lam[-1]).exp() ** (1 / rho), (-0.5 * lam[0]).exp() ** (1 / rho)
                targets = -2 * torch.log((s_max + r * (s_min - s_max)) ** rho)
            # nearest grid index by λ (the table decreases, so search its reversal)
            pos = torch.searchsorted(lam.flip(0), targets).clamp(1, self.T)
            lo, hi = lam.flip(0)[pos - 1], lam.flip(0)[pos]
            pos = torch.where((targets - lo).abs() <= (hi - targets).abs(), pos - 1, pos)
            idx = (self.T - pos).to(torch.float64)
            # keep strictly descending: each point at least one grid step below the previous, above the next
            for k in range(1, steps + 1):
                idx[k] = torch.minimum(idx[k], idx[k - 1] - 1).clamp(min=steps - k)
        else:
            raise ValueError(f"unknown timestep spacing {spacing!r}; choose uniform, log_snr or karras")
        return idx / self.T

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.T}, log_snr=[{self.table[0]:.3f} … {self.table[-1]:.3f}])"


def _log_snr_from_alpha_bar(alpha_bar: Tensor) -> Tensor:
    return torch.log(alpha_bar) - torch.log1p(-alpha_bar)


class LinearBetaSchedule(NoiseSchedule):
    """DDPM (Ho et al. 2020): β linear from ``beta_start`` to ``beta_end``; ᾱ_i = Π_{j ≤ i} (1 − β_j).

    The T + 1 grid points are the T + 1 noisy levels of a DDPM chain with T + 1 betas, so ᾱ at t = 0 is
    1 − beta_start (slightly noisy; the decoder p(x | z_0) handles the last step).
    """

    def __init__(self, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if int(T) < 1:
            raise ValueError(f"T must be a positive number of steps, got {T}")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, "
                             f"beta_end={beta_end}")
        self.beta_start, self.beta_end = beta_start, beta_end
        betas = torch.linspace(beta_start, beta_end, int(T) + 1, dtype=torch.float64)
        super().__init__(_log_snr_from_alpha_bar(torch.cumprod(1 - betas, 0)))


class CosineSchedule(NoiseSchedule):
    """Nichol & Dhariwal (2021): ᾱ(u) = f(u) / f(0), f(u) = cos²(π/2 · (u + s) / (1 + s)), β clipped at
    ``max_beta``.  As for the linear schedule, the grid holds the T + 1 noisy levels u_j = j / (T + 1),
    j = 1 … T + 1."""

    def __init__(self, T: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        if int(T) < 1:
            raise ValueError(f"T must be a positive number of steps, got {T}")
        if not s > 0.0:
            raise ValueError(f"cosine offset s must be positive, got {s}")
        if not 0.0 < max_beta < 1.0:
            raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
        n = int(T) + 1
        u = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
        super().__init__(_log_snr_from_alpha_bar(torch.cumprod(1 - betas, 0)))


class PolynomialSchedule(NoiseSchedule):
    """EDM's polynomial schedule (Hoogeboom et al. 2022, Appendix B).

    α²(t) = (1 − (t/T)^power)², the ratios α²_i / α²_{i−1} clipped from below at ``clip`` (so no single step
    destroys all signal), then α² ← (1 − 2s) α² + s with precision s, keeping α² in [s, 1 − s].
    """

    def __init__(self, T: int = 1000, power: float = 2.0, precision: float = 1e-5, clip: float = 1e-3):
        if int(T) < 1:
            raise ValueError(f"T must be a positive number of steps, got {T}")
        if not 0.0 < precision < 0.5:
            raise ValueError(f"precision s must be in (0, 0.5), got {precision}")
        if not power > 0.0:
            raise ValueError(f"power must be positive, got {power}")
        if not 0.0 < clip <= 1.0:
            raise ValueError(f"clip must be in (0, 1], got {clip}")
        T = int(T)
        alpha2 = (1 - (torch.arange(T + 1, dtype=torch.float64) / T) ** power) ** 2
        ratios = (alpha2 / torch.cat([alpha2.new_ones(1), alpha2[:-1]])).clamp(clip, 1.0)
        alpha2 = (1 - 2 * precision) * torch.cumprod(ratios, 0) + precision
        super().__init__(_log_snr_from_alpha_bar(alpha2))


SCHEDULES = {"linear": LinearBetaSchedule, "cosine": CosineSchedule, "polynomial": PolynomialSchedule}


def make_schedule(name: str, T: int = 1000, **kwargs) -> NoiseSchedule:
    """Build a schedule by name: ``linear``, ``cosine`` or ``polynomial`` (EDM)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](T=T, **kwargs)
