"""The GPU job scripts run end to end on CPU with a tiny config (what a session checks before spending device time)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from molediff.chem.molecule import MoleculeDataset
from molediff.molecules.pretrained import load_model
from molediff.training import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "qm9_train_first4.npz"


def test_qm9_gpu_job_trains_resumes_samples_and_records_the_validation_file(tmp_path):
    data = tmp_path / "gpu_data"
    data.mkdir()
    four = MoleculeDataset.load(DATA)
    four.subset([0, 1, 2, 3] * 8).save(data / "qm9_train.npz")   # 32 molecules: two batches of the tiny config
    shutil.copy(DATA, data / "qm9_valid.npz")                    # the prepare stage writes both splits
    cmd = [sys.executable, str(ROOT / "scripts/gpu/train_qm9.py"), "run", "--data", str(data / "qm9_train.npz"),
           "--config", str(ROOT / "configs/qm9_tiny_test.yaml"), "--run-dir", str(tmp_path / "run"),
           "--minutes", "2", "--samples", "3", "--sample-batch", "2", "--sampler", "dpm2m", "--steps", "4",
           "--device", "cpu", "--out", str(tmp_path / "out")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tmp_path)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["samples"] == 3 and not report["resumed"] and report["final_metrics"]["step"] == 30
    samples = np.load(tmp_path / "out" / "samples.npz")
    assert samples["positions"].shape[0] == 3 and np.isfinite(samples["positions"]).all()
    assert load_model(tmp_path / "out" / "qm9_egnn.safetensors").config.denoiser["hidden"] == 16
    state = json.loads((list_checkpoints(tmp_path / "run" / "checkpoints")[-1] / "state.json").read_text())
    assert state["config"]["data"]["valid_path"] == str(data / "qm9_valid.npz")

    # a second call continues the run from its checkpoint instead of starting again
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tmp_path)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["resumed"]
