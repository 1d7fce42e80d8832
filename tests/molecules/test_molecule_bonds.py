"""Bonds diffused with the atoms (issue 21): the bond encoding, the loss's edge term, equivariance, sampling and
decoding into molecules with their bonds, the training data's bond orders, and a tiny model trained end to end."""

from functools import partial

import helpers
import numpy as np
import pytest
import torch
import yaml
from helpers import DATA, ROOT, random_batch

from molediff.chem.bonds import bonds_from_geometry
from molediff.chem.molecule import MoleculeDataset
from molediff.diffusion import epsilon_loss
from molediff.molecules import MoleculeDiffusion, MoleculeDiffusionConfig
from molediff.molecules.training import MoleculeTask, collate_bonded, molecules_with_bonds
from molediff.testing import random_orthogonal, random_permutation

FOUR = DATA / "qm9_train_first4.npz"
tiny_bond_model = partial(helpers.tiny_model, MoleculeDiffusion, atom_count_histogram={3: 1, 5: 2, 7: 1},
                          bond_orders=(1, 2, 3))


def _bonds(mask, seed=0):
    """Random symmetric bond orders in 0..3 between the real atoms of ``mask`` [B, N]."""
    B, N = mask.shape
    g = torch.Generator().manual_seed(seed)
    upper = torch.randint(0, 4, (B, N, N), generator=g).triu(1)
    return (upper + upper.transpose(1, 2)) * (mask[:, :, None] & mask[:, None, :])


def test_bond_encoding_round_trips_and_lives_in_the_symmetric_edge_block():
    model = tiny_bond_model()
    pos, types, mask = random_batch()
    bonds = _bonds(mask)
    x = model.encode(pos, types, mask, bonds)
    assert x.shape == (3, 6, 3 + 6 + 6 * 4)
    nodes, edges = model.space.split(x)
    assert torch.equal(edges, edges.transpose(1, 2))
    assert set(edges.unique().tolist()) == {0.0, 0.25}
    assert (edges.sum(-1)[mask[:, :, None] & mask[:, None, :] & ~torch.eye(6, dtype=torch.bool)] == 0.25).all()
    out = model.decode(x, mask)
    assert torch.equal(out.bond_orders, bonds)
    assert torch.equal(out.atomic_numbers, torch.tensor([1, 6, 7, 8, 9])[types] * mask)
    molecules = out.to_molecules()
    for b, m in enumerate(molecules):
        n = int(mask[b].sum())
        np.testing.assert_array_equal(m.bond_matrix(), bonds[b, :n, :n].numpy())


def test_bad_bond_input_is_refused():
    model, plain = tiny_bond_model(), helpers.tiny_model(MoleculeDiffusion)
    pos, types, mask = random_batch()
    bonds = _bonds(mask)
    with pytest.raises(ValueError, match="give bond_orders"):
        model.encode(pos, types, mask)
    with pytest.raises(ValueError, match="does not diffuse bonds"):
        plain.encode(pos, types, mask, bonds)
    asymmetric = bonds.clone()
    asymmetric[0, 0, 1], asymmetric[0, 1, 0] = 1, 2
    with pytest.raises(ValueError, match="symmetric"):
        model.encode(pos, types, mask, asymmetric)
    aromatic = bonds.clone()
    aromatic[0, 0, 1] = aromatic[0, 1, 0] = 4
    with pytest.raises(ValueError, match=r"bond order 4 is not one of this model's orders \[1, 2, 3\]"):
        model.encode(pos, types, mask, aromatic)
    with pytest.raises(ValueError, match=r"integer \[B, N, N\]"):
        model.encode(pos, types, mask, bonds[:, :5, :5])
    with pytest.raises(ValueError, match="bond_orders must be distinct"):
        MoleculeDiffusionConfig(bond_orders=(1, 1))
    with pytest.raises(ValueError, match="needs the egnn denoiser"):
        MoleculeDiffusionConfig(bond_orders=(1, 2), denoiser={"name": "e3nn"})
    with pytest.raises(ValueError, match="set by the model"):
        MoleculeDiffusionConfig(denoiser={"name": "egnn", "edge_out_features": 2})


