"""Ranking conformers by the model's denoising error (molediff.conformers.scoring): the closed form for an exact
denoiser, invariance to pose and atom order, determinism, and a briefly trained model preferring real geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import mmff_conformers, train_tiny_refiner

from molediff.conformers import ConformerDiffusion, ConformerDiffusionConfig
from molediff.conformers.graph import EDGE_FEATURES, NODE_FEATURES
from molediff.conformers.scoring import canonical_atom_order, conformer_frame, score_conformers
from molediff.testing import random_orthogonal

Chem = pytest.importorskip("rdkit.Chem")
AllChem = pytest.importorskip("rdkit.Chem.AllChem")


@pytest.fixture(scope="module")
def amide():
    mol = mmff_conformers("OCC(=O)N")
    return mol, train_tiny_refiner([mol])


def test_exact_point_mass_denoiser_gives_the_closed_form(monkeypatch):
    """Data = a point mass at x0: ε̂(z, t) = (z − α_t x0)/σ_t, so score(x) = mean_t α_t²/σ_t² · ‖x − x0‖²/(3n) after
    centring, whatever the noise: 0 for x0 itself, and the model sees z = α_t x + σ_t ε at the σ's grid times."""
    model = ConformerDiffusion(ConformerDiffusionConfig(T=200, t_max=0.5, denoiser={"name": "egnn", "hidden": 8,
                                                                                       "layers": 1},
                                                        node_features=NODE_FEATURES, edge_features=EDGE_FEATURES))
    model = model.double().eval()
    mol = mmff_conformers("CC(=O)O", k=1)
    x0 = mol.GetConformer().GetPositions()
    x0c = torch.from_numpy(x0 - x0.mean(0))
    seen = []

    def eps_fn(mask, context=None, given_features=None, edge_attr=None):
        def eps(z, t):
            seen.append(t.clone())
            a = model.schedule.alpha(t).view(-1, 1, 1)
            s = model.schedule.sigma(t).view(-1, 1, 1)
            return (z - a * x0c) / s
        return eps

    monkeypatch.setattr(model, "eps_fn", eps_fn)
    shift = np.random.default_rng(0).normal(scale=0.1, size=x0.shape)
    sigmas = (0.05, 0.2)
    scores = score_conformers(model, mol, np.stack([x0 + 5.0, x0 + shift]), sigmas=sigmas, draws=3, batch_size=4)
    times = torch.tensor([round(t * 200) / 200 for t in sorted({float(v) for s in seen for v in s})])
    assert len(times) == 2
    torch.testing.assert_close(model.schedule.sigma(times.double()), torch.tensor(sigmas, dtype=torch.float64),
                               atol=5e-3, rtol=0)
    a2s2 = (model.schedule.alpha(times.double()) ** 2 / model.schedule.sigma(times.double()) ** 2).mean()
    d = shift - shift.mean(0)
    expected = float(a2s2) * (d ** 2).sum() / (3 * x0.shape[0])
    assert scores[0] == pytest.approx(0.0, abs=1e-18)
    assert scores[1] == pytest.approx(expected, rel=1e-7)


@pytest.mark.slow
def test_the_score_ignores_pose_and_atom_order_and_is_seeded(amide):
    mol, model = amide
    x = mol.GetConformer(0).GetPositions()
    base = score_conformers(model, mol, x, seed=3)
    moved = x @ random_orthogonal(1, seed=7).numpy().T + np.array([3.0, -1.0, 8.0])
    assert score_conformers(model, mol, moved, seed=3)[0] == pytest.approx(base[0], rel=1e-9)
    # renumbered atoms, with the conformer renumbered alike
    perm = [int(i) for i in np.random.default_rng(1).permutation(mol.GetNumAtoms())]
    renumbered = Chem.RenumberAtoms(mol, perm)
    assert score_conformers(model, renumbered, x[perm], seed=3)[0] == pytest.approx(base[0], rel=1e-9)
    # deterministic given the seed; another seed, other draws
    assert score_conformers(model, mol, x, seed=3)[0] == base[0]
    assert score_conformers(model, mol, x, seed=4)[0] != pytest.approx(base[0], rel=1e-6)
    # scores do not depend on the batch they are computed in
    together = score_conformers(model, mol, np.stack([moved, x]), seed=3, batch_size=5)
    np.testing.assert_allclose(together, [base[0], base[0]], rtol=1e-9)


def test_the_frame_turns_with_the_conformer():
    mol = mmff_conformers("OCC(=O)N", k=1)
    x = mol.GetConformer().GetPositions()
    heavy = np.array([a.GetAtomicNum() > 1 for a in mol.GetAtoms()])
    order = canonical_atom_order(mol, x)
    frame = conformer_frame(x, order, heavy)
    np.testing.assert_allclose(frame.T @ frame, np.eye(3), atol=1e-12)
    assert np.linalg.det(frame) == pytest.approx(1.0)
    r = random_orthogonal(1, seed=3).numpy()
    moved = x @ r.T + 2.0
    np.testing.assert_array_equal(canonical_atom_order(mol, moved), order)
    np.testing.assert_allclose(conformer_frame(moved, order, heavy), r @ frame, atol=1e-10)
    line = np.array([[0.0, 0, 0], [1.2, 0, 0], [2.4, 0, 0]])   # collinear atoms: a frame all the same
    f = conformer_frame(line, np.arange(3), np.ones(3, dtype=bool))
    np.testing.assert_allclose(f[:, 0], [1, 0, 0])
    np.testing.assert_allclose(f.T @ f, np.eye(3), atol=1e-12)


@pytest.mark.slow
def test_a_briefly_trained_model_prefers_the_force_field_geometry(amide):
    mol, model = amide
    good = np.stack([c.GetPositions() for c in mol.GetConformers()])
    rng = np.random.default_rng(0)
    distorted = good + rng.normal(scale=0.2, size=good.shape)
    scores = score_conformers(model, mol, np.concatenate([good, distorted]))
    assert scores[:4].max() < scores[4:].min(), scores
    assert (scores[4:] - scores[:4]).mean() > 0.3, scores


@pytest.mark.slow
def test_scoring_refuses_what_it_cannot_score(amide):
    mol, model = amide
    x = mol.GetConformer(0).GetPositions()
    with pytest.raises(ValueError, match="beyond the times this model was trained on"):
        score_conformers(model, mol, x, sigmas=(0.1, 0.45))
    with pytest.raises(ValueError, match=r"coordinates must be \[K, 10, 3\]"):
        score_conformers(model, mol, x[:-1])
    with pytest.raises(ValueError, match="NaN"):
        score_conformers(model, mol, x * np.nan)
    with pytest.raises(ValueError, match="at least 1"):
        score_conformers(model, mol, x, draws=0)
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        score_conformers(model, mmff_conformers("CCCl", k=1))
