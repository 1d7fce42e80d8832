"""The conformer domain's model: coordinates diffuse, the graph (atom types, edge features) conditions."""

from functools import partial

import helpers
import pytest
import torch
from helpers import random_batch

from molediff.conformers import ConformerDiffusion, ConformerDiffusionConfig
from molediff.testing import assert_equivariant

# a tiny model: 2-layer EGNN of width 16, T = 100, float64
tiny_model = partial(helpers.tiny_model, ConformerDiffusion)


def test_samples_coordinates_for_the_given_atom_types():
    model = tiny_model()
    pos, types, mask = random_batch()
    loss = model(pos, types, mask)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    out = model.sample(types, mask, sampler="ddpm", steps=5, seeds=[1, 2, 3])
    assert out.shape == (3, 6, 3)
    assert torch.isfinite(out).all() and (out[~mask] == 0).all()
    torch.testing.assert_close(out.sum(1), torch.zeros(3, 3, dtype=torch.float64), atol=1e-9, rtol=0)
    # conditioned on the graph: other types, same noise, other coordinates
    other = model.sample((types + 1) % 5 * mask, mask, sampler="ddpm", steps=5, seeds=[1, 2, 3])
    assert not torch.allclose(out, other)
    # a molecule does not depend on its batch
    alone = model.sample(types[1:2], mask[1:2], sampler="ddpm", steps=5, seeds=[2])
    torch.testing.assert_close(alone[0, :4], out[1, :4])


def test_edge_features_condition_the_model_equivariantly():
    model = tiny_model(edge_features=2)
    pos, types, mask = random_batch()
    edge_attr = torch.randn(3, 6, 6, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    feats = model.node_features(types, mask, torch.float64)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    assert_equivariant(model.denoiser, {"pos": pos, "h": feats, "t": t, "mask": mask, "edge_attr": edge_attr})
    a = model.eps_fn(mask, given_features=feats, edge_attr=edge_attr)(pos, t)
    b = model.eps_fn(mask, given_features=feats, edge_attr=edge_attr.flip(-1))(pos, t)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="edge_attr"):
        model(pos, types, mask)  # edge features are required by this model


def test_bad_input_is_refused():
    model = tiny_model()
    pos, types, mask = random_batch()
    pos[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(pos, types, mask)
    with pytest.raises(ValueError, match="padding last"):
        model.sample(types, mask.flip(1), steps=2)
    with pytest.raises(ValueError, match="model.mode"):
        ConformerDiffusionConfig.from_dict({"mode": "joint"})
    with pytest.raises(ValueError, match="1..4"):
        tiny_model(max_atoms=4).sample(types, mask, steps=2)
