"""The file's-bonds rule (``chem.valence``), the reasons a molecule fails under each rule
(``diagnostics.failure_reasons``) and the ``--png`` legend label: hand-built molecules with known valence errors
give the named reason, valid molecules from RDKit give none, EDM's table agrees with ``bonds.stable_atoms``."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DATA, etkdg_conformers

from molediff.chem.bonds import bond_list, perceive_bonds, stable_atoms
from molediff.chem.diagnostics import LEGEND_HELP, failure_reasons, legend_label
from molediff.chem.molecule import Molecule, MoleculeDataset
from molediff.chem.stability import evaluate_molecules
from molediff.chem.valence import allowed_valences, stable_by_valence, valence_problems

# Valid molecules with explicit hydrogens that exercise every part of the rule: charges (nitro, ammonium,
# carboxylate, zwitterion, sulfonium, phosphonium, borate, halide and metal ions), S 2/4/6, P 3/5, I 1/3,
# aromatic rings with N, O, S and NH, fused rings.
VALID_SMILES = [
    "CC(=O)Oc1ccccc1C(=O)O", "Cc1ncc([N+](=O)[O-])n1CCO", "C[N+](C)(C)CC(=O)[O-]", "[NH3+]CC(=O)[O-]",
    "CN(C)CCCN1c2ccccc2Sc2ccc(Cl)cc21", "COc1ccc2[nH]c(S(=O)Cc3ncc(C)c(OC)c3C)nc2c1",
    "Cc1cc(NS(=O)(=O)c2ccc(N)cc2)no1", "CC1OC1P(=O)(O)O", "CP(C)C", "C[S+](C)C", "C[P+](C)(C)C", "[BH4-]",
    "c1ccc2ccccc2c1", "c1ccoc1", "c1ccsc1", "c1cc[nH]c1", "IC1=CC=CC=C1", "OI(=O)c1ccccc1", "[Na+].[Cl-]",
    "[Ca+2].[O-]C(=O)C.[O-]C(=O)C", "C[O-]", "C=[N+]=[N-]", "[C-]#[O+]", "FC(F)(F)Br",
]


def _molecule(mol, name: str = "") -> Molecule:
    """A Molecule (kekulised bonds, formal charges) from an RDKit molecule with a conformer."""
    from rdkit import Chem

    kek = Chem.Mol(mol)
    Chem.Kekulize(kek, clearAromaticFlags=True)
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), int(b.GetBondTypeAsDouble())) for b in kek.GetBonds()]
    return Molecule([a.GetAtomicNum() for a in mol.GetAtoms()], mol.GetConformer().GetPositions(), name=name,
                    bonds=np.array(bonds, dtype=np.int64).reshape(-1, 3),
                    formal_charges=[a.GetFormalCharge() for a in mol.GetAtoms()])


def _from_smiles(smiles: str) -> Molecule:
    return _molecule(etkdg_conformers(smiles, count=1), smiles)


def _labels(m: Molecule, rule: str = "file") -> list[str]:
    return [r.label for r in failure_reasons(m, rule)]


# Methane (tetrahedral C), coordinates written out (Å): a fifth H on the far side makes CH5.
CH4_X = [[0, 0, 0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629], [-0.629, 0.629, -0.629], [0.629, -0.629, -0.629]]


def _ch(n_h: int, charge: int = 0, z: int = 6) -> Molecule:
    x = np.array(CH4_X + [[0.0, 0.0, -1.09]])[:n_h + 1]
    return Molecule([z] + [1] * n_h, x, bonds=[[0, k, 1] for k in range(1, n_h + 1)],
                    formal_charges=[charge] + [0] * n_h)


def test_valid_molecules_are_stable_and_give_no_reason():
    for smiles in VALID_SMILES:
        m = _from_smiles(smiles)
        assert stable_by_valence(m.atomic_numbers, m.bonds, m.formal_charges).all(), smiles
        n_pieces = smiles.count(".") + 1
        assert _labels(m) == ([f"{n_pieces} fragments"] if n_pieces > 1 else []), smiles


def test_rule_agrees_with_rdkit_valences_on_charged_atoms():
    """Cross-check: for every atom of the valid molecules, RDKit's own total valence (bonds + H) is one our rule
    allows for that element and charge."""
    from rdkit import Chem

    for smiles in VALID_SMILES:
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        for a in mol.GetAtoms():
            allowed = allowed_valences(a.GetAtomicNum(), a.GetFormalCharge())
            assert allowed is not None and a.GetTotalValence() in allowed, (smiles, a.GetSymbol(), a.GetIdx())


def test_hand_built_valence_errors_give_the_named_reason():
    assert _labels(_ch(4)) == []
    ch5 = _ch(5)
    assert valence_problems(ch5.atomic_numbers, ch5.bonds)[0].kind == "valence"
    # RDKit rejects the same atom: its message is not repeated as a second reason
    assert _labels(ch5) == ["valence 5 on C1"]
    reasons = failure_reasons(ch5, "file")
    assert reasons[0].detail == "valence 5 on C1 (allowed 4)"
    assert _labels(_ch(3)) == ["radical on C1"]                       # methyl radical
    assert failure_reasons(_ch(3), "file")[0].detail == "radical on C1: valence 3, allowed 4"
    assert _labels(_ch(3, charge=+1)) == [] and _labels(_ch(3, charge=-1)) == []   # carbocation, carbanion
    assert _labels(_ch(4, z=7)) == ["valence 4 on N1"]                # ammonium written without its charge
    assert _labels(_ch(4, charge=+1, z=7)) == []
    assert _labels(_ch(2, charge=+2)) == ["charge +2 on C1"]
    pt = Molecule([78, 17, 17], [[0, 0, 0], [2.3, 0, 0], [-2.3, 0, 0]], bonds=[[0, 1, 1], [0, 2, 1]])
    assert _labels(pt) == ["no rule for Pt1"]
    # two pieces: methane and a water molecule 5 Å away
    water = Molecule([8, 1, 1], [[5, 0, 0], [5.96, 0, 0], [4.76, 0.93, 0]], bonds=[[0, 1, 1], [0, 2, 1]])
    both = Molecule(np.r_[_ch(4).atomic_numbers, water.atomic_numbers],
                    np.r_[_ch(4).positions, water.positions], bonds=np.r_[_ch(4).bonds, water.bonds + [5, 5, 0]])
    assert _labels(both) == ["2 fragments"]
    # several problems: all reasons, in atom order; the atom numbers are 1-based as in an SDF
    m = _from_smiles("CCO")
    keep = [b for b in m.bonds.tolist() if not (m.atomic_numbers[b[0]] == 1 or m.atomic_numbers[b[1]] == 1)
            or b[0] != 1]  # drop the hydrogens of the second carbon
    m2 = Molecule(m.atomic_numbers, m.positions, bonds=keep)
    labels = _labels(m2)
    assert labels[0] == "radical on C2" and any(lb.startswith("radical on H") for lb in labels[1:])


def test_aromatic_bonds_count_one_and_a_half():
    """Order 4 (aromatic, as kept where a file's ring could not be kekulised): benzene and pyrrole atoms are stable;
    a 5-ring of CH with aromatic bonds has stable atoms but no Kekulé structure, which RDKit's validity says."""
    benzene = _from_smiles("c1ccccc1")
    aromatic = benzene.bonds.copy()
    ring = (benzene.atomic_numbers[aromatic[:, 0]] == 6) & (benzene.atomic_numbers[aromatic[:, 1]] == 6)
    aromatic[ring, 2] = 4
    assert _labels(Molecule(benzene.atomic_numbers, benzene.positions, bonds=aromatic)) == []
    pyrrole = _from_smiles("c1cc[nH]c1")
    aromatic = pyrrole.bonds.copy()
    heavy = (pyrrole.atomic_numbers[aromatic[:, 0]] > 1) & (pyrrole.atomic_numbers[aromatic[:, 1]] > 1)
    aromatic[heavy, 2] = 4
    assert stable_by_valence(pyrrole.atomic_numbers, aromatic).all()
    cp = _from_smiles("C1=CCC=C1")  # drop one H of the CH2 and make every ring bond aromatic: C5H5, 5 pi electrons
    z = cp.atomic_numbers
    ch2 = next(k for k in range(5) if sum(1 for b in cp.bonds if k in b[:2] and 1 in z[b[:2]]) == 2)
    h = next(b[1] for b in cp.bonds.tolist() if b[0] == ch2 and z[b[1]] == 1)
    bonds = [[i, j, 4 if z[i] == 6 and z[j] == 6 else o] for i, j, o in cp.bonds.tolist() if h not in (i, j)]
    keep = [k for k in range(len(z)) if k != h]
    index = {k: n for n, k in enumerate(keep)}
    c5h5 = Molecule(z[keep], cp.positions[keep], bonds=[[index[i], index[j], o] for i, j, o in bonds])
    assert stable_by_valence(c5h5.atomic_numbers, c5h5.bonds).all()
    labels = _labels(c5h5)
    assert len(labels) == 1 and labels[0].startswith("not kekulisable at C")
    assert failure_reasons(c5h5, "file")[0].detail.startswith("RDKit: Can't kekulize mol")


def test_edm_table_agrees_with_edm_stability_atom_for_atom():
    ds = MoleculeDataset.load(DATA / "qm9_test_500.npz")
    unstable = 0
    for i in range(len(ds)):
        m = ds[i]
        a = perceive_bonds(m.atomic_numbers, m.positions)
        ok = stable_atoms(m.atomic_numbers, a.sum(1))
        assert np.array_equal(stable_by_valence(m.atomic_numbers, bond_list(a), table="edm"), ok)
        unstable += int((~ok).sum())
    assert unstable == 8982 - 8917  # the fixture's exact count (test_chem_metrics)


def test_edm_reasons_name_edm_table_and_ignore_charges():
    # thioether S has valence 2, which chemistry allows and EDM's one-valence table (S 4) does not
    m = _from_smiles("CSC")
    problems = valence_problems(m.atomic_numbers, m.bonds, table="edm")
    assert [(p.element, p.kind, p.valence, p.allowed) for p in problems] == [("S", "valence", 2, (4,))]
    assert failure_reasons(m, "edm", bonds=m.bonds)[0].detail == "valence 2 on S2 (EDM's table allows 4)"
    assert _labels(m, "file") == []
    ammonium = _ch(4, charge=+1, z=7)
    assert [r.label for r in failure_reasons(ammonium, "edm", bonds=ammonium.bonds)] == ["valence 4 on N1"]


def test_bad_input_is_a_one_line_value_error():
    m = _ch(4)
    with pytest.raises(ValueError, match="unknown valence table 'x'"):
        valence_problems(m.atomic_numbers, m.bonds, table="x")
    with pytest.raises(ValueError, match=r"bond \(0, 9\) refers to an atom that does not exist \(5 atoms\)"):
        valence_problems(m.atomic_numbers, [[0, 9, 1]])
    with pytest.raises(ValueError, match="unsupported bond order 7"):
        valence_problems(m.atomic_numbers, [[0, 1, 7]])
    with pytest.raises(ValueError, match="5 atoms but 2 formal charges"):
        valence_problems(m.atomic_numbers, m.bonds, [0, 0])
    with pytest.raises(ValueError, match="invalid atomic number 0"):
        valence_problems([0, 1], [])
    with pytest.raises(ValueError, match="unknown rule 'x'"):
        failure_reasons(m, "x")
    with pytest.raises(ValueError, match="has no bonds of its own"):
        failure_reasons(Molecule(m.atomic_numbers, m.positions), "file")


def test_legend_labels_say_why():
    water = Molecule([8, 1, 1], [[5, 0, 0], [5.96, 0, 0], [4.76, 0.93, 0]], bonds=[[0, 1, 1], [0, 2, 1]])
    two = Molecule(np.r_[_ch(4).atomic_numbers, water.atomic_numbers],
                   np.r_[_ch(4).positions, water.positions], bonds=np.r_[_ch(4).bonds, water.bonds + [5, 5, 0]])
    cases = {"stable": _ch(4), "valence 5 on C1": _ch(5), "radical on C1": _ch(3), "2 fragments": two,
             "not scored: collapsed": Molecule([6, 1, 1, 1, 1], np.zeros((5, 3)), bonds=_ch(4).bonds)}
    rows = evaluate_molecules(list(cases.values()), properties=False)["per_molecule"]
    assert [legend_label(r) for r in rows] == list(cases)
    # without bonds of its own, the label follows EDM's rule (bonds perceived from the same coordinates)
    edm_rows = evaluate_molecules([Molecule(m.atomic_numbers, m.positions) for m in (_ch(4), _ch(3))],
                                  properties=False)["per_molecule"]
    assert [legend_label(r) for r in edm_rows] == ["stable", "radical on C1"]
    # more reasons than shown are counted
    broken = Molecule([6, 6, 1, 1], [[0, 0, 0], [1.54, 0, 0], [-1.09, 0, 0], [2.63, 0, 0]],
                      bonds=[[0, 1, 1], [0, 2, 1], [1, 3, 1]])
    assert legend_label(evaluate_molecules([broken], properties=False)["per_molecule"][0]) == \
        "radical on C1, +1 more"
    for word in ("'stable'", "'valence V on Xk'", "'radical on Xk'", "'charge +q on Xk'", "'no rule for Xk'",
                 "'N fragments'", "'not kekulisable at Xk'", "'unusable bonds'", "'+n more'", "'not scored: ...'"):
        assert word in LEGEND_HELP
