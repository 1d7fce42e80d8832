"""One contract for every denoiser backbone, plus E(3) / permutation equivariance, edge features and input handling.

All property tests use small random float64 inputs with padding present; equivariance is checked to 1e-6 with
:func:`molediff.testing.assert_equivariant`. Every backbone also runs with edge features (``*_edges``), whose
random ``edge_attr`` is deliberately not symmetric: ``edge_attr[b, i, j]`` belongs to the edge j → i.
"""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch

from molediff.nn import (
    E3nnConfig,
    EGNNConfig,
    build_denoiser,
    denoiser_config_dict,
)
from molediff.nn.common import pairwise_mask
from molediff.testing import assert_equivariant, random_permutation

FEATURES = 5
CONTEXT = 2
EDGE_FEATURES = 3
SIZES = (7, 4, 1)  # real atoms per molecule; the last one is a lone atom
NUM_NODES = 8  # > max(SIZES): every molecule has padding

# e3nn's own modules still call torch.jit.script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

_EGNN = {"name": "egnn", "in_node_features": FEATURES, "context_features": CONTEXT, "hidden": 32, "layers": 3,
         "sublayers": 2}
_E3NN = {"name": "e3nn", "in_node_features": FEATURES, "context_features": CONTEXT,
         "hidden_irreps": "8x0e+4x1o+2x2e", "layers": 2, "radial_hidden": 16}
BACKBONES = {
    "egnn": _EGNN,
    "egnn_edges": {**_EGNN, "edge_features": EDGE_FEATURES},
    "e3nn": _E3NN,
    "e3nn_cutoff": {**_E3NN, "cutoff": 2.5},
    "e3nn_edges": {**_E3NN, "edge_features": EDGE_FEATURES},
}
EDGE_BACKBONES = [name for name, config in BACKBONES.items() if config.get("edge_features")]


def _build(name: str, dtype=torch.float64, seed: int = 0, **overrides):
    """Backbone ``name`` built from ``seed`` (eval mode)."""
    torch.manual_seed(seed)
    net = build_denoiser({**BACKBONES[name], **overrides}).to(dtype)
    # Perturb the near-zero coordinate head of the EGNN so equivariance tests are not trivially satisfied.
    with torch.no_grad():
        for module_name, parameter in net.named_parameters():
            if "coordinate_update.edge_out" in module_name:
                parameter.normal_(0.0, 0.3)
    return net.eval()


_BUILT: dict[tuple, tuple[torch.nn.Module, torch.Tensor]] = {}


def _make(name: str, dtype=torch.float64, seed: int = 0, **overrides):
    """A copy of ``_build(name, dtype, seed, **overrides)``: each network is built once per module (an e3nn
    network takes about a second to build) and copied, and torch's global generator is left as the build left
    it, so the copy cannot be told from a fresh build."""
    key = (name, dtype, seed, tuple(sorted(overrides.items())))
    if key not in _BUILT:
        net = _build(name, dtype, seed, **overrides)
        _BUILT[key] = (net, torch.get_rng_state())
    net, generator_state = _BUILT[key]
    torch.set_rng_state(generator_state)
    return copy.deepcopy(net)


def _inputs(name: str, dtype=torch.float64, seed: int = 1, num_nodes: int = NUM_NODES) -> dict:
    """Keyword arguments for ``net(**inputs)``; ``edge_attr`` only for the edge-feature backbones."""
    generator = torch.Generator().manual_seed(seed)
    batch_size = len(SIZES)
    mask = torch.arange(num_nodes)[None] < torch.tensor(SIZES)[:, None]
    inputs = {
        "pos": torch.randn(batch_size, num_nodes, 3, generator=generator, dtype=dtype) * 1.5,
        "h": torch.randn(batch_size, num_nodes, FEATURES, generator=generator, dtype=dtype),
        "t": torch.rand(batch_size, generator=generator, dtype=dtype),
        "mask": mask,
        "context": torch.randn(batch_size, CONTEXT, generator=generator, dtype=dtype),
    }
    edge_features = BACKBONES[name].get("edge_features", 0)
    if edge_features:
        # Independent entries, so edge_attr[b, i, j] != edge_attr[b, j, i]: direction mix-ups show.
        shape = (batch_size, num_nodes, num_nodes, edge_features)
        inputs["edge_attr"] = torch.randn(shape, generator=generator, dtype=dtype)
    return inputs


