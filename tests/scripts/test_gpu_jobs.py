"""The GPU job scripts run end to end on CPU with a tiny config (what a session checks before spending device time),
and the library's run set-up every job uses: ``configure_run``'s ``changes`` and ``prepare_training``'s ``--init``
rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import DATA as FIXTURES
from helpers import ROOT

from molediff.chem.molecule import MoleculeDataset
from molediff.molecules.pretrained import load_model
from molediff.training import list_checkpoints, train
from molediff.training.tasks import configure_run, prepare_training

DATA = FIXTURES / "qm9_train_first4.npz"


@pytest.mark.slow
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
    assert report["init"] is None
    samples = np.load(tmp_path / "out" / "samples.npz")
    assert samples["positions"].shape[0] == 3 and np.isfinite(samples["positions"]).all()
    assert load_model(tmp_path / "out" / "qm9_egnn.safetensors").config.denoiser["hidden"] == 16
    state = json.loads((list_checkpoints(tmp_path / "run" / "checkpoints")[-1] / "state.json").read_text())
    assert state["config"]["data"]["valid_path"] == str(data / "qm9_valid.npz")

    # a second call continues the run from its checkpoint instead of starting again
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tmp_path)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["resumed"]


def test_configure_run_changes_only_the_keys_named(tmp_path):
    toy = ROOT / "configs" / "toy.yaml"
    base = configure_run(toy)
    config = configure_run(toy, out_dir=tmp_path, steps=7, time_limit_s=60,
                           changes={"data": {"n": 64}, "optim": {"lr": 1e-3}})
    assert (config.out_dir, config.steps, config.time_limit_s) == (str(tmp_path), 7, 60.0)
    assert config.data == {**base.data, "n": 64} and config.model == base.model
    assert config.optim.lr == 1e-3 and config.optim.ema_decay == base.optim.ema_decay
    assert configure_run(base) is base                                   # nothing to change
    with pytest.raises(ValueError, match="unknown config key 'optim.lrr' in section 'optim'; allowed: betas"):
        configure_run(toy, changes={"optim": {"lrr": 1.0}})
    with pytest.raises(ValueError, match="optim.lr must be positive"):
        configure_run(toy, changes={"optim": {"lr": -1.0}})
    with pytest.raises(ValueError, match="--steps must be at least 1"):
        configure_run(toy, steps=0)


@pytest.mark.slow
def test_prepare_training_initialises_a_fresh_run_and_resumes_a_started_one(tmp_path):
    toy = ROOT / "configs" / "toy.yaml"
    task, config, found = prepare_training(toy, out_dir=tmp_path / "first", steps=2)
    assert found is None
    train(task, config)
    source = load_model_state(tmp_path / "first")

    # a fresh run starts from the --init weights, with its own data and optimiser settings
    task, config, found = prepare_training(toy, resume=True, out_dir=tmp_path / "second", steps=1,
                                           init=tmp_path / "first", changes={"data": {"n": 64}, "optim": {"lr": 1e-3}})
    assert found is None and config.data["n"] == 64
    assert all(torch.equal(v, source[k]) for k, v in task.model.state_dict().items())
    train(task, config, resume=True)

    # a run with a checkpoint resumes from it; --init is not used (not even read)
    task, config, found = prepare_training(toy, resume=True, out_dir=tmp_path / "second", steps=2,
                                           init=tmp_path / "nowhere")
    assert found == list_checkpoints(tmp_path / "second" / "checkpoints")[-1]
    with pytest.raises(ValueError, match="does not fit this model's architecture: parameter"):
        prepare_training(toy, out_dir=tmp_path / "third", init=tmp_path / "first", changes={"model": {"hidden": 16}})


def load_model_state(run_dir) -> dict:
    """The EMA weights of the run's newest checkpoint (what ``--init`` reads from a run directory)."""
    from molediff.training.toy import ToyMLP
    from molediff.training.weights import load_model as load_weights

    return load_weights(ToyMLP, run_dir).state_dict()
