"""The QM9 GPU job trains a model that diffuses bonds (issue 21) on CPU with a tiny config, without RDKit on the run
stage (the prepare stage stores the bond orders), and its score stage writes the predicted bonds to SDF."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import DATA, NO_BIOTITE, ROOT, load_script

from molediff.chem.molecule import MoleculeDataset
from molediff.molecules.pretrained import load_model
from molediff.molecules.training import molecules_with_bonds

SCRIPT = ROOT / "scripts" / "gpu" / "train_qm9.py"


@pytest.mark.slow
def test_the_gpu_job_trains_a_bond_model_without_rdkit_and_scores_its_bonds(tmp_path, monkeypatch):
    data = tmp_path / "gpu_data_bonds"
    data.mkdir()
    four = molecules_with_bonds(MoleculeDataset.load(DATA / "qm9_train_first4.npz"), None, (1, 2, 3))
    four.subset([0, 1, 2, 3] * 8).save(data / "qm9_train.npz")   # what `prepare --bonds` writes: bonds stored
    four.save(data / "qm9_valid.npz")
    config = yaml.safe_load((ROOT / "configs" / "qm9_tiny_test.yaml").read_text())
    config["model"]["bond_orders"] = [1, 2, 3]
    (tmp_path / "tiny_bonds.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-c", NO_BIOTITE, str(SCRIPT), "run", "--data", str(data / "qm9_train.npz"),
           "--config", str(tmp_path / "tiny_bonds.yaml"), "--run-dir", str(tmp_path / "run"), "--minutes", "2",
           "--samples", "3", "--sample-batch", "2", "--sampler", "dpm2m", "--steps", "4", "--device", "cpu",
           "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["final_metrics"]["step"] == 30
    model = load_model(tmp_path / "out" / "qm9_egnn.safetensors")
    assert model.has_bonds and model.config.bond_orders == (1, 2, 3)
    samples = np.load(tmp_path / "out" / "samples.npz")
    bonds = samples["bond_orders"]
    assert bonds.shape == (3, samples["positions"].shape[1], samples["positions"].shape[1])
    assert (bonds == bonds.transpose(0, 2, 1)).all() and set(np.unique(bonds).tolist()) <= {0, 1, 2, 3}

    # score (CPU, RDKit): the SDF holds the sampled bonds
    from molediff.chem.io import read_molecules

    monkeypatch.setattr("molediff.data.qm9.qm9_train_smiles", lambda *a, **k: set())
    job = load_script(SCRIPT, "train_qm9_job")
    job.score(job.build_parser().parse_args(["score", "--samples", str(tmp_path / "out" / "samples.npz"),
                                             "--sdf", str(tmp_path / "s.sdf")]))
    molecules, _ = read_molecules(tmp_path / "s.sdf")
    for m in molecules:
        i = int(m.name.split("_")[-1])
        n = int(samples["counts"][i])
        np.testing.assert_array_equal(m.bond_matrix(), bonds[i, :n, :n])


def test_prepare_has_a_bonds_option():
    job = load_script(SCRIPT, "train_qm9_job_parser")
    args = job.build_parser().parse_args(["prepare", "--bonds", "--out", "x"])
    assert args.bonds and args.out == "x"
    assert not job.build_parser().parse_args(["prepare"]).bonds
