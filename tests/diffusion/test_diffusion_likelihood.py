"""The variational bound against its closed form on Gaussian data, and the decoders."""

import math

import pytest
import torch

from molediff.diffusion import (
    EuclideanSpace,
    PolynomialSchedule,
    ZeroCoMSpace,
    bits_per_dim,
    categorical_decoder_log_prob,
    discretized_gaussian_log_prob,
    vlb,
)

V = 0.5  # data variance: x ~ N(0, V)


def optimal_eps(schedule, v=V):
    """E[ε | z_t] for x ~ N(0, v I): σ z / (α² v + σ²)."""

    def eps_fn(z, t):
        a2, s = schedule.alpha(t) ** 2, schedule.sigma(t)
        shape = (-1,) + (1,) * (z.dim() - 1)
        return s.view(shape) * z / (a2.view(shape) * v + s.view(shape) ** 2)

    return eps_fn


def closed_form_bound(schedule, v=V):
    lam = schedule.table
    snr = lam.exp()
    a2_1, s2_1 = torch.sigmoid(lam[-1]), torch.sigmoid(-lam[-1])
    prior = 0.5 * (a2_1 * v + s2_1 - 1 - torch.log(s2_1))
    post_var = v / (1 + v * snr)                       # Var(x | z_t)
    diffusion = (0.5 * (snr[:-1] - snr[1:]) * post_var[1:]).sum()
    decoder = 0.5 * (math.log(2 * math.pi) - lam[0]) + 0.5 * snr[0] * post_var[0]
    return (prior + diffusion + decoder).item()


EXACT_NLL = 0.5 * math.log(2 * math.pi * math.e * V)


def test_implemented_bound_equals_closed_form_within_monte_carlo_error():
    torch.manual_seed(0)
    schedule = PolynomialSchedule(T=1000, precision=1e-5)
    reps = 200
    t_index = torch.arange(1, schedule.T + 1).repeat(reps)           # stratified over all steps
    x = torch.randn(t_index.numel(), 1, dtype=torch.float64) * math.sqrt(V)
    terms = vlb(optimal_eps(schedule), x, schedule, EuclideanSpace(), t_index=t_index)
    estimate = terms["total"].mean().item()
    stderr = terms["total"].std().item() / math.sqrt(x.shape[0])
    expected = closed_form_bound(schedule)
    assert abs(estimate - expected) < 4 * stderr + 1e-3, (estimate, expected, stderr)
    # the bound is a bound, and at T = 1000 it is genuinely loose for this data
    assert expected > EXACT_NLL
    assert estimate > EXACT_NLL


def test_bound_converges_to_exact_nll_as_steps_grow():
    gaps = []
    for T in [10, 100, 1000, 10_000, 100_000]:
        bound = closed_form_bound(PolynomialSchedule(T=T, precision=1e-5))
        assert bound > EXACT_NLL
        gaps.append(bound - EXACT_NLL)
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] / abs(EXACT_NLL) < 0.01


def test_implemented_bound_at_large_T_is_within_one_percent_of_exact_nll():
    torch.manual_seed(1)
    schedule = PolynomialSchedule(T=100_000, precision=1e-5)
    t_index = torch.arange(1, schedule.T + 1).repeat(4)
    x = torch.randn(t_index.numel(), 1, dtype=torch.float64) * math.sqrt(V)
    total = vlb(optimal_eps(schedule), x, schedule, EuclideanSpace(), t_index=t_index)["total"].mean().item()
    assert total > EXACT_NLL
    assert (total - EXACT_NLL) / abs(EXACT_NLL) < 0.01


