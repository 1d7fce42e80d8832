"""Analytic toy distributions whose Bayes-optimal ε(z_t, t) is closed-form.

They check the core without any training: a sampler driven by the exact ε must reproduce the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.special import log_ndtr

from .diffusion.objective import EpsFn
from .diffusion.schedule import NoiseSchedule
from .diffusion.space import wrap_angle


@dataclass(frozen=True)
class GaussianMixture:
    """p(x) = Σ_k w_k N(μ_k, Σ_k) in d dimensions.  Shapes: weights [K], means [K, d], covs [K, d, d]."""

    weights: Tensor
    means: Tensor
    covs: Tensor

    @classmethod
    def default_2d(cls, dtype=torch.float64) -> GaussianMixture:
        """Three anisotropic components in the plane (weights 0.5 / 0.3 / 0.2)."""
        return cls(
            weights=torch.tensor([0.5, 0.3, 0.2], dtype=dtype),
            means=torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=dtype),
            covs=torch.tensor([[[0.30, 0.10], [0.10, 0.20]],
                               [[0.15, 0.00], [0.00, 0.40]],
                               [[0.25, -0.08], [-0.08, 0.15]]], dtype=dtype),
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)[k]
        noise = torch.randn(n, self.means.shape[1], 1, generator=generator, dtype=self.means.dtype)
        return self.means[k] + (chol @ noise).squeeze(-1)

    def eps_fn(self, schedule: NoiseSchedule) -> EpsFn:
        """ε̂(z, t) = −σ_t ∇ log p_t(z), with p_t = Σ_k w_k N(α_t μ_k, α_t² Σ_k + σ_t² I)."""
        eye = torch.eye(self.means.shape[1], dtype=self.means.dtype)

        def eps(z: Tensor, t: Tensor) -> Tensor:
            a = schedule.alpha(t).to(z.dtype).view(-1, 1, 1)
            s = schedule.sigma(t).to(z.dtype).view(-1, 1, 1)
            cov = a.unsqueeze(-1) ** 2 * self.covs + s.unsqueeze(-1) ** 2 * eye       # [B, K, d, d]
            diff = z[:, None, :] - a * self.means                                        # [B, K, d]
            prec_diff = torch.linalg.solve(cov, diff.unsqueeze(-1)).squeeze(-1)
            log_resp = torch.log(self.weights) - 0.5 * (diff * prec_diff).sum(-1) - 0.5 * torch.logdet(cov)
            score = -(torch.softmax(log_resp, dim=1).unsqueeze(-1) * prec_diff).sum(1)
            return -s[:, :, 0] * score

        return eps


def _log_normal(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    return -0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * var))


def _log_mass(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Φ(hi) − Φ(lo)) for lo ≤ hi without cancellation (mirrored when the interval lies right of 0)."""
    flip = lo > 0
    a = log_ndtr(torch.where(flip, -lo, hi))
    b = log_ndtr(torch.where(flip, -hi, lo))
    return a + torch.log1p(-torch.exp(b - a).clamp(max=1 - 1e-16))


