"""The zero-CoM graph space: a point cloud plus a symmetric edge block in one state, and the core's samplers and
objective on it unchanged."""

import math

import pytest
import torch

from molediff.diffusion import (
    SAMPLERS,
    ZeroCoMGraphSpace,
    ZeroCoMSpace,
    epsilon_loss,
    make_schedule,
    prior_kl,
    q_sample,
    sample,
)

C, K = 5, 3                      # node channels (3 coordinates + 2 features), edge channels
SPACE = ZeroCoMGraphSpace(3, C, K)
MASK = torch.tensor([[True] * 4 + [False] * 2, [True] * 6, [True] * 2 + [False] * 4])


def _state(seed=0, mask=MASK):
    g = torch.Generator().manual_seed(seed)
    B, N = mask.shape
    return torch.randn(B, N, SPACE.channels(N), generator=g, dtype=torch.float64)


def _in_subspace(x, mask=MASK):
    """Asserts x is symmetric in its edges, zero on the diagonal and at padding, and has zero CoM."""
    nodes, edges = SPACE.split(x)
    B, N = mask.shape
    assert torch.equal(edges, edges.transpose(1, 2))
    assert (edges[:, torch.arange(N), torch.arange(N)] == 0).all()
    touches_padding = ~(mask[:, :, None] & mask[:, None, :])
    assert (edges[touches_padding] == 0).all()
    assert (nodes[~mask] == 0).all()
    torch.testing.assert_close(nodes[..., :3].sum(1), torch.zeros(B, 3, dtype=x.dtype), atol=1e-12, rtol=0)


def test_split_join_round_trip_and_bad_widths():
    x = _state()
    nodes, edges = SPACE.split(x)
    assert nodes.shape == (3, 6, C) and edges.shape == (3, 6, 6, K)
    assert torch.equal(SPACE.join(nodes, edges), x)
    assert edges[1, 2, 4, 1] == x[1, 2, C + 4 * K + 1]       # row i holds node i's edges to every j
    with pytest.raises(ValueError, match=r"C \+ N·K"):
        SPACE.split(x[..., :-1])
    with pytest.raises(ValueError, match=r"edges \[B, N, N, 3\]"):
        SPACE.join(nodes, edges[..., :2])
    with pytest.raises(ValueError, match="edge_channels"):
        ZeroCoMGraphSpace(3, 5, 0)


def test_project_is_the_orthogonal_projection_onto_the_subspace():
    x, y = _state(0), _state(1)
    px = SPACE.project(x, MASK)
    _in_subspace(px)
    torch.testing.assert_close(SPACE.project(px, MASK), px, atol=1e-14, rtol=0)      # idempotent
    # self-adjoint: <Px, y> = <x, Py>, so P is the orthogonal projection
    torch.testing.assert_close((px * y).sum(), (x * SPACE.project(y, MASK)).sum())
    # the edge part is (e + eᵀ)/2 on the real pairs, the node part the zero-CoM projection
    nodes, edges = SPACE.split(x)
    want_nodes = ZeroCoMSpace(3).project(nodes, MASK)
    pn, pe = SPACE.split(px)
    torch.testing.assert_close(pn, want_nodes)
    torch.testing.assert_close(pe[1, 0, 5], 0.5 * (edges[1, 0, 5] + edges[1, 5, 0]))


def test_per_sample_noise_is_symmetric_standard_and_independent_of_the_batch():
    gens = [torch.Generator().manual_seed(s) for s in (7, 8, 9)]
    z = SPACE.randn((3, 6, SPACE.channels(6)), MASK, gens, torch.float64)
    _in_subspace(z)
    # sample 2 (2 nodes) alone in a batch padded to 2 nodes draws the same numbers
    alone = SPACE.randn((1, 2, SPACE.channels(2)), MASK[2:, :2], [torch.Generator().manual_seed(9)], torch.float64)
    n_alone, e_alone = SPACE.split(alone)
    n_batch, e_batch = SPACE.split(z)
    torch.testing.assert_close(n_alone[0], n_batch[2, :2], atol=0, rtol=0)
    torch.testing.assert_close(e_alone[0], e_batch[2, :2, :2], atol=0, rtol=0)
    # the off-diagonal entries of a large sample are N(0, 1)
    big = SPACE.randn((1, 60, SPACE.channels(60)), None, [torch.Generator().manual_seed(0)], torch.float64)
    _, edges = SPACE.split(big)
    i, j = torch.triu_indices(60, 60, 1)
    values = edges[0, i, j].flatten()
    assert values.numel() == 60 * 59 // 2 * K
    assert abs(values.mean()) < 0.03 and abs(values.std() - 1) < 0.03
    # one generator for the batch: symmetric as well
    _in_subspace(SPACE.randn((3, 6, SPACE.channels(6)), MASK, torch.Generator().manual_seed(1), torch.float64))


def test_dof_and_sum_count_each_pair_once_and_the_prior_kl_matches_its_closed_form():
    x = SPACE.project(_state(), MASK)
    n = MASK.sum(1).double()
    torch.testing.assert_close(SPACE.dof(x, MASK), 3 * (n - 1) + 2 * n + K * n * (n - 1) / 2)
    nodes, edges = SPACE.split(x)
    upper = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)
    want = (nodes ** 2).flatten(1).sum(1) + (edges ** 2 * upper[None, :, :, None]).flatten(1).sum(1)
    torch.testing.assert_close(SPACE.sum(x ** 2, MASK), want)
    # KL(N(α x, σ²) ‖ N(0, 1)) over the independent entries
    schedule = make_schedule("polynomial", T=100)
    lam = schedule.log_snr(torch.ones(3, dtype=torch.float64))
    a2, s2 = torch.sigmoid(lam), torch.sigmoid(-lam)
    dof = SPACE.dof(x, MASK)
    torch.testing.assert_close(prior_kl(x, schedule, SPACE, MASK),
                               0.5 * (a2 * want + dof * (s2 - 1 - torch.log(s2))))


def _exact_eps(x0, schedule):
    """The exact ε-model of data that is the point x0: ε̂ = (z − α_t x0) / σ_t."""
    def eps(z, t):
        a = schedule.alpha(t.double()).view(-1, 1, 1).to(z.dtype)
        s = schedule.sigma(t.double()).view(-1, 1, 1).to(z.dtype)
        return (z - a * x0) / s
    return eps


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_unchanged_and_recovers_a_point_mass(sampler):
    """With the exact denoiser of a point mass every sampler must land on it; the result stays in the subspace."""
    schedule = make_schedule("polynomial", T=200)
    x0 = SPACE.project(_state(3), MASK)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    z = SPACE.randn(x0.shape, MASK, gens, torch.float64)
    out = sample(sampler, _exact_eps(x0, schedule), z, schedule, SPACE, 20, MASK, gens)
    _in_subspace(out)
    torch.testing.assert_close(out, x0, atol=1e-6, rtol=0)


def test_epsilon_loss_vanishes_for_the_exact_model_and_noises_with_symmetric_noise():
    schedule = make_schedule("polynomial", T=100)
    x0 = SPACE.project(_state(4), MASK)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    err = epsilon_loss(_exact_eps(x0, schedule), x0, schedule, SPACE, MASK, generator=gens)
    assert err.shape == x0.shape and err.abs().max() < 1e-20
    noise = SPACE.randn(x0.shape, MASK, gens, torch.float64)
    z = q_sample(x0, torch.full((3,), 0.5, dtype=torch.float64), schedule, noise)
    _in_subspace(z)
    assert math.isfinite(float(z.sum()))
