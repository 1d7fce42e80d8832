"""Closed-form checks of the schedules, the forward process and the posterior."""

import math

import pytest
import torch

from molediff.diffusion import (
    CosineSchedule,
    EuclideanSpace,
    LinearBetaSchedule,
    PolynomialSchedule,
    ZeroCoMSpace,
    make_schedule,
    posterior,
    q_sample,
)

SCHEDULES = [LinearBetaSchedule(T=1000), CosineSchedule(T=1000), PolynomialSchedule(T=1000)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_alpha_bar_monotone_in_unit_interval_and_variance_preserving(schedule):
    t = torch.linspace(0, 1, 5001, dtype=torch.float64)
    ab = schedule.alpha_bar(t)
    assert (ab > 0).all() and (ab <= 1).all()
    assert (ab[1:] <= ab[:-1]).all()
    assert (schedule.log_snr(t)[1:] <= schedule.log_snr(t)[:-1]).all()
    torch.testing.assert_close(schedule.alpha(t) ** 2 + schedule.sigma(t) ** 2, torch.ones_like(t))
    torch.testing.assert_close(schedule.snr(t), schedule.alpha(t) ** 2 / schedule.sigma(t) ** 2)


def test_linear_schedule_matches_ddpm_cumprod_and_endpoints():
    s = LinearBetaSchedule(T=1000, beta_start=1e-4, beta_end=0.02)
    betas = torch.linspace(1e-4, 0.02, 1001, dtype=torch.float64)
    grid = torch.arange(1001, dtype=torch.float64) / 1000
    torch.testing.assert_close(s.alpha_bar(grid), torch.cumprod(1 - betas, 0))
    assert s.alpha_bar(torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(1 - 1e-4, rel=1e-12)
    assert s.alpha_bar(torch.tensor(1.0, dtype=torch.float64)).item() < 1e-4


def test_cosine_schedule_closed_form_and_endpoints():
    T, off = 1000, 0.008
    s = CosineSchedule(T=T, s=off)
    f = lambda u: math.cos((u + off) / (1 + off) * math.pi / 2) ** 2  # noqa: E731
    # away from the β clip, ᾱ at grid point i is f((i+1)/(T+1)) / f(0)
    for i in [0, 10, 500, 900]:
        t = torch.tensor(i / T, dtype=torch.float64)
        assert s.alpha_bar(t).item() == pytest.approx(f((i + 1) / (T + 1)) / f(0), rel=1e-9)
    # at the end the β clip at 0.999 keeps ᾱ positive but tiny
    assert 0 < s.alpha_bar(torch.tensor(1.0, dtype=torch.float64)).item() < 1e-6


def test_polynomial_schedule_matches_edm_definition():
    T, prec = 1000, 1e-5
    s = PolynomialSchedule(T=T, power=2, precision=prec)
    grid = torch.arange(T + 1, dtype=torch.float64) / T
    a2 = (1 - grid ** 2) ** 2
    ratios = torch.cat([a2[:1], a2[1:] / a2[:-1]]).clamp(1e-3, 1)
    expected = (1 - 2 * prec) * torch.cumprod(ratios, 0) + prec
    torch.testing.assert_close(s.alpha_bar(grid), expected, rtol=1e-10, atol=1e-14)
    assert s.alpha_bar(grid[0]).item() == pytest.approx(1 - prec, rel=1e-12)
    assert s.alpha_bar(grid[-1]).item() == pytest.approx(prec, rel=1e-2)


def test_continuous_time_interpolates_between_grid_points():
    s = PolynomialSchedule(T=10)
    t = torch.tensor([0.25], dtype=torch.float64)
    lam = s.log_snr(t)
    assert lam.item() == pytest.approx(0.5 * (s.table[2] + s.table[3]).item())


def test_timesteps_descend_on_grid_and_reject_too_many_steps():
    s = LinearBetaSchedule(T=100)
    ts = s.timesteps(7)
    assert ts[0] == 1 and ts[-1] == 0 and len(ts) == 8
    assert (ts[1:] < ts[:-1]).all()
    assert torch.allclose(ts * 100, torch.round(ts * 100))
    with pytest.raises(ValueError, match="1..T=100"):
        s.timesteps(101)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="linear", beta_start=0.02, beta_end=1e-4), "beta_start <= beta_end"),
    (dict(name="linear", beta_start=0.0), "0 < beta_start"),
    (dict(name="cosine", s=-1.0), "positive"),
    (dict(name="polynomial", precision=0.7), "precision"),
    (dict(name="polynomial", T=0), "positive number of steps"),
    (dict(name="sigmoid"), "unknown noise schedule"),
])
def test_invalid_schedule_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(**kwargs)