def test_the_loss_is_the_node_mean_plus_the_weighted_mean_over_atom_pairs():
    pos, types, mask = random_batch()
    bonds = _bonds(mask)
    models = {w: tiny_bond_model(bond_loss_weight=w) for w in (0.0, 1.0, 2.5)}
    loss = {w: m(pos, types, mask, generator=torch.Generator().manual_seed(3), bond_orders=bonds)
            for w, m in models.items()}
    # the same network, noise and times: only λ_e differs
    model = models[1.0]
    err = epsilon_loss(model.eps_fn(mask), model.encode(pos, types, mask, bonds), model.schedule, model.space,
                       mask, generator=torch.Generator().manual_seed(3))
    nodes, edges = model.space.split(err)
    n = mask.sum(1).double()
    node_term = nodes.flatten(1).sum(1) / (n * 9)
    edge_term = edges.flatten(1).sum(1) / (n * (n - 1) * 4)
    torch.testing.assert_close(loss[0.0], node_term)
    torch.testing.assert_close(loss[1.0], node_term + edge_term)
    torch.testing.assert_close(loss[2.5], node_term + 2.5 * edge_term)
    assert (edge_term > 0).all()
    # padding content does not matter
    pos2, bonds2 = pos.clone(), bonds.clone()
    pos2[~mask] = 77.0
    bonds2[1, 5, :] = 3
    bonds2[1, :, 5] = 3
    again = models[1.0](pos2, types, mask, generator=torch.Generator().manual_seed(3), bond_orders=bonds2)
    torch.testing.assert_close(again, loss[1.0])


