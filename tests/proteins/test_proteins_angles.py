"""Cα chains ↔ virtual bond angles and dihedrals: exact round trips on real chains, invariance under rigid
motions, the mirror image, padding and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import DATA

from molediff.proteins import metrics
from molediff.proteins.angles import (
    CA_CA,
    angle_mask,
    angles_to_chain,
    bond_lengths,
    chain_to_angles,
    superposed_rmsd,
)
from molediff.proteins.io import read_chains
from molediff.proteins.training import collate_chains

FIXTURES = DATA / "proteins" / "real"


@pytest.fixture(scope="module")
def real_chains() -> list[np.ndarray]:
    chains, _, _ = read_chains(FIXTURES, min_length=40, max_length=1000)
    assert len(chains) >= 10
    return [c.coords for c in chains]


def _rotation(seed: int, reflect: bool = False) -> torch.Tensor:
    q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))[0]
    q = q * torch.sign(torch.linalg.det(q))
    return q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)) if reflect else q


def test_real_chains_round_trip_with_their_own_bonds(real_chains):
    batch = collate_chains(real_chains)
    coords, mask = batch.coords.double(), batch.mask
    angles, amask, bonds = chain_to_angles(coords, mask)
    rebuilt = angles_to_chain(angles, mask.sum(1), bonds)
    rmsd = superposed_rmsd(rebuilt, coords, mask)
    assert rmsd.max() < 1e-6                              # the issue asks ≤ 0.05 Å; NeRF is exact
    assert (rebuilt[~mask] == 0).all()
    # the same in float32, the model's precision
    r32 = superposed_rmsd(angles_to_chain(angles.float(), mask.sum(1), bonds.float()), coords.float(), mask)
    assert r32.max() < 0.05
    # with every bond set to 3.80 Å the chain is close but not identical (real Cα–Cα spread ±0.05 Å)
    fixed = superposed_rmsd(angles_to_chain(angles, mask.sum(1)), coords, mask)
    assert (fixed > 0.01).all() and (fixed < 5.0).all()
    torch.testing.assert_close(bond_lengths(angles_to_chain(angles, mask.sum(1)), mask)[mask[:, 1:]],
                               torch.full((int(mask[:, 1:].sum()),), CA_CA, dtype=torch.float64))


def test_angles_agree_with_the_metrics_and_the_mask(real_chains):
    batch = collate_chains(real_chains[:4])
    angles, amask, _ = chain_to_angles(batch.coords.double(), batch.mask)
    for b, c in enumerate(real_chains[:4]):
        L = len(c)
        np.testing.assert_allclose(np.degrees(angles[b, :L - 2, 0].numpy()), metrics.bond_angles(c), atol=1e-3)
        np.testing.assert_allclose(np.degrees(angles[b, :L - 3, 1].numpy()), metrics.dihedrals(c), atol=1e-3)
        assert amask[b, :, 0].sum() == L - 2 and amask[b, :, 1].sum() == L - 3
    assert (angles[~amask] == 0).all()
    assert ((angles[..., 1] >= -math.pi) & (angles[..., 1] < math.pi)).all()


def test_rigid_motions_keep_the_angles_and_a_mirror_flips_the_dihedrals(real_chains):
    coords = torch.tensor(real_chains[0], dtype=torch.float64)[None]
    angles, amask, bonds = chain_to_angles(coords)
    shift = torch.tensor([12.0, -40.0, 7.5], dtype=torch.float64)
    moved, _, moved_bonds = chain_to_angles(coords @ _rotation(0).T + shift)
    torch.testing.assert_close(moved, angles, atol=1e-9, rtol=0)
    torch.testing.assert_close(moved_bonds, bonds)
    mirrored, _, _ = chain_to_angles(coords @ _rotation(1, reflect=True).T + shift)
    torch.testing.assert_close(mirrored[..., 0], angles[..., 0], atol=1e-9, rtol=0)
    torch.testing.assert_close(mirrored[0, :-1, 1], -angles[0, :-1, 1], atol=1e-9, rtol=0)
    assert (angles[0, :-1, 1].abs() > 0.1).sum() > 50     # a real test: the dihedrals are not ~0


def test_an_ideal_helix_has_the_textbook_angles():
    """An α-helix Cα trace (rise 1.5 Å, 100° per residue, radius 2.3 Å): θ ≈ 91°, τ ≈ +50°."""
    k = torch.arange(20, dtype=torch.float64)
    phi = torch.deg2rad(100.0 * k)
    helix = torch.stack([2.3 * torch.cos(phi), 2.3 * torch.sin(phi), 1.5 * k], -1)[None]
    angles, _, bonds = chain_to_angles(helix)
    assert torch.allclose(bonds, bonds[0, 0]) and abs(float(bonds[0, 0]) - 3.8) < 0.1
    assert abs(math.degrees(float(angles[0, 0, 0])) - 91) < 3 and abs(math.degrees(float(angles[0, 0, 1])) - 50) < 5
    assert superposed_rmsd(angles_to_chain(angles, bonds=bonds), helix) < 1e-9


def test_gradients_flow_both_ways(real_chains):
    coords = torch.tensor(real_chains[1][:30], dtype=torch.float64)[None].requires_grad_()
    angles, amask, _ = chain_to_angles(coords)
    (angles[amask] ** 2).sum().backward()
    assert torch.isfinite(coords.grad).all() and coords.grad.abs().sum() > 0
    # padding and a 3-residue chain included: no NaN from the padded entries' frames
    a = angles.detach().expand(2, -1, -1).clone().requires_grad_()
    out = angles_to_chain(a, torch.tensor([30, 5]))
    out.pow(2).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad[0].abs().sum() > 0
    assert (a.grad[1, 3:] == 0).all()                    # angles past the 5-residue chain's end are unused
    torch.autograd.gradcheck(lambda x: angles_to_chain(x, torch.tensor([6])), (a.detach()[:1, :4].clone()
                             .requires_grad_(),))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[B, M, 2\]"):
        angles_to_chain(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="3..7"):
        angles_to_chain(torch.zeros(1, 5, 2), torch.tensor([8]))
    with pytest.raises(ValueError, match="residues first"):
        chain_to_angles(torch.zeros(1, 5, 3), torch.tensor([[True, False, True, True, True]]))
    assert angle_mask(torch.tensor([5]), 4).tolist() == [[[True, True], [True, True], [True, False],
                                                          [False, False]]]
