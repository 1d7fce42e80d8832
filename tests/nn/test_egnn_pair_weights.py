"""``EGNNDenoiser.forward(..., pair_weights=W)``: the dense body with ``W`` [B, N, N] in place of the full graph. With
the full graph's own mask it is the plain forward to the bit; with a radius graph's adjacency it is the sparse
radius net with the same weights; padding and self-pairs never count; errors name what is wrong."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from molediff.nn import EGNNConfig, EGNNDenoiser
from molediff.nn.common import pairwise_mask

F, C, E = 4, 2, 3
BASE = EGNNConfig(in_node_features=F, context_features=C, edge_features=E, hidden=16, layers=3, sublayers=2,
                  aggregation_normalisation=5.0, coords_range=4.0)


def _net(**changes) -> EGNNDenoiser:
    torch.manual_seed(0)
    return EGNNDenoiser(dataclasses.replace(BASE, **changes)).double().eval()


def _inputs(lengths=(7, 4, 1, 6), n=8, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    pos = torch.randn(len(lengths), n, 3, generator=g, dtype=torch.float64) * 1.5
    pos = torch.where(mask[..., None], pos, torch.zeros_like(pos))
    return {"pos": pos, "h": torch.randn(len(lengths), n, F, generator=g, dtype=torch.float64),
            "t": torch.rand(len(lengths), generator=g, dtype=torch.float64), "mask": mask,
            "context": torch.randn(len(lengths), C, generator=g, dtype=torch.float64),
            "edge_attr": torch.randn(len(lengths), n, n, E, generator=g, dtype=torch.float64)}


def test_the_full_graph_mask_as_pair_weights_is_the_plain_forward():
    net, inputs = _net(), _inputs()
    plain = net(**inputs)
    for weights in (pairwise_mask(inputs["mask"]), pairwise_mask(inputs["mask"]).double(),
                    torch.ones(4, 8, 8, dtype=torch.bool)):   # padding and self-pairs count zero whatever W holds
        for a, b in zip(plain, net(**inputs, pair_weights=weights), strict=True):
            assert torch.equal(a, b)
    assert net._pair_weights is None


def test_a_radius_adjacency_is_the_sparse_radius_net():
    """Dense body with the radius graph's 0/1 adjacency = the net with ``graph="radius"`` (same weights): the same
    function at the dense path's cost (scripts/bench_proteins.py's dense-masked arm), gradients included."""
    cutoff = 2.0
    dense = _net()
    sparse = _net(graph="radius", radius_cutoff=cutoff)
    sparse.load_state_dict(dense.state_dict())
    inputs = _inputs()
    b, i, j = sparse.edge_index(inputs["pos"], inputs["mask"])
    adjacency = torch.zeros(4, 8, 8, dtype=torch.bool)
    adjacency[b, i, j] = True
    assert 0 < int(adjacency.sum()) < int(pairwise_mask(inputs["mask"]).sum())   # a real cutoff
    out_dense = dense(**inputs, pair_weights=adjacency)
    out_sparse = sparse(**inputs)
    for a, c in zip(out_dense, out_sparse, strict=True):
        assert (a - c).abs().max() < 1e-10
    assert (out_dense[0] - dense(**inputs)[0]).abs().max() > 1e-6   # and not the full graph
    for net, out in ((dense, out_dense), (sparse, out_sparse)):
        net.zero_grad()
        (out[0].square().sum() + out[1].sin().sum()).backward()
    for (name, p), q in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        assert (p.grad - q.grad).abs().max() < 1e-10, name


def test_nan_at_padding_does_not_leak():
    net, inputs = _net(), _inputs()
    weights = pairwise_mask(inputs["mask"]).double() * 0.5
    reference = net(**inputs, pair_weights=weights)
    weights = torch.where(pairwise_mask(inputs["mask"]), weights, torch.full_like(weights, float("nan")))
    for a, b in zip(reference, net(**inputs, pair_weights=weights), strict=True):
        assert torch.equal(a, b)


def test_errors_and_state():
    inputs = _inputs()
    with pytest.raises(ValueError, match="pair_weights needs graph='full'"):
        _net(graph="radius", radius_cutoff=2.0)(**inputs, pair_weights=pairwise_mask(inputs["mask"]))
    net = _net()
    with pytest.raises(ValueError, match=r"pair_weights must be a \[B, N, N\] = \(4, 8, 8\) tensor, got \(4, 8\)"):
        net(**inputs, pair_weights=inputs["mask"])
    with pytest.raises(ValueError, match="h must be"):   # the contract's own checks still run, and reset the state
        net(**{**inputs, "h": inputs["h"][..., :2]}, pair_weights=pairwise_mask(inputs["mask"]))
    assert net._pair_weights is None
    for a, b in zip(net(**inputs), _net()(**inputs), strict=True):
        assert torch.equal(a, b)
