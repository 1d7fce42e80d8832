"""scripts/gpu/train_proteins.py, the job of both protein models: ``prepare`` on the fixture structures keeps the
CPU tasks' homology split; ``run`` end to end on CPU with tiny configs (``--model egnn`` on synthetic helices,
``--model angles`` on the prepared fixture chains), with biotite and RDKit made unimportable (the GPU machine has
neither), a second call resuming; the angle model's GPU config continues the shipped weights; usage errors come
before any training. Also the ``proteins`` task's numpy-only ``.npz`` data source."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from helpers import DATA, NO_BIOTITE, ROOT, assert_every_option_explained, load_script
from safetensors.torch import load_file

from molediff.pointcloud import size_histogram
from molediff.proteins.angle_model import ProteinAngleConfig, ProteinAngleDiffusion
from molediff.proteins.data import ProteinChain, ProteinSet, load_proteins
from molediff.proteins.model import ProteinBackboneDiffusion
from molediff.proteins.sampling import load_protein_model, sampling_for
from molediff.training import list_checkpoints
from molediff.training.config import load_config
from molediff.training.weights import load_model
from molediff.utils import pretrained_path

SCRIPT = ROOT / "scripts" / "gpu" / "train_proteins.py"
STRUCTURES = DATA / "proteins" / "real"   # 18 real Cα chains: 15 train, 1 valid, 2 test under the default split
ANGLES_TINY = ROOT / "configs" / "protein_angles_tiny_test.yaml"
ANGLES_GPU = ROOT / "configs" / "protein_angles_gpu.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def job():
    return load_script(SCRIPT, "train_proteins")


@pytest.fixture(scope="module")
def prepared(job, tmp_path_factory):
    """The prepare stage's proteins.npz from the fixture structures (biotite, here)."""
    out = tmp_path_factory.mktemp("gpu_data")
    job.main(["prepare", "--source", str(STRUCTURES), "--out", str(out)])
    return out / "proteins.npz"


def run_job(*argv: str, cwd) -> subprocess.CompletedProcess:
    """The job as the device runs it: a fresh process in which biotite and RDKit cannot be imported."""
    return subprocess.run([sys.executable, "-c", NO_BIOTITE, str(SCRIPT), *argv], capture_output=True, text=True,
                          cwd=cwd, env=ENV)


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
    s.clusters = np.array([0, 1, 2])                                    # five chains, three labels
    s.save(tmp_path / "bad_clusters.npz")
    with pytest.raises(ValueError, match="not a consistent protein set: .* 3 clusters"):
        load_proteins({"path": str(tmp_path / "bad_clusters.npz"), "min_length": 1})


def test_prepare_keeps_the_train_and_valid_chains_of_the_cpu_tasks_split(prepared):
    chains = ProteinSet.load(prepared)
    assert sorted(set(chains.split)) == ["train", "valid"]             # the test chains stay here
    for config in ("protein_angles_cpu.yaml",):                        # what `molediff train` reads
        data = load_config(ROOT / "configs" / config).data
        for split in ("train", "valid"):
            cpu = load_proteins({**data, "path": str(STRUCTURES), "split": split})
            assert chains.select(split).names == cpu.names
            assert np.array_equal(chains.select(split).coords, cpu.coords)
    test = load_proteins({"path": str(STRUCTURES), "split": "test"})
    assert len(test) == 2 and not set(test.names) & set(chains.names)
    assert len(chains) == 16


def test_angle_gpu_config_has_the_cpu_models_architecture_and_data():
    cpu, gpu = load_config(ROOT / "configs" / "protein_angles_cpu.yaml"), load_config(ANGLES_GPU)
    assert gpu.task == cpu.task == "protein_angles" and gpu.model == cpu.model and gpu.bf16
    assert {**gpu.data, "path": cpu.data["path"]} == cpu.data


def test_every_option_is_explained(job):
    assert_every_option_explained(job)


