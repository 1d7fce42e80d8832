"""SDEdit refinement of seed conformers with the conformer model (molediff.conformers.refine)."""

import numpy as np
import pytest
import torch
from helpers import tiny_model

from molediff.conformers import ConformerDiffusion
from molediff.conformers.graph import EDGE_FEATURES, NODE_FEATURES
from molediff.conformers.refine import refine_conformers, refine_positions, time_for_sigma
from molediff.diffusion import SAMPLERS, make_schedule, q_sample

Chem = pytest.importorskip("rdkit.Chem")
AllChem = pytest.importorskip("rdkit.Chem.AllChem")


def graph_model(**overrides) -> ConformerDiffusion:
    """The tiny graph-conditioned model (T = 200, float64, eval) with its weights perturbed, so that ε̂ depends on
    every input."""
    cfg = {"T": 200, "node_features": NODE_FEATURES, "edge_features": EDGE_FEATURES, **overrides}
    model = tiny_model(ConformerDiffusion, **cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def embedded(smiles="CCO", k=3):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMultipleConfs(mol, numConfs=k, randomSeed=7)
    assert mol.GetNumConformers() == k
    return mol


def point_mass_eps(schedule, space, x0, mask):
    """The exact ε of data that is a point mass at x0: ε(z_t, t) = (z_t − α_t x0) / σ_t."""
    def eps(z, t):
        t = t.to(torch.float64)
        alpha, sigma = schedule.alpha(t).view(-1, 1, 1), schedule.sigma(t).view(-1, 1, 1)
        return space.project((z - alpha * x0) / sigma, mask)
    return eps


def test_sigma_to_time_is_the_nearest_grid_time():
    s = make_schedule("polynomial", T=1000, precision=1e-5)
    t0 = time_for_sigma(s, 0.1)
    assert t0 == pytest.approx(0.071) and round(t0 * 1000) == t0 * 1000
    grid = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert float(s.sigma(torch.tensor(t0, dtype=torch.float64))) == pytest.approx(0.1, abs=1e-3)
    assert abs(float(s.sigma(torch.tensor(t0, dtype=torch.float64))) - 0.1) == pytest.approx(
        float((s.sigma(grid) - 0.1).abs().min()))
    for bad in (1e-4, 1.5):
        with pytest.raises(ValueError, match="sigma0 must lie between"):
            time_for_sigma(s, bad)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_exact_point_mass_denoiser_returns_the_seed(sampler):
    """Data = a point mass at the seed x0, whose exact ε is known: every sampler started at t0 returns x0, the
    model first sees z = α_t0 x0 + σ_t0 ε with the seed's own noise ε, and a deterministic sampler keeps that
    same ε at every time the model is called with (so the model's times match the noise levels of z)."""
    model = graph_model()
    gen = torch.Generator().manual_seed(0)
    mask = torch.arange(7)[None] < torch.tensor([[7], [5]])
    x0 = model.space.project(torch.randn(2, 7, 3, generator=gen, dtype=torch.float64), mask)
    exact = point_mass_eps(model.schedule, model.space, x0, mask)
    calls = []

    def eps(z, t):
        calls.append((z.clone(), t.clone()))
        return exact(z, t)

    t0 = time_for_sigma(model.schedule, 0.3)
    out = refine_positions(eps, x0 + 3.0 * mask.unsqueeze(-1), mask, model.schedule, model.space, t0, sampler,
                           steps=8, seeds=[4, 5])
    torch.testing.assert_close(out, x0, atol=1e-9, rtol=0)   # the seed, translated to zero centre of mass

    gens = [torch.Generator().manual_seed(s) for s in (4, 5)]
    noise = model.space.randn(x0.shape, mask, gens, torch.float64)
    z_first, t_first = calls[0]
    torch.testing.assert_close(t_first, torch.full((2,), t0, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z_first, q_sample(x0, t0, model.schedule, noise), atol=1e-12, rtol=0)
    times = torch.stack([t[0] for _, t in calls])
    assert float(times.max()) <= t0 + 1e-12 and float(times.min()) == 0.0
    torch.testing.assert_close(times * 200, torch.round(times * 200), atol=1e-9, rtol=0)   # grid times i / T
    if sampler != "ddpm":
        for z, t in calls:
            torch.testing.assert_close(exact(z, t), noise, atol=1e-8, rtol=0)


@pytest.mark.parametrize("sampler", ["ddim", "dpm2m", "heun"])
def test_without_fresh_noise_the_seed_error_is_the_noise_and_is_removed(sampler):
    """Data = a point mass at x0, seed = x0 + δ (a force field's error). Without fresh noise the model first sees
    z = α_t0 (x0 + δ), i.e. δ plays the noise, and a deterministic sampler with the exact ε lands on x0 itself,
    whatever the seeds."""
    model = graph_model()
    gen = torch.Generator().manual_seed(1)
    mask = torch.ones(2, 6, dtype=torch.bool)
    x0 = model.space.project(torch.randn(2, 6, 3, generator=gen, dtype=torch.float64), mask)
    delta = model.space.project(0.1 * torch.randn(2, 6, 3, generator=gen, dtype=torch.float64), mask)
    exact = point_mass_eps(model.schedule, model.space, x0, mask)
    calls = []

    def eps(z, t):
        calls.append(z.clone())
        return exact(z, t)

    t0 = time_for_sigma(model.schedule, 0.3)
    out = refine_positions(eps, x0 + delta, mask, model.schedule, model.space, t0, sampler, steps=8, seeds=[4, 5],
                           fresh_noise=False)
    torch.testing.assert_close(out, x0, atol=1e-9, rtol=0)
    alpha = model.schedule.alpha(torch.tensor(t0, dtype=torch.float64))
    torch.testing.assert_close(calls[0], alpha * (x0 + delta), atol=1e-12, rtol=0)
    again = refine_positions(exact, x0 + delta, mask, model.schedule, model.space, t0, sampler, steps=8,
                             seeds=[7, 8], fresh_noise=False)
    torch.testing.assert_close(again, out, atol=0, rtol=0)


def test_refine_conformers_with_the_exact_denoiser_returns_the_seeds(monkeypatch):
    model = graph_model()
    mol = embedded("CC(=O)O", k=4)
    seeds = np.stack([c.GetPositions() for c in mol.GetConformers()])
    x0 = torch.from_numpy(seeds - seeds.mean(1, keepdims=True))
    mask = torch.ones(4, mol.GetNumAtoms(), dtype=torch.bool)
    exact = point_mass_eps(model.schedule, model.space, x0, mask)
    seen = {}

    def eps_fn(mask_, context=None, given_features=None, edge_attr=None):
        seen.update(given=given_features.shape, edge=edge_attr.shape)
        return exact

    monkeypatch.setattr(model, "eps_fn", eps_fn)
    for sampler in ("ddim", "ddpm"):
        out = refine_conformers(model, mol, sigma0=0.2, steps=10, sampler=sampler, batch_size=4)
        np.testing.assert_allclose(out, seeds, atol=1e-9)
    n = mol.GetNumAtoms()
    assert seen == {"given": (4, n, len(model.config.vocabulary) + 1 + NODE_FEATURES),
                    "edge": (4, n, n, EDGE_FEATURES)}


def test_refinement_keeps_the_shape_and_is_reproducible_by_seed():
    model = graph_model()
    mol = embedded("CCO", k=3)
    seeds = np.stack([c.GetPositions() for c in mol.GetConformers()])
    out = refine_conformers(model, mol, sigma0=0.05, steps=5, seed=11)
    assert out.shape == seeds.shape and out.dtype == np.float64 and np.isfinite(out).all()
    np.testing.assert_allclose(out.mean(1), seeds.mean(1), atol=1e-9)          # each keeps its seed's centre
    rmsd = np.sqrt(((out - seeds) ** 2).sum(-1).mean(-1))
    assert (rmsd > 1e-4).all() and (rmsd < 0.5).all(), rmsd                      # moved, but little from σ0 = 0.05
    np.testing.assert_array_equal(out, refine_conformers(model, mol, sigma0=0.05, steps=5, seed=11))
    one_by_one = refine_conformers(model, mol, sigma0=0.05, steps=5, seed=11, batch_size=1)
    np.testing.assert_allclose(one_by_one, out, atol=1e-10)                      # a conformer ignores its batch
    other = refine_conformers(model, mol, sigma0=0.05, steps=5, seed=12)
    assert not np.allclose(other, out)
    # conformer k uses seed + k alone: refining only the last seed with seed 13 reproduces it
    last = refine_conformers(model, mol, seeds[2:], sigma0=0.05, steps=5, seed=13)
    np.testing.assert_allclose(last[0], out[2], atol=1e-10)
    # larger σ0 moves the seeds further
    far = refine_conformers(model, mol, sigma0=0.4, steps=5, seed=11)
    assert np.sqrt(((far - seeds) ** 2).sum(-1).mean()) > np.sqrt(((out - seeds) ** 2).sum(-1).mean())


def test_passes_compose_refinements_and_bf16_stays_close():
    model = graph_model()
    mol = embedded("CCO", k=3)
    seeds = np.stack([c.GetPositions() for c in mol.GetConformers()])
    common = dict(sigma0=0.2, steps=3, fresh_noise=False)
    once = refine_conformers(model, mol, seeds, **common)
    twice = refine_conformers(model, mol, seeds, passes=2, **common)
    np.testing.assert_allclose(twice, refine_conformers(model, mol, once, **common), atol=1e-5)
    assert not np.allclose(twice, once)
    # with fresh noise, pass p draws it with seed + k + p·K: the second pass is a refinement of the first
    noisy = dict(sigma0=0.2, steps=3, fresh_noise=True)
    first = refine_conformers(model, mol, seeds, seed=5, **noisy)
    np.testing.assert_allclose(refine_conformers(model, mol, seeds, seed=5, passes=2, **noisy),
                               refine_conformers(model, mol, first, seed=5 + 3, **noisy), atol=1e-5)
    fast = refine_conformers(model, mol, seeds, passes=2, bf16=True, **common)
    assert np.abs(fast - twice).max() < 0.05            # bf16 autocast: the same refinement to about 0.01 Å
    with pytest.raises(ValueError, match="passes must be at least 1"):
        refine_conformers(model, mol, seeds, passes=0, **common)


def test_refinement_refuses_what_it_cannot_refine():
    model = graph_model(t_max=0.3)
    mol = embedded("CCO", k=2)
    with pytest.raises(ValueError, match="beyond the times this model was trained on"):
        refine_conformers(model, mol, sigma0=0.45)
    with pytest.raises(ValueError, match="AddHs"):
        refine_conformers(model, Chem.MolFromSmiles("CCO"), np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="no conformers"):
        refine_conformers(model, Chem.AddHs(Chem.MolFromSmiles("CCO")))
    with pytest.raises(ValueError, match=r"coordinates must be \[K, 9, 3\]"):
        refine_conformers(model, mol, np.zeros((2, 8, 3)))
    chloro = embedded("CCl", k=1)
    with pytest.raises(ValueError, match=r"\['Cl'\] are not in the model's vocabulary"):
        refine_conformers(model, chloro)
    with pytest.raises(ValueError, match="t0 must be a grid time"):
        refine_positions(lambda z, t: z, torch.zeros(1, 3, 3), torch.ones(1, 3, dtype=torch.bool), model.schedule,
                         model.space, 0.0031)


def test_a_model_without_graph_features_refines_too():
    model = graph_model(node_features=0, edge_features=0)
    mol = embedded("CCO", k=2)
    out = refine_conformers(model, mol, sigma0=0.1, steps=3)
    assert out.shape == (2, 9, 3) and np.isfinite(out).all()
