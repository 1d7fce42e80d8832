"""Samplers driven by the Bayes-optimal ε of known distributions must reproduce them (no training)."""

import pytest
import torch

from molediff.diffusion import (
    EuclideanSpace,
    PolynomialSchedule,
    ZeroCoMSpace,
    ddim_sample,
    ddpm_sample,
    sample,
)
from molediff.toy import GaussianMixture

MIXTURE = GaussianMixture.default_2d()
WEIGHTS, MEANS, COVS = MIXTURE.weights, MIXTURE.means, MIXTURE.covs


def mixture_eps(schedule):
    return MIXTURE.eps_fn(schedule)


def assert_matches_mixture(x):
    assert torch.isfinite(x).all()
    d = ((x[:, None, :] - MEANS) ** 2).sum(-1)
    label = d.argmin(1)
    for k in range(3):
        members = x[label == k]
        assert (label == k).double().mean().item() == pytest.approx(WEIGHTS[k].item(), abs=0.03)
        torch.testing.assert_close(members.mean(0), MEANS[k], atol=0.08, rtol=0)
        torch.testing.assert_close(torch.cov(members.T), COVS[k], atol=0.06, rtol=0)


@pytest.mark.parametrize("name, steps", [pytest.param("ddpm", 1000, marks=pytest.mark.slow), ("ddim", 50), ("heun", 20),
                                         ("dpm2m", 20)])
def test_sampler_reproduces_gaussian_mixture(name, steps):
    schedule = PolynomialSchedule(T=1000)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    x = sample(name, mixture_eps(schedule), z, schedule, EuclideanSpace(), steps=steps, generator=g)
    assert_matches_mixture(x)


