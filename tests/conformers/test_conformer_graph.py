"""Graph conditioning of the conformer model: RDKit graph features, the conditioned denoiser, the training task."""

import logging
from functools import partial

import numpy as np
import pytest
import torch
from helpers import DATA, ROOT, tiny_model

from molediff.chem.molecule import Molecule, MoleculeDataset
from molediff.conformers import ConformerDiffusion, ConformerDiffusionConfig
from molediff.conformers.graph import (
    EDGE_FEATURE_NAMES,
    EDGE_FEATURES,
    NODE_FEATURE_NAMES,
    NODE_FEATURES,
    GraphError,
    mol_graph,
    molecule_to_rdkit,
)
from molediff.conformers.training import ConformerTask, build_task
from molediff.testing import assert_equivariant

Chem = pytest.importorskip("rdkit.Chem")

FOUR = DATA / "qm9_train_first4.npz"
NODE = {name: k for k, name in enumerate(NODE_FEATURE_NAMES)}
EDGE = {name: k for k, name in enumerate(EDGE_FEATURE_NAMES)}


def with_hs(smiles):
    return Chem.AddHs(Chem.MolFromSmiles(smiles))


# the tiny model (2-layer EGNN of width 16, T = 100, float64) conditioned on the graph's features
graph_model = partial(tiny_model, ConformerDiffusion, node_features=NODE_FEATURES, edge_features=EDGE_FEATURES)


# -- features ---------------------------------------------------------------------------------------------
def test_widths_are_the_documented_feature_lists():
    assert NODE_FEATURES == 11 and EDGE_FEATURES == 10


def test_benzene_has_aromatic_ring_bonds_and_ring_flags():
    mol = with_hs("c1ccccc1")
    g = mol_graph(mol)
    node, edge = g.node_features(), g.edge_features()
    assert node.shape == (12, NODE_FEATURES) and edge.shape == (12, 12, EDGE_FEATURES)
    carbons = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() == 6]
    hydrogens = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() == 1]
    for c in carbons:
        assert node[c, NODE["aromatic"]] == 1 and node[c, NODE["sp2"]] == 1 and node[c, NODE["in_ring"]] == 1
        assert node[c, NODE["h1"]] == 1 and node[c, NODE["formal_charge"]] == 0
    for h in hydrogens:
        assert node[h, NODE["aromatic"]] == 0 and node[h, NODE["in_ring"]] == 0 and node[h, NODE["h0"]] == 1
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        kind = "aromatic" if b.GetIsAromatic() else "single"
        assert edge[i, j, EDGE[kind]] == 1 and edge[j, i, EDGE[kind]] == 1 and edge[i, j, EDGE["hop1"]] == 1
        assert edge[i, j, :5].sum() == 1
    ring_pairs = edge[np.ix_(carbons, carbons)][..., EDGE["same_ring"]]
    np.testing.assert_array_equal(ring_pairs, 1 - np.eye(6))          # every pair of ring carbons, not the atom itself
    assert edge[hydrogens[0], carbons[0], EDGE["same_ring"]] == 0
    para = next(c for c in carbons if Chem.GetDistanceMatrix(mol)[carbons[0], c] == 3)
    assert edge[carbons[0], para, EDGE["no_bond"]] == 1 and edge[carbons[0], para, EDGE["hop3"]] == 1
    np.testing.assert_array_equal(edge[np.arange(12), np.arange(12)], 0)   # the diagonal is all zero
    np.testing.assert_array_equal(edge, edge.transpose(1, 0, 2))


def test_ethanol_hop_distances():
    mol = with_hs("CCO")
    edge = mol_graph(mol).edge_features()
    c0, c1, o = 0, 1, 2
    h_on = {k: [n.GetIdx() for n in mol.GetAtomWithIdx(k).GetNeighbors() if n.GetAtomicNum() == 1]
            for k in (c0, c1, o)}
    hop = {1: "hop1", 2: "hop2", 3: "hop3", 4: "hop4+"}
    expected = {(c0, c1): 1, (c0, o): 2, (h_on[c0][0], o): 3, (h_on[c0][0], h_on[o][0]): 4,
                (h_on[c1][0], h_on[o][0]): 3, (h_on[c0][0], h_on[c0][1]): 2}
    for (i, j), d in expected.items():
        row = edge[i, j]
        assert row[EDGE[hop[d]]] == 1 and row[5:9].sum() == 1, (i, j, d, row)
        assert row[EDGE["single" if d == 1 else "no_bond"]] == 1 and row[EDGE["same_ring"]] == 0
    node = mol_graph(mol).node_features()
    assert node[c0, NODE["sp3"]] == 1 and node[c0, NODE["h3+"]] == 1 and node[o, NODE["h1"]] == 1
    assert node[c1, NODE["h2"]] == 1 and not node[:, NODE["in_ring"]].any()


