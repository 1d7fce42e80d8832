"""scripts/warm_start_bonds.py: a bond model warm-started from the shipped atoms-only weights predicts exactly the
atoms-only ε for coordinates and atom types, loads through the one loader, and refuses weights that do not fit."""

from __future__ import annotations

import pytest
import torch
import yaml
from helpers import ROOT, load_script

warm_start = load_script(ROOT / "scripts" / "warm_start_bonds.py", "warm_start_bonds").warm_start


def test_the_warm_start_keeps_the_atoms_only_model_and_adds_zeroed_bond_inputs(tmp_path):
    from molediff.molecules.model import MoleculeDiffusion
    from molediff.training.weights import load_model

    out = tmp_path / "warm.safetensors"
    report = warm_start(str(ROOT / "configs" / "qm9_bonds_cpu.yaml"), "qm9_egnn", str(out))
    assert report["max_node_eps_difference"] < 1e-5
    assert any(name.endswith("edge_attr_projection.weight") for name in report["new"])
    model = load_model(MoleculeDiffusion, out)
    source = load_model(MoleculeDiffusion, "qm9_egnn").state_dict()
    state = model.state_dict()
    assert model.config.bond_orders and set(source) < set(state)
    for name, tensor in source.items():
        assert torch.equal(state[name], tensor), name
    for name in report["new"]:
        if name.endswith("edge_attr_projection.weight"):
            assert not state[name].any(), name


def test_a_bond_model_of_another_size_is_refused(tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "qm9_bonds_cpu.yaml").read_text())
    config["model"]["denoiser"]["hidden"] = 64
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="parameter .* in qm9_egnn and .* in the bond model"):
        warm_start(str(path), "qm9_egnn", str(tmp_path / "x.safetensors"))
