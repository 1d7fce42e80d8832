"""The Cα backbone model: equivariance with its edge features, loss and sampling shapes, a tiny training run
on the fixture chains and `molediff protein sample` from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from molediff.cli import main
from molediff.proteins.model import ProteinBackboneConfig, ProteinBackboneDiffusion
from molediff.proteins.training import build_task, collate_chains
from molediff.testing import assert_equivariant

FIXTURES = Path(__file__).parent / "data" / "proteins" / "real"
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


def test_tiny_training_run_then_sample_and_score(tmp_path, capsys):
    from molediff.training import run_training

    metrics = run_training(_config(tmp_path))
    assert np.isfinite(metrics["loss"])
    out = tmp_path / "samples"
    rc = main(["protein", "sample", "--checkpoint", str(tmp_path / "run"), "-n", "2", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert {"sample_0.cif", "sample_1.cif"} <= set(names)
    # A 3-step model may throw atoms beyond PDB's columns: then the chain is mmCIF only, and says so.
    assert len(names) == 4 or "mmCIF only" in err
    assert main(["protein", "sample", "--checkpoint", str(tmp_path / "run"), "--length", "12", "-n", "1",
                 "--steps", "2", "-o", str(tmp_path / "fixed")]) == 0
    assert main(["protein", "score", str(out)]) == 0
    assert main(["protein", "sample", "--checkpoint", str(tmp_path / "run"), "--length", "999", "-n", "1",
                 "-o", str(out)]) == 1


def test_the_task_fills_the_length_histogram(tmp_path):
    from molediff.training.config import load_config

    task = build_task(load_config(_config(tmp_path)))
    hist = task.model.config.length_histogram
    assert sum(hist.values()) == len(task.dataset) and min(hist) >= 40
    batch = next(iter(task.batches(0, 0, 0, 1, 4)))
    assert batch.coords.shape[0] == 4 and batch.mask.any(1).all()
    loss, logged = task.loss(task.model, batch)
    assert loss.ndim == 0 and "loss" in logged


def test_cli_help_says_checkpoint_is_required(capsys):
    with pytest.raises(SystemExit):
        main(["protein", "sample", "--help"])
    assert "no protein weights" in " ".join(capsys.readouterr().out.split())


def test_sample_writes_mmcif_only_beyond_the_pdb_range(tmp_path, monkeypatch, capsys):
    from molediff.training import run_training

    run_training(_config(tmp_path), steps=1)
    monkeypatch.setattr(ProteinBackboneDiffusion, "sample_chains",
                        lambda self, lengths, seeds, **kw: [np.full((int(n), 3), 2.0e4 if k == 0 else 1.0, np.float32)
                                                            for k, n in enumerate(lengths)])
    assert main(["protein", "sample", "--checkpoint", str(tmp_path / "run"), "--length", "6", "-n", "2",
                 "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sample_0.cif", "sample_1.cif", "sample_1.pdb"]
    assert "mmCIF only: sample_0" in capsys.readouterr().err
