"""scripts/bench_proteins.py's acceptance table (issue 20), lever-arm profile and held-out export, end to end on
tiny untrained models and the shipped held-out chains (no data folder)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import ROOT, load_script

from molediff.proteins.angle_model import ProteinAngleConfig, ProteinAngleDiffusion
from molediff.proteins.data import ProteinSet
from molediff.proteins.model import ProteinBackboneConfig, ProteinBackboneDiffusion
from molediff.proteins.reference import HELDOUT_PATH
from molediff.training.weights import write_weights


@pytest.fixture(scope="module")
def bench():
    return load_script(ROOT / "scripts" / "bench_proteins.py", "bench_proteins")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Untrained angle model of configs/protein_angles_tiny_test.yaml and a tiny untrained Cartesian EGNN."""
    tmp = tmp_path_factory.mktemp("bench_weights")
    cfg = yaml.safe_load((ROOT / "configs" / "protein_angles_tiny_test.yaml").read_text())["model"]
    torch.manual_seed(0)
    models = {"angles": ProteinAngleDiffusion(ProteinAngleConfig.from_dict(cfg)),
              "egnn": ProteinBackboneDiffusion(ProteinBackboneConfig.from_dict({
                  "T": 20, "max_length": 64, "denoiser": {"name": "egnn", "hidden": 16, "layers": 2}}))}
    out = {}
    for kind, model in models.items():
        out[kind] = tmp / f"{kind}.safetensors"
        write_weights(model.state_dict(), out[kind], {"format": "molediff-weights", "format_version": "1",
                                                      "model_class": type(model).__name__,
                                                      "model_config": json.dumps(model.config.to_dict())}, None)
    return out


def run(bench, monkeypatch, capsys, *argv: str) -> str:
    monkeypatch.setattr(sys, "argv", ["bench_proteins.py", *argv])
    bench.main()
    return capsys.readouterr().out


@pytest.mark.slow
def test_acceptance_table_has_every_row_and_metric(bench, weights, tmp_path, monkeypatch, capsys):
    out = run(bench, monkeypatch, capsys, "acceptance", "--checkpoint", str(weights["angles"]), "--baseline",
              str(weights["egnn"]), "--source", str(HELDOUT_PATH), "--lengths", "12", "20", "-n", "3",
              "--window", "20", "--calibration-chains", "5", "--threads", "1", "--steps", "3", "--baseline-steps",
              "3", "--unguided", "1", "--json", str(tmp_path / "a.json"), "--png", str(tmp_path / "a.png"))
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert "W1 bond angle" in table[0] and "helix + strand" in table[0] and "Rg/N^0.38" in table[0]
    names = [line.split("|")[1].strip() for line in table[1:]]
    assert names[0] == "**target** (issue 20)" and len(names) == 10
    assert [n.rsplit("L = ", 1)[-1] for n in names[1:7]] == ["12", "20"] * 3
    assert names[1].startswith("angle model (angles.safetensors, ddpm-3, γ 0.925, guided)")   # protein sample's
    assert names[3].startswith("angle model without guide, γ 1 (angles.safetensors, ddpm-3)")
    assert names[5].startswith("Cartesian EGNN (egnn.safetensors, dpm2m-3)")
    del names[3:5]                                          # the rows below are as without --unguided
    assert "held-out real chains (validation split, 20)" in names[5]
    assert "rebuilt at 3.80 Å" in names[6] and "independent real (θ, τ) pairs" in names[7]
    results = json.loads((tmp_path / "a.json").read_text())
    assert len(results) == 9
    model = results[names[1]]
    assert model["n_chains"] == 3 and model["ca_ca_mean"] == pytest.approx(3.8, abs=2e-3)   # exact by construction
    assert model["w1_bond_angle"] is not None and model["w1_dihedral"] is not None
    calibration = results[names[6]]
    assert calibration["ca_ca_std"] < 2e-3 and calibration["clash_chain_rate"] == 0.0
    assert results[names[7]]["n_chains"] == 5
    # the timed sampling column is filled for the sampled rows only
    assert all(line.split("|")[-2].strip() != "-" for line in table[2:8])
    assert all(line.split("|")[-2].strip() == "-" for line in table[8:])
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_training_rows_count_each_cluster_once_per_epoch(bench, tmp_path):
    held = ProteinSet.load(HELDOUT_PATH)
    assert bench._training_rows(str(HELDOUT_PATH), 0) == []               # no training chains: no rows
    labelled = held.subset(range(8))
    labelled.split, labelled.clusters = ["train"] * 8, np.array([0, 0, 0, 0, 1, 2, 2, 3])
    labelled.save(tmp_path / "t.npz")
    (every_name, every), (balanced_name, balanced) = bench._training_rows(str(tmp_path / "t.npz"), 0, epochs=5)
    assert len(every) == 8 and "(8, each once)" in every_name
    assert len(balanced) == 4 * 5 and "(4 clusters, 5 epochs' draws)" in balanced_name
    ids = {id(c): k for k, c in enumerate(every)}
    drawn = np.array([ids[id(c)] for c in balanced])
    assert np.bincount(labelled.clusters[drawn]).tolist() == [5, 5, 5, 5]