def test_disconnected_pairs_count_as_far():
    edge = mol_graph(with_hs("C.O")).edge_features()
    assert edge[0, 1, EDGE["hop4+"]] == 1 and edge[0, 1, EDGE["no_bond"]] == 1


def test_charged_molecule_keeps_its_charges():
    mol = with_hs("C[NH3+].CC(=O)[O-]")   # methylammonium acetate
    node = mol_graph(mol).node_features()
    charges = {a.GetSymbol() + str(a.GetIdx()): node[a.GetIdx(), NODE["formal_charge"]] for a in mol.GetAtoms()
               if a.GetFormalCharge()}
    assert sorted(charges.values()) == [-1, 1]
    n = next(a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "N")
    assert node[n, NODE["formal_charge"]] == 1 and node[n, NODE["h3+"]] == 1 and node[n, NODE["sp3"]] == 1
    # the same graph from a molediff Molecule that carries its bonds and charges
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), int(b.GetBondTypeAsDouble())) for b in mol.GetBonds()]
    m = Molecule([a.GetAtomicNum() for a in mol.GetAtoms()], np.zeros((mol.GetNumAtoms(), 3)), name="MeNH3 OAc",
                 bonds=[(min(i, j), max(i, j), o) for i, j, o in bonds],
                 formal_charges=[a.GetFormalCharge() for a in mol.GetAtoms()])
    g = mol_graph(molecule_to_rdkit(m))
    np.testing.assert_array_equal(g.node, mol_graph(mol).node)
    np.testing.assert_array_equal(g.pairs, mol_graph(mol).pairs)


def test_perceived_bonds_of_a_qm9_molecule_sanitise():
    m = MoleculeDataset.load(FOUR)[0]                    # CC1=C(F)N=NOC1=N, bonds perceived from the DFT geometry
    mol = molecule_to_rdkit(m)
    assert mol.GetNumAtoms() == m.num_atoms and mol.GetNumBonds() > 0
    np.testing.assert_allclose(mol.GetConformer().GetPositions(), m.positions, atol=1e-5)   # atom order kept


def test_a_molecule_that_does_not_sanitise_gives_its_reason():
    # a carbon with five bonded hydrogens: an explicit valence RDKit refuses
    bad = Molecule([6, 1, 1, 1, 1, 1], np.zeros((6, 3)), name="CH5", bonds=[(0, k, 1) for k in range(1, 6)])
    with pytest.raises(GraphError, match=r"CH5: sanitisation failed \(bonds from the file\): .*valence"):
        molecule_to_rdkit(bad)
    # the same from 3D: five hydrogens 1.09 Å from the carbon are perceived as five bonds
    dirs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], dtype=float)
    bad3d = Molecule([6, 1, 1, 1, 1, 1], np.vstack([[0, 0, 0], 1.09 * dirs]), name="CH5-3d")
    with pytest.raises(GraphError, match=r"CH5-3d: sanitisation failed \(bonds perceived from 3D\)"):
        molecule_to_rdkit(bad3d)
    # a methyl radical: refused unless radicals are allowed
    methyl = Molecule([6, 1, 1, 1], np.vstack([[0, 0, 0], 1.09 * dirs[:3]]), name="CH3")
    with pytest.raises(GraphError, match=r"CH3: atom 0 \(C\) has 1 unpaired electron"):
        molecule_to_rdkit(methyl)
    assert molecule_to_rdkit(methyl, allow_radicals=True).GetNumAtoms() == 4
    assert issubclass(GraphError, ValueError)