def _assert_same(got, expected, atol=0.0):
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


# One e3nn backbone (with edge features, the widest) keeps the contract in the fast loop; the other two are slow.
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in ("e3nn", "e3nn_cutoff")
                                  else name for name in BACKBONES])
class TestDenoiserContract:
    def test_shapes_and_dtype_kept(self, name):
        for dtype in (torch.float32, torch.float64):
            net = _make(name, dtype)
            inputs = _inputs(name, dtype)
            eps_pos, eps_h = net(**inputs)
            assert eps_pos.shape == inputs["pos"].shape and eps_h.shape == inputs["h"].shape
            assert eps_pos.dtype == dtype and eps_h.dtype == dtype

    def test_seeded_determinism(self, name):
        inputs = _inputs(name)
        _assert_same(_build(name, seed=3)(**inputs), _build(name, seed=3)(**inputs))   # two builds, not copies

    @pytest.mark.parametrize("time", [0.0, 1.0])
    def test_time_endpoints_finite(self, name, time):
        net = _make(name)
        inputs = _inputs(name)
        eps_pos, eps_h = net(**{**inputs, "t": torch.full((len(SIZES),), time, dtype=torch.float64)})
        assert torch.isfinite(eps_pos).all() and torch.isfinite(eps_h).all()
        # A Python float is broadcast over the batch.
        eps_pos_scalar, _ = net(**{**inputs, "t": time})
        torch.testing.assert_close(eps_pos_scalar, eps_pos)

    def test_zero_centre_of_mass_and_zero_padding(self, name):
        net = _make(name)
        inputs = _inputs(name)
        mask = inputs["mask"]
        eps_pos, eps_h = net(**inputs)
        assert (eps_pos[~mask] == 0).all() and (eps_h[~mask] == 0).all()
        centre = eps_pos.sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(centre, torch.zeros_like(centre), rtol=0, atol=1e-12)

    def test_padding_content_irrelevant(self, name):
        net = _make(name)
        inputs = _inputs(name)
        mask = inputs["mask"]
        expected = net(**inputs)
        junk = dict(inputs, pos=inputs["pos"].clone(), h=inputs["h"].clone())
        junk["pos"][~mask] = torch.randn_like(junk["pos"][~mask]) * 100
        junk["h"][~mask] = float("nan")
        if "edge_attr" in inputs:
            # Pairs touching padding and self-edges (the diagonal) are not edges: NaN there must not leak.
            junk["edge_attr"] = inputs["edge_attr"].masked_fill(~pairwise_mask(mask).unsqueeze(-1), float("nan"))
            assert junk["edge_attr"][0, 0, 0].isnan().all() and junk["edge_attr"][1, 0, 5].isnan().all()
        _assert_same(net(**junk), expected)

    def test_equivariance(self, name):
        """Rotation, reflection, translation and permutation (edge_attr on both node axes), float64."""
        assert_equivariant(_make(name), _inputs(name), atol=1e-6)

    def test_pyg_batch_matches_dense(self, name):
        from torch_geometric.data import Batch, Data

        net = _make(name)
        # Extra padding on the dense side, so the two paths see differently shaped tensors.
        inputs = _inputs(name, num_nodes=NUM_NODES + 3)
        mask, t, context = inputs["mask"], inputs["t"], inputs["context"]
        generator = torch.Generator().manual_seed(5)
        graphs = []
        for b, n in enumerate(SIZES):
            graph = Data(pos=inputs["pos"][b, :n], x=inputs["h"][b, :n])
            # A random subset of the directed pairs, in PyG order (row 0 source j, row 1 target i).
            i, j = (~torch.eye(n, dtype=torch.bool)).nonzero(as_tuple=True)
            keep = torch.rand(i.shape, generator=generator) < 0.6
            graph.edge_index = torch.stack([j[keep], i[keep]])
            if "edge_attr" in inputs:
                graph.edge_attr = inputs["edge_attr"][b, i[keep], j[keep]]
            else:  # molecule graphs carry integer bond orders, which a net without edge features ignores
                graph.edge_attr = torch.ones(int(keep.sum()), dtype=torch.long)
            graphs.append(graph)
        batch = Batch.from_data_list(graphs)
        if "edge_attr" in inputs:
            # The dense equivalent: zeros on the pairs the graphs leave out.
            present = torch.zeros(mask.shape + mask.shape[1:], dtype=torch.bool)
            for b, graph in enumerate(graphs):
                present[b, graph.edge_index[1], graph.edge_index[0]] = True
            inputs["edge_attr"] = inputs["edge_attr"] * present.unsqueeze(-1)
        eps_pos, eps_h = net(**inputs)
        for graph_pos, graph_h in (net.forward_pyg(batch, t, context), net(batch, t=t, context=context)):
            assert graph_pos.shape == (sum(SIZES), 3) and graph_h.shape == (sum(SIZES), FEATURES)
            torch.testing.assert_close(graph_pos, eps_pos[mask], rtol=0, atol=1e-9)
            torch.testing.assert_close(graph_h, eps_h[mask], rtol=0, atol=1e-9)
        with pytest.raises(ValueError, match="taken from the batch"):
            net(batch, t=t, context=context, edge_attr=inputs.get("edge_attr", torch.zeros(1)))
        if "edge_attr" in inputs:
            del batch.edge_attr
            with pytest.raises(ValueError, match="needs `edge_index`"):
                net.forward_pyg(batch, t, context)

    def test_backward_reaches_every_parameter(self, name):
        net = _make(name, torch.float32).train()
        inputs = _inputs(name, torch.float32)
        if "edge_attr" in inputs:
            inputs["edge_attr"].requires_grad_(True)
        eps_pos, eps_h = net(**inputs)
        (eps_pos.square().sum() + eps_h.square().sum()).backward()
        for parameter_name, parameter in net.named_parameters():
            # EGNN's output channels for time/context exist only for EDM checkpoint compatibility.
            if parameter_name.startswith("embedding_out"):
                continue
            assert parameter.grad is not None, parameter_name
            assert torch.isfinite(parameter.grad).all(), parameter_name
        if "edge_attr" in inputs:
            pairs = pairwise_mask(inputs["mask"])
            assert (inputs["edge_attr"].grad[pairs] != 0).any() and (inputs["edge_attr"].grad[~pairs] == 0).all()
            # The weights that read edge_attr exist and learn from it.
            if name.startswith("egnn"):
                readers = [p for n, p in net.named_parameters() if "edge_attr_projection" in n]
                assert len(readers) == _EGNN["layers"] * (_EGNN["sublayers"] + 1)
                assert all(p.shape == (_EGNN["hidden"], EDGE_FEATURES) for p in readers)
                grads = [p.grad for p in readers]
            else:  # the radial MLPs' first layers: Gaussian basis columns, then the edge-feature columns
                radial = [interaction.radial[0].weight for interaction in net.interactions]
                assert all(w.shape[1] == net.config.radial_basis + EDGE_FEATURES for w in radial)
                grads = [w.grad[:, -EDGE_FEATURES:] for w in radial]
            assert all(grad.abs().sum() > 0 for grad in grads)

    def test_cpu_bf16_autocast_runs(self, name):
        net = _make(name, torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eps_pos, eps_h = net(**_inputs(name, torch.float32))
        assert eps_pos.dtype == torch.float32 and eps_h.dtype == torch.float32
        assert torch.isfinite(eps_pos).all() and torch.isfinite(eps_h).all()

    def test_bad_inputs_raise(self, name):
        net = _make(name)
        inputs = _inputs(name)
        pos, h, t, mask = inputs["pos"], inputs["h"], inputs["t"], inputs["mask"]
        cases = {
            "pos must be a [B, N, 3]": {"pos": pos[..., :2]},
            "h must be a [B, N, F]": {"h": h[:, :-1]},
            "mask must be a [B, N]": {"mask": mask[:, :-1]},
            "mask must be a bool": {"mask": mask.double()},
            "t must have shape": {"t": t[:-1]},
            "context must be a [B, C]": {"context": None},
            "share a dtype": {"h": h.float()},
        }
        bad_pos = pos.clone()
        bad_pos[0, 0, 0] = math.nan
        cases["finite"] = {"pos": bad_pos}
        if "edge_attr" in inputs:
            edge_attr = inputs["edge_attr"]
            nan_edge = edge_attr.clone()
            nan_edge[0, 1, 2, 0] = math.nan  # a real pair
            cases.update({
                "edge_attr must be a [B, N, N, E]": {"edge_attr": None},
                "edge_attr must be a [B, N, N, E] = (3, 8, 8, 3)": {"edge_attr": edge_attr[..., :-1]},
                "edge_attr must be a [B, N, N, E] = (3, 8, 8, 3) tensor, got (3, 8, 7, 3)":
                    {"edge_attr": edge_attr[:, :, :-1]},
                "edge_attr and pos must share a dtype": {"edge_attr": edge_attr.float()},
                "context and edge_attr must be finite": {"edge_attr": nan_edge},
            })
        else:
            extra = torch.zeros(*mask.shape, mask.shape[1], EDGE_FEATURES, dtype=pos.dtype)
            cases["edge_attr was given but the config has edge_features=0"] = {"edge_attr": extra}
        for message, change in cases.items():
            with pytest.raises(ValueError, match=re.escape(message)):
                net(**{**inputs, **change})


@pytest.mark.parametrize("name", EDGE_BACKBONES)
def test_edge_attr_changes_output(name):
    net = _make(name)
    inputs = _inputs(name)
    mask = inputs["mask"]
    expected_pos, expected_h = net(**inputs)
    changed = inputs["edge_attr"].clone()
    changed[0, 2, 5] += 1.0  # one real edge, 5 → 2
    for edge_attr in (changed, inputs["edge_attr"].transpose(1, 2)):  # the transpose: direction matters
        eps_pos, eps_h = net(**{**inputs, "edge_attr": edge_attr})
        assert (eps_pos[mask] - expected_pos[mask]).abs().max() > 1e-4
        assert (eps_h[mask] - expected_h[mask]).abs().max() > 1e-4


@pytest.mark.parametrize("name", EDGE_BACKBONES)
def test_edge_attr_belongs_to_edge_j_to_i(name):
    """With one message-passing layer, edge_attr[b, i, j] (edge j → i) can only change node i's features."""
    net = _make(name, layers=1, **({"sublayers": 1} if name.startswith("egnn") else {}))
    inputs = _inputs(name)
    _, expected_h = net(**inputs)
    changed = inputs["edge_attr"].clone()
    changed[0, 2, 5] += 1.0
    _, eps_h = net(**{**inputs, "edge_attr": changed})
    moved = (eps_h - expected_h).abs().amax(-1) > 0
    assert moved[0, 2] and moved.sum() == 1, moved


@pytest.mark.parametrize("name", EDGE_BACKBONES)
def test_equivariance_on_qm9_molecules(name, qm9_fixture):
    """Real geometries (H, C, N, O, F one-hot) with distance-bin edge features, on the shared QM9 fixture."""
    offsets, numbers, positions = qm9_fixture["offsets"], qm9_fixture["atomic_numbers"], qm9_fixture["positions"]
    picked = [0, 7, 42]
    sizes = [int(offsets[m + 1] - offsets[m]) for m in picked]
    num_nodes = max(sizes) + 1
    pos = torch.zeros(len(picked), num_nodes, 3, dtype=torch.float64)
    h = torch.zeros(len(picked), num_nodes, FEATURES, dtype=torch.float64)
    mask = torch.zeros(len(picked), num_nodes, dtype=torch.bool)
    for b, (m, n) in enumerate(zip(picked, sizes)):
        rows = slice(offsets[m], offsets[m + 1])
        pos[b, :n] = torch.from_numpy(positions[rows].astype(np.float64))
        types = np.searchsorted([1, 6, 7, 8, 9], numbers[rows])
        h[b, torch.arange(n), torch.from_numpy(types)] = 1.0
        mask[b, :n] = True
    distance = (pos.unsqueeze(2) - pos.unsqueeze(1)).norm(dim=-1)
    bins = torch.bucketize(distance, torch.tensor([1.2, 1.6], dtype=torch.float64))  # short, bond-like, far
    edge_attr = torch.nn.functional.one_hot(bins, EDGE_FEATURES).to(torch.float64)
    inputs = {"pos": pos, "h": h, "t": torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), "mask": mask,
              "context": torch.zeros(len(picked), CONTEXT, dtype=torch.float64), "edge_attr": edge_attr}
    assert_equivariant(_make(name), inputs, atol=1e-6)


