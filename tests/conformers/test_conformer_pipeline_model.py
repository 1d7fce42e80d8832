"""The diffusion model inside ``generate_conformers`` and ``molediff conformers``: refinement of the pool (stereo
re-checked, hydrogens re-placed by the force field), selection by the model's score, candidates from noise, and
one-line errors for model options that cannot work. The models are tiny and trained for a few seconds in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import mmff_conformers, train_tiny_refiner
from rdkit import Chem
from rdkit.Chem import rdForceFieldHelpers

from molediff.cli import main
from molediff.conformers import ConformerDiffusion, ConformerDiffusionConfig, refine
from molediff.conformers.graph import EDGE_FEATURES, NODE_FEATURES
from molediff.conformers.pipeline import generate_conformers
from molediff.conformers.selection import SymmetricRMSD, select_conformers
from molediff.training.checkpoint import model_config_of
from molediff.training.weights import write_weights

ALANINE = "C[C@H](N)C(=O)O"


@pytest.fixture(scope="module")
def refiner():
    return train_tiny_refiner([mmff_conformers(ALANINE, k=6)], t_max=0.35, steps=300)


@pytest.fixture(scope="module")
def weights(refiner, tmp_path_factory):
    path = tmp_path_factory.mktemp("refiner") / "refiner.safetensors"
    write_weights(refiner.state_dict(), path, {"model_class": "ConformerDiffusion",
                                              "model_config": json.dumps(model_config_of(refiner))}, dtype=None)
    return path


def _smiles_from_3d(mol, conf_id: int) -> str:
    one = Chem.Mol(mol, False, conf_id)
    Chem.AssignStereochemistryFrom3D(one)
    return Chem.MolToSmiles(Chem.RemoveHs(one))


def _positions(mol) -> np.ndarray:
    return np.stack([c.GetPositions() for c in mol.GetConformers()])


def _heavy_rmsd(mol, a: np.ndarray, b: np.ndarray) -> float:
    return float(SymmetricRMSD(mol, np.stack([a, b])).from_one(0)[1])


@pytest.mark.slow
def test_the_chosen_conformers_are_refined_keeping_stereo_with_relaxed_hydrogens(refiner):
    common = dict(n=6, pool=1, seed=2, select="none", refiner=refiner, steps=5,
                  after_refinement="hydrogens", dedupe_rmsd=0)
    seeds = generate_conformers(ALANINE, sigma0=0, **common)       # the model loaded, refinement off
    refined = generate_conformers(ALANINE, sigma0=0.1, **common)
    assert seeds.GetIntProp("molediff_refined") == 0
    assert refined.GetIntProp("molediff_refined") + refined.GetIntProp("molediff_refine_reverted") == 6
    assert refined.GetIntProp("molediff_refined") >= 5
    # no model at all: the same seeds
    plain = generate_conformers(ALANINE, n=6, pool=1, seed=2, select="none", dedupe_rmsd=0, refiner=None)
    np.testing.assert_array_equal(_positions(plain), _positions(seeds))
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(refined, mmffVariant="MMFF94")
    for k in range(6):
        assert _smiles_from_3d(refined, k) == ALANINE
        moved = _heavy_rmsd(refined, _positions(seeds)[k], _positions(refined)[k])
        assert 1e-3 < moved < 0.3, moved                    # σ0 = 0.1 Å: a local correction, not a new conformer
        energy = rdForceFieldHelpers.MMFFGetMoleculeForceField(refined, props, confId=k).CalcEnergy()
        conf = refined.GetConformer(k)
        assert conf.GetDoubleProp("MMFF94_energy_kcal_mol") == pytest.approx(energy, rel=1e-9)
        # the seed was fully minimised, the refined conformer only in its hydrogens: at or above that minimum
        assert energy >= seeds.GetConformer(k).GetDoubleProp("MMFF94_energy_kcal_mol") - 1e-6
    again = generate_conformers(ALANINE, sigma0=0.1, **common)
    np.testing.assert_array_equal(_positions(again), _positions(refined))
    by_t0 = generate_conformers(ALANINE, t0=0.05, **common)
    assert not np.allclose(_positions(by_t0), _positions(refined))


@pytest.mark.slow
def test_a_refined_conformer_that_lost_its_stereo_goes_back_to_its_seed(refiner, monkeypatch):
    common = dict(n=4, pool=1, seed=1, select="none", refiner=refiner, steps=3, dedupe_rmsd=0)
    seeds = _positions(generate_conformers(ALANINE, sigma0=0, **common))
    real = refine.refine_conformers

    def mirror_every_other(*args, **kwargs):
        out = real(*args, **kwargs)
        out[::2, :, 0] *= -1.0                   # conformers 0 and 2 come back as mirror images
        return out

    monkeypatch.setattr(refine, "refine_conformers", mirror_every_other)
    mol = generate_conformers(ALANINE, sigma0=0.1, **common)
    assert mol.GetIntProp("molediff_refine_reverted") == 2 and mol.GetIntProp("molediff_refined") == 2
    assert "2 refined conformers lost the input's stereo: kept unrefined" in mol.GetProp("molediff_notes")
    got = _positions(mol)
    np.testing.assert_array_equal(got[[0, 2]], seeds[[0, 2]])
    assert not np.allclose(got[[1, 3]], seeds[[1, 3]])
    assert {_smiles_from_3d(mol, k) for k in range(4)} == {ALANINE}


def test_model_selection_takes_the_best_scored_third_then_spreads():
    rng = np.random.default_rng(0)
    mol = Chem.AddHs(Chem.MolFromSmiles("CCCCO"))
    positions = rng.normal(size=(9, mol.GetNumAtoms(), 3))
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.4, 0.6])
    chosen = select_conformers(mol, positions, None, 2, "model", scores=scores)
    assert chosen[0] == 1 and set(chosen) <= {1, 5, 3}                # the best third: scores 0.1, 0.2, 0.3
    rmsd = SymmetricRMSD(mol, positions, polar_hydrogens=True).from_one(1)
    assert chosen[1] == max((5, 3), key=lambda k: rmsd[k])             # then the farthest of that third
    assert select_conformers(mol, positions, None, 5, "model", scores=scores)[0] == 1
    assert set(select_conformers(mol, positions, None, 5, "model", scores=scores)) == {1, 5, 3, 7, 0}  # n > P/3
    with pytest.raises(ValueError, match="one model score per candidate"):
        select_conformers(mol, positions, None, 2, "model", scores=scores[:3])


@pytest.mark.slow
def test_select_model_in_the_pipeline_records_scores(refiner):
    mol = generate_conformers(ALANINE, n=3, pool=3, seed=0, select="model", refiner=refiner, steps=3, dedupe_rmsd=0)
    scores = [c.GetDoubleProp("model_score") for c in mol.GetConformers()]
    assert len(scores) == 3 and all(np.isfinite(scores)) and scores[0] == min(scores)
    assert {_smiles_from_3d(mol, k) for k in range(3)} == {ALANINE}


@pytest.mark.slow
def test_candidates_from_noise_need_a_model_trained_on_all_times(refiner):
    with pytest.raises(ValueError, match=r"init='noise' needs a model trained on all noise levels \(t_max = 1\)"):
        generate_conformers("CCO", n=2, refiner=refiner, init="noise")
    torch.manual_seed(0)
    full = ConformerDiffusion(ConformerDiffusionConfig(T=50, denoiser={"name": "egnn", "hidden": 8, "layers": 1},
                                                       node_features=NODE_FEATURES,
                                                       edge_features=EDGE_FEATURES)).double().eval()
    mol = generate_conformers("CCO", n=3, pool=2, refiner=full, init="noise", relax="none", steps=4, dedupe_rmsd=0)
    assert mol.GetNumConformers() == 3 and mol.GetProp("molediff_init") == "noise"
    assert mol.GetIntProp("molediff_candidates") == 6 and mol.GetIntProp("molediff_refined") == 0
    samples = refine.sample_conformers(full, Chem.AddHs(Chem.MolFromSmiles("CCO")), 6, steps=4, seed=0)
    assert samples.shape == (6, 9, 3) and np.isfinite(samples).all()
    np.testing.assert_allclose(samples.mean(1), 0.0, atol=1e-9)
    for x in _positions(mol):                    # the output conformers are the model's samples themselves
        assert np.abs(samples - x).max(axis=(1, 2)).min() < 1e-9
    with pytest.raises(ValueError, match="the model cannot take this molecule: elements \\['Cl'\\]"):
        generate_conformers("CCl", n=1, refiner=full, init="noise")


@pytest.mark.slow
def test_a_molecule_the_model_cannot_read_is_left_unrefined_with_a_note(refiner):
    mol = generate_conformers("CCCl", n=2, refiner=refiner, steps=3, select="model", dedupe_rmsd=0)
    assert mol.GetNumConformers() == 2 and mol.GetIntProp("molediff_refined") == 0
    notes = mol.GetProp("molediff_notes")
    assert "not refined by the model: elements ['Cl'] are not in the model's vocabulary" in notes
    assert "selected by 'diverse' instead of 'model'" in notes


@pytest.mark.slow
@pytest.mark.parametrize("kwargs, message", [
    ({"select": "model", "refiner": None}, "select='model' needs a model"),
    ({"init": "noise", "refiner": None}, "init='noise' needs a model"),
    ({"sigma0": 0.1, "refiner": None}, "no refiner given"),
    ({"passes": 2, "refiner": None}, "no refiner given"),
    ({"refiner": "R", "passes": 0}, "passes must be at least 1"),
    ({"refiner": "R", "sigma0": 0.7}, "beyond the times this model was trained on (t_max = 0.35)"),
    ({"refiner": "R", "sigma0": 0.1, "t0": 0.05}, "give sigma0 or t0, not both"),
    ({"refiner": "R", "sigma0": -1.0}, "sigma0 must be >= 0"),
    ({"refiner": "R", "t0": 1.5}, "t0 must lie in (0, 1]"),
    ({"refiner": "R", "sampler": "euler"}, "unknown sampler 'euler'"),
    ({"refiner": "R", "init": "random"}, "init must be one of etkdg, noise"),
    ({"refiner": 3}, "refiner must be a weights path or a ConformerDiffusion"),
])
def test_model_options_that_cannot_work_fail_in_one_line(refiner, kwargs, message):
    if kwargs.get("refiner") == "R":
        kwargs = {**kwargs, "refiner": refiner}
    with pytest.raises(ValueError) as info:
        generate_conformers("CCO", n=1, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        generate_conformers("CCO", n=1, refiner="missing.safetensors")


# ------------------------------------------------------------------------------------------ the command
@pytest.mark.slow
def test_the_command_refines_with_given_weights_and_says_so(weights, tmp_path, capsys):
    out = tmp_path / "out.sdf"
    assert main(["conformers", ALANINE + " ala", "-n", "2", "-o", str(out), "--refiner", str(weights),
                 "--steps", "4", "--passes", "3", "--select", "model", "--dedupe-rmsd", "0"]) == 0
    text = capsys.readouterr().out
    # T = 100: the grid σ nearest to the default 0.45 Å
    assert (f"refiner: {weights}; refining from sigma0 = 0.454 A (t0 = 0.330) from the conformers themselves, "
            f"3 passes of 4 ddim steps") in text
    assert "ala: 2 conformers" in text and "refined 2 (0 kept unrefined: stereo)" in text  # the chosen ones
    records = list(Chem.SDMolSupplier(str(out), removeHs=False))
    assert len(records) == 2 and {Chem.MolToSmiles(Chem.RemoveHs(r)) for r in records} == {ALANINE}
    assert all(np.isfinite(float(r.GetProp("model_score"))) for r in records)
    assert all(np.isfinite(float(r.GetProp("MMFF94_energy_kcal_mol"))) for r in records)


@pytest.mark.slow
def test_the_command_uses_shipped_weights_when_there_are_some(weights, tmp_path, capsys, monkeypatch):
    from molediff.conformers import pipeline

    out = tmp_path / "out.sdf"
    monkeypatch.setattr(pipeline, "shipped_refiner", lambda: weights)
    assert main(["conformers", "CCO", "-n", "1", "-o", str(out), "--steps", "2"]) == 0
    text = capsys.readouterr().out
    assert f"refiner: {weights} (shipped); refining" in text and "refined 1" in text
    assert main(["conformers", "CCO", "-n", "1", "-o", str(out), "--refiner", "none"]) == 0
    text = capsys.readouterr().out
    assert "refiner: none (--refiner none)" in text and "refined" not in text.split("refiner: none")[1]


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [
    (["--init", "noise"], "init='noise' needs a model trained on all noise levels (t_max = 1)"),
    (["--sigma0", "0.7"], "beyond the times this model was trained on"),
    (["--sampler", "euler"], "unknown --sampler 'euler'"),
    (["--steps", "0"], "--steps, --passes and --batch-size must be at least 1"),
    (["--passes", "0"], "--steps, --passes and --batch-size must be at least 1"),
])
def test_command_model_errors_are_usage_errors(weights, tmp_path, capsys, argv, message):
    out = tmp_path / "out.sdf"
    assert main(["conformers", "CCO", "-o", str(out), "--refiner", str(weights), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not out.exists()


def test_command_model_options_without_a_model_are_usage_errors(tmp_path, capsys, monkeypatch):
    from molediff.conformers import pipeline

    monkeypatch.setattr(pipeline, "shipped_refiner", lambda: None)
    out = tmp_path / "out.sdf"
    for argv, message in ((["--select", "model"], "--select model needs a refiner"),
                          (["--sigma0", "0.2"], "--sigma0 needs a refiner"),
                          (["--fresh-noise"], "--fresh-noise needs a refiner"),
                          (["--refiner", str(tmp_path / "missing.safetensors")], "do not exist")):
        assert main(["conformers", "CCO", "-o", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert not out.exists()
