"""The molecule model through the real training loop: overfitting, exact resume, checkpoints, generate."""

import dataclasses
import re

import numpy as np
import pytest
import torch
from helpers import DATA, ROOT

from molediff.chem.molecule import MoleculeDataset
from molediff.molecules import MoleculeDiffusion, MoleculeDiffusionConfig
from molediff.molecules.pretrained import load_model
from molediff.molecules.training import MoleculeTask, atom_count_histogram
from molediff.training import OptimConfig, TrainConfig, export_weights, load_weights, train

FOUR_MOLECULES = DATA / "qm9_train_first4.npz"


def four_molecule_task(hidden=32, layers=3, T=500) -> MoleculeTask:
    dataset = MoleculeDataset.load(FOUR_MOLECULES)
    torch.manual_seed(0)
    cfg = MoleculeDiffusionConfig(T=T, denoiser={"name": "egnn", "hidden": hidden, "layers": layers},
                                  atom_count_histogram=atom_count_histogram(dataset))
    return MoleculeTask(model=MoleculeDiffusion(cfg), dataset=dataset)


def fixed_draw_loss(model, batch, draws=16) -> float:
    """Mean loss over a fixed set of (t, noise) draws: the same numbers before and after training."""
    model.eval()
    with torch.no_grad():
        losses = [model(batch.positions, batch.type_index, batch.mask,
                        generator=torch.Generator().manual_seed(1000 + k)).mean() for k in range(draws)]
    return float(torch.stack(losses).mean())


@pytest.mark.slow
def test_tiny_model_overfits_four_qm9_molecules(tmp_path):
    task = four_molecule_task()
    batch = next(task.batches(seed=0, epoch=0, rank=0, world_size=1, batch_size=4))
    before = fixed_draw_loss(task.model, batch)
    config = TrainConfig(steps=400, batch_size=4, log_every=100, checkpoint_every=400, out_dir=str(tmp_path),
                         optim=OptimConfig(lr=2e-3, warmup_steps=20, ema_decay=None, grad_clip=10.0))
    train(task, config)
    after = fixed_draw_loss(task.model, batch)
    assert after < before / 3, (before, after)


def _small_config(tmp_path, steps):
    return TrainConfig(steps=steps, batch_size=2, log_every=1, checkpoint_every=3, out_dir=str(tmp_path),
                       optim=OptimConfig(lr=1e-3, ema_decay=0.9))


def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path):
    straight = four_molecule_task(hidden=8, layers=2, T=50)
    train(straight, _small_config(tmp_path / "a", 6))
    first = four_molecule_task(hidden=8, layers=2, T=50)
    train(first, _small_config(tmp_path / "b", 3))
    resumed = four_molecule_task(hidden=8, layers=2, T=50)
    train(resumed, _small_config(tmp_path / "b", 6), resume=True)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    fresh = four_molecule_task(hidden=8, layers=2, T=50)
    assert not torch.equal(next(iter(fresh.model.state_dict().values())),
                           next(iter(resumed.model.state_dict().values())))


def test_exported_weights_load_sample_and_refuse_the_wrong_model(tmp_path):
    task = four_molecule_task(hidden=8, layers=2, T=50)
    train(task, _small_config(tmp_path / "run", 3))
    out = tmp_path / "weights.safetensors"
    export_weights(tmp_path / "run" / "checkpoints", out)
    model = load_model(out)
    assert model.config == task.model.config
    counts = model.sample_atom_counts(3, torch.Generator().manual_seed(0))
    assert set(counts.tolist()) <= {12, 13, 17}
    s = model.sample(counts, sampler="ddim", steps=5)
    assert torch.isfinite(s.positions).all()
    other = MoleculeDiffusion(dataclasses.replace(task.model.config,
                                                  denoiser={"name": "egnn", "hidden": 16, "layers": 2}))
    with pytest.raises(ValueError, match="hidden"):
        load_weights(out, other)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(corrupt)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


def test_generate_command_writes_sdf_from_a_checkpoint(tmp_path, capsys):
    from molediff.chem.io import read_molecules
    from molediff.cli import main

    task = four_molecule_task(hidden=8, layers=2, T=50)
    train(task, _small_config(tmp_path / "run", 3))
    export_weights(tmp_path / "run" / "checkpoints", tmp_path / "w.safetensors")
    out = tmp_path / "gen.sdf"
    rc = main(["generate", "-n", "5", "-o", str(out), "--checkpoint", str(tmp_path / "w.safetensors"),
               "--steps", "5", "--batch-size", "2"])
    assert rc == 0
    molecules, errors = read_molecules(out)
    assert len(molecules) + len(errors) == 5
    assert "molecule stability" in capsys.readouterr().out
    # usage errors (issue 23): exit status 2
    assert main(["generate", "-n", "2", "-o", str(tmp_path / "x.pdb"),
                 "--checkpoint", str(tmp_path / "w.safetensors")]) == 2
    assert main(["generate", "-n", "2", "-o", str(out), "--checkpoint", str(tmp_path / "w.safetensors"),
                 "--steps", "51"]) == 2
    assert main(["generate", "-n", "2", "-o", str(tmp_path), "--checkpoint", str(tmp_path / "w.safetensors"),
                 "--steps", "2"]) == 2                                   # output is a directory
    if not torch.cuda.is_available():
        assert main(["generate", "-n", "2", "-o", str(out), "--device", "cuda"]) == 2
    assert "error" in capsys.readouterr().err