def test_q_sample_moments():
    torch.manual_seed(0)
    s = CosineSchedule(T=1000)
    x = torch.full((200_000, 1), 1.5, dtype=torch.float64)
    t = torch.full((x.shape[0],), 0.4, dtype=torch.float64)
    z = q_sample(x, t, s, torch.randn_like(x))
    a, sig = s.alpha(t[0]).item(), s.sigma(t[0]).item()
    assert z.mean().item() == pytest.approx(a * 1.5, abs=4 * sig / math.sqrt(x.shape[0]))
    assert z.var().item() == pytest.approx(sig ** 2, rel=0.02)


def test_posterior_matches_ddpm_formulas_for_adjacent_steps():
    s = LinearBetaSchedule(T=1000)
    i = 300
    t, sm = torch.tensor([i / 1000], dtype=torch.float64), torch.tensor([(i - 1) / 1000], dtype=torch.float64)
    ab_t, ab_s = s.alpha_bar(t), s.alpha_bar(sm)
    beta = 1 - ab_t / ab_s
    x, z = torch.randn(1, 4, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    mean, var = posterior(z, x, sm, t, s)
    # Ho et al. eq. 7
    mean_ref = ab_s.sqrt() * beta / (1 - ab_t) * x + (1 - beta).sqrt() * (1 - ab_s) / (1 - ab_t) * z
    var_ref = (1 - ab_s) / (1 - ab_t) * beta
    torch.testing.assert_close(mean, mean_ref)
    torch.testing.assert_close(var.flatten(), var_ref.flatten())


def test_posterior_is_the_gaussian_conditional_by_monte_carlo():
    """Draw (z_s, z_t) from the forward chain and check the regression of z_s on z_t."""
    torch.manual_seed(1)
    s = PolynomialSchedule(T=100)
    sv, tv = 0.3, 0.6
    n = 400_000
    x = torch.zeros(n, 1, dtype=torch.float64) + 0.7
    z_s = q_sample(x, sv, s, torch.randn_like(x))
    a_ts = (s.alpha(torch.tensor(tv)) / s.alpha(torch.tensor(sv))).item()
    sig_ts = math.sqrt(s.sigma(torch.tensor(tv)).item() ** 2 - a_ts ** 2 * s.sigma(torch.tensor(sv)).item() ** 2)
    z_t = a_ts * z_s + sig_ts * torch.randn_like(z_s)
    mean, var = posterior(z_t, x, sv, tv, s)
    resid = z_s - mean
    assert resid.mean().abs().item() < 5e-3
    assert resid.var().item() == pytest.approx(var[0].item(), rel=0.01)
    with pytest.raises(ValueError, match="s < t"):
        posterior(z_t[:2], x[:2], 0.6, 0.3, s)


def test_spaces_project_count_dof_and_check_masks():
    space = ZeroCoMSpace(com_dims=3)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    p = space.project(x, mask)
    torch.testing.assert_close(p[..., :3].sum(1), torch.zeros(2, 3, dtype=torch.float64))
    assert (p[1, 3:] == 0).all()
    torch.testing.assert_close(space.project(p, mask), p)
    assert space.dof(x, mask).tolist() == [3 * 4 + 5, 3 * 2 + 3]
    assert EuclideanSpace().dof(x, mask).tolist() == [20, 12]
    with pytest.raises(ValueError, match="node mask must have shape"):
        space.project(x, mask[:, :4])
    with pytest.raises(ValueError, match="zero-CoM space expects"):
        space.project(torch.randn(2, 5, 2), None)
