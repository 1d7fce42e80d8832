"""scripts/gpu/train_proteins.py's ``run`` stage end to end on CPU with a tiny config and a few synthetic helices,
with biotite and RDKit made unimportable (the GPU machine has neither); a second call resumes. Also the
``proteins`` task's numpy-only ``.npz`` data source."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import NO_BIOTITE, ROOT

from molediff.proteins.data import ProteinChain, ProteinSet, load_proteins
from molediff.proteins.model import ProteinBackboneDiffusion
from molediff.training import list_checkpoints
from molediff.training.weights import load_model

SCRIPT = ROOT / "scripts" / "gpu" / "train_proteins.py"


def helix(n: int, seed: int) -> np.ndarray:
    """An ideal α-helix Cα trace [n, 3] (rise 1.5 Å, 100° a residue, radius 2.3 Å: Cα–Cα ≈ 3.8 Å), randomly
    rotated and shifted."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    x = np.stack([2.3 * np.cos(np.radians(100) * k), 2.3 * np.sin(np.radians(100) * k), 1.5 * k], 1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return (x @ q.T + rng.normal(scale=5, size=3)).astype(np.float32)


def helix_set(lengths, splits) -> ProteinSet:
    chains = [ProteinChain(helix(n, i), "A" * n, f"helix{i}.pdb", "A") for i, n in enumerate(lengths)]
    s = ProteinSet.from_chains(chains)
    s.split = list(splits)
    return s


def test_prepared_npz_is_read_with_numpy_alone(tmp_path):
    s = helix_set([24, 30, 36, 12, 28], ["train", "train", "valid", "train", "test"])
    s.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as z:
        assert np.diff(z["offsets"]).tolist() == [24, 30, 36, 12, 28]
    train = load_proteins({"path": str(tmp_path / "p.npz"), "split": "train", "min_length": 20})
    assert train.lengths.tolist() == [24, 30]                        # the 12-residue chain is under min_length
    assert np.allclose(train[1].coords, s[1].coords) and train.split == ["train", "train"]
    assert len(load_proteins({"path": str(tmp_path / "p.npz"), "split": "all", "min_length": 1})) == 5
    with pytest.raises(ValueError, match="no valid chain"):
        load_proteins({"path": str(tmp_path / "p.npz"), "split": "valid", "max_length": 30, "min_length": 1})
    with pytest.raises(FileNotFoundError):
        load_proteins({"path": str(tmp_path / "missing.npz")})
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a prepared protein set"):
        load_proteins({"path": str(tmp_path / "other.npz")})
    unsplit = helix_set([24], [])
    unsplit.save(tmp_path / "unsplit.npz")
    with pytest.raises(ValueError, match="no split labels"):
        load_proteins({"path": str(tmp_path / "unsplit.npz"), "min_length": 1})


@pytest.mark.slow
def test_protein_gpu_job_trains_resumes_and_samples_without_biotite(tmp_path):
    data = tmp_path / "gpu_data"
    data.mkdir()
    helix_set([24, 26, 28, 30, 32, 34, 36, 40, 30], ["train"] * 8 + ["valid"]).save(data / "proteins.npz")
    cmd = [sys.executable, "-c", NO_BIOTITE, str(SCRIPT), "run", "--data", str(data / "proteins.npz"),
           "--config", str(ROOT / "configs/protein_tiny_test.yaml"), "--run-dir", str(tmp_path / "run"),
           "--minutes", "2", "--samples", "2", "--lengths", "30", "40", "--sample-batch", "2",
           "--sampler", "dpm2m", "--steps", "4", "--device", "cpu", "--out", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["samples"] == 4 and not report["resumed"] and report["final_metrics"]["step"] == 20
    assert report["non_finite_chains"] == 0 and set(report["geometry"]) == {"30", "40"}
    samples = np.load(tmp_path / "out" / "samples.npz")
    assert samples["coords"].shape == (4, 40, 3) and samples["lengths"].tolist() == [30, 30, 40, 40]
    assert np.isfinite(samples["coords"]).all() and (samples["coords"][:2, 30:] == 0).all()
    model = load_model(ProteinBackboneDiffusion, tmp_path / "out" / "protein_backbone.safetensors")
    assert model.config.denoiser["hidden"] == 16 and model.config.length_histogram == {
        24: 1, 26: 1, 28: 1, 30: 1, 32: 1, 34: 1, 36: 1, 40: 1}             # the train split only
    state = json.loads((list_checkpoints(tmp_path / "run" / "checkpoints")[-1] / "state.json").read_text())
    assert state["config"]["data"]["path"] == str(data / "proteins.npz")

    # a second call continues the run from its checkpoint instead of starting again
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["resumed"]
