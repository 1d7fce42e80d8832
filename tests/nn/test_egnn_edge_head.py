"""The EGNN's ε for diffused edges (``edge_out_features``): exact E(3) invariance, permutation equivariance with
edges permuted on both axes, symmetry by construction, zeros on the diagonal and at padding (float64)."""

import pytest
import torch

from molediff.nn import EGNNConfig, build_denoiser
from molediff.nn.common import pairwise_mask
from molediff.testing import assert_equivariant, random_orthogonal, random_permutation

F, K, E_GIVEN = 4, 3, 2
SIZES = (6, 3, 1)
N = 7


def _net(edge_features=K + E_GIVEN, seed=0, **overrides):
    torch.manual_seed(seed)
    net = build_denoiser({"name": "egnn", "in_node_features": F, "hidden": 24, "layers": 3, "sublayers": 2,
                          "edge_features": edge_features, "edge_out_features": K, **overrides}).double().eval()
    with torch.no_grad():   # the coordinate head starts near zero: perturb it so equivariance is not trivial
        for name, p in net.named_parameters():
            if "coordinate_update.edge_out" in name:
                p.normal_(0.0, 0.3)
    return net


def _inputs(seed=0, symmetric=True):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(N)[None] < torch.tensor(SIZES)[:, None]
    pos = torch.randn(len(SIZES), N, 3, generator=g, dtype=torch.float64) * 1.5
    h = torch.randn(len(SIZES), N, F, generator=g, dtype=torch.float64)
    edges = torch.randn(len(SIZES), N, N, K + E_GIVEN, generator=g, dtype=torch.float64)
    if symmetric:
        edges = edges + edges.transpose(1, 2)
    t = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)
    return {"pos": pos, "h": h, "t": t, "mask": mask, "edge_attr": edges}


def _eps_edges(net, inputs):
    return net(inputs["pos"], inputs["h"], inputs["t"], inputs["mask"], None, inputs["edge_attr"])[2].detach()


def test_node_outputs_are_equivariant_with_the_edge_head():
    net = _net()
    assert_equivariant(lambda *a, **k: net(*a, **k)[:2], _inputs(), atol=1e-9)


@pytest.mark.parametrize("symmetric_input", [True, False])
def test_edge_outputs_are_symmetric_and_zero_on_the_diagonal_and_at_padding(symmetric_input):
    net = _net()
    inputs = _inputs(symmetric=symmetric_input)
    out = net(inputs["pos"], inputs["h"], inputs["t"], inputs["mask"], None, inputs["edge_attr"])
    assert len(out) == 3
    eps = out[2]
    assert eps.shape == (3, N, N, K) and eps.dtype == torch.float64
    assert torch.equal(eps, eps.transpose(1, 2))                    # exactly, for any input
    assert (eps[~pairwise_mask(inputs["mask"])] == 0).all()         # diagonal, padding, the lone atom
    assert eps[0, 0, 1].abs().sum() > 0
    # padding content (even NaN) does not leak
    noisy = {**inputs, "edge_attr": inputs["edge_attr"].clone(), "pos": inputs["pos"].clone()}
    noisy["edge_attr"][0, 6] = float("nan")
    noisy["pos"][1, 5] = 1e6
    torch.testing.assert_close(_eps_edges(net, noisy), eps.detach(), atol=0, rtol=0)


def test_edge_outputs_are_invariant_under_rotation_reflection_and_translation():
    net = _net()
    inputs = _inputs()
    eps = _eps_edges(net, inputs)
    for det, seed in ((1, 1), (-1, 2)):
        q = random_orthogonal(det, seed=seed)
        torch.testing.assert_close(_eps_edges(net, {**inputs, "pos": inputs["pos"] @ q.T}), eps,
                                   atol=1e-10, rtol=0)
    shift = torch.randn(3, 1, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 5
    torch.testing.assert_close(_eps_edges(net, {**inputs, "pos": inputs["pos"] + shift}), eps, atol=1e-10, rtol=0)


def test_edge_outputs_permute_on_both_axes_with_the_nodes():
    net = _net()
    inputs = _inputs(symmetric=False)
    eps = _eps_edges(net, inputs)
    order = random_permutation(inputs["mask"], seed=5)
    rows = torch.arange(3)[:, None]
    permuted = {"pos": inputs["pos"][rows, order], "h": inputs["h"][rows, order], "t": inputs["t"],
                "mask": inputs["mask"][rows, order],
                "edge_attr": inputs["edge_attr"][rows[:, :, None], order[:, :, None], order[:, None, :]]}
    want = eps[rows[:, :, None], order[:, :, None], order[:, None, :]]
    torch.testing.assert_close(_eps_edges(net, permuted), want, atol=1e-10, rtol=0)


def test_the_edge_head_changes_nothing_else_and_needs_the_dense_graph():
    plain = build_denoiser({"name": "egnn", "in_node_features": F, "hidden": 24, "layers": 2,
                            "edge_features": K})
    assert not any("edge_head" in name for name, _ in plain.named_parameters())
    inputs = _inputs()
    out = plain(inputs["pos"].float(), inputs["h"].float(), inputs["t"].float(), inputs["mask"], None,
                inputs["edge_attr"][..., :K].float())
    assert len(out) == 2
    # the same seed: every parameter but the head draws the same initial values
    torch.manual_seed(0)
    a = build_denoiser({"name": "egnn", "in_node_features": F, "hidden": 24, "layers": 2, "edge_features": K})
    torch.manual_seed(0)
    b = build_denoiser({"name": "egnn", "in_node_features": F, "hidden": 24, "layers": 2, "edge_features": K,
                        "edge_out_features": K})
    shared = dict(a.named_parameters())
    for name, p in b.named_parameters():
        if not name.startswith("edge_head."):
            assert torch.equal(p, shared.pop(name)), name
    assert not shared
    with pytest.raises(ValueError, match="graph='full'"):
        EGNNConfig(in_node_features=F, edge_features=K, edge_out_features=K, graph="radius", radius_cutoff=3.0)
    with pytest.raises(ValueError, match="edge_features >= 1"):
        EGNNConfig(in_node_features=F, edge_out_features=K)
    with pytest.raises(ValueError, match="edge_out_features must be >= 0"):
        EGNNConfig(in_node_features=F, edge_features=K, edge_out_features=-1)


def test_pyg_input_is_refused_for_an_edge_head():
    from torch_geometric.data import Data

    net = _net()
    data = Data(pos=torch.zeros(3, 3, dtype=torch.float64), h=torch.zeros(3, F, dtype=torch.float64),
                edge_index=torch.tensor([[0, 1], [1, 0]]), edge_attr=torch.zeros(2, K + E_GIVEN, dtype=torch.float64))
    with pytest.raises(ValueError, match="dense"):
        net(data, t=torch.zeros(1, dtype=torch.float64))