@pytest.mark.parametrize("name", ["egnn", "egnn_edges"])
def test_egnn_edge_tensors_stay_bf16_under_autocast(name):
    """A float32 mask, weight or edge_attr anywhere on the edge path would silently promote the edge tensors."""
    net = _make(name, torch.float32)
    seen = []
    for module in net.modules():
        if module.__class__.__name__ in ("_MessageLayer", "_FactoredEdgeInput"):
            module.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(**_inputs(name, torch.float32))
    assert seen and all(dtype == torch.bfloat16 for dtype in seen), seen


def test_egnn_parameter_count_matches_edm():
    """EDM's QM9 model (9 blocks x 256, one sublayer, 5 types + charge + time) has 5,339,920 parameters."""
    net = build_denoiser({"name": "egnn", "in_node_features": 6})
    assert sum(p.numel() for p in net.parameters()) == 5_339_920


def test_egnn_without_edge_features_is_unchanged():
    """edge_features=0 keeps EDM's exact layout; edge features only add projections, created last."""
    small = {"name": "egnn", "in_node_features": FEATURES, "hidden": 4, "layers": 1, "sublayers": 1}
    shapes = {name: tuple(p.shape) for name, p in build_denoiser(small).state_dict().items()}
    layer, update = "blocks.0.message_layers.0.", "blocks.0.coordinate_update."
    assert shapes == {
        "embedding.weight": (4, 6), "embedding.bias": (4,),
        layer + "edge_in.linear.weight": (4, 10), layer + "edge_in.linear.bias": (4,),
        layer + "edge_out.weight": (4, 4), layer + "edge_out.bias": (4,),
        layer + "node_mlp.0.weight": (4, 8), layer + "node_mlp.0.bias": (4,),
        layer + "node_mlp.2.weight": (4, 4), layer + "node_mlp.2.bias": (4,),
        layer + "attention.weight": (1, 4), layer + "attention.bias": (1,),
        update + "edge_in.linear.weight": (4, 10), update + "edge_in.linear.bias": (4,),
        update + "edge_hidden.weight": (4, 4), update + "edge_hidden.bias": (4,),
        update + "edge_out.weight": (1, 4),
        "embedding_out.weight": (6, 4), "embedding_out.bias": (6,),
    }
    # Same seed with and without edge features: identical shared parameters (init order untouched) ...
    torch.manual_seed(0)
    plain = build_denoiser(BACKBONES["egnn"]).double().eval()
    torch.manual_seed(0)
    edged = build_denoiser(BACKBONES["egnn_edges"]).double().eval()
    plain_state, edged_state = plain.state_dict(), edged.state_dict()
    extra = sorted(set(edged_state) - set(plain_state))
    assert set(plain_state) <= set(edged_state) and extra and all("edge_attr_projection" in k for k in extra)
    for key, value in plain_state.items():
        assert torch.equal(edged_state[key], value), key
    # ... and, with the projections zeroed, bit-identical outputs (on _make's perturbed coordinate head).
    perturbed = _make("egnn").state_dict()
    plain.load_state_dict(perturbed)
    assert sorted(edged.load_state_dict(perturbed, strict=False).missing_keys) == extra
    with torch.no_grad():
        for key in extra:
            edged.get_parameter(key).zero_()
    inputs = _inputs("egnn_edges")
    _assert_same(edged(**inputs), plain(**{k: v for k, v in inputs.items() if k != "edge_attr"}))


