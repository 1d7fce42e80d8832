"""The torus space (angles in [−π, π)): wrapping, the wrapped-normal forward marginal, the ε-objective on the
wrapped z_t, and samplers driven by the exact ε of a wrapped Gaussian mixture on the circle."""

import math

import pytest
import torch
from torch.special import ndtr

from molediff.diffusion import (
    EuclideanSpace,
    PolynomialSchedule,
    TorusSpace,
    ZeroCoMSpace,
    epsilon_loss,
    q_sample,
    sample,
    wrap_angle,
)
from molediff.toy import WrappedGaussianMixture

BINS = 24
MIXTURE = WrappedGaussianMixture.default()


def histogram(x: torch.Tensor) -> torch.Tensor:
    """Fractions of ``x`` in BINS equal bins of [−π, π); fails for a value outside."""
    assert ((x >= -math.pi) & (x < math.pi)).all(), (float(x.min()), float(x.max()))
    return torch.histc(x, BINS, -math.pi, math.pi) / x.numel()


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def wrapped_normal_bins(mean: float, std: float) -> torch.Tensor:
    """Closed form: the mass of WN(mean, std²) in each bin, Σ_k Φ((b + 2πk − mean)/std) − Φ((a + 2πk − mean)/std)."""
    edges = torch.linspace(-math.pi, math.pi, BINS + 1, dtype=torch.float64)
    k = torch.arange(-6, 7, dtype=torch.float64)[:, None] * 2 * math.pi
    cdf = ndtr((edges + k - mean) / std).sum(0)
    return cdf[1:] - cdf[:-1]


def mixture_bins() -> torch.Tensor:
    """The mixture's mass per bin, from the same closed form."""
    return sum(w * wrapped_normal_bins(float(m), float(s))
               for w, m, s in zip(MIXTURE.weights, MIXTURE.means, MIXTURE.stds))