def test_zero_com_bound_counts_translation_free_degrees_of_freedom():
    """For N points in 3-D the likelihood lives on 3(N − 1) dimensions: on isotropic Gaussian data it
    is 3(N − 1) times the 1-D closed form, term by term."""
    torch.manual_seed(2)
    schedule = PolynomialSchedule(T=1000)
    space = ZeroCoMSpace(com_dims=3)
    N, reps, dof = 4, 50, 9
    t_index = torch.arange(1, schedule.T + 1).repeat(reps)
    # projected isotropic noise has variance V in each of the 3(N − 1) subspace directions
    x = space.project(torch.randn(t_index.numel(), N, 3, dtype=torch.float64) * math.sqrt(V))
    terms = {k: v / dof for k, v in vlb(optimal_eps(schedule), x, schedule, space, t_index=t_index).items()}
    lam = schedule.table
    snr0, a2_1, s2_1 = lam[0].exp(), torch.sigmoid(lam[-1]), torch.sigmoid(-lam[-1])
    prior = (0.5 * (a2_1 * V + s2_1 - 1 - torch.log(s2_1))).item()
    decoder = (0.5 * (math.log(2 * math.pi) - lam[0]) + 0.5 * snr0 * V / (1 + V * snr0)).item()
    assert terms["prior"].mean().item() == pytest.approx(prior, rel=0.02)
    assert terms["decoder"].mean().item() == pytest.approx(decoder, abs=0.01)
    stderr = terms["total"].std().item() / math.sqrt(t_index.numel())
    assert abs(terms["total"].mean().item() - closed_form_bound(schedule)) < 4 * stderr
    total = vlb(optimal_eps(schedule), x[:10], schedule, space, t_index=t_index[:10])["total"]
    torch.testing.assert_close(bits_per_dim(total, space.dof(x[:10])), total / (dof * math.log(2)))


def test_discretized_decoder_is_a_proper_distribution():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, std in [(0.0, 0.01), (0.93, 0.002), (-1.2, 0.3), (0.5, 1e-4), (1.0, 0.05)]:
        p = discretized_gaussian_log_prob(levels, torch.tensor(mean, dtype=torch.float64), std).exp()
        assert p.sum().item() == pytest.approx(1.0, abs=1e-9)
        assert (p >= 0).all()


def test_categorical_decoder_matches_integrated_gaussian_masses():
    """p(k) ∝ P(|X_k − 1| < ½) for X_k ~ N(estimate_k, std²), normalised over the K categories."""
    estimate = torch.tensor([[0.9, 0.2, -0.1], [0.4, 0.5, 0.3]], dtype=torch.float64)
    std = 0.3
    normal = torch.distributions.Normal(estimate, std)
    mass = normal.cdf(torch.tensor(1.5, dtype=torch.float64)) - normal.cdf(torch.tensor(0.5, dtype=torch.float64))
    expected = mass / mass.sum(-1, keepdim=True)
    for k in range(3):
        onehot = torch.nn.functional.one_hot(torch.full((2,), k), 3).to(torch.float64)
        torch.testing.assert_close(categorical_decoder_log_prob(onehot, estimate, std).exp(), expected[:, k])


def test_full_chain_bound_of_a_zero_predictor_matches_its_closed_form():
    """ε̂ ≡ 0 gives x̂ = z_t / α_t, so step i of the bound costs ½ expm1(λ_{i−1} − λ_i) ‖ε_i‖²: summed over the full
    chain, ½ Σ expm1(Δλ) per dimension in expectation. A few steps carry most of the sum, so its relative spread
    is about √(2 / dimensions) = 0.7 % at 40,000 dimensions: checked within 3 %."""
    from molediff.diffusion import EuclideanSpace, make_schedule, vlb

    schedule = make_schedule("polynomial", T=50, precision=1e-5)
    x = torch.randn(4, 40000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    zero = lambda z, t: torch.zeros_like(z)  # noqa: E731
    terms = vlb(zero, x, schedule, EuclideanSpace(), generator=torch.Generator().manual_seed(1), full_chain=True)
    lam = schedule.table
    expected = 0.5 * float(torch.expm1(lam[:-1] - lam[1:]).sum()) * 40000
    torch.testing.assert_close(terms["diffusion"], torch.full((4,), expected, dtype=torch.float64), rtol=0.03,
                               atol=0)
    assert torch.allclose(terms["total"], terms["prior"] + terms["diffusion"] + terms["decoder"])
    with pytest.raises(ValueError, match="full_chain"):
        vlb(zero, x, schedule, EuclideanSpace(), t_index=torch.ones(4, dtype=torch.long), full_chain=True)