def test_build_denoiser_round_trip_and_errors():
    for config in (EGNNConfig(in_node_features=3, hidden=8, layers=1),
                   EGNNConfig(in_node_features=3, hidden=8, layers=1, edge_features=2),
                   E3nnConfig(in_node_features=3, hidden_irreps="4x0e+2x1o", layers=1, lmax=1),
                   E3nnConfig(in_node_features=3, hidden_irreps="4x0e+2x1o", layers=1, lmax=1, edge_features=2)):
        net = build_denoiser(config)
        assert net.config == config
        assert denoiser_config_dict(config)["edge_features"] == config.edge_features
        rebuilt = build_denoiser(denoiser_config_dict(config))
        assert rebuilt.config == config
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="name"):
        build_denoiser({"name": "unet", "in_node_features": 3})
    with pytest.raises(ValueError, match="unknown config key .denoiser.hiden."):
        build_denoiser({"name": "egnn", "in_node_features": 3, "hiden": 8})
    with pytest.raises(ValueError, match="1o"):
        E3nnConfig(in_node_features=3, hidden_irreps="8x0e")
    for config_type in (EGNNConfig, E3nnConfig):
        with pytest.raises(ValueError, match="edge_features must be >= 0"):
            config_type(in_node_features=3, edge_features=-1)