@pytest.mark.parametrize("reflect", [False, True])
def test_model_eps_is_equivariant_in_coordinates_and_invariant_in_bonds(reflect):
    model = tiny_bond_model()
    pos, types, mask = random_batch()
    x = model.encode(pos, types, mask, _bonds(mask))
    g = torch.Generator().manual_seed(5)
    x = model.space.project(x + 0.3 * torch.randn(x.shape, generator=g, dtype=x.dtype), mask)   # a noisy state
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    eps = model.eps_fn(mask)(x, t)
    q = random_orthogonal(-1 if reflect else 1, seed=3)
    nodes, edges = model.space.split(x)
    rotated = model.space.join(torch.cat([nodes[..., :3] @ q.T, nodes[..., 3:]], -1), edges)
    eps_rot = model.eps_fn(mask)(rotated, t)
    (n0, e0), (n1, e1) = model.space.split(eps), model.space.split(eps_rot)
    torch.testing.assert_close(n1[..., :3], n0[..., :3] @ q.T, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(n1[..., 3:], n0[..., 3:], atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(e1, e0, atol=1e-9, rtol=1e-7)
    assert e0.abs().sum() > 0
    # permuting the atoms permutes node rows and both bond axes
    order = random_permutation(mask, seed=1)
    rows = torch.arange(3)[:, None]
    permuted = model.space.join(nodes[rows, order], edges[rows[:, :, None], order[:, :, None], order[:, None, :]])
    e_perm = model.space.split(model.eps_fn(mask[rows, order])(permuted, t))
    torch.testing.assert_close(e_perm[0], n0[rows, order], atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(e_perm[1], e0[rows[:, :, None], order[:, :, None], order[:, None, :]],
                               atol=1e-9, rtol=1e-7)


def test_samples_carry_symmetric_bonds_and_do_not_depend_on_the_batch(tmp_path):
    from molediff.chem.io import read_molecules
    from molediff.chem.sdf import write_sdf

    model = tiny_bond_model()
    for sampler in ("ddpm", "dpm2m"):
        out = model.sample([5, 3, 7], sampler=sampler, steps=6, seeds=[10, 11, 12])
        bonds = out.bond_orders
        assert bonds.shape == (3, 7, 7) and torch.equal(bonds, bonds.transpose(1, 2))
        assert set(bonds.unique().tolist()) <= {0, 1, 2, 3}
        assert (bonds[~(out.mask[:, :, None] & out.mask[:, None, :])] == 0).all()
        assert (bonds[:, torch.arange(7), torch.arange(7)] == 0).all()
        alone = model.sample([3], sampler=sampler, steps=6, seeds=[11])
        torch.testing.assert_close(alone.positions[0, :3], out.positions[1, :3])
        assert torch.equal(alone.bond_orders[0], bonds[1, :3, :3])
    molecules = model.sample_molecules([5, 3, 7], seeds=[10, 11, 12], batch_size=2, sampler="dpm2m", steps=6)
    assert all(m.bonds is not None for m in molecules)
    write_sdf(tmp_path / "s.sdf", molecules)
    read, _ = read_molecules(tmp_path / "s.sdf")
    for m, r in zip(molecules, read):          # the SDF holds the predicted bonds, not perceived ones
        np.testing.assert_array_equal(r.bond_matrix(), m.bond_matrix())


def test_configs_without_bonds_are_unchanged_and_bond_configs_round_trip():
    plain = MoleculeDiffusionConfig()
    assert plain.bond_orders == () and plain.bond_classes == 0
    assert not helpers.tiny_model(MoleculeDiffusion).has_bonds
    cfg = MoleculeDiffusionConfig.from_dict({"bond_orders": [1, 2, 3], "bond_scale": 0.5, "bond_loss_weight": 2.0})
    assert cfg.bond_orders == (1, 2, 3) and cfg.bond_classes == 4
    assert MoleculeDiffusionConfig.from_dict(cfg.to_dict()) == cfg
    shipped = yaml.safe_load((ROOT / "configs" / "qm9_bonds_cpu.yaml").read_text())
    bond_cfg = MoleculeDiffusionConfig.from_dict(shipped["model"])
    small = yaml.safe_load((ROOT / "configs" / "qm9_cpu_small.yaml").read_text())
    assert {k: v for k, v in shipped["model"].items() if not k.startswith("bond")} == small["model"]
    assert bond_cfg.bond_orders == (1, 2, 3)


def test_bonds_from_geometry_give_qm9_its_smiles_and_full_valences():
    from rdkit import Chem

    from molediff.chem.bonds import to_rdkit

    valence = {1: 1, 6: 4, 7: 3, 8: 2, 9: 1}
    for m in MoleculeDataset.load(FOUR):
        bonds = bonds_from_geometry(m.atomic_numbers, m.positions)
        assert (bonds[:, 0] < bonds[:, 1]).all() and set(bonds[:, 2].tolist()) <= {1, 2, 3}
        total = np.zeros(m.num_atoms, dtype=np.int64)
        np.add.at(total, bonds[:, 0], bonds[:, 2])
        np.add.at(total, bonds[:, 1], bonds[:, 2])
        assert total.tolist() == [valence[int(z)] for z in m.atomic_numbers]
        mol = to_rdkit(m.atomic_numbers, m.positions, bonds=bonds)
        Chem.SanitizeMol(mol)
        same = Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)
        assert same == Chem.MolToSmiles(Chem.MolFromSmiles(m.smiles), isomericSmiles=False)
    with pytest.raises(ValueError, match="no bond orders"):
        bonds_from_geometry([6, 6], [[0, 0, 0], [5, 0, 0]])


def test_training_data_gets_bonds_from_geometry_and_the_qm9_cache_is_reused(tmp_path, monkeypatch):
    from molediff.data import qm9

    four = MoleculeDataset.load(FOUR)
    with_bonds = molecules_with_bonds(four, None, (1, 2, 3))
    assert len(with_bonds) == 4 and with_bonds.bonds is not None
    batch = collate_bonded([with_bonds[i] for i in range(4)], (1, 6, 7, 8, 9))
    assert batch.bond_orders.shape == (4, 17, 17)
    for k in range(4):
        n = with_bonds[k].num_atoms
        np.testing.assert_array_equal(batch.bond_orders[k, :n, :n].numpy(), with_bonds[k].bond_matrix())
        assert (batch.bond_orders[k, n:] == 0).all() and (batch.bond_orders[k, :, n:] == 0).all()
    assert len(molecules_with_bonds(with_bonds, None, (1, 2))) == 3    # one of the four has a triple bond
    assert len(molecules_with_bonds(with_bonds, None, (1, 3))) == 1    # and the other three a double bond
    with pytest.raises(ValueError, match="no training molecules"):
        molecules_with_bonds(with_bonds, None, (1,))
    # qm9_bonds computes once, then reads its cache (a second computation would fail here)
    cache = tmp_path / "bonds.npz"
    bonds, offsets, ok = qm9.qm9_bonds(four, cache)
    assert ok.all() and offsets[-1] == len(bonds)
    monkeypatch.setattr("molediff.chem.bonds.bonds_from_geometry", lambda *a: 1 / 0)
    again = qm9.qm9_bonds(four, cache)
    np.testing.assert_array_equal(again[0], bonds)


def test_task_batches_carry_bond_orders_and_the_loss_uses_them():
    dataset = molecules_with_bonds(MoleculeDataset.load(FOUR), None, (1, 2, 3))
    torch.manual_seed(0)
    cfg = MoleculeDiffusionConfig(T=50, denoiser={"name": "egnn", "hidden": 8, "layers": 2}, bond_orders=(1, 2, 3),
                                  atom_count_histogram={13: 1, 17: 1})
    task = MoleculeTask(model=MoleculeDiffusion(cfg), dataset=dataset)
    batch = next(task.batches(seed=0, epoch=0, rank=0, world_size=1, batch_size=2))
    assert batch.bond_orders.shape[1:] == batch.mask.shape[1:] * 2 and len(batch) == 2
    loss, info = task.loss(task.model, batch)
    assert torch.isfinite(loss) and info["loss"] > 0


@pytest.mark.slow
def test_a_tiny_bond_model_trains_with_molediff_train_and_generate_writes_its_bonds(tmp_path, capsys):
    from molediff.chem.io import read_molecules
    from molediff.cli import main
    from molediff.training import export_weights

    config = yaml.safe_load((ROOT / "configs" / "qm9_bonds_cpu.yaml").read_text())
    config.update(steps=6, batch_size=2, log_every=2, checkpoint_every=6, out_dir=str(tmp_path / "run"))
    config.pop("posthoc_ema")
    config["model"].update(T=50, denoiser={"name": "egnn", "hidden": 16, "layers": 2})
    config["data"] = {"dataset": "npz", "path": str(FOUR)}       # no bonds in the file: determined from geometry
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "c.yaml")]) == 0
    export_weights(tmp_path / "run" / "checkpoints", tmp_path / "w.safetensors")
    out = tmp_path / "gen.sdf"
    assert main(["generate", "-n", "4", "-o", str(out), "--checkpoint", str(tmp_path / "w.safetensors"),
                 "--steps", "5", "--batch-size", "3", "--png", str(tmp_path / "g.png"), "--precision", "fp32"]) == 0
    assert "(bonds predicted by the model)" in capsys.readouterr().out
    molecules, errors = read_molecules(out)
    assert len(molecules) + len(errors) == 4 and molecules
    from molediff.molecules.pretrained import load_model

    model = load_model(tmp_path / "w.safetensors")
    assert model.has_bonds
    expected = model.sample_molecules(model.sample_atom_counts(4, torch.Generator().manual_seed(0)),
                                      seeds=range(4), batch_size=4, steps=5, name_prefix="molediff")
    expected = {m.name: m for m in expected}
    for m in molecules:   # generate writes exactly the model's predicted bonds
        np.testing.assert_array_equal(m.bond_matrix(), expected[m.name].bond_matrix())
