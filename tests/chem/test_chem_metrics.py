"""EDM metrics on real QM9 geometries, plus uniqueness/novelty/edge cases and the SA score."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA

from molediff.chem.molecule import Molecule, MoleculeDataset
from molediff.chem.stability import atom_stability, evaluate_molecules, molecule_smiles, reference_smiles

HAS_QM9 = importlib.util.find_spec("qm9pack") is not None


@pytest.fixture(scope="module")
def qm9_500():
    ds = MoleculeDataset.load(DATA / "qm9_test_500.npz")
    return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope="module")
def scores_500(qm9_500):
    return evaluate_molecules(qm9_500, properties=False)


def test_fixture_counts_are_exact(scores_500):
    # Computed once with molediff's EDM-table perception on the first 500 molecules of EDM's QM9 test split
    # (scripts/make_test_fixtures.py); any change in bond perception or validity shows up here.
    s = scores_500
    assert (s["n_molecules"], s["n_atoms"], s["n_stable_atoms"]) == (500, 8982, 8917)
    assert (s["n_stable_molecules"], s["n_valid"], s["n_unique"], s["n_connected"]) == (473, 487, 487, 500)


def test_fixture_rates_near_edm_data_row(scores_500):
    # EDM's data row (QM9 test geometries): atom 99.3 %, molecule 95.2 %, validity 97.7 %, uniqueness 100 %.
    # 500 molecules give a binomial standard error of about 1 % on the molecule rates.
    s = scores_500
    assert abs(s["atom_stability"] - 0.993) < 0.003
    assert abs(s["mol_stability"] - 0.952) < 0.025
    assert abs(s["validity"] - 0.977) < 0.02
    assert s["uniqueness"] == 1.0 and s["novelty"] is None


def test_single_molecule_helpers_agree_with_batch(qm9_500, scores_500):
    for m, row in zip(qm9_500[:40], scores_500["per_molecule"][:40]):
        stable, n = atom_stability(m.atomic_numbers, m.positions)
        assert (stable, n) == (row["stable_atoms"], row["n_atoms"])
        assert molecule_smiles(m) == row["smiles"]


def test_uniqueness_and_novelty(qm9_500):
    mols = qm9_500[:20] + qm9_500[:5]  # five duplicates
    train = reference_smiles(qm9_500[:10], show_progress=False)
    s = evaluate_molecules(mols, train_smiles=train, properties=False)
    valid = s["n_valid"]
    assert s["n_unique"] == len({r["smiles"] for r in s["per_molecule"] if r["valid"]})
    assert s["uniqueness"] == pytest.approx(s["n_unique"] / valid) and s["uniqueness"] < 1
    novel = {r["smiles"] for r in s["per_molecule"][10:20] if r["valid"]} - train
    assert s["n_novel"] == len(novel)
    assert s["novelty"] == pytest.approx(len(novel) / s["n_unique"])


def test_properties_present_for_valid_molecules(qm9_500):
    s = evaluate_molecules(qm9_500[:10])
    for r in s["per_molecule"]:
        if r["valid"]:
            assert 0 < r["qed"] < 1 and 1 <= r["sa"] <= 10
    assert s["qed"] is not None and s["sa"] is not None


def test_bad_molecules_are_unstable_and_invalid_with_reason(qm9_500):
    good = qm9_500[0]
    nan = Molecule(good.atomic_numbers, np.where(np.arange(good.num_atoms)[:, None] == 0, np.nan, good.positions),
                   name="nan")
    empty = Molecule(np.zeros(0, np.int64), np.zeros((0, 3)), name="empty")
    weird = Molecule([6, 0], [[0, 0, 0], [1.5, 0, 0]], name="zero")
    s = evaluate_molecules([good, nan, empty, weird], properties=False)
    rows = s["per_molecule"]
    assert rows[0]["error"] is None
    assert [r["error"] for r in rows[1:]] == ["non-finite coordinates", "empty molecule", "invalid atomic number 0"]
    assert not any(r["stable"] or r["valid"] for r in rows[1:])
    assert s["n_atoms"] == good.num_atoms * 2 + 2


def test_two_fragments_disconnected_but_valid(qm9_500):
    a, b = qm9_500[0], qm9_500[1]
    far = Molecule(np.r_[a.atomic_numbers, b.atomic_numbers], np.r_[a.positions, b.positions + 50.0], name="pair")
    row = evaluate_molecules([far], properties=False)["per_molecule"][0]
    assert row["n_fragments"] == 2 and not row["connected"]
    big = max((a, b), key=lambda m: m.num_atoms)
    assert row["valid"] == (molecule_smiles(big) is not None)
    if row["valid"]:
        assert row["smiles"] == molecule_smiles(big)  # largest fragment, as EDM


def test_sa_score_matches_rdkit_contrib():
    from rdkit import Chem, RDConfig

    from molediff.chem.sascore import sa_score

    sys.path.insert(0, str(Path(RDConfig.RDContribDir) / "SA_Score"))
    try:
        import sascorer
    finally:
        sys.path.pop(0)
    for smi in ["CCO", "c1ccccc1C(=O)O", "CC1(C)C2CCC1(C)C(=O)C2", "C[C@H](N)C(=O)O", "C1CCCCCCCCCC1"]:
        m = Chem.MolFromSmiles(smi)
        assert sa_score(m) == pytest.approx(sascorer.calculateScore(m), abs=1e-9)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_QM9, reason="qm9pack not installed")
def test_full_qm9_test_split_reproduces_edm_data_row():
    from molediff.data.qm9 import load_qm9

    ds = load_qm9("test")
    s = evaluate_molecules([ds[i] for i in range(len(ds))], properties=False)
    assert abs(s["atom_stability"] - 0.993) <= 0.001
    assert abs(s["mol_stability"] - 0.952) <= 0.001
    assert abs(s["validity"] - 0.977) <= 0.001
    assert s["uniqueness"] == 1.0


# -- memory-bounded chunking --------------------------------------------------------------------------------
def test_chunk_bounds_respect_pair_budget_and_molecule_cap():
    from molediff.chem.stability import _chunk_bounds

    counts = np.array([2, 3, 3, 10, 10, 40])
    assert _chunk_bounds(counts, max_pairs=100, max_molecules=None) == [0, 3, 4, 5, 6]  # 3x3² ≤ 100 < 4x10²
    assert _chunk_bounds(counts, max_pairs=None, max_molecules=2) == [0, 2, 4, 6]
    assert _chunk_bounds(counts, max_pairs=1, max_molecules=None) == [0, 1, 2, 3, 4, 5, 6]  # one per chunk
    assert _chunk_bounds(np.zeros(0, np.int64), max_pairs=100, max_molecules=None) == [0]


def test_small_pair_budget_gives_identical_results(qm9_500, scores_500, monkeypatch):
    """Chunking changes memory only: the 500-molecule counts (8,917/8,982 atoms, 473 stable, 487 valid) and
    every bond matrix are the same with a budget that forces dozens of chunks and with the old chunking."""
    from molediff.chem import stability as metrics
    from molediff.chem.bonds import perceive_bonds

    ref_stable, ref_matrices = metrics.stability_batch(qm9_500)
    for budget, cap in ((5_000, None), (None, 2048), (1, None)):
        monkeypatch.setattr(metrics, "PAIR_BUDGET", budget)
        monkeypatch.setattr(metrics, "MAX_CHUNK_MOLECULES", cap)
        n_stable, matrices = metrics.stability_batch(qm9_500)
        assert np.array_equal(n_stable, ref_stable)
        assert all(np.array_equal(a, b) for a, b in zip(matrices, ref_matrices))
        s = evaluate_molecules(qm9_500, properties=False)
        assert (s["n_atoms"], s["n_stable_atoms"], s["n_stable_molecules"], s["n_valid"]) == (8982, 8917, 473, 487)
        assert [r["smiles"] for r in s["per_molecule"]] == [r["smiles"] for r in scores_500["per_molecule"]]
    for m, a in zip(qm9_500[:20], ref_matrices[:20]):
        assert np.array_equal(a, perceive_bonds(m.atomic_numbers, m.positions))
    assert int(ref_stable.sum()) == 8917


def test_bond_matrices_are_copies_not_views_of_the_padded_chunk(qm9_500):
    from molediff.chem.stability import stability_batch

    _, matrices = stability_batch(qm9_500[:50])
    assert all(a.base is None and a.shape == (m.num_atoms,) * 2 for a, m in zip(matrices, qm9_500[:50]))


# -- geometry and EDM-assumption notes ---------------------------------------------------------------------
# Methane (tetrahedral C) and benzene (planar), coordinates written out here (Å).
METHANE_Z = [6, 1, 1, 1, 1]
METHANE_X = [[0, 0, 0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629], [-0.629, 0.629, -0.629],
             [0.629, -0.629, -0.629]]


def _benzene():
    angles = np.arange(6) * np.pi / 3
    ring = np.stack([np.cos(angles), np.sin(angles), np.zeros(6)], axis=1)
    return [6] * 6 + [1] * 6, np.concatenate([1.40 * ring, 2.48 * ring])  # C-C 1.40 Å, C-H 1.08 Å


def test_geometry_check_flags_only_impossible_geometries():
    from molediff.chem.diagnostics import geometry_check

    assert geometry_check(METHANE_Z, METHANE_X) == ("3d", None)
    kind, note = geometry_check(METHANE_Z, np.zeros((5, 3)))
    assert kind == "collapsed" and note == "collapsed: all 5 atoms at one point (no 3D coordinates)"
    flat = np.array(METHANE_X, dtype=float)
    flat[:, 2] = 0
    kind, note = geometry_check(METHANE_Z, flat, bonds=[[0, k, 1] for k in range(1, 5)])
    assert kind == "flat" and "every z is 0" in note and "atom 1 (C, 4 neighbours) must be tetrahedral" in note
    tilted = flat @ np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0].T  # a plane not along an axis
    kind, note = geometry_check(METHANE_Z, tilted, bonds=[[0, k, 1] for k in range(1, 5)])
    assert kind == "flat" and "every" not in note
    z, x = _benzene()
    assert geometry_check(z, x)[0] == "3d"  # planar, but a planar molecule: not flagged
    line = np.array([[0, 0, 0], [1.09, 0, 0], [2.18, 0, 0], [-1.09, 0, 0], [-2.18, 0, 0]], dtype=float)
    kind, note = geometry_check(METHANE_Z, line)
    assert kind == "collinear" and "4 H/halogen atoms" in note
    hcch = np.array([[-0.6, 0, 0], [0.6, 0, 0], [-1.66, 0, 0], [1.66, 0, 0]])
    assert geometry_check([6, 6, 1, 1], hcch)[0] == "3d"  # acetylene is linear


def _row(m, **kw):
    return evaluate_molecules([m], properties=False, **kw)["per_molecule"][0]


def test_notes_for_edm_assumptions():
    z, x = _benzene()
    heavy = Molecule(z[:6], x[:6], name="benzene_no_h")
    row = _row(heavy)
    assert "no_hydrogens" in row["flags"]
    assert any(n.startswith("no explicit hydrogens: EDM's stability needs them") for n in row["notes"])
    # carboxylate and ammonium written without charges (an XYZ file cannot hold them)
    charged = Molecule([7, 1, 1, 1, 1], [[0, 0, 0], [0.6, 0.6, 0.6], [-0.6, -0.6, 0.6], [-0.6, 0.6, -0.6],
                                         [0.6, -0.6, -0.6]], name="ammonium")
    row = _row(charged)
    assert "charged_group" in row["flags"] and any("ammonium N with 4 bonds" in n for n in row["notes"])
    with_charges = Molecule(charged.atomic_numbers, charged.positions, formal_charges=[1, 0, 0, 0, 0],
                            bonds=[[0, k, 1] for k in range(1, 5)])
    row = _row(with_charges)
    assert "charges" in row["flags"] and "charged_group" not in row["flags"]
    assert any(n.startswith("formal charges in the file are ignored by EDM's metric") for n in row["notes"])
    assert _row(with_charges)["file_valid"] and _row(with_charges)["file_stable"]  # N+ has valence 4
    salt = Molecule(np.r_[METHANE_Z, 11], np.r_[np.array(METHANE_X, float), [[6.0, 0, 0]]], name="methane_na")
    row = _row(salt)
    assert {"metal", "fragments"} <= set(row["flags"]) and row["n_fragments"] == 2
    assert any(n.startswith("metal atom Na: EDM's bond table has no bonds to metals") for n in row["notes"])
    assert any(n.startswith("2 fragments") for n in row["notes"])
    assert _row(Molecule(METHANE_Z, METHANE_X))["notes"] == []


def test_aromatic_file_bonds_note(qm9_500):
    z, x = _benzene()
    kekule = [[0, 1, 2], [1, 2, 1], [2, 3, 2], [3, 4, 1], [4, 5, 2], [0, 5, 1]] + [[k, k + 6, 1] for k in range(6)]
    row = _row(Molecule(z, x, bonds=kekule, name="benzene"))
    # EDM's table perceives 1.39 Å C-C as single: RDKit fills the ring with implicit H to keep it "valid"
    assert {"bonds_differ", "implicit_h"} <= set(row["flags"])
    assert any("3 of them aromatic bonds that EDM's table perceives as single" in n for n in row["notes"])
    assert any(n.startswith("RDKit added 6 implicit hydrogens") for n in row["notes"])


def test_rdkit_failure_is_a_note_not_a_crash(qm9_500, monkeypatch):
    """Bonds a molecule cannot have (here: order 7) leave the run going: the file's-bonds rule scores it unstable
    and invalid with the reason, EDM's rule scores its geometry as usual."""
    good = qm9_500[0]
    bad = Molecule(METHANE_Z, METHANE_X, bonds=[[0, 1, 7]], name="bad_bond_order")
    s = evaluate_molecules([good, bad], properties=False)
    row = s["per_molecule"][1]
    assert not row["file_valid"] and not row["file_stable"] and "rdkit_error" in row["flags"]
    assert row["file_reasons"] == ["unusable bonds"] and row["valid"] and row["stable"]  # EDM's rule perceives
    assert any(n.startswith("unstable and invalid under the file's bonds: unusable bonds: unsupported bond order 7")
               for n in row["notes"])
    assert s["per_molecule"][0]["valid"] and any("RDKit failed on 1 molecules" in w for w in s["warnings"])

    from molediff.chem.rdkit_log import rdkit_reason

    def broken_qed(_):
        raise RuntimeError("Invariant Violation\n\tsomething inside RDKit\n\tline 2")

    monkeypatch.setattr("rdkit.Chem.QED.qed", broken_qed)
    row = evaluate_molecules([good], properties=True)["per_molecule"][0]
    assert row["valid"] and row["qed"] is None and row["sa"] is not None
    assert row["notes"] == ["QED not computed: Invariant Violation: something inside RDKit"]
    assert rdkit_reason(ValueError("")) == "ValueError"