# -- the conditioned model ------------------------------------------------------------------------------
def graph_batch(model, smiles=("CCO", "c1ccccc1O"), seed=0):
    """Padded batch of real molecules with random coordinates and their graph features (float64)."""
    mols = [with_hs(s) for s in smiles]
    n = max(m.GetNumAtoms() for m in mols)
    lookup = {z: k for k, z in enumerate(model.config.vocabulary)}
    gen = torch.Generator().manual_seed(seed)
    b = len(mols)
    pos = torch.zeros(b, n, 3, dtype=torch.float64)
    types = torch.zeros(b, n, dtype=torch.long)
    mask = torch.zeros(b, n, dtype=torch.bool)
    node = torch.zeros(b, n, NODE_FEATURES, dtype=torch.float64)
    edge = torch.zeros(b, n, n, EDGE_FEATURES, dtype=torch.float64)
    for k, m in enumerate(mols):
        a = m.GetNumAtoms()
        g = mol_graph(m)
        pos[k, :a] = torch.randn(a, 3, generator=gen, dtype=torch.float64) * 1.5
        types[k, :a] = torch.tensor([lookup[x.GetAtomicNum()] for x in m.GetAtoms()])
        mask[k, :a] = True
        node[k, :a] = torch.from_numpy(g.node_features()).double()
        edge[k, :a, :a] = torch.from_numpy(g.edge_features()).double()
    return pos, types, mask, node, edge


def test_conditioned_denoiser_is_exactly_e3_equivariant_with_edge_features_and_padding():
    model = graph_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    pos, types, mask, node, edge = graph_batch(model)
    assert not mask.all()                                       # ethanol is padded to phenol's 13 atoms
    h = model.node_features(types, mask, torch.float64, node)
    assert h.shape == (2, 13, len(model.config.vocabulary) + 1 + NODE_FEATURES)
    t = torch.tensor([0.1, 0.3], dtype=torch.float64)
    assert_equivariant(model.denoiser.eval(), {"pos": pos, "h": h, "t": t, "mask": mask, "edge_attr": edge},
                       atol=1e-9)
    eps = model.eps_fn(mask, given_features=h, edge_attr=edge)
    out = eps(pos, t)
    # padding does not leak: ethanol alone gives what it gives in the padded batch
    n = int(mask[0].sum())
    alone = model.eps_fn(mask[:1, :n], given_features=h[:1, :n], edge_attr=edge[:1, :n, :n])(pos[:1, :n], t[:1])
    torch.testing.assert_close(alone[0], out[0, :n], atol=1e-10, rtol=0)
    # the graph conditions the model: other edge or node features, other ε̂
    assert not torch.allclose(out, model.eps_fn(mask, given_features=h, edge_attr=edge.flip(-1))(pos, t))
    h2 = model.node_features(types, mask, torch.float64, node.flip(-1))
    assert not torch.allclose(out, model.eps_fn(mask, given_features=h2, edge_attr=edge)(pos, t))


def test_graph_features_are_required_and_checked():
    model = graph_model()
    pos, types, mask, node, edge = graph_batch(model)
    assert torch.isfinite(model(pos, types, mask, node, edge)).all()
    with pytest.raises(ValueError, match="graph features"):
        model(pos, types, mask, None, edge)
    with pytest.raises(ValueError, match="node_features must be"):
        model(pos, types, mask, node[..., :3], edge)
    with pytest.raises(ValueError, match="no per-atom graph features"):
        graph_model(node_features=0, edge_features=0)(pos, types, mask, node)


def test_t_max_one_is_the_plain_epsilon_loss_bit_for_bit():
    model = graph_model()
    pos, types, mask, node, edge = graph_batch(model)
    got = model(pos, types, mask, node, edge, generator=torch.Generator().manual_seed(3))
    x = model.space.project(pos * mask.unsqueeze(-1), mask)
    want = model.loss(x, mask, None, model.node_features(types, mask, torch.float64, node), edge,
                      generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, want)


def test_t_max_draws_only_low_times():
    model = graph_model(t_max=0.2)
    assert model.config.t_max_index == 20
    t = model.training_time(20000, generator=torch.Generator().manual_seed(0))
    assert float(t.max()) == pytest.approx(0.2) and float(t.min()) == 0.0
    assert len(torch.unique(t)) == 21                              # the whole grid 0, 1/T, …, 20/T
    seen = []
    hook = model.denoiser.register_forward_pre_hook(lambda mod, args: seen.append(args[2].clone()))
    pos, types, mask, node, edge = graph_batch(model)
    for k in range(20):
        model(pos, types, mask, node, edge, generator=torch.Generator().manual_seed(k))
    hook.remove()
    times = torch.cat(seen)
    assert float(times.max()) <= 0.2 + 1e-12 and len(times) == 40
    assert graph_model().training_time(4) is None
    for bad in (0.0, 1.5, 0.004):
        with pytest.raises(ValueError, match="t_max"):
            ConformerDiffusionConfig(T=100, t_max=bad)


