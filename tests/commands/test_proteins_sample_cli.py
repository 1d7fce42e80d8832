"""`molediff protein sample` with the angle model by default and the Cartesian EGNN on request: shipped weights,
checkpoints of either kind, and a one-line error for every bad input (length, corrupt or wrong-kind weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from molediff.cli import main
from molediff.proteins.angle_model import ProteinAngleConfig, ProteinAngleDiffusion
from molediff.proteins.io import read_ca_traces
from molediff.proteins.metrics import ca_distances
from molediff.proteins.model import ProteinBackboneConfig, ProteinBackboneDiffusion
from molediff.training.weights import write_weights


def export_untrained(model: torch.nn.Module, path: Path) -> Path:
    """An exported weights file of an untrained model, as `molediff export` writes it."""
    write_weights(model.state_dict(), path, {"format": "molediff-weights", "format_version": "1",
                                             "model_class": type(model).__name__,
                                             "model_config": json.dumps(model.config.to_dict())}, None)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    angles = ProteinAngleDiffusion(ProteinAngleConfig.from_dict({"T": 20, "hidden": 32, "layers": 2, "heads": 4,
                                                                 "max_length": 48,
                                                                 "length_histogram": {12: 2, 20: 1}}))
    egnn = ProteinBackboneDiffusion(ProteinBackboneConfig.from_dict({
        "T": 20, "max_length": 64, "length_histogram": {10: 1},
        "denoiser": {"name": "egnn", "hidden": 16, "layers": 2}}))
    return {"angles": export_untrained(angles, tmp / "angles.safetensors"),
            "egnn": export_untrained(egnn, tmp / "egnn.safetensors")}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_the_angle_model_samples_exact_chains_by_default(tmp_path, weights, capsys):
    out = tmp_path / "out"
    assert main(["protein", "sample", "--checkpoint", str(weights["angles"]), "--length", "10", "-n", "2",
                 "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sample_0.cif", "sample_0.pdb", "sample_1.cif", "sample_1.pdb"]
    chains, _, bad = read_ca_traces(out)
    assert len(chains) == 2 and not bad
    for c in chains:
        assert len(c) == 10 and np.allclose(ca_distances(c), 3.8, atol=2e-3)
    # no --length: lengths from the model's histogram
    assert main(["protein", "sample", "--checkpoint", str(weights["angles"]), "-n", "3", "--steps", "2",
                 "-o", str(tmp_path / "hist")]) == 0
    chains, _, _ = read_ca_traces(tmp_path / "hist")
    assert {len(c) for c in chains} <= {12, 20}


def test_shipped_angle_weights_are_the_default(tmp_path, weights, monkeypatch, capsys):
    import molediff.utils as utils  # the home of the shipped-weights lookup

    monkeypatch.setattr(utils, "PRETRAINED_DIR", tmp_path)
    shutil.copy(weights["angles"], tmp_path / "protein_ca_angles.safetensors")
    assert main(["protein", "sample", "--length", "8", "-n", "1", "-o", str(tmp_path / "a")]) == 0
    # no Cartesian weights ship (retired): --model egnn says so and what to pass, and samples a checkpoint given
    assert main(["protein", "sample", "--model", "egnn", "--length", "8", "-n", "1", "-o", str(tmp_path / "e")]) == 2
    assert "molediff ships none (they were retired); pass --checkpoint" in one_line_error(capsys)
    assert main(["protein", "sample", "--model", "egnn", "--checkpoint", str(weights["egnn"]), "--length", "8", "-n",
                 "1", "-o", str(tmp_path / "e")]) == 0
    chains, _, _ = read_ca_traces(tmp_path / "e")
    assert len(chains) == 1 and len(chains[0]) == 8


@pytest.mark.parametrize("length, message", [(3, "4..48"), (49, "4..48"), (0, "4..48")])
def test_lengths_outside_the_model_range_fail_in_one_line(tmp_path, weights, capsys, length, message):
    assert main(["protein", "sample", "--checkpoint", str(weights["angles"]), "--length", str(length), "-n", "1",
                 "-o", str(tmp_path / "out")]) == 2                  # a usage error (issue 23)
    err = one_line_error(capsys)
    assert message in err and "--length" in err and not (tmp_path / "out").exists()


def test_weights_of_the_other_kind_name_the_model_that_reads_them(tmp_path, weights, capsys):
    assert main(["protein", "sample", "--checkpoint", str(weights["egnn"]), "--length", "8", "-n", "1",
                 "-o", str(tmp_path / "out")]) == 1
    err = one_line_error(capsys)
    assert "Cartesian Cα EGNN" in err and "--model egnn" in err
    assert main(["protein", "sample", "--model", "egnn", "--checkpoint", str(weights["angles"]), "--length", "8",
                 "-n", "1", "-o", str(tmp_path / "out")]) == 1
    err = one_line_error(capsys)
    assert "angle model" in err and "--model angles" in err


def test_corrupt_or_foreign_checkpoints_fail_in_one_line(tmp_path, weights, capsys):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all" * 10)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(weights["angles"].read_bytes()[:-500])
    empty_run = tmp_path / "run"
    (empty_run / "checkpoints" / "step_00000001").mkdir(parents=True)
    (empty_run / "checkpoints" / "step_00000001" / "state.json").write_text("{ not json")
    cases = [(garbage, "not a readable safetensors file"), (truncated, "corrupt"),
             (tmp_path / "missing.safetensors", "do not exist"), (empty_run, "")]
    for path, message in cases:
        assert main(["protein", "sample", "--checkpoint", str(path), "--length", "8", "-n", "1",
                     "-o", str(tmp_path / "out")]) == 1, path
        err = one_line_error(capsys)
        assert message in err and str(path) in err, err
    # weights of a model that is not a protein model (the shipped QM9 model)
    from molediff.training.weights import PRETRAINED_DIR

    other = PRETRAINED_DIR / "qm9_egnn.safetensors"
    assert main(["protein", "sample", "--checkpoint", str(other), "-n", "1", "-o", str(tmp_path / "out")]) == 1
    assert "not a protein model" in one_line_error(capsys)


def test_the_guide_and_noise_scale_are_the_angle_models_defaults_and_can_be_turned_off(tmp_path, weights, capsys):
    base = ["protein", "sample", "--checkpoint", str(weights["angles"]), "--length", "16", "-n", "1",
            "--steps", "3"]
    runs = {"default": [], "explicit": ["--guide", "--noise-scale", "0.925"], "no-guide": ["--no-guide"],
            "gamma 1": ["--noise-scale", "1"]}
    text = {}
    for name, flags in runs.items():
        assert main([*base, *flags, "-o", str(tmp_path / name)]) == 0
        text[name] = (tmp_path / name / "sample_0.cif").read_text()
    assert text["default"] == text["explicit"]
    assert text["no-guide"] != text["default"] and text["gamma 1"] != text["default"]
    capsys.readouterr()
    assert main(["protein", "sample", "--checkpoint", str(weights["egnn"]), "--model", "egnn", "--guide",
                 "-o", str(tmp_path / "e")]) == 2
    assert "the chain guide acts on angles" in one_line_error(capsys)
    assert not (tmp_path / "e").exists()
