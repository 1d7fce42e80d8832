"""Bond perception with EDM's table: thresholds, a per-pair reference implementation, RDKit conversion."""

import numpy as np
import pytest
from helpers import DATA

from molediff.chem.bonds import (
    ALLOWED_VALENCES,
    THRESHOLDS_PM,
    bond_list,
    perceive_bonds,
    perceive_bonds_batch,
    stable_atoms,
    to_rdkit,
)
from molediff.chem.molecule import MoleculeDataset


def _pair(z1, z2, d):
    return int(perceive_bonds([z1, z2], [[0, 0, 0], [d, 0, 0]])[0, 1])


@pytest.mark.parametrize("z1,z2,d,order", [
    (6, 6, 1.639, 1), (6, 6, 1.641, 0),      # C-C single 154 + 10 pm
    (6, 6, 1.391, 1), (6, 6, 1.389, 2),      # C=C 134 + 5
    (6, 6, 1.231, 2), (6, 6, 1.229, 3),      # C#C 120 + 3
    (6, 7, 1.18, 3), (7, 6, 1.18, 3),        # symmetric
    (1, 6, 1.18, 1), (1, 6, 1.20, 0),        # H-C 109 + 10, no double for H
    (8, 8, 1.25, 2), (9, 9, 1.0, 1),         # F-F has no double bond entry
    (6, 26, 1.5, 0),                          # Fe: not in the table, never bonded
])
def test_edm_thresholds(z1, z2, d, order):
    assert _pair(z1, z2, d) == order


def test_threshold_tables_are_symmetric_and_ordered():
    for t in THRESHOLDS_PM:
        assert np.array_equal(t, t.T)
    single, double, triple = THRESHOLDS_PM
    has3 = np.isfinite(triple)
    assert np.all(triple[has3] < double[has3]) and np.all(double[has3] < single[has3])


def _edm_reference(z, x):
    """Straight per-pair transcription of EDM's get_bond_order rule (the slow reference)."""
    single, double, triple = THRESHOLDS_PM
    n = len(z)
    a = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            d = 100 * float(np.sqrt(((x[i].astype(np.float64) - x[j]) ** 2).sum()))
            o = 0
            if d < single[z[i], z[j]]:
                o = 1
                if d < double[z[i], z[j]]:
                    o = 2
                    if d < triple[z[i], z[j]]:
                        o = 3
            a[i, j] = a[j, i] = o
    return a


def test_vectorised_matches_per_pair_reference_on_qm9():
    ds = MoleculeDataset.load(DATA / "qm9_test_500.npz")
    mols = [ds[i] for i in range(60)]
    n = max(m.num_atoms for m in mols)
    z = np.zeros((60, n), np.int64)
    x = np.zeros((60, n, 3))
    mask = np.zeros((60, n), bool)
    for b, m in enumerate(mols):
        ref = _edm_reference(m.atomic_numbers, m.positions)
        assert np.array_equal(perceive_bonds(m.atomic_numbers, m.positions), ref), m.name
        z[b, :m.num_atoms], x[b, :m.num_atoms], mask[b, :m.num_atoms] = m.atomic_numbers, m.positions, True
    batch = perceive_bonds_batch(z, x, mask)
    for b, m in enumerate(mols):
        k = m.num_atoms
        assert np.array_equal(batch[b, :k, :k], perceive_bonds(m.atomic_numbers, m.positions))
        assert not batch[b, k:].any() and not batch[b, :, k:].any()


def test_stable_atoms_uses_allowed_valences():
    assert ALLOWED_VALENCES["P"] == (3, 5)
    z = np.array([1, 6, 7, 8, 9, 15, 15, 15, 26])
    v = np.array([1, 4, 3, 2, 1, 3, 5, 4, 2])
    assert stable_atoms(z, v).tolist() == [True] * 7 + [False, False]
    assert not stable_atoms([6], [40])[0]  # huge valence is never stable


def test_to_rdkit_builds_ethene_and_rejects_bad_input():
    from rdkit import Chem

    x = np.array([[0, 0, 0], [1.33, 0, 0], [-0.55, 0.93, 0], [-0.55, -0.93, 0], [1.88, 0.93, 0], [1.88, -0.93, 0]])
    z = [6, 6, 1, 1, 1, 1]
    mol = to_rdkit(z, x)
    Chem.SanitizeMol(mol)
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == "C=C"
    assert mol.GetNumConformers() == 1
    np.testing.assert_allclose(mol.GetConformer().GetPositions(), x)
    rows = bond_list(perceive_bonds(z, x))
    assert rows.tolist()[0] == [0, 1, 2]
    same = to_rdkit(z, x, bonds=rows)
    assert same.GetNumBonds() == mol.GetNumBonds() == 5
    with pytest.raises(ValueError, match="invalid atomic number 0"):
        to_rdkit([0, 6], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="does not exist"):
        to_rdkit(z, x, bonds=[[0, 9, 1]])
    with pytest.raises(ValueError, match="bond_orders must be"):
        to_rdkit(z, x, bond_orders=np.zeros((2, 2)))


def test_typical_lengths_are_edms_table_in_angstrom_either_way_round():
    from molediff.chem.bonds import typical_bond_length

    assert typical_bond_length(6, 8, 2) == typical_bond_length(8, 6, 2) == 1.20
    assert typical_bond_length(1, 6, 1) == 1.09 and typical_bond_length(6, 6, 3) == 1.20
    assert typical_bond_length(6, 9, 2) is None and typical_bond_length(6, 6, 4) is None


def test_bond_length_report_gives_each_types_median_deviation_from_its_typical_length():
    from molediff.chem.bonds import bond_length_report
    from molediff.chem.molecule import Molecule

    # formaldehyde-like fragments: C=O stretched by +0.02, +0.04, +0.10 Å; C-H exact; an aromatic C:C bond
    mols = []
    for stretch in (0.02, 0.04, 0.10):
        pos = [[0, 0, 0], [1.20 + stretch, 0, 0], [-0.6, 0.94, 0], [-0.6, -0.94, 0]]
        h = np.linalg.norm(np.array(pos[2]) - np.array(pos[0]))
        mols.append(Molecule(np.array([6, 8, 1, 1]), np.array(pos), bonds=np.array([[0, 1, 2], [0, 2, 1], [0, 3, 1]])))
    mols.append(Molecule(np.array([6, 6]), np.array([[0, 0, 0], [1.39, 0, 0]]), bonds=np.array([[0, 1, 4]])))
    mols.append(Molecule(np.array([6, 6]), np.array([[0, 0, 0], [1.39, 0, 0]])))            # no bonds: skipped
    rows = {r["bond"]: r for r in bond_length_report(mols)}
    assert set(rows) == {"C=O double", "H-C single", "C:C aromatic"}
    assert rows["C=O double"]["n"] == 3 and rows["C=O double"]["median_length"] == pytest.approx(1.24, abs=1e-6)
    assert rows["C=O double"]["median_abs_deviation"] == pytest.approx(0.04, abs=1e-6)
    assert rows["H-C single"]["n"] == 6
    assert rows["H-C single"]["median_abs_deviation"] == pytest.approx(abs(h - 1.09), abs=1e-6)
    assert rows["C:C aromatic"]["typical_length"] is None and rows["C:C aromatic"]["median_abs_deviation"] is None
    assert [r["bond"] for r in bond_length_report(mols)][0] == "H-C single"        # most common first
