"""The one symmetric RMSD (``molediff.chem.rmsd``): ``best_rmsd`` (COV/AMR metrics) equals RDKit's ``GetBestRMS`` on
hydrogen-free copies across atom orders and symmetric groups, the pipeline's ``SymmetricRMSD`` is the same
computation on one molecule, the cap on atom maps, and ``best_rmsd``'s fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import etkdg_conformers

from molediff.chem.conformers import best_rmsd
from molediff.chem.molecule import Molecule
from molediff.chem.rmsd import (
    MAX_SYMMETRY_MAPS,
    METRIC_MAX_MAPS,
    SymmetricRMSD,
    atom_maps,
    element_graph,
    symmetric_rmsd,
)

# Symmetric groups (carboxylate, carboxylic acid, tert-butyl, CF3, benzene, para-substituted rings) and a few
# without symmetry: bond orders never break a symmetry of the connectivity here, so GetBestRMS on the RDKit
# molecules and the connectivity-only maps must agree.
SMILES = ["[O-]C(=O)c1ccccc1", "OC(=O)c1ccccc1", "CC(C)(C)c1ccccc1", "CC(C)(C)c1ccc(cc1)C(C)(C)C", "c1ccccc1",
          "Cc1ccccc1", "OC(=O)c1ccc(cc1)C(=O)O", "FC(F)(F)c1ccccc1", "FC(F)(F)C(F)(F)F", "CC(C)(C)O",
          "CC(C)(C)C(=O)[O-]", "OC(=O)CC(=O)O", "CC(C)C", "CCO", "CC(C)(C)C(C)(C)C", "NC(=N)N", "c1ccc2ccccc2c1",
          "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "OC1CCCCC1"]


def _molecule(mol, conf_id: int) -> Molecule:
    """An RDKit molecule's conformer as a ``Molecule`` with the RDKit bonds (aromatic as order 4)."""
    orders = {1.0: 1, 2.0: 2, 3.0: 3, 1.5: 4}
    bonds = [[b.GetBeginAtomIdx(), b.GetEndAtomIdx(), orders[b.GetBondTypeAsDouble()]] for b in mol.GetBonds()]
    bonds = [[min(i, j), max(i, j), o] for i, j, o in bonds]
    return Molecule(np.array([a.GetAtomicNum() for a in mol.GetAtoms()]), mol.GetConformer(conf_id).GetPositions(),
                    bonds=np.array(bonds).reshape(-1, 3), name="m")


