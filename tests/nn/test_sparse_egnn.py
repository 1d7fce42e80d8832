"""The EGNN's sparse radius-graph mode (``graph="radius"``): the dense network's function on an edge list.

Same weights as the dense full graph, equal output when the cutoff covers every pair, exact E(3) equivariance
with a real cutoff, padding never in the edge list, gradients, and the protein model built on it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from molediff.nn import EGNNConfig, EGNNDenoiser
from molediff.proteins.model import ProteinBackboneConfig, ProteinBackboneDiffusion
from molediff.proteins.training import collate_chains
from molediff.testing import assert_equivariant, random_orthogonal

F, C, E = 4, 2, 3
BASE = EGNNConfig(in_node_features=F, context_features=C, edge_features=E, hidden=16, layers=3, sublayers=2,
                  aggregation_normalisation=5.0, coords_range=4.0)


def _pair(**changes) -> tuple[EGNNDenoiser, EGNNDenoiser]:
    """A dense net and a radius-graph net with the same weights (float64, eval)."""
    torch.manual_seed(0)
    dense = EGNNDenoiser(dataclasses.replace(BASE, **{k: v for k, v in changes.items()
                                                      if k in ("attention", "tanh")})).double().eval()
    sparse = EGNNDenoiser(dataclasses.replace(BASE, graph="radius", **changes)).double().eval()
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


def _inputs(lengths=(7, 4, 1, 6), n=8, scale=1.0, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    pos = torch.randn(len(lengths), n, 3, generator=g, dtype=torch.float64) * scale
    pos = torch.where(mask[..., None], pos, torch.full_like(pos, float("nan")))   # padding may hold anything
    h = torch.randn(len(lengths), n, F, generator=g, dtype=torch.float64)
    t = torch.rand(len(lengths), generator=g, dtype=torch.float64)
    context = torch.randn(len(lengths), C, generator=g, dtype=torch.float64)
    edge_attr = torch.randn(len(lengths), n, n, E, generator=g, dtype=torch.float64)
    return {"pos": pos, "h": h, "t": t, "mask": mask, "context": context, "edge_attr": edge_attr}


@pytest.mark.parametrize("attention, tanh", [(True, True), (False, False)])
def test_sparse_equals_dense_when_the_cutoff_covers_every_pair(attention, tanh):
    dense, sparse = _pair(attention=attention, tanh=tanh, radius_cutoff=1e6, keep_sequence_neighbours=1)
    inputs = _inputs()
    out_dense = dense(**inputs)
    out_sparse = sparse(**inputs)
    for a, b in zip(out_dense, out_sparse, strict=True):
        assert a.shape == b.shape and torch.isfinite(b).all()
        assert (a - b).abs().max() < 1e-10
    # The same holds for the parameter gradients (training sees the same function).
    for net, out in ((dense, out_dense), (sparse, out_sparse)):
        net.zero_grad()
        (out[0].square().sum() + out[1].sin().sum()).backward()
    for (name, p), q in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        assert (p.grad - q.grad).abs().max() < 1e-10, name


def test_a_real_cutoff_drops_pairs_and_stays_e3_equivariant():
    dense, sparse = _pair(radius_cutoff=1.2)
    inputs = _inputs(scale=1.0)
    inputs["pos"] = torch.nan_to_num(inputs["pos"])
    b, i, j = sparse.edge_index(inputs["pos"], inputs["mask"])
    real_pairs = sum(int(n) * (int(n) - 1) for n in inputs["mask"].sum(1))
    assert 0 < len(b) < real_pairs                                    # the cutoff really prunes
    assert (dense(**inputs)[0] - sparse(**inputs)[0]).abs().max() > 1e-6
    assert_equivariant(sparse, inputs, atol=1e-9)


def test_forced_sequence_neighbours_keep_rotations_reflections_and_translations():
    _, sparse = _pair(radius_cutoff=0.8, keep_sequence_neighbours=2)
    inputs = _inputs(scale=2.0)
    inputs["pos"] = torch.nan_to_num(inputs["pos"])
    mask = inputs["mask"]
    eps_pos, eps_h = sparse(**inputs)
    for determinant, seed in ((1, 3), (-1, 4)):
        q = random_orthogonal(determinant, seed=seed)
        shift = torch.randn(len(mask), 1, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        got_pos, got_h = sparse(**{**inputs, "pos": inputs["pos"] @ q.T + shift})
        assert (got_pos - eps_pos @ q.T)[mask].abs().max() < 1e-9
        assert (got_h - eps_h)[mask].abs().max() < 1e-9


def test_edge_list_has_no_padding_no_self_pairs_and_the_forced_neighbours():
    _, sparse = _pair(radius_cutoff=1.0, keep_sequence_neighbours=2)
    mask = torch.arange(10)[None] < torch.tensor([[10], [6]])
    pos = torch.zeros(2, 10, 3, dtype=torch.float64)
    pos[..., 0] = torch.arange(10, dtype=torch.float64) * 3.0        # a straight chain, 3 units per step
    pos[1, 6:] = pos[1, 0]                                          # padding sits on a real atom
    b, i, j = sparse.edge_index(pos, mask)
    assert mask[b, i].all() and mask[b, j].all() and (i != j).all()
    assert ((i - j).abs() <= 2).all()                               # 3 > cutoff: only the forced pairs
    assert len(b) == 2 * (9 + 8) + 2 * (5 + 4)                       # |i − j| = 1, 2 in both directions
    pos[0, 5] = pos[0, 0] + 0.5                                     # now 0 and 5 are spatial neighbours
    b, i, j = sparse.edge_index(pos, mask)
    assert ((b == 0) & (i == 0) & (j == 5)).sum() == 1 and ((b == 0) & (i == 5) & (j == 0)).sum() == 1
    with pytest.raises(ValueError, match="graph='radius'"):
        _pair()[0].edge_index(pos, mask)


def test_gradients_reach_every_layer_and_the_coordinates():
    _, sparse = _pair(radius_cutoff=1.5, keep_sequence_neighbours=1)
    inputs = _inputs()
    pos = torch.nan_to_num(inputs["pos"]).requires_grad_()
    eps_pos, eps_h = sparse(**{**inputs, "pos": pos})
    (eps_pos.square().sum() + eps_h.square().sum()).backward()
    assert pos.grad is not None and torch.isfinite(pos.grad).all() and pos.grad.abs().sum() > 0
    for name, p in sparse.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if "edge_in" in name or "node_mlp" in name:
            assert p.grad.abs().sum() > 0, name


def test_config_checks():
    with pytest.raises(ValueError, match="graph must be"):
        EGNNConfig(in_node_features=1, graph="knn")
    with pytest.raises(ValueError, match="radius_cutoff > 0"):
        EGNNConfig(in_node_features=1, graph="radius")
    with pytest.raises(ValueError, match="only with graph='radius'"):
        EGNNConfig(in_node_features=1, radius_cutoff=1.0)


def test_protein_model_on_the_radius_graph_trains_and_samples():
    config = {"T": 20, "graph": "radius", "denoiser": {"name": "egnn", "hidden": 16, "layers": 2,
                                                       "aggregation_normalisation": 8.0}}
    torch.manual_seed(0)
    model = ProteinBackboneDiffusion(ProteinBackboneConfig.from_dict(config))
    net_config = model.denoiser.config
    assert (net_config.graph, net_config.radius_cutoff, net_config.keep_sequence_neighbours) == ("radius", 1.0, 2)
    torch.manual_seed(0)
    full = ProteinBackboneDiffusion(ProteinBackboneConfig.from_dict({**config, "graph": "full"}))
    assert full.denoiser.config.graph == "full"
    assert full.state_dict().keys() == model.state_dict().keys()      # checkpoints fit either graph
    assert ProteinBackboneConfig.from_dict(model.config.to_dict()) == model.config

    batch = collate_chains([np.cumsum(np.random.default_rng(k).normal(size=(n, 3)), 0).astype(np.float32) * 2.2
                            for k, n in enumerate((30, 18, 25))])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = model(batch.coords, batch.mask, generator=torch.Generator().manual_seed(0)).mean()
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss)
    coords, mask = model.sample([12, 20], steps=2, seeds=[1, 2])
    assert coords.shape == (2, 20, 3) and mask.sum(1).tolist() == [12, 20] and torch.isfinite(coords).all()

    with pytest.raises(ValueError, match="set by the model"):
        ProteinBackboneConfig.from_dict({**config, "denoiser": {**config["denoiser"], "graph": "radius"}})
    with pytest.raises(ValueError, match="egnn"):
        ProteinBackboneConfig.from_dict({**config, "denoiser": {"name": "e3nn"}})