def test_user_files_dataset_filters_unsupported_elements(tmp_path):
    from molediff.chem.molecule import Molecule
    from molediff.chem.xyz import write_xyz
    from molediff.data.sources import MoleculeDataConfig, load_molecule_dataset

    good = MoleculeDataset.load(FOUR_MOLECULES)
    sulfur = Molecule(atomic_numbers=np.array([16, 1, 1]), positions=np.eye(3, dtype=np.float32), name="H2S")
    write_xyz(tmp_path / "mine.xyz", [good[0], sulfur, good[1]])
    dataset = load_molecule_dataset(MoleculeDataConfig(dataset="files", path=str(tmp_path / "mine.xyz")),
                                    vocabulary=(1, 6, 7, 8, 9))
    assert len(dataset) == 2
    with pytest.raises(ValueError, match="needs a 'path'"):
        MoleculeDataConfig(dataset="files")


def test_periodic_evaluation_samples_and_scores():
    task = four_molecule_task(hidden=8, layers=2, T=50)
    task.eval_samples, task.eval_steps = 4, 3
    scores = task.evaluate(task.model, step=1)
    assert set(scores) >= {"atom_stability", "mol_stability", "validity"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert task.model.training  # the trainer's mode is left as it was


@pytest.mark.parametrize("section, typo", [
    ("top", "stesp: 3"),
    ("optim", "optim:\n  lr: 1.0e-3\n  warmup: 5"),
    ("model", "model:\n  denoiser: {name: egnn, hidden: 8, layers: 1}\n  shedule: cosine"),
    ("model.denoiser", "model:\n  denoiser: {name: egnn, hiden: 8}"),
    ("data", "data:\n  datset: files\n  path: x.sdf"),
])
def test_a_config_key_typo_fails_before_training_starts(tmp_path, section, typo):
    from molediff.training import run_training

    key = {"top": "stesp", "optim": "optim.warmup", "model": "model.shedule", "model.denoiser":
           "model.denoiser.hiden", "data": "data.datset"}[section]
    config = tmp_path / "typo.yaml"
    config.write_text(f"task: molecules\nsteps: 3\nbatch_size: 2\n{typo}\n")
    with pytest.raises(ValueError, match=f"'{key}'"):
        run_training(config, out_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_the_old_task_name_qm9_still_trains(tmp_path):
    from molediff.training import run_training

    config = tmp_path / "old.yaml"
    config.write_text(f"task: qm9\nsteps: 2\nbatch_size: 2\nlog_every: 1\ncheckpoint_every: 2\n"
                      f"model:\n  T: 50\n  denoiser: {{name: egnn, hidden: 8, layers: 1}}\n"
                      f"data:\n  dataset: npz\n  path: {FOUR_MOLECULES}\n")
    metrics = run_training(config, out_dir=str(tmp_path / "run"))
    assert metrics["step"] == 2
    model = load_model(tmp_path / "run")
    assert model.config.atom_count_histogram == atom_count_histogram(MoleculeDataset.load(FOUR_MOLECULES))


def test_generate_draws_a_png_and_checks_every_output_before_sampling(tmp_path, capsys, monkeypatch, caplog):
    from PIL import Image

    from molediff.cli import main
    from molediff.molecules import MoleculeDiffusion

    task = four_molecule_task(hidden=8, layers=2, T=50)
    train(task, _small_config(tmp_path / "run", 3))
    weights = str(tmp_path / "w.safetensors")
    export_weights(tmp_path / "run" / "checkpoints", weights)
    png = tmp_path / "grid.png"
    assert main(["generate", "-n", "4", "-o", str(tmp_path / "g.sdf"), "--checkpoint", weights, "--steps", "3",
                 "--png", str(png), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "connectivity" in out and f"drew 4 molecules to {png}" in out
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] >= 4 * 200

    def must_not_sample(*args, **kwargs):
        raise AssertionError("sampled before checking the outputs")

    monkeypatch.setattr(MoleculeDiffusion, "sample_molecules", must_not_sample)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for argv, message in ((["-o", str(blocker / "out.sdf")], "is a file, not a directory"),
                          (["-o", str(tmp_path / "ok.sdf"), "--png", str(blocker / "g.png")], "is a file"),
                          (["-o", str(tmp_path / "ok.sdf"), "--png", str(tmp_path / "g.jpg")], "must name a .png")):
        assert main(["generate", "-n", "2", "--checkpoint", weights, *argv]) == 2     # a usage error (issue 23)
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    monkeypatch.undo()
    with caplog.at_level("WARNING"):
        assert main(["generate", "-n", "1", "--atoms", "40", "-o", str(tmp_path / "big.sdf"), "--checkpoint",
                     weights, "--steps", "2", "--no-score"]) == 0
    assert "outside the molecule sizes this model was trained on (12..17 atoms)" in caplog.text


def test_a_checkpoint_with_the_config_names_of_older_versions_resumes(tmp_path):
    import json

    run = tmp_path / "run"
    train(four_molecule_task(hidden=8, layers=2, T=50), _small_config(run, 3))
    state_file = run / "checkpoints" / "last" / "state.json"
    state = json.loads(state_file.read_text())
    cfg = state["model_config"]
    cfg["atom_types"] = cfg.pop("vocabulary")
    cfg["mode"] = "joint"
    del cfg["max_atoms"]
    state_file.write_text(json.dumps(state))
    metrics = train(four_molecule_task(hidden=8, layers=2, T=50), _small_config(run, 6), resume=True)
    assert metrics["step"] == 6
    assert load_model(run).config.vocabulary == (1, 6, 7, 8, 9)


@pytest.mark.slow
@pytest.mark.skipif(__import__("importlib").util.find_spec("qm9pack") is None, reason="needs the qm9pack data")
def test_export_chooses_the_post_hoc_ema_length_by_validation_loss(tmp_path, capsys):
    from molediff.cli import main
    from molediff.training import run_training

    config = tmp_path / "posthoc.yaml"
    config.write_text("task: molecules\nsteps: 6\nbatch_size: 4\nlog_every: 2\ncheckpoint_every: 6\n"
                      "posthoc_ema: {sigma_rels: [0.05, 0.10], snapshot_every: 2}\n"
                      "model:\n  T: 50\n  denoiser: {name: egnn, hidden: 8, layers: 1}\n"
                      "data:\n  dataset: qm9\n  subset: 16\n")
    run = tmp_path / "run"
    run_training(config, out_dir=str(run))
    out = tmp_path / "best.safetensors"
    assert main(["export", str(run), "-o", str(out), "--search", "0.05", "0.08", "--molecules", "12"]) == 0
    table = capsys.readouterr().out
    assert "checkpoint EMA" in table and "post-hoc sigma_rel 0.08" in table and table.count("<- best") == 1
    assert load_model(out).config.denoiser["hidden"] == 8
    assert main(["export", str(run), "-o", str(tmp_path / "s.safetensors"), "--sigma-rel", "0.07"]) == 0
    assert main(["export", str(run), "-o", str(tmp_path / "plain.safetensors")]) == 0
    assert "checkpoint's EMA weights" in capsys.readouterr().out
    assert main(["export", str(run), "-o", str(tmp_path / "x.pt")]) == 2            # a usage error (issue 23)


def test_validation_loss_of_npz_data_needs_valid_path(tmp_path):
    """npz/files data have no split of their own: validation molecules come from data.valid_path."""
    from molediff.data.sources import MoleculeDataConfig

    task = four_molecule_task(hidden=8, layers=1, T=50)
    task.data = MoleculeDataConfig(dataset="npz", path=str(FOUR_MOLECULES))
    with pytest.raises(ValueError, match="valid_path"):
        task.validation_loss(task.model, molecules=4)
    task.data = MoleculeDataConfig(dataset="npz", path=str(FOUR_MOLECULES), valid_path=str(FOUR_MOLECULES))
    loss = task.validation_loss(task.model, molecules=4)
    assert loss == task.validation_loss(task.model, molecules=4) and 0 < loss < 100   # fixed draws: repeatable
    with pytest.raises(ValueError, match="valid_path is for"):
        MoleculeDataConfig(dataset="qm9", valid_path=str(FOUR_MOLECULES))


MOLECULE_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                          if re.search(r"^task: (molecules|qm9)\s*$", p.read_text(), re.M))


@pytest.mark.parametrize("path", MOLECULE_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_molecule_config_is_valid(path):
    """A typo in a shipped config (e.g. a recipe-study arm) fails here, not after an hour of someone's CPU."""
    from molediff.data.sources import MoleculeDataConfig
    from molediff.training import load_config

    cfg = load_config(path)
    assert cfg.task in ("molecules", "qm9")
    MoleculeDiffusionConfig.from_dict(cfg.model)
    MoleculeDataConfig(**cfg.data)
