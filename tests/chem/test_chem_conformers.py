"""Conformer metrics (RMSD with symmetry, coverage, D-MAE) and physical checks."""

import numpy as np
import pytest
from helpers import DATA

from molediff.chem.conformers import best_rmsd, conformer_metrics, coverage, distance_mae
from molediff.chem.molecule import Molecule, MoleculeDataset
from molediff.chem.physics import physical_checks


@pytest.fixture(scope="module")
def mols():
    ds = MoleculeDataset.load(DATA / "qm9_test_500.npz")
    return [ds[i] for i in range(10)]


def _rotated(m, seed=0, shift=(1.0, -2.0, 3.0)):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return Molecule(m.atomic_numbers, m.positions.astype(np.float64) @ q.T + shift, name=m.name)


def test_rmsd_is_invariant_to_rigid_motion_and_atom_order(mols):
    m = mols[0]
    assert best_rmsd(_rotated(m), m) == pytest.approx(0.0, abs=1e-4)
    perm = np.random.default_rng(1).permutation(m.num_atoms)
    shuffled = Molecule(m.atomic_numbers[perm], m.positions[perm], name=m.name)
    assert best_rmsd(shuffled, m) == pytest.approx(0.0, abs=1e-4)
    noisy = Molecule(m.atomic_numbers, m.positions + np.random.default_rng(2).normal(0, 0.2, m.positions.shape))
    assert 0.05 < best_rmsd(noisy, m) < 0.5
    assert np.isnan(best_rmsd(mols[1], m))  # different molecules


def test_coverage_from_matrix():
    rmsd = np.array([[0.1, 0.9, np.nan], [0.8, 1.2, 0.7]])  # 2 references x 3 generated
    c = coverage(rmsd, threshold=0.75)
    assert c["cov_r"] == 1.0 and c["amr_r"] == pytest.approx((0.1 + 0.7) / 2)
    assert c["cov_p"] == pytest.approx(2 / 3) and c["amr_p"] == pytest.approx((0.1 + 0.9 + 0.7) / 3)
    assert coverage(rmsd, threshold=0.5)["cov_r"] == 0.5


def test_conformer_metrics_groups_by_molecule(mols):
    a, b = mols[0], mols[1]
    gen = [_rotated(a, 3), _rotated(b, 4), Molecule(b.atomic_numbers, b.positions + np.random.default_rng(5).normal(
        0, 0.5, b.positions.shape), name=b.name)]
    out = conformer_metrics(gen, [a, b], threshold=0.5)
    assert out["n_groups"] == 2 and out["unmatched"] == []
    groups = {g["molecule"]: g for g in out["per_group"]}
    assert groups[a.name]["cov_r"] == 1.0 and groups[a.name]["amr_r"] == pytest.approx(0, abs=1e-4)
    assert groups[b.name]["n_gen"] == 2 and groups[b.name]["cov_p"] == 0.5
    assert out["d_mae"] == pytest.approx(0, abs=1e-4)
    unnamed = [Molecule(g.atomic_numbers, g.positions, name="x") for g in gen]
    assert conformer_metrics(unnamed, [a, b])["n_groups"] == 2  # matched by connectivity instead


def test_distance_mae(mols):
    m = mols[0]
    assert distance_mae(_rotated(m), m) == pytest.approx(0, abs=1e-5)
    scaled = Molecule(m.atomic_numbers, m.positions * 1.1)
    heavy = m.positions[m.atomic_numbers != 1].astype(np.float64)
    d = np.linalg.norm(heavy[:, None] - heavy[None], axis=-1)[np.triu_indices(len(heavy), 1)]
    assert distance_mae(scaled, m) == pytest.approx(0.1 * d.mean(), rel=1e-4)
    assert np.isnan(distance_mae(mols[1], m))


def test_physical_checks_pass_on_dft_geometry_and_catch_problems(mols):
    m = mols[0]
    ok = physical_checks(m)
    assert ok["error"] is None and ok["bond_lengths_ok"] and ok["angles_ok"] and ok["no_clash"]
    assert ok["strain"] >= 0 and ok["mmff_relaxed_energy"] <= ok["mmff_energy"]
    from molediff.chem.bonds import bond_list, perceive_bonds

    rows = bond_list(perceive_bonds(m.atomic_numbers, m.positions))  # fix the graph, then stretch one bond
    i, j, _ = rows[0]
    stretched = Molecule(m.atomic_numbers, m.positions.copy(), bonds=rows)
    stretched.positions[j] += (m.positions[j] - m.positions[i]) * 0.6
    bad = physical_checks(stretched, mmff=False)
    assert bad["n_bad_bonds"] >= 1 and not bad["bond_lengths_ok"]
    assert bad["mmff_energy"] is None
    assert physical_checks(Molecule([6, 6], [[0, 0, 0], [np.nan, 0, 0]]))["error"] == "no usable coordinates"