def test_ddim_eta0_is_deterministic_and_eta1_equals_ddpm():
    schedule = PolynomialSchedule(T=200)
    eps = mixture_eps(schedule)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = ddim_sample(eps, z, schedule, EuclideanSpace(), steps=25, generator=torch.Generator().manual_seed(1))
    b = ddim_sample(eps, z, schedule, EuclideanSpace(), steps=25, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = ddim_sample(eps, z, schedule, EuclideanSpace(), steps=25, eta=1.0,
                    generator=torch.Generator().manual_seed(7))
    d = ddpm_sample(eps, z, schedule, EuclideanSpace(), steps=25, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(c, d)
    assert not torch.allclose(a, c)


@pytest.mark.slow
def test_ddpm_noise_scale_lowers_the_temperature():
    # γ = 1 is Alg. 2 bit for bit; γ = 0 follows posterior means (no generator dependence); in between, the
    # samples concentrate on the modes: the spread about the nearest mode shrinks with γ
    schedule = PolynomialSchedule(T=200)
    eps = mixture_eps(schedule)
    z = torch.randn(3000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def run(gamma, seed=1, **kw):
        return ddpm_sample(eps, z, schedule, EuclideanSpace(), generator=torch.Generator().manual_seed(seed), **kw)

    torch.testing.assert_close(run(1.0, noise_scale=1.0), run(1.0), rtol=0, atol=0)
    torch.testing.assert_close(run(0.0, noise_scale=0.0), run(0.0, seed=2, noise_scale=0.0), rtol=0, atol=0)

    def spread(x):
        return ((x[:, None, :] - MEANS) ** 2).sum(-1).min(1).values.mean().item()

    assert spread(run(0.5, noise_scale=0.5)) < 0.8 * spread(run(1.0))
    with pytest.raises(ValueError, match="noise_scale"):
        run(-1.0, noise_scale=-1.0)


# Heun (Karras spacing) carries a ~9% variance error on this unimodal Gaussian at 20 steps (measured:
# 1.086 × the true variance, against 1.037 for DPM-Solver++(2M)), so it is checked at 40 steps here.
@pytest.mark.parametrize("name, steps", [pytest.param("ddpm", 500, marks=pytest.mark.slow), ("ddim", 50), ("heun", 40),
                                         ("dpm2m", 20)])
def test_zero_com_point_clouds_with_masks(name, steps):
    """Data: isotropic N(0, c² I) restricted to the zero-CoM subspace, for clouds of 5 and 3 points."""
    c2 = 4.0
    schedule = PolynomialSchedule(T=500)
    space = ZeroCoMSpace(com_dims=3)

    def eps_fn(z, t):
        a2, s = schedule.alpha(t).view(-1, 1, 1) ** 2, schedule.sigma(t).view(-1, 1, 1)
        return s * z / (a2 * c2 + s ** 2)

    B, N = 3000, 5
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[B // 2:, 3:] = False
    g = torch.Generator().manual_seed(0)
    z = space.randn((B, N, 3), mask, g, torch.float64)
    x = sample(name, eps_fn, z, schedule, space, steps=steps, mask=mask, generator=g)
    torch.testing.assert_close(x.sum(1), torch.zeros(B, 3, dtype=torch.float64), atol=1e-9, rtol=0)
    assert (x[B // 2:, 3:] == 0).all()
    for rows, n in [(slice(0, B // 2), 5), (slice(B // 2, B), 3)]:
        pts = x[rows, :n]                          # [b, n, 3]
        cov = torch.einsum("bid,bjd->ij", pts, pts) / (pts.shape[0] * 3)
        expected = c2 * (torch.eye(n, dtype=torch.float64) - 1.0 / n)
        torch.testing.assert_close(cov, expected, atol=0.25, rtol=0)


def test_bad_sampler_arguments():
    schedule = PolynomialSchedule(T=10)
    z = torch.randn(4, 2)
    with pytest.raises(ValueError, match="1..T=10"):
        sample("ddim", lambda z, t: z, z, schedule, EuclideanSpace(), steps=11)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample("euler-maruyama", lambda z, t: z, z, schedule, EuclideanSpace())
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(lambda z, t: z, z, schedule, EuclideanSpace(), eta=-1)
    with pytest.raises(ValueError, match="per-sample generators"):
        EuclideanSpace().randn((4, 2), generator=[torch.Generator()] * 3)


def test_per_sample_generators_make_samples_independent_of_batch():
    schedule = PolynomialSchedule(T=50)
    eps = mixture_eps(schedule)
    seeds = [11, 12, 13, 14]
    gens = lambda: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    z = EuclideanSpace().randn((4, 2), generator=gens(), dtype=torch.float64)
    full = ddpm_sample(eps, z, schedule, EuclideanSpace(), generator=gens())
    gens_sub = lambda: [torch.Generator().manual_seed(s) for s in seeds[2:]]  # noqa: E731
    z_sub = EuclideanSpace().randn((2, 2), generator=gens_sub(), dtype=torch.float64)
    sub = ddpm_sample(eps, z_sub, schedule, EuclideanSpace(), generator=gens_sub())
    torch.testing.assert_close(full[2:], sub)


def test_eps_from_v_recovers_eps_from_the_exact_v_and_tends_to_z_at_pure_noise():
    """With v̂ = α ε − σ x (the exact v of a known x), eps_from_v returns ε exactly; at α → 0 it returns z."""
    from molediff.diffusion import eps_from_v, make_schedule, q_sample

    schedule = make_schedule("linear", T=999)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 5, 5, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 0.2, 0.7, 1.0], dtype=torch.float64)
    z = q_sample(x, t, schedule, eps)
    a, s = schedule.alpha(t).view(-1, 1, 1, 1), schedule.sigma(t).view(-1, 1, 1, 1)
    exact_v = a * eps - s * x
    torch.testing.assert_close(eps_from_v(lambda z_, t_: exact_v, schedule)(z, t), eps)
    zero_v = eps_from_v(lambda z_, t_: torch.zeros_like(z_), schedule)(z, t)
    torch.testing.assert_close(zero_v, s * z)                       # ε̂ = σ z: → z as α → 0
    assert (zero_v[3] - z[3]).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["ddpm", "ddim", "heun", "dpm2m"])
def test_without_the_final_denoise_a_sampler_returns_z0_with_one_network_call_less(name):
    # z_0 still carries σ_0 of noise (0.003 for this schedule): x̂(z_0) differs from it by σ_0 ε̂ / α_0, and
    # skipping that call changes nothing else
    schedule = PolynomialSchedule(T=100)
    inner = mixture_eps(schedule)
    calls = []

    def eps(z, t):
        calls.append(float(t[0]))
        return inner(z, t)

    z = torch.randn(256, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = {}
    for final in (True, False):
        calls.clear()
        out[final] = sample(name, eps, z, schedule, EuclideanSpace(), steps=5,
                            generator=torch.Generator().manual_seed(5), final_denoise=final)
        out[final, "calls"] = list(calls)
    assert out[True, "calls"][:-1] == out[False, "calls"] and out[True, "calls"][-1] == 0.0
    sigma0 = float(schedule.sigma(torch.tensor(0.0)))
    step = (out[True] - out[False]).norm(dim=-1)
    assert 0 < step.max() < 10 * sigma0
    eps0 = inner(out[False], torch.zeros(256, dtype=torch.float64))
    torch.testing.assert_close(out[True], (out[False] - sigma0 * eps0) / float(schedule.alpha(torch.tensor(0.0))))
