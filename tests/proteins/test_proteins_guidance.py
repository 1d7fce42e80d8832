"""The clash and compactness guide on angle chains: its energy in closed form, what it moves and what it leaves
alone, per-chain independence, and the sampling options that carry it (`sampling_for`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from molediff.proteins.angle_model import ProteinAngleConfig, ProteinAngleDiffusion
from molediff.proteins.angles import angles_to_chain
from molediff.proteins.guidance import ChainGuide, chain_energy
from molediff.proteins.metrics import clashes, radius_of_gyration
from molediff.proteins.sampling import ProteinSampling, sampling_for


def packed(theta_deg: float, tau_deg: float, n: int, batch: int = 1) -> torch.Tensor:
    """Packed angles [batch, n − 2, 2] of a regular chain of n residues (the last τ is padding)."""
    a = torch.tensor([math.radians(theta_deg), math.radians(tau_deg)], dtype=torch.float64)
    return a.expand(batch, n - 2, 2).clone()


def reference_energy(angles: torch.Tensor, n: int, guide: ChainGuide) -> float:
    """The energy of the module docstring with numpy, from the chain NeRF builds."""
    c = angles_to_chain(torch.stack([angles[..., 0].abs(), angles[..., 1]], -1), torch.tensor([n]))[0].numpy()
    d = np.linalg.norm(c[:, None] - c[None], axis=-1)
    i, j = np.triu_indices(n, 3)
    clash = np.sum(np.maximum(0, guide.clash_distance - d[i, j]) ** 2)          # each pair once
    rg = radius_of_gyration(c)
    excess = 0.0 if guide.rg_ceiling is None else max(0.0, rg - guide.rg_ceiling * n ** 0.38)
    return guide.clash_weight * clash + excess ** 2


@pytest.mark.parametrize("theta, tau", [(91.0, 50.0), (60.0, 0.0), (120.0, -170.0)])
@pytest.mark.parametrize("ceiling", [None, 2.0])
def test_the_energy_is_the_closed_form_of_clashes_and_excess_radius(theta, tau, ceiling):
    guide = ChainGuide(rg_ceiling=ceiling, clash_weight=3.0)
    angles = packed(theta, tau, 30)
    assert chain_energy(angles, torch.tensor([30]), guide).item() == pytest.approx(
        reference_energy(angles, 30, guide), rel=1e-5, abs=1e-9)   # float32 distances


def test_a_chain_without_clash_under_the_ceiling_is_left_bit_for_bit():
    guide = ChainGuide(rg_ceiling=None)
    strand = packed(120.0, -170.0, 20)          # extended: no non-adjacent pair under 4 Å
    assert chain_energy(strand, torch.tensor([20]), guide).item() == 0.0
    z = strand.clone()
    z[0, 3, 1] = 3.0                             # any value, already in [−π, π)
    out = guide.build(torch.tensor([20]))(z, torch.zeros(1))
    assert torch.equal(out, z)
    assert torch.equal(guide.build(torch.tensor([20]))(z + 7.0, torch.ones(1)), z + 7.0)   # above start: untouched


def test_the_guide_removes_clashes_with_capped_moves_and_wraps_dihedrals():
    guide = ChainGuide(rg_ceiling=None)
    ring = packed(90.0, 0.0, 24)                 # a planar square ring: Cα pairs overlap
    before = angles_to_chain(ring, torch.tensor([24]))[0].numpy()
    assert clashes(before)[0] > 0
    one = guide.descend(ring, torch.tensor([24]), 1)
    assert (one - ring).abs().max().item() <= guide.step + 1e-12
    out = guide.descend(ring, torch.tensor([24]), 200, decay=True)
    after = angles_to_chain(torch.stack([out[..., 0].abs(), out[..., 1]], -1), torch.tensor([24]))[0].numpy()
    assert clashes(after)[0] == 0
    assert chain_energy(out, torch.tensor([24]), guide) < 1e-2 * chain_energy(ring, torch.tensor([24]), guide)
    assert out.min() >= -math.pi and out.max() < math.pi


def test_the_compactness_term_pulls_an_extended_chain_under_its_ceiling():
    guide = ChainGuide(clash_weight=1.0, rg_ceiling=2.6)
    strand = packed(120.0, -170.0, 40)
    rg = radius_of_gyration(angles_to_chain(strand, torch.tensor([40]))[0].numpy())
    assert rg > 2.6 * 40 ** 0.38
    out = guide.descend(strand, torch.tensor([40]), 300, decay=True)
    chain = angles_to_chain(torch.stack([out[..., 0].abs(), out[..., 1]], -1), torch.tensor([40]))[0].numpy()
    assert radius_of_gyration(chain) < 2.7 * 40 ** 0.38 and clashes(chain)[0] == 0


def test_a_chain_is_guided_the_same_alone_and_beside_a_longer_one():
    guide = ChainGuide()
    short = packed(60.0, 0.0, 16)[0]
    batch = packed(95.0, 40.0, 30, batch=2)
    batch[0, :14] = short
    batch[0, 14:] = 0.0                          # padding of the 16-residue chain
    lengths = torch.tensor([16, 30])
    together = guide.descend(batch, lengths, 20)
    alone = guide.descend(short[None], torch.tensor([16]), 20)
    torch.testing.assert_close(together[0, :14], alone[0], rtol=0, atol=1e-12)
    assert torch.equal(together[0, 14:], batch[0, 14:])


def test_guided_sampling_depends_on_the_seed_alone_and_differs_from_unguided():
    torch.manual_seed(0)
    model = ProteinAngleDiffusion(ProteinAngleConfig.from_dict({"T": 20, "hidden": 32, "layers": 2, "heads": 4,
                                                                "max_length": 40}))
    guide = ChainGuide(start=1.0, final_iterations=5)
    options = {"sampler": "ddpm", "steps": 5, "noise_scale": 0.85, "chain_guide": guide}
    batched = model.sample_chains([24, 12], seeds=[3, 4], batch_size=2, **options)
    single = model.sample_chains([12], seeds=[4], batch_size=1, **options)
    # float32 attention over a padded batch differs in the last bits (unguided too: 6e-4 Å after NeRF)
    np.testing.assert_allclose(batched[1], single[0], atol=3e-3)
    plain = model.sample_chains([24], seeds=[3], batch_size=1, sampler="ddpm", steps=5, noise_scale=0.85)
    assert not np.allclose(plain[0], batched[0], atol=1e-3)


def test_sampling_options_take_the_kinds_defaults_and_refuse_what_cannot_work():
    angles = sampling_for("angles", 1000)
    assert angles == ProteinSampling("ddpm", 100, 0.925, ChainGuide())
    assert angles.options() == {"sampler": "ddpm", "steps": 100, "noise_scale": 0.925, "chain_guide": ChainGuide()}
    assert angles.label(1000) == "ddpm-100, γ 0.925, guided"
    assert sampling_for("angles", 50).steps == 50                       # a model with fewer steps: all of them
    assert sampling_for("angles", 1000, guided=False, noise_scale=1.0).options() == {
        "sampler": "ddpm", "steps": 100, "noise_scale": 1.0}
    egnn = sampling_for("egnn", 1000, "dpm2m", 50)
    assert egnn.options() == {"sampler": "dpm2m", "steps": 50} and egnn.label(1000) == "dpm2m-50"
    assert sampling_for("angles", 1000, "ddim").options() == {"sampler": "ddim", "steps": None,
                                                               "chain_guide": ChainGuide()}
    for kwargs, message in [({"kind": "egnn", "guided": True}, "the chain guide acts on angles"),
                            ({"kind": "angles", "sampler": "heun", "noise_scale": 0.5}, "--noise-scale is an option"),
                            ({"kind": "angles", "noise_scale": -1.0}, "--noise-scale must be >= 0"),
                            ({"kind": "angles", "steps": 0}, "--steps must be at least 1"),
                            ({"kind": "angles", "steps": 2000}, "--steps must lie in 1..1000"),
                            ({"kind": "angles", "sampler": "euler"}, "unknown sampler")]:
        kind = kwargs.pop("kind")
        with pytest.raises(ValueError, match=message):
            sampling_for(kind, 1000, **kwargs)


@pytest.mark.parametrize("field, value", [("start", 0.0), ("clash_distance", -1.0), ("rg_ceiling", 0.0),
                                          ("step", 0.0), ("iterations", -1)])
def test_bad_guide_settings_fail_naming_the_setting(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        ChainGuide(**{field: value})