def test_aromatic_ring_flatness():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccccc1"))
    AllChem.EmbedMolecule(mol, randomSeed=7)
    x = mol.GetConformer().GetPositions()
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    from molediff.chem.sdf import _from_rdkit

    benzene = _from_rdkit(mol, "benzene")
    flat = physical_checks(benzene, mmff=False)
    assert flat["aromatic_flat"] and flat["max_ring_deviation"] < 0.05
    bent = x.copy()
    bent[0, 2] += 0.6
    warped = Molecule(z, bent, bonds=benzene.bonds)
    assert not physical_checks(warped, mmff=False)["aromatic_flat"]


# -- failures stay with their molecule ---------------------------------------------------------------------
def _zero_length(m):
    """``m`` with its first hydrogen moved exactly onto the atom it is bonded to (a zero-length bond)."""
    from molediff.chem.bonds import bond_list, perceive_bonds

    rows = bond_list(perceive_bonds(m.atomic_numbers, m.positions))
    i, j = next((i, j) for i, j, _ in rows if m.atomic_numbers[j] == 1 and m.atomic_numbers[i] != 1)
    x = m.positions.copy()
    x[j] = x[i]
    return Molecule(m.atomic_numbers, x, bonds=rows, name="zero_length"), i, j


def test_zero_length_bond_skips_mmff_with_reason(mols):
    bad, i, j = _zero_length(mols[0])
    out = physical_checks(bad)
    assert out["error"] == (f"MMFF94 skipped (coincident atoms): atoms {i + 1} and {j + 1} are 0.000 Å apart "
                            f"(under 0.1 Å), a zero-length bond")
    assert out["bond_lengths_ok"] is False and out["n_bad_bonds"] >= 1  # the geometric checks still ran
    assert out["mmff_energy"] is None and out["strain"] is None


def test_mmff_invariant_violation_is_caught(mols, monkeypatch):
    """Without the coincident-atom guard RDKit's minimiser dies with 'Invariant Violation' on this molecule;
    physical_checks must turn that into the molecule's error, not raise."""
    from molediff.chem import physics

    bad, _, _ = _zero_length(mols[0])
    monkeypatch.setattr(physics, "coincident_atoms", lambda x: [])
    out = physics.physical_checks(bad)
    assert out["error"].startswith("MMFF94 failed: ")
    assert "\n" not in out["error"] and out["bond_lengths_ok"] is False
    assert physics.error_category(out["error"]) == "MMFF94 failed"


def test_physical_checks_never_raise(mols, monkeypatch):
    from molediff.chem import physics

    collapsed = Molecule([6, 1, 1, 1, 1], np.zeros((5, 3)))
    assert physical_checks(collapsed)["error"] == "collapsed: all 5 atoms at one point (no 3D coordinates)"
    bad_bonds = Molecule([6, 6], [[0, 0, 0], [1.5, 0, 0]], bonds=[[0, 1, 9]])
    assert physical_checks(bad_bonds)["error"].startswith(
        "RDKit cannot sanitise the molecule: unsupported bond order 9")

    def boom(*a, **k):
        raise RuntimeError("Invariant Violation\n\tbad direction in linearSearch\n\tViolation occurred on line 234")

    monkeypatch.setattr(physics, "_mmff", boom)
    assert physics.physical_checks(mols[0])["error"] == (
        "MMFF94 failed: Invariant Violation: bad direction in linearSearch")
    monkeypatch.setattr(physics, "_geometry", boom)
    assert physics.physical_checks(mols[0])["error"].startswith("geometric checks failed: Invariant Violation")


def test_rmsd_and_conformer_metrics_survive_bad_molecules(mols):
    m = mols[0]
    broken = Molecule(m.atomic_numbers, m.positions, bonds=[[0, 99, 1]], name="broken")  # atom 99 does not exist
    assert np.isnan(best_rmsd(broken, m)) and np.isnan(best_rmsd(m, broken))
    gen = _rotated(m)
    gen.name = "generated"  # not a reference name, so conformers are matched by connectivity
    out = conformer_metrics([gen, broken], [m, broken])
    assert out["matched_by"] == "connectivity"
    assert out["n_groups"] == 1 and out["n_matched"] == 1 and out["warning"] is None
    assert out["cov_r"] == 1.0
    assert out["unmatched"] == ["broken"]
    assert [(f["name"], f["set"]) for f in out["failed"]] == [("broken", "reference"), ("broken", "generated")]
    assert all(f["reason"].startswith("no connectivity key: ") for f in out["failed"])


def test_conformer_metrics_say_when_nothing_matches(mols):
    out = conformer_metrics([mols[0]], [mols[1], mols[2]])
    assert out["n_groups"] == 0 and out["n_matched"] == 0 and out["unmatched"] == [mols[0].name]
    assert out["matched_by"] == "connectivity" and out["per_group"] == []
    assert out["warning"] == ("no generated molecule matches a reference molecule (1 generated, 2 reference, "
                              "compared by heavy-atom connectivity): no conformer metrics")
    assert np.isnan(out["cov_r"])
