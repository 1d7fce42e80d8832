"""One door for shipped weights and for loading (issue 23, item 1): ``utils.pretrained_path`` finds shipped files
without torch, ``training.weights.load_model`` takes a shipped NAME or a path for every command and API, and the
stored metadata is read once per load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import molediff.training.weights as weights
import molediff.utils as utils
from molediff.conformers.model import ConformerDiffusion
from molediff.molecules.model import MoleculeDiffusion
from molediff.training import checkpoint
from molediff.utils import pretrained_path, shipped_weights

SHIPPED = {"cifar10_unet_small", "cifarnet", "conformer_refiner", "protein_ca_angles", "qm9_bonds",
           "qm9_egnn"}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_the_lookup_lists_what_ships_and_imports_no_torch():
    assert set(shipped_weights()) >= SHIPPED
    assert pretrained_path("qm9_egnn") == utils.PRETRAINED_DIR / "qm9_egnn.safetensors"
    probe = ("import sys; from molediff.utils import pretrained_path; import molediff.conformers.pipeline as p; "
             "assert p.shipped_refiner() == pretrained_path('conformer_refiner'); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_an_unknown_name_is_a_clear_error_listing_the_shipped_weights():
    with pytest.raises(FileNotFoundError) as e:
        pretrained_path("qm9_egn")
    message = str(e.value)
    assert "'qm9_egn'" in message and "\n" not in message
    assert all(name in message for name in SHIPPED)
    with pytest.raises(FileNotFoundError) as e:   # the loader: neither a file or run directory nor shipped
        weights.load_model(MoleculeDiffusion, "qm9_egn")
    assert "do not exist" in str(e.value) and "qm9_egnn" in str(e.value)


def test_an_installation_without_the_file_says_so(tmp_path, monkeypatch):
    from molediff.conformers import pipeline

    source = pretrained_path("conformer_refiner")
    monkeypatch.setattr(utils, "PRETRAINED_DIR", tmp_path)
    assert pipeline.shipped_refiner() is None
    with pytest.raises(FileNotFoundError, match="shipped: none"):
        pretrained_path("conformer_refiner")
    shutil.copy(source, tmp_path)
    assert pipeline.shipped_refiner() == tmp_path / "conformer_refiner.safetensors"


def test_one_loader_takes_a_shipped_name_or_a_path():
    from molediff.conformers.refine import load_refiner
    from molediff.molecules.pretrained import load_model as load_molecule_model

    by_name = weights.load_model(ConformerDiffusion, "conformer_refiner")
    by_path = weights.load_model(ConformerDiffusion, pretrained_path("conformer_refiner"))
    assert not by_name.training and _same_weights(by_name, by_path)
    assert _same_weights(load_refiner("conformer_refiner"), by_path)
    assert _same_weights(load_molecule_model(), weights.load_model(MoleculeDiffusion, "qm9_bonds"))
    with pytest.raises(ValueError, match="holds a MoleculeDiffusion model, not a ConformerDiffusion"):
        weights.load_model(ConformerDiffusion, "qm9_egnn")


def test_a_file_or_folder_of_that_name_wins_over_shipped_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qm9_egnn").mkdir()
    assert weights.weights_path("qm9_egnn") == Path("qm9_egnn")
    with pytest.raises(FileNotFoundError, match="no checkpoint found in qm9_egnn"):
        weights.load_model(MoleculeDiffusion, "qm9_egnn")
    # a path with a folder or a suffix is never a shipped name
    with pytest.raises(FileNotFoundError, match="weights missing.safetensors do not exist"):
        weights.load_model(MoleculeDiffusion, "missing.safetensors")


def test_stored_metadata_is_read_once_per_load(tmp_path, monkeypatch):
    from molediff.proteins.sampling import load_protein_model

    opened, states = [], []
    real_open, real_state = weights.safe_open, weights.read_state
    monkeypatch.setattr(weights, "safe_open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    monkeypatch.setattr(weights, "read_state", lambda *a, **k: states.append(a[0]) or real_state(*a, **k))
    weights.load_model(MoleculeDiffusion, "qm9_egnn")
    assert len(opened) == 1
    opened.clear()
    load_protein_model("angles")   # the kind is checked from the same reading
    assert len(opened) == 1
    # a checkpoint: its state.json once
    from molediff.training.toy import ToyMLP, ToyMLPConfig

    model = ToyMLP(ToyMLPConfig(in_dim=4, hidden=8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint.save_checkpoint(tmp_path / "checkpoints", model, None, optimizer, None, 3, {})
    monkeypatch.setattr(ToyMLP, "config_class", ToyMLPConfig, raising=False)   # the toy model has none
    states.clear()
    loaded = weights.load_model(ToyMLP, tmp_path)
    assert len(states) == 1 and _same_weights(loaded, model)


def test_inference_loading_lives_in_weights_and_training_keeps_checkpoints():
    for name in ("load_weights", "export_weights", "export_metadata", "write_weights"):
        assert hasattr(weights, name) and not hasattr(checkpoint, name), name
    for name in ("save_checkpoint", "load_checkpoint", "find_checkpoint", "list_checkpoints"):
        assert hasattr(checkpoint, name), name
    meta = weights.read_weights("qm9_egnn").metadata
    assert meta["model_class"] == "MoleculeDiffusion" and json.loads(meta["model_config"])
