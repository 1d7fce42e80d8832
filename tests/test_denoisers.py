"""One contract for every denoiser backbone, plus E(3) / permutation equivariance and input handling.

All property tests use small random float64 inputs with padding present; equivariance is checked to 1e-6.
"""

from __future__ import annotations

import math

import pytest
import torch

from molediff.nn import (
    E3nnConfig,
    EGNNConfig,
    build_denoiser,
    denoiser_config_dict,
)

FEATURES = 5
CONTEXT = 2
SIZES = (7, 4, 1)  # real atoms per molecule; the last one is a lone atom
NUM_NODES = 8  # > max(SIZES): every molecule has padding

# e3nn's own modules still call torch.jit.script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

BACKBONES = {
    "egnn": {"name": "egnn", "in_node_features": FEATURES, "context_features": CONTEXT, "hidden": 32,
             "layers": 3, "sublayers": 2},
    "e3nn": {"name": "e3nn", "in_node_features": FEATURES, "context_features": CONTEXT,
             "hidden_irreps": "8x0e+4x1o+2x2e", "layers": 2, "radial_hidden": 16},
    "e3nn_cutoff": {"name": "e3nn", "in_node_features": FEATURES, "context_features": CONTEXT,
                    "hidden_irreps": "8x0e+4x1o+2x2e", "layers": 2, "radial_hidden": 16, "cutoff": 2.5},
}


def _make(name: str, dtype=torch.float64, seed: int = 0):
    torch.manual_seed(seed)
    net = build_denoiser(BACKBONES[name]).to(dtype)
    # Perturb the near-zero coordinate head of the EGNN so equivariance tests are not trivially satisfied.
    with torch.no_grad():
        for module_name, parameter in net.named_parameters():
            if "coordinate_update.edge_out" in module_name:
                parameter.normal_(0.0, 0.3)
    return net.eval()


def _inputs(dtype=torch.float64, seed: int = 1, num_nodes: int = NUM_NODES):
    generator = torch.Generator().manual_seed(seed)
    batch_size = len(SIZES)
    mask = torch.arange(num_nodes)[None] < torch.tensor(SIZES)[:, None]
    pos = torch.randn(batch_size, num_nodes, 3, generator=generator, dtype=dtype) * 1.5
    h = torch.randn(batch_size, num_nodes, FEATURES, generator=generator, dtype=dtype)
    t = torch.rand(batch_size, generator=generator, dtype=dtype)
    context = torch.randn(batch_size, CONTEXT, generator=generator, dtype=dtype)
    return pos, h, t, mask, context


