"""EDM metrics on real QM9 geometries, plus uniqueness/novelty/edge cases and the SA score."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from molediff.chem.metrics import atom_stability, evaluate_molecules, molecule_smiles, reference_smiles
from molediff.chem.molecule import Molecule, MoleculeDataset

DATA = Path(__file__).parent / "data"
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