def test_best_rmsd_is_getbestrms_on_shuffled_hydrogen_free_copies():
    """Reference: conformer 0; probe: conformer 1 with its atoms shuffled (``Chem.RenumberAtoms``). 20 molecules,
    both argument orders, to 1e-6 Å; also the probe's perceived bonds instead of the file's."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    rng = np.random.default_rng(0)
    differences = []
    for smiles in SMILES:
        mol = etkdg_conformers(smiles, seed=11)
        shuffled = Chem.RenumberAtoms(mol, [int(k) for k in rng.permutation(mol.GetNumAtoms())])
        reference, probe = _molecule(mol, 0), _molecule(shuffled, 1)
        heavy_reference, heavy_probe = Chem.RemoveAllHs(mol), Chem.RemoveAllHs(shuffled)
        expected = rdMolAlign.GetBestRMS(heavy_probe, heavy_reference, prbId=1, refId=0)
        assert expected == pytest.approx(rdMolAlign.GetBestRMS(heavy_reference, heavy_probe, prbId=0, refId=1),
                                         abs=1e-6)
        differences.append(abs(best_rmsd(probe, reference) - expected))
        differences.append(abs(best_rmsd(reference, probe) - expected))
        perceived = Molecule(probe.atomic_numbers, probe.positions, name="m")
        differences.append(abs(best_rmsd(perceived, reference) - expected))
    assert max(differences) < 1e-6


def test_a_relabelling_by_symmetry_is_at_zero():
    """The two O of benzoic acid swapped (and the ring mirrored): the same conformer, RMSD 0 over the maps, not over
    the identity alone."""
    from rdkit import Chem

    mol = etkdg_conformers("OC(=O)c1ccccc1", 1, seed=11)
    order = [2, 1, 0, 3, 8, 7, 6, 5, 4, *range(9, mol.GetNumAtoms())]
    twin = Chem.RenumberAtoms(mol, order)
    reference, probe = _molecule(mol, 0), _molecule(twin, 0)
    assert best_rmsd(probe, reference) < 1e-6
    # in file order the atoms are not where the reference has them
    heavy = reference.atomic_numbers != 1
    plain = np.sqrt(((probe.positions[heavy] - reference.positions[heavy]) ** 2).sum(-1).mean())
    assert plain > 0.5


def test_symmetric_rmsd_class_is_the_two_molecule_form_on_one_molecule():
    """``SymmetricRMSD.from_one`` (the pipeline's) equals ``symmetric_rmsd`` with the graph's automorphisms (to
    round-off: each centres its coordinates in its own sum; near 0 the square root magnifies that)."""
    mol = etkdg_conformers("CC(C)(C)c1ccc(cc1)C(=O)[O-]", 5, seed=11)
    positions = np.stack([c.GetPositions() for c in mol.GetConformers()])
    rmsd = SymmetricRMSD(mol, positions)
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    where = {i: k for k, i in enumerate(heavy)}
    graph = element_graph([mol.GetAtomWithIdx(i).GetAtomicNum() for i in heavy],
                          [(where[b.GetBeginAtomIdx()], where[b.GetEndAtomIdx()]) for b in mol.GetBonds()
                           if b.GetBeginAtomIdx() in where and b.GetEndAtomIdx() in where])
    maps = atom_maps(graph, graph, MAX_SYMMETRY_MAPS)
    assert np.array_equal(maps, rmsd.maps) and len(maps) == 6 * 2 * 2  # tert-butyl, ring flip, carboxylate O
    for i in range(len(positions)):
        assert np.allclose(rmsd.from_one(i), symmetric_rmsd(positions[:, heavy], positions[i, heavy], maps),
                           rtol=1e-9, atol=1e-6)
    assert np.all(np.diag([rmsd.from_one(i) for i in range(len(positions))]) < 1e-6)


def test_the_cap_on_atom_maps():
    """2,2,3,3-tetramethylbutane has 6 · 6 · 2 = 72 automorphisms of its heavy atoms: all below either cap, the
    first ``max_maps`` of them above it, and with fewer maps the RMSD is an upper bound."""
    mol = etkdg_conformers("CC(C)(C)C(C)(C)C", 2, seed=11)
    reference, probe = _molecule(mol, 0), _molecule(mol, 1)
    heavy = [k for k in range(mol.GetNumAtoms()) if mol.GetAtomWithIdx(k).GetAtomicNum() > 1]
    graph = element_graph([6] * len(heavy), [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()
                                             if b.GetBeginAtomIdx() in heavy and b.GetEndAtomIdx() in heavy])
    assert len(atom_maps(graph, graph, METRIC_MAX_MAPS)) == 72 <= MAX_SYMMETRY_MAPS <= METRIC_MAX_MAPS
    assert len(atom_maps(graph, graph, 5)) == 5
    full = best_rmsd(probe, reference)
    assert all(best_rmsd(probe, reference, max_maps=k) >= full - 1e-12 for k in (1, 5, 71))
    assert best_rmsd(probe, reference, max_maps=72) == full
    # more maps than one chunk holds: the minimum over chunks is the minimum over all maps
    positions = np.stack([c.GetPositions() for c in mol.GetConformers()])[:, heavy]
    maps = atom_maps(graph, graph, 100)
    many = np.concatenate([maps] * 60)  # 4,320 maps > one chunk of 4,096
    assert symmetric_rmsd(positions[1:], positions[0], many)[0] == symmetric_rmsd(positions[1:], positions[0], maps)[0]


def test_best_rmsd_fallbacks():
    """NaN without a matching or heavy atoms; the reference's connectivity for a probe with a bond too many when its
    elements are in the same order, NaN when they are not; never raises. (A probe that misses a bond still
    matches: its graph is a subgraph of the reference's, as in GetBestRMS's substructure search.)"""
    mol = etkdg_conformers("CCO", 2, seed=11)   # heavy atoms C0, C1, O2
    reference, probe = _molecule(mol, 0), _molecule(mol, 1)
    expected = best_rmsd(probe, reference)
    torn = Molecule(probe.atomic_numbers, probe.positions, bonds=probe.bonds[1:], name="m")   # C-C bond missing
    assert best_rmsd(torn, reference) == pytest.approx(expected, abs=1e-9)
    ring = Molecule(probe.atomic_numbers, probe.positions, bonds=np.r_[probe.bonds, [[0, 2, 1]]], name="m")
    assert best_rmsd(ring, reference) == pytest.approx(expected, abs=1e-9)   # C0-O2 too many: reference's bonds
    perm = np.r_[2, 0, 1, 3:len(probe.atomic_numbers)]   # O first: the heavy elements in another order
    new_index = np.argsort(perm)

    def reordered(bonds):
        return Molecule(probe.atomic_numbers[perm], probe.positions[perm], name="m",
                        bonds=[[*sorted((new_index[i], new_index[j])), o] for i, j, o in bonds])

    assert best_rmsd(reordered(probe.bonds), reference) == pytest.approx(expected, abs=1e-9)   # through the graph
    assert np.isnan(best_rmsd(reordered(ring.bonds), reference))   # no matching and no fallback
    other = _molecule(etkdg_conformers("CCN", 1, seed=11), 0)
    assert np.isnan(best_rmsd(other, reference))   # same size, no matching
    hydrogen = Molecule([1, 1], [[0, 0, 0], [0.74, 0, 0]])
    assert np.isnan(best_rmsd(hydrogen, hydrogen))   # nothing to superpose
    methane = Molecule([6, 1, 1, 1, 1], np.random.default_rng(0).normal(size=(5, 3)))
    assert best_rmsd(methane, methane) == 0.0
    broken = Molecule(probe.atomic_numbers, probe.positions, bonds=[[0, 99, 1]])
    assert np.isnan(best_rmsd(broken, reference)) and np.isnan(best_rmsd(reference, broken))
    doubled = Molecule(probe.atomic_numbers, probe.positions, bonds=np.concatenate([probe.bonds, probe.bonds[:1]]))
    assert best_rmsd(doubled, reference) == pytest.approx(expected, abs=1e-9)   # RDKit rejects it: reference's bonds
    with pytest.raises(ValueError, match="no atom map"):
        symmetric_rmsd(np.zeros((1, 3, 3)), np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64))