def _random_orthogonal(determinant: int, seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) * determinant < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.mark.parametrize("name", list(BACKBONES))
class TestDenoiserContract:
    def test_shapes_and_dtype_kept(self, name):
        for dtype in (torch.float32, torch.float64):
            net = _make(name, dtype)
            pos, h, t, mask, context = _inputs(dtype)
            eps_pos, eps_h = net(pos, h, t, mask, context)
            assert eps_pos.shape == pos.shape and eps_h.shape == h.shape
            assert eps_pos.dtype == dtype and eps_h.dtype == dtype

    def test_seeded_determinism(self, name):
        pos, h, t, mask, context = _inputs()
        first = _make(name, seed=3)(pos, h, t, mask, context)
        second = _make(name, seed=3)(pos, h, t, mask, context)
        for a, b in zip(first, second):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

    @pytest.mark.parametrize("time", [0.0, 1.0])
    def test_time_endpoints_finite(self, name, time):
        net = _make(name)
        pos, h, _, mask, context = _inputs()
        eps_pos, eps_h = net(pos, h, torch.full((len(SIZES),), time, dtype=pos.dtype), mask, context)
        assert torch.isfinite(eps_pos).all() and torch.isfinite(eps_h).all()
        # A Python float is broadcast over the batch.
        eps_pos_scalar, _ = net(pos, h, time, mask, context)
        torch.testing.assert_close(eps_pos_scalar, eps_pos)

    def test_zero_centre_of_mass_and_zero_padding(self, name):
        net = _make(name)
        pos, h, t, mask, context = _inputs()
        eps_pos, eps_h = net(pos, h, t, mask, context)
        assert (eps_pos[~mask] == 0).all() and (eps_h[~mask] == 0).all()
        centre = eps_pos.sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(centre, torch.zeros_like(centre), rtol=0, atol=1e-12)

    def test_padding_content_irrelevant(self, name):
        net = _make(name)
        pos, h, t, mask, context = _inputs()
        expected = net(pos, h, t, mask, context)
        pos_junk, h_junk = pos.clone(), h.clone()
        pos_junk[~mask] = torch.randn_like(pos_junk[~mask]) * 100
        h_junk[~mask] = float("nan")
        got = net(pos_junk, h_junk, t, mask, context)
        for a, b in zip(expected, got):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

    @pytest.mark.parametrize("determinant", [1, -1], ids=["rotation", "reflection"])
    def test_orthogonal_and_translation_equivariance(self, name, determinant):
        net = _make(name)
        pos, h, t, mask, context = _inputs()
        eps_pos, eps_h = net(pos, h, t, mask, context)
        q = _random_orthogonal(determinant)
        shift = torch.tensor([[[3.0, -2.0, 0.5]]], dtype=pos.dtype)
        eps_pos_moved, eps_h_moved = net(pos @ q.T + shift, h, t, mask, context)
        torch.testing.assert_close(eps_pos_moved, eps_pos @ q.T, rtol=0, atol=1e-6)
        torch.testing.assert_close(eps_h_moved, eps_h, rtol=0, atol=1e-6)

    def test_translation_invariance(self, name):
        net = _make(name)
        pos, h, t, mask, context = _inputs()
        expected = net(pos, h, t, mask, context)
        got = net(pos + torch.tensor([10.0, -7.0, 4.0], dtype=pos.dtype), h, t, mask, context)
        for a, b in zip(expected, got):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    def test_permutation_equivariance(self, name):
        net = _make(name)
        pos, h, t, mask, context = _inputs()
        eps_pos, eps_h = net(pos, h, t, mask, context)
        # A different random permutation of the (padded) node slots per molecule.
        generator = torch.Generator().manual_seed(4)
        order = torch.stack([torch.randperm(NUM_NODES, generator=generator) for _ in SIZES])
        rows = torch.arange(len(SIZES))[:, None]
        got_pos, got_h = net(pos[rows, order], h[rows, order], t, mask[rows, order], context)
        torch.testing.assert_close(got_pos, eps_pos[rows, order], rtol=0, atol=1e-6)
        torch.testing.assert_close(got_h, eps_h[rows, order], rtol=0, atol=1e-6)

    def test_pyg_batch_matches_dense(self, name):
        from torch_geometric.data import Batch, Data

        net = _make(name)
        # Extra padding on the dense side, so the two paths see differently shaped tensors.
        pos, h, t, mask, context = _inputs(num_nodes=NUM_NODES + 3)
        eps_pos, eps_h = net(pos, h, t, mask, context)
        batch = Batch.from_data_list([Data(pos=pos[b, :n], x=h[b, :n]) for b, n in enumerate(SIZES)])
        for graph_pos, graph_h in (net.forward_pyg(batch, t, context), net(batch, t=t, context=context)):
            assert graph_pos.shape == (sum(SIZES), 3) and graph_h.shape == (sum(SIZES), FEATURES)
            torch.testing.assert_close(graph_pos, eps_pos[mask], rtol=0, atol=1e-9)
            torch.testing.assert_close(graph_h, eps_h[mask], rtol=0, atol=1e-9)

    def test_backward_reaches_every_parameter(self, name):
        net = _make(name, torch.float32).train()
        pos, h, t, mask, context = _inputs(torch.float32)
        eps_pos, eps_h = net(pos, h, t, mask, context)
        (eps_pos.square().sum() + eps_h.square().sum()).backward()
        for parameter_name, parameter in net.named_parameters():
            # EGNN's output channels for time/context exist only for EDM checkpoint compatibility.
            if parameter_name.startswith("embedding_out"):
                continue
            assert parameter.grad is not None, parameter_name
            assert torch.isfinite(parameter.grad).all(), parameter_name

    def test_cpu_bf16_autocast_runs(self, name):
        net = _make(name, torch.float32)
        pos, h, t, mask, context = _inputs(torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eps_pos, eps_h = net(pos, h, t, mask, context)
        assert eps_pos.dtype == torch.float32 and eps_h.dtype == torch.float32
        assert torch.isfinite(eps_pos).all() and torch.isfinite(eps_h).all()

    def test_bad_inputs_raise(self, name):
        net = _make(name)
        pos, h, t, mask, context = _inputs()
        cases = {
            "pos must be a [B, N, 3]": (pos[..., :2], h, t, mask, context),
            "h must be a [B, N, F]": (pos, h[:, :-1], t, mask, context),
            "mask must be a [B, N]": (pos, h, t, mask[:, :-1], context),
            "mask must be a bool": (pos, h, t, mask.double(), context),
            "t must have shape": (pos, h, t[:-1], mask, context),
            "context must be a [B, C]": (pos, h, t, mask, None),
            "share a dtype": (pos, h.float(), t, mask, context),
        }
        for message, args in cases.items():
            with pytest.raises(ValueError, match=message.replace("[", r"\[")):
                net(*args)
        bad_pos = pos.clone()
        bad_pos[0, 0, 0] = math.nan
        with pytest.raises(ValueError, match="finite"):
            net(bad_pos, h, t, mask, context)


def test_egnn_edge_tensors_stay_bf16_under_autocast():
    """A float32 mask or weight anywhere on the edge path would silently promote the edge tensors."""
    net = _make("egnn", torch.float32)
    pos, h, t, mask, context = _inputs(torch.float32)
    seen = []
    for module in net.modules():
        if module.__class__.__name__ in ("_MessageLayer", "_FactoredEdgeInput"):
            module.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(pos, h, t, mask, context)
    assert seen and all(dtype == torch.bfloat16 for dtype in seen), seen


def test_egnn_parameter_count_matches_edm():
    """EDM's QM9 model (9 blocks x 256, one sublayer, 5 types + charge + time) has 5,339,920 parameters."""
    net = build_denoiser({"name": "egnn", "in_node_features": 6})
    assert sum(p.numel() for p in net.parameters()) == 5_339_920


def test_build_denoiser_round_trip_and_errors():
    for config in (EGNNConfig(in_node_features=3, hidden=8, layers=1),
                   E3nnConfig(in_node_features=3, hidden_irreps="4x0e+2x1o", layers=1, lmax=1)):
        net = build_denoiser(config)
        assert net.config == config
        assert build_denoiser(denoiser_config_dict(config)).config == config
    with pytest.raises(ValueError, match="name"):
        build_denoiser({"name": "unet", "in_node_features": 3})
    with pytest.raises(ValueError, match="unknown fields"):
        build_denoiser({"name": "egnn", "in_node_features": 3, "hiden": 8})
    with pytest.raises(ValueError, match="1o"):
        E3nnConfig(in_node_features=3, hidden_irreps="8x0e")
