"""The molecule diffusion model on the core: encoding, equivariance, conditioning hooks, bad input."""

import math

import pytest
import torch

from molediff.molecules import MoleculeDiffusion, MoleculeDiffusionConfig

TINY = {"name": "egnn", "hidden": 16, "layers": 2}


def tiny_model(**overrides) -> MoleculeDiffusion:
    torch.manual_seed(0)
    cfg = dict(T=100, denoiser=TINY, atom_count_histogram={3: 1, 5: 2, 7: 1})
    cfg.update(overrides)
    return MoleculeDiffusion(MoleculeDiffusionConfig(**cfg)).double()


def random_batch(B=3, N=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([6, 4, 5][:B])
    mask = torch.arange(N)[None] < counts[:, None]
    pos = torch.randn(B, N, 3, generator=g, dtype=torch.float64) * 1.5 * mask.unsqueeze(-1)
    types = torch.randint(0, 5, (B, N), generator=g) * mask
    return pos, types, mask


def random_rotation(seed, reflect=False):
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    if (torch.det(q) > 0) == reflect:
        q[:, 0] = -q[:, 0]
    return q


def test_encode_decode_round_trip_and_zero_com():
    model = tiny_model()
    pos, types, mask = random_batch()
    x = model.encode(pos, types, mask)
    assert x.shape == (3, 6, 3 + 5 + 1)
    torch.testing.assert_close(x[..., :3].sum(1), torch.zeros(3, 3, dtype=torch.float64))
    assert (x[~mask] == 0).all()
    out = model.decode(x, mask)
    expected_z = torch.tensor([1, 6, 7, 8, 9])[types] * mask
    assert torch.equal(out.atomic_numbers, expected_z)


@pytest.mark.parametrize("reflect", [False, True])
def test_model_eps_is_equivariant_with_padding(reflect):
    model = tiny_model()
    pos, types, mask = random_batch()
    x = model.encode(pos, types, mask)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    eps = model.eps_fn(mask)(x, t)
    R = random_rotation(3, reflect)
    x_rot = torch.cat([x[..., :3] @ R.T, x[..., 3:]], -1)
    eps_rot = model.eps_fn(mask)(x_rot, t)
    torch.testing.assert_close(eps_rot[..., :3], eps[..., :3] @ R.T, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(eps_rot[..., 3:], eps[..., 3:], atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(eps[..., :3].sum(1), torch.zeros(3, 3, dtype=torch.float64), atol=1e-9, rtol=0)


def test_loss_ignores_padding_content():
    model = tiny_model()
    pos, types, mask = random_batch()
    loss = model(pos, types, mask, generator=torch.Generator().manual_seed(1))
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    pos2 = pos.clone()
    pos2[~mask] = 123.0
    types2 = types.clone()
    types2[~mask] = 4
    loss2 = model(pos2, types2, mask, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss, loss2)


def test_samples_have_zero_com_valid_types_and_do_not_depend_on_batch():
    model = tiny_model()
    out = model.sample([5, 3, 7], sampler="ddim", steps=10, seeds=[10, 11, 12])
    assert out.positions.shape == (3, 7, 3)
    assert out.mask.sum(1).tolist() == [5, 3, 7]
    assert set(out.atomic_numbers[out.mask].tolist()) <= {1, 6, 7, 8, 9}
    assert (out.atomic_numbers[~out.mask] == 0).all()
    torch.testing.assert_close(out.positions.sum(1), torch.zeros(3, 3, dtype=torch.float64), atol=1e-9, rtol=0)
    alone = model.sample([3], sampler="ddim", steps=10, seeds=[11])
    torch.testing.assert_close(alone.positions[0, :3], out.positions[1, :3])
    mols = out.to_molecules()
    assert [len(m.atomic_numbers) for m in mols] == [5, 3, 7]


def test_atom_count_histogram_sampling_follows_the_histogram():
    model = tiny_model()
    counts = model.sample_atom_counts(4000, torch.Generator().manual_seed(0))
    freq = {n: (counts == n).double().mean().item() for n in (3, 5, 7)}
    assert freq[5] == pytest.approx(0.5, abs=0.03) and freq[3] == pytest.approx(0.25, abs=0.03)


def test_conformer_mode_keeps_the_given_atom_types():
    model = tiny_model(mode="conformer")
    pos, types, mask = random_batch()
    loss = model(pos, types, mask)
    assert torch.isfinite(loss).all()
    out = model.sample(mask.sum(1), sampler="ddpm", steps=5, atom_types=types)
    assert torch.equal(out.atomic_numbers, torch.tensor([1, 6, 7, 8, 9])[types] * mask)
    with pytest.raises(ValueError, match="conformer mode needs the atom types"):
        model.sample([3], steps=5)


def test_inpainting_keeps_the_fixed_substructure():
    model = tiny_model()
    B, N = 2, 6
    known = torch.zeros(B, N, 3, dtype=torch.float64)
    known[:, :3] = torch.tensor([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [0.0, 1.1, 0.0]], dtype=torch.float64)
    known_mask = torch.zeros(B, N, dtype=torch.bool)
    known_mask[:, :3] = True
    out = model.sample([6, 5], sampler="ddpm", steps=10, fixed_positions=known, fixed_mask=known_mask)
    d_out = torch.cdist(out.positions[:, :3], out.positions[:, :3])
    d_known = torch.cdist(known[:, :3], known[:, :3])
    torch.testing.assert_close(d_out, d_known, atol=1e-9, rtol=0)


def test_context_conditioning_changes_the_prediction():
    model = tiny_model(context_features=2)
    pos, types, mask = random_batch()
    x = model.encode(pos, types, mask)
    t = torch.full((3,), 0.5, dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    a = model.eps_fn(mask, torch.zeros(3, 2, dtype=torch.float64))(x, t)
    b = model.eps_fn(mask, torch.ones(3, 2, dtype=torch.float64))(x, t)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("counts, match", [([0, 3], "1..64"), ([65], "1..64"), ([], "nothing to sample")])
def test_out_of_range_atom_counts_are_refused(counts, match):
    with pytest.raises(ValueError, match=match):
        tiny_model().sample(counts, steps=2)


def test_bad_molecule_input_is_refused():
    model = tiny_model()
    pos, types, mask = random_batch()
    pos[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        model(pos, types, mask)
    with pytest.raises(ValueError, match="must agree"):
        model(pos[:, :4], types, mask)
    with pytest.raises(ValueError, match="mode must be"):
        MoleculeDiffusionConfig(mode="protein")
    with pytest.raises(ValueError, match="atom counts must lie in 1..64"):
        MoleculeDiffusionConfig(atom_count_histogram={0: 3})