def test_run_refuses_bad_options_before_training(job, prepared, tmp_path):
    common = ["run", "--data", str(prepared), "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out"),
              "--device", "cpu"]
    with pytest.raises(SystemExit, match="trains the angle model .* run it with --model angles"):
        job.main([*common, "--model", "egnn", "--config", str(ANGLES_TINY)])
    with pytest.raises(SystemExit, match="task 'toy'; this job trains task 'protein_angles' \\(--model angles\\) or "
                                         "'proteins' \\(--model egnn\\)"):
        job.main([*common, "--config", str(ROOT / "configs" / "toy.yaml")])
    with pytest.raises(SystemExit, match=r"--lengths must lie in 4\.\.48 for this angle model .*, got \[30, 49\]"):
        job.main([*common, "--config", str(ANGLES_TINY), "--lengths", "30", "49"])
    with pytest.raises(SystemExit, match="--model egnn has no default config .*: pass --config"):
        job.main([*common, "--model", "egnn"])
    with pytest.raises(SystemExit, match=r"--minutes must lie in \(0, 9\]"):
        job.main([*common, "--minutes", "10"])
    with pytest.raises(SystemExit, match="--samples must be at least 1"):
        job.main([*common, "--samples", "0"])
    with pytest.raises(SystemExit, match="run: config file .*missing.yaml does not exist"):
        job.main([*common, "--config", str(tmp_path / "missing.yaml")])
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_angle_job_trains_exports_fp32_samples_and_resumes_without_biotite(prepared, tmp_path):
    argv = ["run", "--model", "angles", "--data", str(prepared), "--config", str(ANGLES_TINY), "--run-dir",
            str(tmp_path / "run"), "--minutes", "2", "--samples", "2", "--lengths", "30", "48", "--sample-batch", "3",
            "--steps", "4", "--device", "cpu", "--out", str(tmp_path / "out")]
    done = run_job(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"] == "angles" and report["model_class"] == "ProteinAngleDiffusion"
    assert not report["resumed"] and report["init"] is None and report["final_metrics"]["step"] == 6
    assert report["steps_this_run"] == 6 and report["chains_per_s"] > 0 and report["sampling_chains_per_s"] > 0
    assert report["samples"] == 4 and report["non_finite_chains"] == 0 and set(report["geometry"]) == {"30", "48"}
    assert report["geometry"]["48"]["ca_ca_std"] < 1e-4                 # every Cα–Cα is 3.80 Å by construction

    weights = tmp_path / "out" / "protein_ca_angles.safetensors"
    assert report["weights"] == {"file": weights.name, "precision": "fp32", "mib": weights.stat().st_size / 2**20}
    assert all(t.dtype == torch.float32 for t in load_file(weights).values())
    model = load_model(ProteinAngleDiffusion, weights)
    train = load_proteins({"path": str(prepared), "split": "train"})
    assert model.config.hidden == 32 and model.config.length_histogram == size_histogram(
        np.minimum(train.lengths, 48))                                     # the train split's windows only
    # the exported file is what sampled: the loader of `protein sample` redraws the same chains from the same seeds
    # in the same batches (float32 rounding that depends on the padding grows through 4 DDPM steps otherwise)
    samples = np.load(tmp_path / "out" / "samples.npz")
    assert samples["lengths"].tolist() == [30, 30, 48, 48] and samples["coords"].shape == (4, 48, 3)
    assert report["sampler"] == "ddpm-4, γ 0.925, guided"                 # protein sample's noise scale and guide
    again = load_protein_model("angles", weights).sample_chains([30, 30, 48, 48], seeds=range(4), batch_size=3,
                                                                  **sampling_for("angles", 1000, "ddpm", 4).options())
    for i, chain in enumerate(again):
        assert np.allclose(samples["coords"][i, :len(chain)], chain, atol=1e-5)
    assert (samples["coords"][:2, 30:] == 0).all()

    # a second call continues the run from its checkpoint instead of starting again
    done = run_job(*argv[:-2], "--out", str(tmp_path / "out2"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads((tmp_path / "out2" / "report.json").read_text())
    assert second["resumed"] and second["start_step"] == 6


@pytest.mark.slow
def test_angle_gpu_config_continues_the_shipped_weights(prepared, tmp_path):
    """configs/protein_angles_gpu.yaml with ``--init`` the shipped model, one step on CPU: the exported EMA weights
    are the shipped ones moved by one warm-up step, far from a fresh model's."""
    chains = ProteinSet.load(prepared)
    copies = chains.subset(list(range(len(chains))) * 5)       # 75 train chains: a batch of 64
    copies.clusters = np.arange(len(copies))                    # the config draws one chain per cluster
    copies.save(tmp_path / "proteins.npz")
    shipped = pretrained_path("protein_ca_angles")
    done = run_job("run", "--data", str(tmp_path / "proteins.npz"), "--init", str(shipped), "--train-steps", "1",
                   "--run-dir", str(tmp_path / "run"), "--minutes", "2", "--samples", "1", "--lengths", "40",
                   "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["config"] == str(ANGLES_GPU) and report["init"] == str(shipped) and report["steps_this_run"] == 1
    assert report["parameters"] == 564354 and report["batch_size"] == 64
    exported = load_file(tmp_path / "out" / "protein_ca_angles.safetensors")
    start = load_file(shipped)
    assert exported.keys() == start.keys()
    moved = max(float((exported[k] - start[k]).abs().max()) for k in start)
    torch.manual_seed(0)
    fresh = ProteinAngleDiffusion(ProteinAngleConfig.from_dict(yaml.safe_load(ANGLES_GPU.read_text())["model"]))
    fresh_gap = max(float((v - start[k]).abs().max()) for k, v in fresh.state_dict().items() if k in start)
    assert moved < 1e-4 < 0.1 < fresh_gap


@pytest.mark.slow
def test_protein_gpu_job_trains_resumes_and_samples_without_biotite(tmp_path):
    data = tmp_path / "gpu_data"
    data.mkdir()
    helix_set([24, 26, 28, 30, 32, 34, 36, 40, 30], ["train"] * 8 + ["valid"]).save(data / "proteins.npz")
    argv = ["run", "--data", str(data / "proteins.npz"), "--config",                  # --model: the config's
            str(ROOT / "configs/protein_tiny_test.yaml"), "--run-dir", str(tmp_path / "run"), "--minutes", "2",
            "--samples", "2", "--lengths", "30", "40", "--sample-batch", "2", "--sampler", "dpm2m", "--steps", "4",
            "--device", "cpu", "--out", str(tmp_path / "out")]
    done = run_job(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"] == "egnn" and report["model_class"] == "ProteinBackboneDiffusion"
    assert report["samples"] == 4 and not report["resumed"] and report["final_metrics"]["step"] == 20
    assert report["non_finite_chains"] == 0 and set(report["geometry"]) == {"30", "40"}
    samples = np.load(tmp_path / "out" / "samples.npz")
    assert samples["coords"].shape == (4, 40, 3) and samples["lengths"].tolist() == [30, 30, 40, 40]
    assert np.isfinite(samples["coords"]).all() and (samples["coords"][:2, 30:] == 0).all()
    model = load_model(ProteinBackboneDiffusion, tmp_path / "out" / "protein_ca_egnn.safetensors")
    assert model.config.denoiser["hidden"] == 16 and model.config.length_histogram == {
        24: 1, 26: 1, 28: 1, 30: 1, 32: 1, 34: 1, 36: 1, 40: 1}             # the train split only
    state = json.loads((list_checkpoints(tmp_path / "run" / "checkpoints")[-1] / "state.json").read_text())
    assert state["config"]["data"]["path"] == str(data / "proteins.npz")

    # a second call continues the run from its checkpoint instead of starting again
    done = run_job(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["resumed"]