# -- the training task -------------------------------------------------------------------------------------
def four_molecule_task(**overrides):
    dataset = MoleculeDataset.load(FOUR)
    return ConformerTask(model=graph_model(**overrides).float(), dataset=dataset)


def fixed_draw_loss(task, batch, draws=16):
    model = task.model
    model.eval()
    with torch.no_grad():
        d = batch.dense
        losses = [model(d.positions, d.type_index, d.mask, batch.node_features, batch.edge_attr,
                        generator=torch.Generator().manual_seed(1000 + k)).mean() for k in range(draws)]
    return float(torch.stack(losses).mean())


@pytest.mark.slow
def test_a_tiny_conformer_task_trains_with_edge_features_and_its_loss_falls(tmp_path):
    from molediff.training import OptimConfig, TrainConfig, train

    task = four_molecule_task(t_max=0.5, denoiser={"name": "egnn", "hidden": 32, "layers": 2})
    assert len(task.graphs) == 4 and not task.skipped
    batch = next(iter(task.batches(seed=0, epoch=0, rank=0, world_size=1, batch_size=4)))
    n = batch.dense.mask.shape[1]
    assert batch.node_features.shape == (4, n, NODE_FEATURES) and batch.edge_attr.shape == (4, n, n, EDGE_FEATURES)
    pad = ~batch.dense.mask
    assert (batch.node_features[pad] == 0).all() and (batch.edge_attr[pad] == 0).all()
    before = fixed_draw_loss(task, batch)
    config = TrainConfig(steps=120, batch_size=4, log_every=60, checkpoint_every=120, out_dir=str(tmp_path),
                         bf16=False, optim=OptimConfig(lr=3e-3, warmup_steps=10, ema_decay=None, grad_clip=10.0))
    train(task, config)
    after = fixed_draw_loss(task, batch)
    assert after < 0.7 * before, (before, after)


def test_the_task_skips_molecules_without_a_graph_and_logs_why(caplog):
    good = list(MoleculeDataset.load(FOUR))
    dirs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], dtype=float)
    bad = Molecule([6, 1, 1, 1, 1, 1], np.vstack([[0, 0, 0], 1.09 * dirs]), name="CH5")   # five perceived C-H bonds
    dataset = MoleculeDataset.from_molecules([*good[:2], bad, *good[2:]])
    with caplog.at_level(logging.INFO, logger="molediff.conformers.training"):
        task = ConformerTask(model=graph_model().float(), dataset=dataset)
    assert len(task.dataset) == 4 and len(task.graphs) == 4
    assert [i for i, _ in task.skipped] == [2] and "CH5" in task.skipped[0][1]
    assert "skipped 1 of 5 molecules" in caplog.text and "CH5: sanitisation failed" in caplog.text
    assert [m.name for m in task.dataset] == [m.name for m in good]


def test_the_task_refuses_other_graph_widths():
    with pytest.raises(ValueError, match="node_features=11"):
        ConformerTask(model=graph_model(node_features=3).float(), dataset=MoleculeDataset.load(FOUR))


def test_shipped_conformer_config_builds_a_graph_model():
    from molediff.data.sources import MoleculeDataConfig
    from molediff.training import load_config
    from molediff.utils import build_config

    cfg = load_config(ROOT / "configs" / "conformers_cpu.yaml")
    assert cfg.task == "conformers" and cfg.data["dataset"] == "npz"
    gpu = load_config(ROOT / "configs" / "conformers_gpu.yaml")
    assert gpu.model == cfg.model  # the same architecture: weights continue from one to the other
    build_config(MoleculeDataConfig, {k: v for k, v in cfg.data.items() if k != "graphs"}, "data.")
    # the same section on the four-molecule file: the task fills in the graph widths
    cfg.data.clear()
    cfg.data.update({"dataset": "npz", "path": str(FOUR)})
    task = build_task(cfg)
    mc = task.model.config
    assert (mc.node_features, mc.edge_features, mc.t_max) == (NODE_FEATURES, EDGE_FEATURES, 0.35)
    assert mc.denoiser["hidden"] == 96 and mc.denoiser["layers"] == 4 and len(task.graphs) == 4
    # σ_t at t_max stays below 0.5 Å on this schedule, as the config's comment says
    sigma = float(task.model.schedule.sigma(torch.tensor(mc.t_max_index / mc.T, dtype=torch.float64)))
    assert 0.47 < sigma <= 0.5
