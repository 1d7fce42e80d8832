"""scripts/gpu/train_conformers.py on CPU with the tiny config: ``prepare`` writes QM9 molecules with precomputed
graph features; ``run`` (with RDKit and biotite unimportable, as on the GPU machine) trains the refiner from them,
exports weights that refine, reports the held-out ε-loss, resumes and starts from --init; bad inputs fail in one
line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import NO_BIOTITE, ROOT, assert_every_option_explained, load_script

from molediff.chem.molecule import MoleculeDataset
from molediff.conformers.graph import mol_graph, molecule_to_rdkit
from molediff.conformers.model import ConformerDiffusion
from molediff.conformers.training import GraphStore
from molediff.training import list_checkpoints
from molediff.training.weights import load_model

SCRIPT = ROOT / "scripts" / "gpu" / "train_conformers.py"
TINY = ROOT / "configs" / "conformers_tiny_test.yaml"


@pytest.fixture(scope="module")
def job():
    return load_script(SCRIPT, "train_conformers_job")


@pytest.fixture(scope="module")
def prepared(job, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_data")
    job.main(["prepare", "--out", str(out), "--limit", "40"])
    return out


@pytest.mark.slow
def test_prepare_writes_molecules_and_their_graphs_in_the_same_order(prepared, capsys):
    from molediff.data.qm9 import load_qm9

    for split in ("train", "valid"):
        molecules = MoleculeDataset.load(prepared / f"conformers_qm9_{split}.npz")
        graphs = GraphStore.load(prepared / f"conformers_qm9_{split}_graphs.npz")
        graphs.check_matches(molecules)
        assert 30 <= len(molecules) <= 40                     # the first 40, less those whose graph fails
        with np.load(prepared / f"conformers_qm9_{split}_graphs.npz") as f:   # numpy alone reads it
            assert sorted(f.files) == ["atom_offsets", "node", "pair_offsets", "pairs"]
        first = load_qm9(split)
        names = [first[i].name for i in range(40)]
        assert [m.name for m in molecules] == [n for n in names if n in set(molecules.names.tolist())]
        for i in (0, len(molecules) - 1):                    # each stored graph is the one RDKit builds
            expect = mol_graph(molecule_to_rdkit(molecules[i]))
            lo, hi = graphs.atom_offsets[i], graphs.atom_offsets[i + 1]
            np.testing.assert_array_equal(graphs.node[lo:hi], expect.node)
            codes = graphs.pairs[graphs.pair_offsets[i]:graphs.pair_offsets[i + 1]].reshape(hi - lo, hi - lo)
            np.testing.assert_array_equal(codes, expect.pairs)
            np.testing.assert_allclose(molecules[i].positions, first[names.index(molecules[i].name)].positions)


@pytest.mark.slow
def test_run_trains_without_rdkit_and_returns_weights_that_refine(prepared, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", NO_BIOTITE, str(SCRIPT), "run", "--data", str(prepared / "conformers_qm9_train.npz"),
           "--config", str(TINY), "--run-dir", str(tmp_path / "run"), "--minutes", "2", "--eval-molecules", "8",
           "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert not report["resumed"] and (report["start_step"], report["final_step"]) == (0, 12)
    assert report["t_max"] == 0.35 and report["molecules_per_s"] > 0 and report["weights"]["returned"]
    for split in ("valid", "train"):
        errors = report["heldout_eps_loss"][split]["eps_mse_by_sigma_angstrom"]
        assert set(errors) == {"0.05", "0.1", "0.2", "0.3"} and all(0 < e < 5 for e in errors.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(report["out_files"])
    state = json.loads((list_checkpoints(tmp_path / "run" / "checkpoints")[-1] / "state.json").read_text())
    assert state["config"]["data"]["graphs"] == str(prepared / "conformers_qm9_train_graphs.npz")

    # the returned weights are a refiner for the pipeline (here, with RDKit)
    from molediff.conformers.pipeline import generate_conformers

    model = load_model(ConformerDiffusion, out / "conformer_refiner.safetensors")
    assert model.config.denoiser["hidden"] == 16 and model.config.node_features > 0
    mol = generate_conformers("CC(=O)NC", n=2, pool=1, refiner=model, steps=3, dedupe_rmsd=0)
    assert mol.GetNumConformers() == 2 and mol.GetIntProp("molediff_refined") + \
        mol.GetIntProp("molediff_refine_reverted") == 2


@pytest.mark.slow
def test_run_resumes_and_starts_from_init(prepared, tmp_path, job):
    common = ["--data", str(prepared / "conformers_qm9_train.npz"), "--config", str(TINY), "--minutes", "2",
              "--eval-molecules", "0", "--device", "cpu"]
    job.main(["run", *common, "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "o1")])
    job.main(["run", *common, "--train-steps", "16", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "o2")])
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert report["resumed"] and (report["start_step"], report["final_step"]) == (12, 16)
    assert report["heldout_eps_loss"] == {"valid": None, "train": None}

    weights = tmp_path / "o2" / "conformer_refiner.safetensors"
    job.main(["run", *common, "--init", str(weights), "--train-steps", "1", "--run-dir", str(tmp_path / "again"),
              "--out", str(tmp_path / "o3")])
    report = json.loads((tmp_path / "o3" / "report.json").read_text())
    assert report["init"] == str(weights) and report["final_step"] == 1
    with pytest.raises(SystemExit, match="does not fit this model.s architecture: parameter") as e:
        job.main(["run", *common[:2], "--config", str(ROOT / "configs" / "conformers_gpu.yaml"), "--init",
                  str(weights), "--run-dir", str(tmp_path / "big"), "--out", str(tmp_path / "o4")])
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_bad_inputs_fail_in_one_line(prepared, tmp_path, job):
    train = prepared / "conformers_qm9_train.npz"
    base = ["run", "--config", str(TINY), "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--out",
            str(tmp_path / "o")]
    cases = [(["--data", str(tmp_path / "missing.npz")], "--data .*missing.npz does not exist"),
             (["--data", str(train), "--graphs", str(tmp_path / "g.npz")], "--graphs .*g.npz does not exist"),
             (["--data", str(train), "--graphs", str(prepared / "conformers_qm9_valid_graphs.npz")],
              "do not fit the dataset|hold .* molecules but the dataset has"),
             (["--data", str(train), "--config", str(ROOT / "configs" / "qm9_tiny_test.yaml")],
              "is a config for task 'molecules', not 'conformers'"),
             (["--data", str(train), "--minutes", "9"], "--minutes must lie in"),
             (["--data", str(train), "--graphs", str(train)], "is not a conformer graph file")]
    for argv, message in cases:
        with pytest.raises(SystemExit, match=message) as e:
            job.main([*base, *argv])
        assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "o").exists()


def test_every_option_is_explained(job):
    assert_every_option_explained(job)
