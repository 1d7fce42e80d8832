"""The Cα backbone model: equivariance with its edge features, loss and sampling shapes, a tiny training run
on the fixture chains and `molediff protein sample` from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import DATA

from molediff.cli import main
from molediff.proteins.model import ProteinBackboneConfig, ProteinBackboneDiffusion
from molediff.proteins.training import build_task, collate_chains
from molediff.testing import assert_equivariant

FIXTURES = DATA / "proteins" / "real"
SMALL = {"T": 20, "denoiser": {"name": "egnn", "hidden": 16, "layers": 2, "aggregation_normalisation": 8.0}}


def _model(**changes) -> ProteinBackboneDiffusion:
    torch.manual_seed(0)
    return ProteinBackboneDiffusion(ProteinBackboneConfig.from_dict({**SMALL, **changes}))


def test_denoiser_with_sequence_features_is_equivariant():
    model = _model().double().eval()
    mask = torch.arange(9)[None] < torch.tensor([[9], [6]])
    pos = torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * mask[..., None]
    h = model.node_features(mask, torch.float64)
    edge = model.edge_features(mask, torch.float64)
    assert h.shape == (2, 9, model.config.node_features) and edge.shape == (2, 9, 9, model.config.edge_features)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    assert_equivariant(model.denoiser, {"pos": pos, "h": h, "t": t, "mask": mask, "edge_attr": edge}, atol=1e-8)


@pytest.mark.parametrize("graph", [{}, {"graph": "radius", "graph_radius": 3.0}])
def test_v_prediction_reads_the_network_as_v_and_is_exact_at_pure_noise(graph):
    """ε̂ = σ_t z + α_t F with the same network F as the ε-model; at α_t = 0 ε̂ is z exactly (what a radius graph
    cannot compute from local messages), and the ε-model stays equivariant."""
    eps_model = _model(**graph).double()
    v_model = _model(prediction="v", **graph).double()
    v_model.load_state_dict(eps_model.state_dict())
    mask = torch.arange(9)[None] < torch.tensor([[9], [6]])
    z = v_model.space.project(torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(2),
                                          dtype=torch.float64), mask)
    h, e = v_model.node_features(mask, torch.float64), v_model.edge_features(mask, torch.float64)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    f = eps_model.eps_fn(mask, given_features=h, edge_attr=e)(z, t)
    eps = v_model.eps_fn(mask, given_features=h, edge_attr=e)(z, t)
    a, s = v_model.schedule.alpha(t).view(-1, 1, 1), v_model.schedule.sigma(t).view(-1, 1, 1)
    torch.testing.assert_close(eps, s * z + a * f)
    t_end = torch.ones(2, dtype=torch.float64)
    assert float(v_model.schedule.alpha(t_end).max()) < 1e-2
    eps_end = v_model.eps_fn(mask, given_features=h, edge_attr=e)(z, t_end)
    assert (eps_end - z).abs().max() < 1e-2 * (f.abs().max() + 1)
    R = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64))[0]
    rotated = v_model.eps_fn(mask, given_features=h, edge_attr=e)(z @ R.T, t)
    torch.testing.assert_close(rotated, eps @ R.T)
    with pytest.raises(ValueError, match="prediction"):
        ProteinBackboneConfig.from_dict({**SMALL, "prediction": "x0"})


def test_features_know_the_order_and_vanish_at_padding():
    model = _model()
    mask = torch.arange(5)[None] < torch.tensor([[5], [3]])
    h, e = model.node_features(mask), model.edge_features(mask)
    assert (h[1, 3:] == 0).all() and (e[1, 3:] == 0).all() and (e[1, :, 3:] == 0).all()
    assert e[0, 0, 1, 1] == 1 and e[0, 0, 2, 1] == 0      # chain-neighbour flag
    assert e[0, 0, 1, 0] == -e[0, 1, 0, 0] != 0          # the signed offset tells N → C from C → N
    assert not torch.equal(h[0, 0], h[0, 4])


def test_loss_and_sample_shapes_and_per_seed_sampling():
    model = _model()
    batch = collate_chains([np.random.default_rng(k).normal(size=(n, 3)).astype(np.float32) * 10
                            for k, n in enumerate((12, 7, 9))])
    loss = model(batch.coords, batch.mask)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full_like(batch.coords, float("nan")), batch.mask)
    coords, mask = model.sample([5, 8], steps=4, seeds=[3, 4])
    assert coords.shape == (2, 8, 3) and mask.sum(1).tolist() == [5, 8]
    assert coords[mask].mean(0).abs().max() < 1e-4          # zero centre of mass, in Å
    chains = model.sample_chains([8, 5], seeds=[4, 3], batch_size=1, steps=4)
    assert [c.shape for c in chains] == [(8, 3), (5, 3)]
    np.testing.assert_allclose(chains[0], coords[1].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="got 1 seeds for 2 chains"):
        model.sample_chains([8, 5], seeds=[4])
    with pytest.raises(ValueError, match=r"2\.\.256"):
        model.sample([5, 257], steps=2)
    with pytest.raises(ValueError, match="histogram"):
        model.sample_lengths(3)


def test_config_rejects_widths_set_by_the_model():
    with pytest.raises(ValueError, match="edge_features"):
        ProteinBackboneConfig.from_dict({"denoiser": {"name": "egnn", "edge_features": 3}})
    with pytest.raises(ValueError, match="model.coord_scal"):
        ProteinBackboneConfig.from_dict({"coord_scal": 3})


def _config(tmp_path) -> Path:
    cfg = {"task": "proteins", "steps": 3, "batch_size": 4, "seed": 0, "log_every": 1, "checkpoint_every": 3,
           "out_dir": str(tmp_path / "run"), "bf16": False, "optim": {"lr": 1e-3, "ema_decay": 0.9},
           "model": {**SMALL, "max_length": 160},
           "data": {"path": str(FIXTURES), "split": "train", "max_length": 160, "test_fraction": 0.2}}
    path = tmp_path / "protein.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _egnn_sample(tmp_path) -> list[str]:
    """`molediff protein sample` of the Cartesian model trained in tmp_path/run."""
    return ["protein", "sample", "--model", "egnn", "--checkpoint", str(tmp_path / "run")]


@pytest.mark.slow
def test_tiny_training_run_then_sample_and_score(tmp_path, capsys):
    from molediff.training import run_training

    metrics = run_training(_config(tmp_path))
    assert np.isfinite(metrics["loss"])
    out = tmp_path / "samples"
    rc = main([*_egnn_sample(tmp_path), "-n", "2", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert {"sample_0.cif", "sample_1.cif"} <= set(names)
    # A 3-step model may throw atoms beyond PDB's columns: then the chain is mmCIF only, and says so.
    assert len(names) == 4 or "mmCIF only" in err
    assert main([*_egnn_sample(tmp_path), "--length", "12", "-n", "1",
                 "--steps", "2", "-o", str(tmp_path / "fixed")]) == 0
    assert main(["protein", "score", str(out)]) == 0
    assert main([*_egnn_sample(tmp_path), "--length", "999", "-n", "1",
                 "-o", str(out)]) == 2                                     # a usage error (issue 23)
    # low-temperature DDPM: same seed, smaller fresh noise → a different chain; not an option of other samplers
    cold = tmp_path / "cold"
    assert main([*_egnn_sample(tmp_path), "--length", "12", "-n", "1",
                 "--steps", "2", "--noise-scale", "0.5", "-o", str(cold)]) == 0
    assert (cold / "sample_0.cif").read_text() != (tmp_path / "fixed" / "sample_0.cif").read_text()
    capsys.readouterr()
    assert main([*_egnn_sample(tmp_path), "--sampler", "ddim",
                 "--noise-scale", "0.5", "-o", str(cold)]) == 2
    assert "--noise-scale is an option of the ddpm sampler" in capsys.readouterr().err


def test_the_task_fills_the_length_histogram(tmp_path):
    from molediff.training.config import load_config

    task = build_task(load_config(_config(tmp_path)))
    hist = task.model.config.length_histogram
    assert sum(hist.values()) == len(task.dataset) and min(hist) >= 40
    batch = next(iter(task.batches(0, 0, 0, 1, 4)))
    assert batch.coords.shape[0] == 4 and batch.mask.any(1).all()
    loss, logged = task.loss(task.model, batch)
    assert loss.ndim == 0 and "loss" in logged


def test_sample_defaults_to_the_shipped_weights_and_says_when_there_are_none(tmp_path, monkeypatch, capsys):
    import molediff.utils as utils  # the home of the shipped-weights lookup

    with pytest.raises(SystemExit):
        main(["protein", "sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "shipped 'protein_ca_angles' weights of the angle model" in text and "shipped weights were retired" in text
    assert "egnn: none, required" in text
    # no EGNN weights ship: a usage error (exit 2) before anything loads
    assert main(["protein", "sample", "--model", "egnn", "-n", "1", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Cartesian Cα EGNN model has no weights to load: molediff ships none" in err and "--checkpoint" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    from molediff.proteins.sampling import load_protein_model

    with pytest.raises(ValueError, match="molediff ships none"):      # the library says the same
        load_protein_model("egnn")
    monkeypatch.setattr(utils, "PRETRAINED_DIR", tmp_path)   # an installation without the shipped files
    assert main(["protein", "sample", "-n", "1", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "'protein_ca_angles' weights are missing from this installation" in err and "--checkpoint" in err
    assert len(err.strip().splitlines()) == 1


def test_sample_writes_mmcif_only_beyond_the_pdb_range(tmp_path, monkeypatch, capsys):
    from molediff.training import run_training

    run_training(_config(tmp_path), steps=1)
    monkeypatch.setattr(ProteinBackboneDiffusion, "sample_chains",
                        lambda self, lengths, seeds, **kw: [np.full((int(n), 3), 2.0e4 if k == 0 else 1.0, np.float32)
                                                            for k, n in enumerate(lengths)])
    assert main([*_egnn_sample(tmp_path), "--length", "6", "-n", "2",
                 "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sample_0.cif", "sample_1.cif", "sample_1.pdb"]
    assert "mmCIF only: sample_0" in capsys.readouterr().err
