"""Analytic toy distributions whose Bayes-optimal ε(z_t, t) is closed-form.

They check the core without any training: a sampler driven by the exact ε must reproduce the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .diffusion.objective import EpsFn
from .diffusion.schedule import NoiseSchedule


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