def test_summary_warnings_and_flag_counts():
    from molediff.chem.diagnostics import summary_warnings

    z, x = _benzene()
    mols = [Molecule(METHANE_Z, np.zeros((5, 3)), name="collapsed"), Molecule(z[:6], x[:6], name="no_h"),
            Molecule(METHANE_Z, METHANE_X, name="ok")]
    s = evaluate_molecules(mols, properties=False)
    assert s["flag_counts"] == {"collapsed": 1, "no_hydrogens": 1}
    assert s["warnings"] == summary_warnings(s["flag_counts"])
    assert s["warnings"][0] == ("geometry problems: 1 collapsed (all atoms at one point: not scored); see the notes "
                                "column")
    assert s["warnings"][1].startswith("EDM's metric assumes neutral molecules with explicit hydrogens and one "
                                       "fragment: no explicit hydrogens (1)")
    assert "--bonds file" not in s["warnings"][1]  # no file bonds or charges to use instead
    assert s["per_molecule"][0]["error"].startswith("collapsed") and s["n_stable_atoms"] == 5


def test_coincident_check_through_bonds_matches_the_full_check(qm9_500):
    from molediff.chem.bonds import bond_list, perceive_bonds
    from molediff.chem.diagnostics import coincident_atoms, coincident_atoms_fast

    rng = np.random.default_rng(3)
    for m in qm9_500[:30]:
        x = m.positions.astype(np.float64).copy()
        z = m.atomic_numbers.copy()
        i, j = rng.choice(len(x), 2, replace=False)
        x[j] = x[i] + 0.05  # 0.087 Å apart
        if rng.random() < 0.3:
            z[i] = 30  # Zn: no entry in EDM's table, so the full check must run
        rows = bond_list(perceive_bonds(z, x))
        assert coincident_atoms_fast(z, x, rows) == coincident_atoms(x) != []