def test_lever_profile_and_heldout_export(bench, weights, tmp_path, monkeypatch, capsys):
    out = run(bench, monkeypatch, capsys, "lever", "--checkpoint", str(weights["angles"]), "--source",
              str(HELDOUT_PATH), "--lengths", "16", "40", "-n", "2", "--steps", "2", "--threads", "1")
    rows = [line.split("|")[1:3] for line in out.splitlines() if line.startswith("| 16") or line.startswith("| 40")]
    assert [(L.strip(), name.strip()) for L, name in rows] == [
        ("16", "angle model"), ("16", "real windows"), ("16", "independent pairs"),
        ("40", "angle model"), ("40", "real windows"), ("40", "independent pairs")]
    out = run(bench, monkeypatch, capsys, "heldout", "--source", str(HELDOUT_PATH), "-o", str(tmp_path / "h.npz"))
    again, shipped = ProteinSet.load(tmp_path / "h.npz"), ProteinSet.load(HELDOUT_PATH)
    assert "59 held-out chains (39 test, 20 valid" in out
    assert again.names == shipped.names and np.array_equal(again.coords, shipped.coords)


def test_sampler_sweep_prints_one_row_per_run(bench, weights, monkeypatch, capsys):
    out = run(bench, monkeypatch, capsys, "samplers", "--checkpoint", str(weights["angles"]), "--source",
              str(HELDOUT_PATH), "--length", "16", "-n", "2", "--runs", "ddpm:3", "ddpm:4:karras", "dpm2m:3",
              "--threads", "1")
    rows = [line.split("|")[1:4] for line in out.splitlines() if line.startswith("| ddpm") or line.startswith("| dpm")]
    assert [[c.strip() for c in r] for r in rows] == [["ddpm", "3", "uniform"], ["ddpm", "4", "karras"],
                                                       ["dpm2m", "3", "-"]]


@pytest.mark.slow
def test_graph_case_memory_is_its_own_process_growth(bench, monkeypatch, capsys):
    """Each case runs in a fresh process started by this (large) one; its peak memory must be its own growth, not
    this process's peak carried over fork + exec (``ru_maxrss``)."""
    block = np.ones(1024 * 2**20 // 8)                        # this process: at least 1 GiB resident
    out = run(bench, monkeypatch, capsys, "graph", "--lengths", "16", "--graphs", "full", "--hidden", "8",
              "--layers", "1", "--batch", "1", "--repeats", "1", "--device", "cpu")
    del block
    row = next(line for line in out.splitlines() if line.startswith("| 16 | full"))
    degree, ms, peak_mib = (float(c) for c in row.strip("| ").split(" | ")[2:])
    assert degree == 15 and ms > 0 and 0 <= peak_mib < 256   # a 1-layer EGNN on 16 residues: a few MiB