def test_assert_equivariant_names_the_broken_property(rotation, reflection):
    """The helper passes a trivially equivariant model and names the first property a broken one violates."""
    assert torch.det(rotation) > 0 > torch.det(reflection)
    for q in (rotation, reflection):
        torch.testing.assert_close(q @ q.T, torch.eye(3, dtype=torch.float64))
    inputs = _inputs("egnn")
    order = random_permutation(inputs["mask"], seed=1)
    assert (order.sort(dim=1).values == torch.arange(NUM_NODES)).all()

    def centred(pos, mask):
        weight = mask.unsqueeze(-1).to(pos.dtype)
        return (pos - (pos * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True)) * weight

    def pseudovector(pos, mask):  # r_i × Σ_j |r_j| r_j: rotates like a vector but does not flip under reflection
        r = centred(pos, mask)
        return torch.linalg.cross(r, (r.norm(dim=-1, keepdim=True) * r).sum(1, keepdim=True).expand_as(r))

    models = {
        None: lambda pos, h, t, mask, context: (centred(pos, mask), h * t[:, None, None]),
        "rotation invariance of eps_h": lambda pos, h, t, mask, context: (centred(pos, mask), h + pos[..., :1]),
        "reflection equivariance of eps_pos": lambda pos, h, t, mask, context: (pseudovector(pos, mask), h),
        "translation invariance of eps_pos": lambda pos, h, t, mask, context: (pos, h),
        "permutation equivariance of eps_h": lambda pos, h, t, mask, context: (centred(pos, mask), h.cumsum(1)),
    }
    for failure, model in models.items():
        if failure is None:
            assert_equivariant(model, inputs)
        else:
            with pytest.raises(AssertionError, match=failure):
                assert_equivariant(model, inputs)
    with pytest.raises(ValueError, match="missing"):
        assert_equivariant(models[None], {"pos": inputs["pos"]})