def test_wrap_angle_maps_into_the_half_open_interval():
    x = torch.tensor([-math.pi, math.pi, 3 * math.pi, -1e-30, 0.5, 0.5 + 4 * math.pi, -7.0, 1e6],
                     dtype=torch.float64)
    y = wrap_angle(x)
    assert ((y >= -math.pi) & (y < math.pi)).all()
    assert y[0] == -math.pi and y[1] == -math.pi                     # π itself belongs to −π
    torch.testing.assert_close(y[3:5], x[3:5], rtol=0, atol=0)       # unchanged inside [−π, π)
    torch.testing.assert_close(y[5], torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(y[6], torch.tensor(-7.0 + 2 * math.pi, dtype=torch.float64))
    torch.testing.assert_close(torch.cos(y), torch.cos(x))
    torch.testing.assert_close(wrap_angle(y), y, rtol=0, atol=0)


def test_euclidean_spaces_do_not_wrap_and_the_torus_masks_padding():
    z = torch.randn(2, 5, 3) * 10
    assert EuclideanSpace().wrap(z) is z and ZeroCoMSpace().wrap(z) is z
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    w = TorusSpace().wrap(z, mask)
    assert (w[1, 2:] == 0).all() and (w[mask].abs() <= math.pi).all()
    torch.testing.assert_close(torch.sin(w[mask]), torch.sin(z[mask]))
    # ε̂ and fresh noise are projected (masked), never wrapped
    big = torch.full((2, 5, 3), 5.0)
    assert (TorusSpace().project(big, mask)[mask] == 5.0).all()


@pytest.mark.parametrize("x0", [2.8, -3.0, 0.4])
@pytest.mark.parametrize("t", [0.3, 0.8, 0.95, 1.0])
def test_forward_marginal_is_the_wrapped_normal(x0, t):
    schedule = PolynomialSchedule(T=1000)
    n = 200_000
    x = torch.full((n, 1), x0, dtype=torch.float64)
    noise = TorusSpace().randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = TorusSpace().wrap(q_sample(x, t, schedule, noise))
    a, s = float(schedule.alpha(torch.tensor(t))), float(schedule.sigma(torch.tensor(t)))
    expected = wrapped_normal_bins(a * x0, s)
    # sampling noise alone gives TV ≈ 0.004 here; the unwrapped normal, or the wrong α or σ, is far off
    assert total_variation(histogram(z), expected) < 0.012
    assert total_variation(expected, wrapped_normal_bins(a * x0, 1.15 * s)) > 0.02


def test_epsilon_loss_feeds_the_wrapped_z_and_targets_the_unwrapped_noise():
    schedule = PolynomialSchedule(T=100)
    x = wrap_angle(torch.randn(64, 200, dtype=torch.float64) * 3)
    t = torch.linspace(0, 1, 64, dtype=torch.float64)
    seen = {}

    def eps_fn(z, t_):
        seen["z"] = z
        return torch.zeros_like(z)

    err = epsilon_loss(eps_fn, x, schedule, TorusSpace(), t=t, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(64, 200, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert (noise.abs() > math.pi).any()                           # the target is ε itself, not wrap(ε)
    torch.testing.assert_close(err, noise ** 2, rtol=0, atol=0)
    torch.testing.assert_close(seen["z"], wrap_angle(q_sample(x, t, schedule, noise)), rtol=0, atol=0)


@pytest.mark.slow
def test_the_exact_mixture_eps_minimises_the_loss():
    """E[ε | z_t] is the minimiser of the ε-loss: scaling or shifting it raises the Monte-Carlo loss."""
    schedule = PolynomialSchedule(T=1000)
    eps = MIXTURE.eps_fn(schedule)
    g = torch.Generator().manual_seed(0)
    n = 100_000
    x = MIXTURE.sample(n, g)[:, None]
    noise = torch.randn(n, 1, generator=g, dtype=torch.float64)
    for tv in (0.2, 0.7, 0.9, 1.0):
        t = torch.full((n,), tv, dtype=torch.float64)
        e_hat = eps(TorusSpace().wrap(q_sample(x, t, schedule, noise)), t)
        loss = float(((e_hat - noise) ** 2).mean())
        assert abs(float((e_hat - noise).mean())) < 0.01
        for changed in (0.95 * e_hat, 1.05 * e_hat, e_hat + 0.05):
            assert float(((changed - noise) ** 2).mean()) > loss


# Measured (this mixture, seed 1): DDPM (200 steps, 4000 draws) TV 0.024, at the sampling noise (≈ 0.02);
# DDIM (50 steps, 16000 draws) TV 0.049: VP's factor α_s/α_t on z_t is not periodic, and the deterministic
# samplers move ~3 % of the mass of the component that straddles ±π across the boundary. The same check of
# DDPM at noise_scale 0.8 (a sampler with the wrong noise) gives TV 0.135.
@pytest.mark.slow
@pytest.mark.parametrize("name, steps, n, tolerance", [("ddpm", 200, 4000, 0.045), ("ddim", 50, 16000, 0.07)])
def test_samplers_reproduce_a_wrapped_mixture_on_the_circle(name, steps, n, tolerance):
    schedule = PolynomialSchedule(T=1000)
    eps = MIXTURE.eps_fn(schedule)
    space = TorusSpace()

    def run(**options):
        g = torch.Generator().manual_seed(1)
        z = space.randn((n, 1), generator=g, dtype=torch.float64)
        return sample(name, eps, z, schedule, space, steps=steps, generator=g, **options)[:, 0]

    x = run()
    assert total_variation(histogram(x), mixture_bins()) < tolerance
    # each component's weight: the mass within 2.5 std of its mean (on the circle)
    for w, m, s in zip(MIXTURE.weights, MIXTURE.means, MIXTURE.stds):
        near = (wrap_angle(x - m).abs() < 2.5 * s).double().mean()
        assert float(near) == pytest.approx(0.9876 * float(w), abs=0.035)
    # negative control: the same check fails for a sampler with a wrong ε
    wrong = sample(name, lambda z, t: 0.85 * eps(z, t), space.randn((n, 1), generator=torch.Generator()
                   .manual_seed(1), dtype=torch.float64), schedule, space, steps=steps,
                   generator=torch.Generator().manual_seed(2))[:, 0]
    assert total_variation(histogram(wrong), mixture_bins()) > tolerance


@pytest.mark.parametrize("name, steps", [pytest.param("heun", 40, marks=pytest.mark.slow), ("dpm2m", 20)])
def test_the_other_samplers_run_on_the_torus(name, steps):
    """Heun and DPM-Solver++(2M) run unchanged on the torus (measured TV 0.057 and 0.047, as DDIM)."""
    schedule = PolynomialSchedule(T=1000)
    space = TorusSpace()
    g = torch.Generator().manual_seed(1)
    z = space.randn((4000, 1), generator=g, dtype=torch.float64)
    x = sample(name, MIXTURE.eps_fn(schedule), z, schedule, space, steps=steps, generator=g)[:, 0]
    assert total_variation(histogram(x), mixture_bins()) < 0.08
