"""The model-free conformer pipeline (``molediff.generate_conformers``) and ``molediff conformers``: well-formed SDF,
the input's stereochemistry kept (mirror images caught and fixed), one-line reasons for every failure while the
batch proceeds, exit codes, speed, and a selection that is more diverse than the first N."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import etkdg_conformers
from rdkit import Chem
from rdkit.Chem import rdMolAlign

import molediff
from molediff.cli import main
from molediff.conformers.forcefield import DEFAULT_RESTRAINT, relax_hydrogens
from molediff.conformers.pipeline import generate_conformers
from molediff.conformers.selection import SymmetricRMSD, select_conformers
from molediff.conformers.stereo import check_conformer_stereo, enforce_stereo, mirror_conformer, stereo_reference


def _smiles_from_3d(mol, conf_id: int) -> str:
    one = Chem.Mol(mol, False, conf_id)
    Chem.AssignStereochemistryFrom3D(one)
    return Chem.MolToSmiles(Chem.RemoveHs(one))


def _records(path):
    return [m for m in Chem.SDMolSupplier(str(path), removeHs=False)]


# ------------------------------------------------------------------------------------------ the library
def test_generate_conformers_returns_n_relaxed_conformers_with_properties():
    mol = generate_conformers("C[C@H](N)C(=O)O", n=4, seed=3, refiner=None)
    assert mol.GetNumConformers() == 4 and mol.GetNumAtoms() == 13  # hydrogens added
    assert [c.GetIntProp("conformer_index") for c in mol.GetConformers()] == [0, 1, 2, 3]
    energies = [c.GetDoubleProp("MMFF94_energy_kcal_mol") for c in mol.GetConformers()]
    assert all(np.isfinite(energies))
    assert mol.GetProp("molediff_forcefield") == "MMFF94" and mol.GetIntProp("molediff_candidates") == 12
    assert mol.GetIntProp("molediff_stereo_dropped") == 0
    for conf in mol.GetConformers():
        assert _smiles_from_3d(mol, conf.GetId()) == "C[C@H](N)C(=O)O"
    again = generate_conformers("C[C@H](N)C(=O)O", n=4, seed=3, refiner=None)
    np.testing.assert_array_equal(again.GetConformer(2).GetPositions(), mol.GetConformer(2).GetPositions())
    assert molediff.generate_conformers is generate_conformers  # lazily exposed at the top level


def test_uff_when_mmff94_has_no_parameters_is_a_note():
    mol = generate_conformers("C[Se]C", n=2, refiner=None)
    assert mol.GetProp("molediff_forcefield") == "UFF" and "relaxed with UFF" in mol.GetProp("molediff_notes")
    assert all(c.HasProp("UFF_energy_kcal_mol") for c in mol.GetConformers())
    plain = generate_conformers("CCO", n=2, relax="none", refiner=None)
    assert plain.GetProp("molediff_forcefield") == "none"
    assert not any(c.HasProp("MMFF94_energy_kcal_mol") for c in plain.GetConformers())


def test_a_mirrored_conformer_is_caught_and_fixed():
    mol = etkdg_conformers("F[C@H](Cl)Br")  # (S)-bromochlorofluoromethane
    reference = stereo_reference(mol)
    assert len(reference.centres) == 1
    assert check_conformer_stereo(mol, 0, reference) == "ok"
    before = mol.GetConformer(1).GetPositions()
    mirror_conformer(mol, 1)
    assert check_conformer_stereo(mol, 1, reference) == "mirrored"
    fixed, dropped = enforce_stereo(mol, reference)
    assert fixed == [1] and dropped == []
    assert check_conformer_stereo(mol, 1, reference) == "ok"
    np.testing.assert_allclose(mol.GetConformer(1).GetPositions(), before)  # mirrored twice: back where it was


def test_a_conformer_of_a_diastereomer_is_dropped_not_mirrored():
    # same atom order, one of two centres inverted: a mirror image cannot fix that
    wrong = etkdg_conformers("C[C@H](F)[C@H](C)Cl", count=1)
    reference = stereo_reference(Chem.AddHs(Chem.MolFromSmiles("C[C@H](F)[C@@H](C)Cl")))
    assert check_conformer_stereo(wrong, 0, reference) == "wrong"
    assert enforce_stereo(wrong, reference) == ([], [0])


def test_the_pipeline_mirrors_inverted_candidates_and_replaces_wrong_ones(monkeypatch):
    from molediff.conformers import pipeline, stereo

    embed = pipeline._embed

    def embed_some_mirrored(mol, *args, **kwargs):  # as if ETKDG had produced mirror images
        ids, cause = embed(mol, *args, **kwargs)
        for cid in ids[::2]:
            mirror_conformer(mol, cid)
        return ids, cause

    monkeypatch.setattr(pipeline, "_embed", embed_some_mirrored)
    mol = generate_conformers("C[C@H](N)C(=O)O", n=4, pool=1, dedupe_rmsd=0, refiner=None, relax_when="pool")
    assert mol.GetIntProp("molediff_stereo_fixed") == 2 and mol.GetIntProp("molediff_stereo_dropped") == 0
    assert {_smiles_from_3d(mol, c.GetId()) for c in mol.GetConformers()} == {"C[C@H](N)C(=O)O"}

    check = stereo.check_conformer_stereo
    monkeypatch.setattr(pipeline, "_embed", embed)

    def first_three_wrong(calls, candidates):
        # the first three candidates of the first round wrong, relaxed (calls 0-2) and as embedded (the next
        # check of each candidate): a candidate is dropped only when its embedding was wrong too
        def fake(mol, cid, ref):
            k = next(calls)
            return "wrong" if k < 3 or candidates <= k < candidates + 3 else check(mol, cid, ref)
        return fake

    monkeypatch.setattr(stereo, "check_conformer_stereo", first_three_wrong(itertools.count(), 8))
    # 8 candidates, 3 dropped: 5 left to choose from
    mol = generate_conformers("C[C@H](N)C(=O)O", n=4, pool=2, dedupe_rmsd=0, refiner=None, relax_when="pool")
    assert mol.GetNumConformers() == 4 and mol.GetIntProp("molediff_stereo_dropped") == 3
    assert mol.GetIntProp("molediff_candidates") == 8
    monkeypatch.setattr(stereo, "check_conformer_stereo", first_three_wrong(itertools.count(), 4))
    # 1 left: a second round replaces the dropped
    mol = generate_conformers("C[C@H](N)C(=O)O", n=4, pool=1, dedupe_rmsd=0, refiner=None, relax_when="pool")
    assert mol.GetNumConformers() == 4 and mol.GetIntProp("molediff_candidates") == 8
    assert {_smiles_from_3d(mol, c.GetId()) for c in mol.GetConformers()} == {"C[C@H](N)C(=O)O"}


def test_when_no_etkdg_candidate_has_the_stereo_a_round_from_random_coordinates_is_tried(monkeypatch):
    # issue 24: no molecule may fail that ETKDGv3 can embed with the input's stereo; here every ETKDGv3 candidate
    # (two rounds) comes out wrong, and the pipeline retries from random coordinates and says so
    from molediff.conformers import pipeline, stereo

    embed, check = pipeline._embed, stereo.check_conformer_stereo
    state = {"random": False}

    def tracking_embed(mol, count, seed, threads, random_coords, **kwargs):
        state["random"] = random_coords
        return embed(mol, count, seed, threads, random_coords, **kwargs)

    monkeypatch.setattr(pipeline, "_embed", tracking_embed)
    monkeypatch.setattr(stereo, "check_conformer_stereo",
                        lambda mol, cid, ref: check(mol, cid, ref) if state["random"] else "wrong")
    mol = generate_conformers("C[C@H](N)C(=O)O", n=2, pool=2, refiner=None, dedupe_rmsd=0)
    assert mol.GetNumConformers() == 2 and mol.GetIntProp("molediff_candidates") == 12
    assert "no ETKDGv3 candidate had the input's stereo: 4 found from random coordinates" in \
        mol.GetProp("molediff_notes")
    assert {_smiles_from_3d(mol, c.GetId()) for c in mol.GetConformers()} == {"C[C@H](N)C(=O)O"}


def test_relax_when_chosen_minimises_only_the_chosen_and_they_are_minima(monkeypatch):
    # issue 24 (CPU): the pool stays as ETKDGv3 embedded it, only the n chosen are minimised, and what is written
    # is a force-field minimum (no strain), labelled as one
    from rdkit.Chem import AllChem

    from molediff.chem.physics import mmff_strain
    from molediff.conformers import pipeline

    def no_pool_relaxation(*args, **kwargs):
        raise AssertionError("the pool was relaxed")

    monkeypatch.setattr(pipeline, "relax_candidates", no_pool_relaxation)
    mol = generate_conformers("CCCCOc1ccccc1C(=O)O", n=4, pool=3, refiner=None, relax_when="chosen", dedupe_rmsd=0)
    assert mol.GetNumConformers() == 4 and mol.GetIntProp("molediff_candidates") == 12
    assert mol.GetProp("molediff_forcefield") == "MMFF94"
    props = AllChem.MMFFGetMoleculeProperties(mol)
    for conf in mol.GetConformers():
        assert conf.GetProp("energy_kind") == "minimum"
        e0, e1, _ = mmff_strain(mol, conf.GetId())
        assert e0 - e1 < 0.05   # a minimum already
        field = AllChem.MMFFGetMoleculeForceField(mol, props, confId=conf.GetId())
        assert abs(field.CalcEnergy() - conf.GetDoubleProp("MMFF94_energy_kcal_mol")) < 1e-6


def test_relax_when_final_selects_among_embeddings_and_minimises_after():
    mol = generate_conformers("CCCCOc1ccccc1C(=O)O", n=3, refiner=None, relax_when="final", dedupe_rmsd=0)
    assert mol.GetNumConformers() == 3
    assert {c.GetProp("energy_kind") for c in mol.GetConformers()} == {
        f"restrained minimum (heavy atoms, k = {DEFAULT_RESTRAINT:g} kcal/mol/A^2)"}


def _positions(mol) -> np.ndarray:
    return np.stack([c.GetPositions() for c in mol.GetConformers()])


@pytest.mark.parametrize("smiles, collapses", [("CC1(C)CC(=O)C1O", True), ("CCCCOc1ccccc1C(=O)O", False)])
def test_relax_when_adaptive_is_chosen_until_the_chosen_collapse_then_pool(smiles, collapses):
    # a rigid molecule's 10 chosen embeddings fall onto fewer minima: the whole pool is minimised and the result is
    # the pool's (same minimiser, same selection); a flexible one's stay distinct and nothing more is minimised
    adaptive = generate_conformers(smiles, n=10, refiner=None, relax_when="adaptive", dedupe_rmsd=0)
    same = generate_conformers(smiles, n=10, refiner=None, relax_when="pool" if collapses else "chosen",
                               dedupe_rmsd=0)
    note = "distinct minima: the other 20 candidates minimised too"
    assert (note in adaptive.GetProp("molediff_notes")) == collapses
    assert adaptive.GetNumConformers() == same.GetNumConformers() == 10
    np.testing.assert_allclose(_positions(adaptive), _positions(same), atol=1e-4)
    energies = [[c.GetDoubleProp("MMFF94_energy_kcal_mol") for c in m.GetConformers()] for m in (adaptive, same)]
    np.testing.assert_allclose(*energies, atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    ({"relax_when": "later"}, "relax_when must be one of pool, chosen, adaptive, final"),
    ({"relax_when": "chosen", "select": "energy"}, "select='energy' needs the energy of every candidate"),
])
def test_relax_when_options_that_cannot_work_fail_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_conformers("CCO", refiner=None, **kwargs)


def test_candidates_whose_stereo_the_force_field_inverts_keep_their_embedding():
    # issue 24: MMFF94's minimum of this oxabicyclo[2.1.0]pentane (QM9 gdb9_077666) has an inverted bridgehead, so
    # ETKDGv3 + MMFF94 writes another stereoisomer and the pipeline used to fail ("all candidates had inverted
    # centres"); now such candidates keep their embedded heavy atoms and only their hydrogens are minimised
    smiles = "O=C[C@@]12OC[C@]1(O)[C@@H]2O"
    mol = generate_conformers(smiles, n=4, refiner=None)
    assert mol.GetNumConformers() >= 1
    assert {_smiles_from_3d(mol, c.GetId()) for c in mol.GetConformers()} == \
        {Chem.MolToSmiles(Chem.MolFromSmiles(smiles))}
    assert "MMFF94 changed the stereo of" in mol.GetProp("molediff_notes")
    assert {c.GetProp("energy_kind") for c in mol.GetConformers()} == {"hydrogens minimised, heavy atoms fixed"}
    plain = etkdg_conformers(smiles, count=2)
    from rdkit.Chem import rdForceFieldHelpers

    rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(plain)
    reference = stereo_reference(Chem.AddHs(Chem.MolFromSmiles(smiles)))
    assert [check_conformer_stereo(plain, c.GetId(), reference) for c in plain.GetConformers()] == ["wrong"] * 2


@pytest.mark.slow
def test_a_cage_that_etkdg_rarely_embeds_gets_conformers_from_more_attempts():
    # issue 24 (QM9 gdb9_088629): with seed 0 none of 30 ETKDGv3 candidates nor 10 from random coordinates pass
    # ETKDGv3's final checks; a last try with more attempts per conformer finds some, and the notes say so
    mol = generate_conformers("CN1C[C@H]1[C@H]1[C@H]2CO[C@H]21", n=10, seed=0, refiner=None)
    assert mol.GetNumConformers() >= 1
    assert "with 1000 attempts each" in mol.GetProp("molediff_notes")
    assert {_smiles_from_3d(mol, c.GetId()) for c in mol.GetConformers()} == \
        {Chem.MolToSmiles(Chem.MolFromSmiles("CN1C[C@H]1[C@H]1[C@H]2CO[C@H]21"))}


@pytest.mark.parametrize("smiles", ["F/C=C/Cl", "C/C=C\\C", "C/C=C/[C@@H](F)C"])
def test_specified_double_bonds_keep_their_configuration(smiles):
    mol = generate_conformers(smiles, n=5, dedupe_rmsd=0, refiner=None)
    expected = Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
    assert [_smiles_from_3d(mol, c.GetId()) for c in mol.GetConformers()] == [expected] * 5


def test_a_wrong_double_bond_is_caught():
    z_conformer = etkdg_conformers("C/C=C\\C", count=1)
    e_reference = stereo_reference(Chem.AddHs(Chem.MolFromSmiles("C/C=C/C")))
    assert check_conformer_stereo(z_conformer, 0, e_reference) == "wrong"


@pytest.mark.parametrize("smiles, kwargs, reason", [
    ("C1CC(", {}, "could not parse SMILES 'C1CC('"),
    ("C(C)(C)(C)(C)C", {}, "could not parse SMILES"),
    ("", {}, "empty molecule"),
    ("*C", {}, "unsupported element '*'"),
    ("C[Og]", {}, "unsupported element 'Og'"),
    ("CCCCCCCCCC", {"max_atoms": 20}, "too many atoms: 32 with hydrogens, more than max_atoms=20"),
    ("[C@H]12C[C@@H]1C2", {"pool": 1, "n": 1}, "embedding failed"),
    ("CCO", {"select": "energy", "relax": "none"}, "needs energies"),
    ("CC(=O)[O-].[Na+]", {}, "disconnected input (2 fragments"),
    ("N[Pt](N)(Cl)Cl", {}, "unsupported element Pt: distance geometry and MMFF94 cannot place metals"),
    ("CC[Sn](CC)(CC)CC", {}, "unsupported element Sn"),
    ("CCO", {"restraint": -1.0}, "restraint must be a force constant >= 0"),
    ("CCO", {"after_refinement": "nothing"}, "after_refinement must be one of restrained, hydrogens, torsions"),
    ("CCO", {"dedupe_rmsd": -0.1}, "dedupe_rmsd must be >= 0"),
])
def test_every_failure_has_a_one_line_reason(smiles, kwargs, reason):
    with pytest.raises(ValueError, match=None) as info:
        generate_conformers(smiles, **kwargs, refiner=None)
    message = str(info.value)
    assert reason in message and "\n" not in message


def _mean_and_min_pairwise_rmsd(mol) -> tuple[float, float]:
    heavy = Chem.RemoveHs(mol)
    pairs = itertools.combinations(range(heavy.GetNumConformers()), 2)
    values = [rdMolAlign.GetBestRMS(heavy, heavy, i, j) for i, j in pairs]
    return float(np.mean(values)), float(np.min(values))


def test_diverse_selection_is_at_least_as_spread_as_the_first_n():
    diverse = _mean_and_min_pairwise_rmsd(generate_conformers("CCCCCCCCO", n=8, select="diverse", refiner=None))
    first = _mean_and_min_pairwise_rmsd(generate_conformers("CCCCCCCCO", n=8, select="none", refiner=None))
    assert diverse[0] >= first[0] and diverse[1] >= first[1], (diverse, first)


def test_hydroxyl_rotamers_count_as_distinct_in_selection():
    # ethanol's three OH rotamers share their heavy atoms exactly: heavy-atom RMSD alone called them duplicates
    # and `molediff conformers "CCO" -n 3` wrote one gauche conformer three times
    from rdkit.Chem import rdMolTransforms

    mol = etkdg_conformers("CCO", count=1)
    h = next(a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() == 1 and a.GetNeighbors()[0].GetAtomicNum() == 8)
    positions = []
    for angle in (60.0, 60.0, 60.0, -60.0, 180.0):
        rdMolTransforms.SetDihedralDeg(mol.GetConformer(), 0, 1, 2, h, angle)
        positions.append(mol.GetConformer().GetPositions())
    chosen = select_conformers(mol, np.stack(positions), [0.0] * 5, 3, "diverse")
    assert sorted(chosen) == [0, 3, 4]


def test_energy_selection_prunes_near_duplicates_in_energy_order():
    # five candidates: 0 and 1 are the same conformer (1 lower in energy), 2 is 0.3 A from 1, 3 and 4 far away
    mol = etkdg_conformers("CCCCO", count=1)
    base = mol.GetConformer().GetPositions()
    rng = np.random.default_rng(1)
    far = [base + rng.normal(scale=0.8, size=base.shape) for _ in range(2)]
    nudge = rng.normal(size=base.shape)
    positions = np.stack([base, base, base + 0.3 * nudge / np.sqrt((nudge ** 2).sum(1).mean()), *far])
    energies = [2.0, 1.0, 0.0, 5.0, 3.0]
    rmsd = SymmetricRMSD(mol, positions, polar_hydrogens=True)
    assert rmsd.from_one(1)[0] < 1e-6 and 0.05 < rmsd.from_one(1)[2] < 0.5 and min(rmsd.from_one(3)[:3]) > 0.5
    # pruning at 0.5 A: the lowest (2), then 4 and 3 by energy; 1 and 0 are within 0.5 A of 2
    assert select_conformers(mol, positions, energies, 3, "energy", prune_rmsd=0.5) == [2, 4, 3]
    # a threshold below their distance keeps 2 and 1 apart, and still never both copies 1 and 0
    assert select_conformers(mol, positions, energies, 3, "energy", prune_rmsd=0.01) == [2, 1, 4]
    # more wanted than distinct ones: the rest by farthest point (0 and 1 are equally far: the lower energy first)
    assert select_conformers(mol, positions, energies, 5, "energy", prune_rmsd=0.5) == [2, 4, 3, 1, 0]
    with pytest.raises(ValueError, match="prune_rmsd must be >= 0"):
        select_conformers(mol, positions, energies, 3, "energy", prune_rmsd=-1.0)


def test_unrelaxed_candidates_fill_the_slots_that_relaxed_duplicates_would_take():
    # relaxed candidates 0, 1, 2 are one minimum (2 lowest), 3 another; the unrelaxed ones: u0 is a copy of the
    # minimum, u1 lies 0.8 A from it and u2 1.6 A (along the same direction), so u2 is the farthest
    mol = etkdg_conformers("CCCCO", count=1)
    base = mol.GetConformer().GetPositions()
    rng = np.random.default_rng(3)
    step = rng.normal(size=base.shape)
    step /= np.sqrt((step ** 2).sum(1).mean())
    other = base + rng.normal(scale=0.8, size=base.shape)
    relaxed = np.stack([base, base + 0.01 * step, base, other])
    energies = [1.0, 2.0, 0.0, 4.0]
    unrelaxed = np.stack([base, base + 0.8 * step, base + 1.6 * step])
    rmsd = SymmetricRMSD(mol, np.concatenate([relaxed, unrelaxed]), polar_hydrogens=True)
    assert rmsd.from_one(6)[2] > rmsd.from_one(5)[2] > 0.5 and rmsd.from_one(2)[1] < 0.05
    # without unrelaxed candidates: the lowest, the other minimum, then duplicates of the first
    assert select_conformers(mol, relaxed, energies, 3, "diverse") == [2, 3, 1]
    # with them: the two distinct minima, then the farthest unrelaxed one (index 4 + 2), then the next (4 + 1)
    assert select_conformers(mol, relaxed, energies, 4, "diverse", unrelaxed=unrelaxed) == [2, 3, 6, 5]
    assert select_conformers(mol, relaxed, energies, 4, "energy", unrelaxed=unrelaxed) == [2, 3, 6, 5]
    # a duplicate threshold below the near-copy's distance makes it a distinct minimum again
    assert select_conformers(mol, relaxed, energies, 3, "diverse", unrelaxed=unrelaxed,
                             distinct_rmsd=0.001) == [2, 3, 1]
    # more wanted than distinct and unrelaxed together: the relaxed duplicates last
    assert select_conformers(mol, relaxed, energies, 7, "diverse", unrelaxed=unrelaxed)[:5] == [2, 3, 6, 5, 4]
    with pytest.raises(ValueError, match="distinct_rmsd must be >= 0"):
        select_conformers(mol, relaxed, energies, 3, "diverse", unrelaxed=unrelaxed, distinct_rmsd=-0.1)


def _distinct_count(mol, threshold: float) -> int:
    """Conformers of ``mol`` farther than ``threshold`` (heavy atoms and polar H) from every earlier one."""
    positions = np.stack([c.GetPositions() for c in mol.GetConformers()])
    rmsd = SymmetricRMSD(mol, positions, polar_hydrogens=True)
    return sum(1 for k in range(len(positions)) if k == 0 or rmsd.from_one(k)[:k].min() > threshold)


def test_top_up_from_unrelaxed_candidates_gives_distinct_conformers_with_energies():
    # MMFF94 relaxes nearly all candidates of this small molecule into a few minima: topping up from relaxed
    # candidates repeats them, from unrelaxed ones adds rotamers; every conformer keeps its stereo and an energy
    smiles = "OC1(c2ccco2)CC1"
    # the top-up fills slots of a relaxed pool (relax_when="pool")
    relaxed = generate_conformers(smiles, n=8, top_up="relaxed", dedupe_rmsd=0, refiner=None, relax_when="pool")
    unrelaxed = generate_conformers(smiles, n=8, top_up="unrelaxed", dedupe_rmsd=0, refiner=None,
                                    relax_when="pool")
    assert unrelaxed.GetNumConformers() == 8
    assert _distinct_count(unrelaxed, 0.25) >= _distinct_count(relaxed, 0.25) + 3
    assert unrelaxed.GetIntProp("molediff_unrelaxed") >= 3 and relaxed.GetIntProp("molediff_unrelaxed") == 0
    for conf in unrelaxed.GetConformers():
        assert np.isfinite(conf.GetDoubleProp("MMFF94_energy_kcal_mol"))
    # the relaxed minima lead; an unrelaxed conformer (its hydrogens minimised) lies above the lowest minimum
    energies = [c.GetDoubleProp("MMFF94_energy_kcal_mol") for c in unrelaxed.GetConformers()]
    assert energies[0] == min(energies)
    with pytest.raises(ValueError, match="top_up must be one of"):
        generate_conformers(smiles, n=2, top_up="seeds", refiner=None)


def test_relax_hydrogens_moves_only_hydrogens_and_mends_a_short_bond():
    from rdkit.Chem import rdForceFieldHelpers, rdMolTransforms

    mol = etkdg_conformers("CCO", count=1)
    rdForceFieldHelpers.MMFFOptimizeMolecule(mol)
    oxygen = next(a for a in mol.GetAtoms() if a.GetAtomicNum() == 8)
    h = next(n.GetIdx() for n in oxygen.GetNeighbors() if n.GetAtomicNum() == 1)
    relaxed_length = rdMolTransforms.GetBondLength(mol.GetConformer(), oxygen.GetIdx(), h)
    rdMolTransforms.SetBondLength(mol.GetConformer(), oxygen.GetIdx(), h, 0.78)   # as a refinement once left it
    distorted = mol.GetConformer().GetPositions()
    positions, energies = relax_hydrogens(mol, distorted[None], "MMFF94")
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    np.testing.assert_array_equal(positions[0][heavy], distorted[heavy])        # heavy atoms exactly kept
    assert np.linalg.norm(positions[0][h] - positions[0][oxygen.GetIdx()]) == pytest.approx(relaxed_length, abs=0.01)
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol)
    before = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, props).CalcEnergy()
    assert energies[0] < before - 10                                            # the 0.19 Å compression cost
    same, none = relax_hydrogens(mol, distorted[None], "none")
    np.testing.assert_array_equal(same[0], distorted) and none == [None]


def test_relax_hydrogens_keeps_the_refined_hydrogens_when_minimisation_fails(monkeypatch):
    from rdkit.Chem import rdForceFieldHelpers

    mol = etkdg_conformers("CCO", count=1)
    positions = mol.GetConformer().GetPositions()
    real = rdForceFieldHelpers.MMFFGetMoleculeForceField

    class Failing:   # what RDKit's BFGS raises on a bad line-search direction
        def __init__(self, field):
            self.field = field

        def AddFixedPoint(self, i):
            self.field.AddFixedPoint(i)

        def Minimize(self, maxIts):
            raise RuntimeError("Invariant Violation: bad direction in linearSearch")

    calls = []

    def once_failing(m, props):
        calls.append(1)
        return Failing(real(m, props)) if len(calls) == 1 else real(m, props)

    monkeypatch.setattr(rdForceFieldHelpers, "MMFFGetMoleculeForceField", once_failing)
    out, energies = relax_hydrogens(mol, positions[None], "MMFF94")
    np.testing.assert_array_equal(out[0], positions)
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol)
    assert energies[0] == pytest.approx(real(mol, props).CalcEnergy(), rel=1e-9)   # the single point


def test_restrained_relaxation_mends_bonds_and_strain_and_holds_the_heavy_atoms():
    # a refined conformer with a stretched C-C bond and a torsion off the force field's minimum: the restraint lets
    # MMFF94 mend the stiff bond (its strain goes) while the heavy atoms, and so the torsion, are held towards the
    # model's, the more so the stiffer the restraint (plain minimisation, k = 0, goes all the way to gauche)
    from rdkit.Chem import rdForceFieldHelpers, rdMolTransforms

    from molediff.conformers.forcefield import relax_restrained

    mol = etkdg_conformers("CCCC", count=1)
    rdForceFieldHelpers.MMFFOptimizeMolecule(mol)
    conf = mol.GetConformer()
    rdMolTransforms.SetDihedralDeg(conf, 0, 1, 2, 3, 100.0)         # not a minimum: the model's choice
    rdMolTransforms.SetBondLength(conf, 1, 2, 1.62)                  # 0.1 Å long: the model's error
    start = conf.GetPositions()
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol)
    e_start = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, props).CalcEnergy()
    heavy = [0, 1, 2, 3]
    fixed_pos, fixed_e = relax_restrained(mol, start[None], "MMFF94", None)    # hydrogens only
    np.testing.assert_array_equal(fixed_pos[0][heavy], start[heavy])
    dihedrals, moved = [], []
    for k in (0.0, 10.0, 30.0):
        pos, energies = relax_restrained(mol, start[None], "MMFF94", k)
        out = Chem.Mol(mol)
        for i, p in enumerate(pos[0].tolist()):
            out.GetConformer().SetAtomPosition(i, p)
        assert rdMolTransforms.GetBondLength(out.GetConformer(), 1, 2) == pytest.approx(1.52, abs=0.02)  # mended
        plain = rdForceFieldHelpers.MMFFGetMoleculeForceField(out, props).CalcEnergy()
        assert energies[0] == pytest.approx(plain, rel=1e-9)         # the energy without the restraint terms
        assert energies[0] < fixed_e[0] - 3 and energies[0] < e_start - 3
        dihedrals.append(rdMolTransforms.GetDihedralDeg(out.GetConformer(), 0, 1, 2, 3))
        moved.append(np.linalg.norm(pos[0][heavy] - start[heavy], axis=1).max())
    assert dihedrals[0] == pytest.approx(65.0, abs=3.0)              # k = 0: the gauche minimum
    assert dihedrals[0] < dihedrals[1] < dihedrals[2] < 100.0        # held back towards the model's torsion
    assert moved[0] > moved[1] > moved[2]
    with pytest.raises(ValueError, match="restraint must be a force constant"):
        relax_restrained(mol, start[None], "MMFF94", float("nan"))


def test_transfer_torsions_keeps_the_seed_bonds_and_takes_the_target_torsions():
    from rdkit.Chem import rdForceFieldHelpers, rdMolTransforms

    from molediff.conformers.forcefield import transfer_torsions

    mol = etkdg_conformers("CCCCO", count=1)
    rdForceFieldHelpers.MMFFOptimizeMolecule(mol)
    conf = mol.GetConformer()
    rdMolTransforms.SetDihedralDeg(conf, 0, 1, 2, 3, 180.0)
    seed = conf.GetPositions()
    target_mol = Chem.Mol(mol)
    tconf = target_mol.GetConformer()
    rdMolTransforms.SetDihedralDeg(tconf, 0, 1, 2, 3, 70.0)
    rdMolTransforms.SetBondLength(tconf, 1, 2, 1.70)                  # the target's bond is off; the seed's is kept
    out = transfer_torsions(mol, seed[None], tconf.GetPositions()[None])[0]
    result = Chem.Mol(mol)
    result.GetConformer().SetPositions(out)
    rconf = result.GetConformer()
    assert rdMolTransforms.GetDihedralDeg(rconf, 0, 1, 2, 3) == pytest.approx(70.0, abs=1e-6)
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        assert rdMolTransforms.GetBondLength(rconf, i, j) == pytest.approx(
            rdMolTransforms.GetBondLength(conf, i, j), abs=1e-9)


def test_every_energy_says_what_it_is_and_unrelaxed_top_ups_are_relaxed():
    # model-free: relaxed candidates are minima; top-ups from unrelaxed candidates get a restrained minimisation
    # (never the raw ETKDG energy), and their local strain is small
    from molediff.chem.physics import mmff_strain

    mol = generate_conformers("OC1(c2ccco2)CC1", n=8, dedupe_rmsd=0, refiner=None, relax_when="pool")
    assert mol.GetIntProp("molediff_unrelaxed") >= 3
    kinds = [c.GetProp("energy_kind") for c in mol.GetConformers()]
    assert kinds.count("minimum") == 8 - mol.GetIntProp("molediff_unrelaxed")
    restrained = f"restrained minimum (heavy atoms, k = {DEFAULT_RESTRAINT:g} kcal/mol/A^2)"
    assert kinds.count(restrained) == mol.GetIntProp("molediff_unrelaxed")
    for c in mol.GetConformers():
        e0, e1, shift = mmff_strain(mol, c.GetId())
        assert e0 == pytest.approx(c.GetDoubleProp("MMFF94_energy_kcal_mol"), abs=1e-6)
        assert e0 - e1 < 2.0 and shift.max() < 0.02
    hydrogens_only = generate_conformers("OC1(c2ccco2)CC1", n=8, dedupe_rmsd=0, after_refinement="hydrogens",
                                         refiner=None, relax_when="pool")
    kinds = {c.GetProp("energy_kind") for c in hydrogens_only.GetConformers()}
    assert "hydrogens minimised, heavy atoms fixed" in kinds


def test_near_copies_are_written_once_and_the_summary_says_so(tmp_path, capsys):
    # caffeine is rigid: every candidate is the same conformer up to methyl hydrogens
    mol = generate_conformers("Cn1cnc2c1c(=O)n(C)c(=O)n2C", n=5, refiner=None)
    assert mol.GetNumConformers() == 1
    assert "4 near-copies (RMSD < 0.25 A) left out: only 1 distinct conformer" in mol.GetProp("molediff_notes")
    assert generate_conformers("Cn1cnc2c1c(=O)n(C)c(=O)n2C", n=5, dedupe_rmsd=0, refiner=None).GetNumConformers() == 5
    flexible = generate_conformers("CCCCCCO", n=5, refiner=None)    # enough distinct conformers: all written
    assert flexible.GetNumConformers() == 5 and "near-cop" not in flexible.GetProp("molediff_notes")
    out = tmp_path / "caffeine.sdf"
    assert main(["conformers", "Cn1cnc2c1c(=O)n(C)c(=O)n2C caffeine", "-n", "5", "-o", str(out),
                 "--refiner", "none"]) == 0
    text = capsys.readouterr().out
    assert "caffeine: 1 conformer," in text and "only 1 distinct conformer" in text
    assert len(_records(out)) == 1


def test_metals_are_refused_unless_allowed_and_then_labelled(tmp_path, capsys):
    out = tmp_path / "cisplatin.sdf"
    assert main(["conformers", "N[Pt](N)(Cl)Cl cisplatin", "-o", str(out), "--refiner", "none"]) == 1
    err = capsys.readouterr().err
    assert "skipped cisplatin: unsupported element Pt" in err and not out.exists()
    mol = generate_conformers("[NH3][Pt]([NH3])(Cl)Cl", n=2, allow_unvalidated_elements=True, dedupe_rmsd=0,
                              refiner=None)
    assert mol.GetNumConformers() == 2 and "UNVALIDATED: contains Pt" in mol.GetProp("molediff_notes")


def test_ctrl_c_while_rdkit_embeds_stops_the_run():
    # RDKit catches SIGINT itself while it embeds and returns no conformers; the pipeline must not take that for
    # an embedding failure (and fall back to random coordinates)
    import signal
    import threading

    from molediff.conformers import pipeline

    mol = Chem.AddHs(Chem.MolFromSmiles("CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC(=O)NC1CCCCC1"))
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline._embed(mol, 2000, seed=0, threads=1, random_coords=False)
    finally:
        timer.cancel()


# ------------------------------------------------------------------------------------------ the command
@pytest.mark.slow
def test_sdf_output_round_trips_with_titles_from_a_smi_file(tmp_path, capsys):
    smi = tmp_path / "in.smi"
    smi.write_text("# my molecules\nCCO ethanol\n\nC[C@@H](C(=O)O)N L-alanine\nF/C=C/Cl\n")
    out = tmp_path / "out.sdf"
    assert main(["conformers", str(smi), "-n", "3", "-o", str(out), "--dedupe-rmsd", "0"]) == 0
    records = _records(out)
    assert [r.GetProp("_Name") for r in records] == ["ethanol"] * 3 + ["L-alanine"] * 3 + ["mol_3"] * 3
    for name, group in itertools.groupby(records, key=lambda r: r.GetProp("_Name")):
        group = list(group)
        assert sorted(int(r.GetProp("conformer_index")) for r in group) == [0, 1, 2], name
        assert all(np.isfinite(float(r.GetProp("MMFF94_energy_kcal_mol"))) for r in group)
        assert not any(r.HasProp("molediff_notes") for r in group)  # bookkeeping stays out of the file
    assert {Chem.MolToSmiles(Chem.RemoveHs(r)) for r in records[3:6]} == {"C[C@H](N)C(=O)O"}
    assert {Chem.MolToSmiles(Chem.RemoveHs(r)) for r in records[6:]} == {"F/C=C/Cl"}
    text = capsys.readouterr().out
    assert "ethanol: 3 conformers" in text and "wrote 9 conformers of 3 molecules" in text


@pytest.mark.slow
def test_sdf_input_keeps_titles_and_stereo_and_no_hs_strips_hydrogens(tmp_path):
    from rdkit.Chem import AllChem

    src = tmp_path / "in.sdf"
    with Chem.SDWriter(str(src)) as writer:
        three_d = etkdg_conformers("N[C@@H](C)C(=O)O", count=1)
        three_d.SetProp("_Name", "L-Ala 3D")
        writer.write(three_d)
        flat = Chem.MolFromSmiles("C/C=C\\[C@H](F)Cl")
        AllChem.Compute2DCoords(flat)  # stereo from wedges and the 2D layout
        flat.SetProp("_Name", "")
        writer.write(flat)
    out = tmp_path / "out.sdf"
    assert main(["conformers", str(src), "-n", "2", "-o", str(out), "--no-hs"]) == 0
    records = _records(out)
    assert [r.GetProp("_Name") for r in records] == ["L-Ala 3D"] * 2 + ["mol_2"] * 2
    assert all(a.GetAtomicNum() != 1 for r in records for a in r.GetAtoms())
    assert {Chem.MolToSmiles(r) for r in records[:2]} == {"C[C@H](N)C(=O)O"}
    assert {Chem.MolToSmiles(r) for r in records[2:]} == {Chem.MolToSmiles(flat)}


@pytest.mark.slow
def test_a_mixed_batch_reports_each_failure_and_proceeds(tmp_path, capsys):
    smi = tmp_path / "mixed.smi"
    smi.write_text("CCO good1\nC1CC( broken\n*C dummy\n CCCCCCCCCCCCCCCCCCCC long\nc1ccccc1 good2\n")
    out = tmp_path / "out.sdf"
    assert main(["conformers", str(smi), "-n", "2", "-o", str(out), "--max-atoms", "40", "--dedupe-rmsd", "0"]) == 0
    err = capsys.readouterr()
    assert "skipped broken: could not parse SMILES 'C1CC('" in err.err
    assert "skipped dummy: unsupported element '*'" in err.err
    assert "skipped long: too many atoms: 62 with hydrogens" in err.err
    assert "wrote 4 conformers of 2 molecules" in err.out and "3 failed" in err.out
    assert [r.GetProp("_Name") for r in _records(out)] == ["good1"] * 2 + ["good2"] * 2


def test_exit_codes(tmp_path, capsys):
    out = tmp_path / "out.sdf"
    folder = tmp_path / "folder.sdf"
    folder.mkdir()
    assert main(["conformers", "CCO", "-n", "2", "-o", str(out)]) == 0
    out.unlink()
    assert main(["conformers", "C1CC(", "-o", str(out)]) == 1  # no molecule succeeded: nothing written
    assert "no conformers written" in capsys.readouterr().err and not out.exists()
    for argv, message in [(["-n", "0"], "at least 1"), (["-o", str(tmp_path / "x.xyz")], "must end in .sdf"),
                          (["--select", "energy", "--relax", "none"], "needs energies"),
                          (["--select", "energy", "--relax-when", "chosen"],   # in flags, not option fields
                           "--select energy needs the energy of every candidate: use --relax-when pool"),
                          (["-o", str(folder)], "is a directory")]:
        assert main(["conformers", "CCO", *argv] + ([] if "-o" in argv else ["-o", str(out)])) == 2, argv
        assert message in capsys.readouterr().err
    assert main(["conformers", str(tmp_path / "missing.smi"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["conformers", "CCO", "--relax", "gaff"])
    assert info.value.code == 2
    assert not out.exists()


@pytest.mark.slow
def test_the_command_refines_with_the_shipped_weights_in_seconds(tmp_path):
    # the check: `molediff conformers "CCO" -n 3` on CPU from the shipped refiner, in a fresh process
    from molediff.conformers.pipeline import shipped_refiner

    assert shipped_refiner() is not None, "molediff/pretrained/conformer_refiner.safetensors must ship"
    out = tmp_path / "out.sdf"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "molediff.cli", "conformers", "CCO", "-n", "3", "-o", str(out),
                             "--dedupe-rmsd", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - start < 30  # a few seconds here; generous for a loaded CI machine
    first = result.stdout.splitlines()[0]
    assert first.startswith("refiner: ") and "conformer_refiner.safetensors (shipped)" in first
    assert "refined 3 (0 kept unrefined: stereo)" in result.stdout
    records = _records(out)
    assert len(records) == 3 and {r.GetProp("conformer_index") for r in records} == {"0", "1", "2"}
    positions = [r.GetConformer().GetPositions() for r in records]
    assert all(not np.allclose(a, b) for a, b in itertools.combinations(positions, 2))


def test_the_api_uses_the_shipped_refiner_when_asked(monkeypatch):
    from molediff.conformers import pipeline

    mol = generate_conformers("CCO", n=2, refiner="shipped")
    assert mol.GetIntProp("molediff_refined") == 2 and mol.GetNumConformers() == 2
    assert generate_conformers("CCO", n=2, dedupe_rmsd=0).GetIntProp("molediff_refined") == 2  # the command's default
    assert generate_conformers("CCO", n=2, refiner=None).GetIntProp("molediff_refined") == 0   # model-free
    monkeypatch.setattr(pipeline, "_SHIPPED_MODELS", {})
    monkeypatch.setattr(pipeline, "shipped_refiner", lambda: None)
    with pytest.raises(ValueError, match="refiner='shipped', but this installation has no conformer_refiner"):
        generate_conformers("CCO", n=2, refiner="shipped")


@pytest.mark.slow
def test_the_model_free_pipeline_does_not_load_torch(tmp_path):
    out = tmp_path / "out.sdf"
    result = subprocess.run([sys.executable, "-m", "molediff.cli", "conformers", "CCO", "-n", "3", "--refiner", "none",
                             "-o", str(out), "--dedupe-rmsd", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(_records(out)) == 3
    probe = "import sys, molediff.commands.conformers, molediff.conformers.pipeline; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "False", loaded.stderr


@pytest.mark.slow
def test_ctrl_c_during_embedding_ends_the_command_with_130_and_no_output(tmp_path):
    import signal

    out = tmp_path / "out.sdf"
    long_chain = "C" * 40 + "(=O)NC1CCCCC1 long"
    proc = subprocess.Popen([sys.executable, "-m", "molediff.cli", "conformers", long_chain, "-n", "300",
                             "--refiner", "none", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(6.0)    # start-up takes 1-3 s here; embedding 900 candidates of this chain takes far longer
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert stderr.strip().splitlines()[-1] == "molediff conformers: interrupted; no partial output was written"
    assert len(stderr.strip().splitlines()) == 1 and not out.exists()
    assert not list(tmp_path.iterdir())                               # no temporary file left behind either