def test_edm_rule_never_reads_the_file_bonds(qm9_500, scores_500):
    """EDM's figures and rows are the same whether molecules carry bonds (here deliberately wrong ones: every
    order raised by one where possible) or not; only the file's-bonds block sees them."""
    from molediff.chem.bonds import bond_list, perceive_bonds
    from molediff.chem.stability import RULE_FIGURES

    with_bonds = []
    for m in qm9_500[:200]:
        rows = bond_list(perceive_bonds(m.atomic_numbers, m.positions))
        rows[:, 2] = np.minimum(rows[:, 2] + 1, 3)
        with_bonds.append(Molecule(m.atomic_numbers, m.positions, name=m.name, bonds=rows))
    plain = evaluate_molecules(qm9_500[:200], properties=False)
    s = evaluate_molecules(with_bonds, properties=False)
    assert {k: s[k] for k in RULE_FIGURES} == {k: plain[k] for k in RULE_FIGURES}
    edm_keys = ("stable_atoms", "stable", "valid", "smiles", "connected", "n_fragments", "edm_reasons")
    assert [[r[k] for k in edm_keys] for r in s["per_molecule"]] == \
        [[r[k] for k in edm_keys] for r in plain["per_molecule"]]
    assert plain["file_bonds"] is None and plain["headline"] == "edm" and s["headline"] == "file_bonds"
    assert s["file_bonds"]["n_stable_molecules"] == 0 and s["agreement"]["n_same_bonds"] == 200
    assert s["agreement"]["n_same_orders"] == 0


def test_every_unstable_molecule_has_its_reason(scores_500):
    """EDM's rule on QM9: each of the 27 unstable molecules has a note naming the unstable atoms, and its
    reasons' first label is an atom of the molecule."""
    unstable = [r for r in scores_500["per_molecule"] if not r["stable"]]
    assert len(unstable) == 500 - 473
    for r in unstable:
        note = next(n for n in r["notes"] if " under EDM's rule (bonds from distances): " in n)
        assert r["edm_reasons"] and r["edm_reasons"][0].split(" on ")[-1] in note
        k = int("".join(c for c in r["edm_reasons"][0].rsplit(" ", 1)[-1] if c.isdigit()))
        assert 1 <= k <= r["n_atoms"]
    failed = [r for r in scores_500["per_molecule"] if not (r["stable"] and r["valid"])]
    assert all(r["edm_reasons"] and any(" under EDM's rule" in n for n in r["notes"]) for r in failed)
    assert all(r["edm_reasons"] == [] for r in scores_500["per_molecule"] if r["stable"] and r["valid"]
               and r["connected"])