@dataclass(frozen=True)
class WrappedGaussianMixture:
    """p(x) = Σ_k w_k WN(x; μ_k, s_k²) on the circle [−π, π) (radians), applied to every element of a tensor;
    WN(x; μ, s²) = Σ_m N(x + 2πm; μ, s²) is the wrapped normal. Shapes: weights, means, stds [K].

    Its ``eps_fn`` is the Bayes-optimal ε-model of ``TorusSpace``'s forward process z_t = wrap(α_t x + σ_t ε):
    the minimiser of the ε-loss, E[ε | z_t], in closed form (see ``eps_fn``).
    """

    weights: Tensor
    means: Tensor
    stds: Tensor
    copies: int = 1
    """Wrapped copies μ_k + 2πm, |m| ≤ copies, kept (|m| ≤ 1 is exact to double precision for s_k ≤ 0.6)."""
    windings: int = 3
    """Windings n of the unwrapped y = z + 2πn, |n| ≤ windings, kept in ``eps_fn`` (σ_t ≤ 1: |y| < 7π)."""

    @classmethod
    def default(cls, dtype=torch.float64) -> WrappedGaussianMixture:
        """Three components, one straddling ±π (weights 0.5 / 0.3 / 0.2)."""
        return cls(weights=torch.tensor([0.5, 0.3, 0.2], dtype=dtype),
                   means=torch.tensor([-1.2, 0.9, 3.0], dtype=dtype),
                   stds=torch.tensor([0.35, 0.25, 0.3], dtype=dtype))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``[n]`` in [−π, π)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, generator=generator, dtype=self.means.dtype)
        return wrap_angle(self.means[k] + self.stds[k] * noise)

    def _terms(self) -> tuple[Tensor, Tensor, Tensor]:
        m = torch.arange(-self.copies, self.copies + 1, dtype=self.means.dtype)
        mu = (self.means[:, None] + 2 * math.pi * m).flatten()
        return self.weights.repeat_interleave(len(m)), mu, self.stds.repeat_interleave(len(m))

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) elementwise for x in [−π, π)."""
        w, mu, sd = self._terms()
        return torch.logsumexp(torch.log(w) + _log_normal(x[..., None], mu, sd ** 2), dim=-1)

    def eps_fn(self, schedule: NoiseSchedule) -> EpsFn:
        """ε̂(z, t) = E[ε | z_t = z] for z ``[B, ...]`` in [−π, π), t ``[B]``.

        With y = z + 2πn (n the winding) and x restricted to [−π, π): each wrapped copy j (mean μ_j, std s_j)
        and winding n contribute the weight w_j N(y; α μ_j, α² s_j² + σ²) P_jn, where P_jn is the mass in
        [−π, π) of the Gaussian posterior of x, N(m, v) with v = s_j² σ² / (α² s_j² + σ²) and
        m = μ_j + α s_j² (y − α μ_j) / (α² s_j² + σ²); then ε = (y − α x) / σ, averaged with x's truncated
        normal mean m + √v (φ(a) − φ(b)) / P_jn, a, b = (∓π − m) / √v.
        """
        w, mu, sd = self._terms()
        n = torch.arange(-self.windings, self.windings + 1, dtype=self.means.dtype)

        def eps(z: Tensor, t: Tensor) -> Tensor:
            shape = (-1,) + (1,) * (z.dim() - 1) + (1, 1)
            a = schedule.alpha(t).to(z.dtype).reshape(shape)
            s = schedule.sigma(t).to(z.dtype).reshape(shape)
            y = z[..., None, None] + 2 * math.pi * n                      # [B, ..., 1, n]
            mu_, sd2 = mu[:, None], sd[:, None] ** 2                       # [j, 1]
            var_y = a ** 2 * sd2 + s ** 2
            post_m = mu_ + a * sd2 * (y - a * mu_) / var_y
            post_sd = (sd2 * s ** 2 / var_y).sqrt()
            lo, hi = (-math.pi - post_m) / post_sd, (math.pi - post_m) / post_sd
            log_p = _log_mass(lo, hi)
            log_phi = lambda u: -0.5 * u ** 2 - 0.5 * math.log(2 * math.pi)  # noqa: E731
            shift = post_sd * (torch.exp(log_phi(lo) - log_p) - torch.exp(log_phi(hi) - log_p))
            x_mean = torch.where(log_p > -500, post_m + shift, post_m).clamp(-math.pi, math.pi)
            log_r = torch.log(w)[:, None] + _log_normal(y, a * mu_, var_y) + log_p
            r = torch.softmax(log_r.flatten(-2), dim=-1).view_as(log_r)
            return (r * (y - a * x_mean)).sum((-2, -1)) / s[..., 0, 0]

        return eps
