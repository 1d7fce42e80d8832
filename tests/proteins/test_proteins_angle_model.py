"""The angle-space backbone model: masks, per-seed sampling onto exact 3.80 Å chains, config checks, the
cropping task, and (slow) a tiny `molediff train` run that resumes exactly and samples from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import DATA, ROOT

from molediff.proteins.angle_model import AngleTransformer, ProteinAngleConfig, ProteinAngleDiffusion
from molediff.proteins.angle_training import ProteinAngleTask, crop_windows
from molediff.proteins.angles import angle_mask, bond_lengths, chain_to_angles
from molediff.proteins.data import ProteinSet
from molediff.proteins.io import ProteinChain, read_chains
from molediff.proteins.training import collate_chains

FIXTURES = DATA / "proteins" / "real"
SMALL = {"T": 20, "hidden": 32, "layers": 2, "heads": 4, "max_length": 48}


def _model(**changes) -> ProteinAngleDiffusion:
    torch.manual_seed(0)
    return ProteinAngleDiffusion(ProteinAngleConfig.from_dict({**SMALL, **changes}))


def test_default_denoiser_is_four_layers_of_128_with_about_half_a_million_parameters():
    net = AngleTransformer(ProteinAngleConfig())
    n = sum(p.numel() for p in net.parameters())
    assert len(net.blocks) == 4 and net.embed.out_features == 128
    assert 450_000 < n < 650_000, n


def test_padded_batch_gives_each_chain_its_own_output():
    model = _model().double().eval()
    lengths = torch.tensor([12, 7, 9, 4])
    M = 10
    amask = angle_mask(lengths, M)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, M, 2, generator=g, dtype=torch.float64) * 2
    t = torch.tensor([0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    out = model.net(z, t, amask)
    assert (out[~amask] == 0).all()
    for b in range(4):
        m = int(lengths[b]) - 2
        alone = model.net(z[b:b + 1, :m], t[b:b + 1], angle_mask(lengths[b:b + 1], m))
        torch.testing.assert_close(out[b, :m], alone[0], atol=1e-12, rtol=0)
    # what lies in the padding never reaches a chain
    z2 = torch.where(amask, z, torch.full_like(z, 123.0))
    torch.testing.assert_close(model.net(z2, t, amask), out, atol=1e-12, rtol=0)
    # the network does use the other positions of its own chain, and the time
    z3 = z.clone()
    z3[0, 5] += 1.0
    assert not torch.allclose(model.net(z3, t, amask)[0, 0], out[0, 0])
    assert not torch.allclose(model.net(z, t.flip(0), amask), out)


def test_loss_is_per_chain_and_ignores_padding_and_bond_lengths():
    model = _model()
    chains, _, _ = read_chains(FIXTURES, min_length=40, max_length=1000)
    batch = collate_chains([c.coords[:30] for c in chains[:2]] + [chains[2].coords[:12]])
    loss = model(batch.coords, batch.mask, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    # the angles alone are read: scaling a chain (every bond × 1.1) changes nothing
    scaled = model(batch.coords * 1.1, batch.mask, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(scaled, loss)
    with pytest.raises(ValueError, match="at least 4 residues"):
        model(batch.coords[:, :3], batch.mask[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full_like(batch.coords, float("nan")), batch.mask)
    loss.mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_samples_are_exact_chains_and_depend_on_their_seed_alone():
    model = _model().double().eval()          # float64: batched and single chains agree to rounding
    coords, mask = model.sample([9, 5, 12], seeds=[3, 4, 5], steps=4)
    assert coords.shape == (3, 12, 3) and mask.sum(1).tolist() == [9, 5, 12]
    d = bond_lengths(coords, mask)[mask[:, 1:]]
    torch.testing.assert_close(d, torch.full_like(d, 3.8))
    assert (coords[~mask] == 0).all()
    alone, _ = model.sample([5], seeds=[4], steps=4)
    torch.testing.assert_close(alone[0], coords[1, :5], atol=1e-9, rtol=0)
    # the sampled chain's angles are the sampled angles (θ as |θ|)
    angles, amask = model.sample_angles([9], seeds=[3], steps=4)
    back, _, _ = chain_to_angles(coords[:1, :9])
    torch.testing.assert_close(back[..., 0], angles[..., 0].abs() * amask[..., 0], atol=1e-9, rtol=0)
    other, _ = model.sample([9], seeds=[30], steps=4)
    assert not torch.allclose(other[0], coords[0, :9])
    ddim, _ = model.sample([9], seeds=[3], sampler="ddim", steps=4)
    assert torch.isfinite(ddim).all()
    # without seeds, chain i uses seed + i; many chains in batches give the same chains
    default, _ = model.sample([9, 5], seed=3, steps=4)
    torch.testing.assert_close(default[:, :9], coords[:2, :9], atol=1e-9, rtol=0)
    chains = model.sample_chains([9, 5, 12], seeds=[3, 4, 5], batch_size=2, steps=4)
    for chain, n, b in zip(chains, (9, 5, 12), range(3)):
        np.testing.assert_allclose(chain, coords[b, :n].float().numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="got 1 seeds for 2 chains"):
        model.sample_chains([9, 5], seeds=[3])


def test_bad_lengths_and_configs_fail_in_one_line():
    model = _model()
    for bad in ([3], [49]):
        with pytest.raises(ValueError, match=r"4\.\.48"):
            model.sample(bad, steps=2)
    with pytest.raises(ValueError, match="histogram"):
        model.sample_lengths(2)
    with pytest.raises(ValueError, match="model.hidden"):
        ProteinAngleConfig.from_dict({"hidden": 30, "heads": 4})
    with pytest.raises(ValueError, match="model.widht"):
        ProteinAngleConfig.from_dict({"widht": 3})
    cfg = ProteinAngleConfig.from_dict({**SMALL, "length_histogram": {40: 3, 48: 1}})
    assert ProteinAngleConfig.from_dict(cfg.to_dict()) == cfg
    assert set(ProteinAngleDiffusion(cfg).sample_lengths(50).tolist()) <= {40, 48}


def test_the_task_crops_long_chains_to_random_windows():
    chains, _, _ = read_chains(FIXTURES, min_length=40, max_length=1000)
    dataset = ProteinSet.from_chains(chains)
    task = ProteinAngleTask(model=_model(), dataset=dataset)
    assert dataset.lengths.max() > 48
    starts = crop_windows(dataset.lengths, 48, np.random.default_rng(0))
    assert (starts >= 0).all() and (starts + np.minimum(dataset.lengths, 48) <= dataset.lengths).all()
    many = np.stack([crop_windows(np.array([100]), 48, np.random.default_rng(s)) for s in range(400)])
    assert many.min() == 0 and many.max() == 52              # every start 0..L − window is drawn
    first = list(task.batches(0, 0, 0, 1, 4))
    again = list(task.batches(0, 0, 0, 1, 4))
    later = list(task.batches(0, 1, 0, 1, 4))
    assert all(torch.equal(a.coords, b.coords) for a, b in zip(first, again))
    assert not all(torch.equal(a.coords, b.coords) for a, b in zip(first, later) if a.coords.shape == b.coords.shape)
    for batch in first:
        assert batch.coords.shape[1] <= 48 and batch.mask.sum(1).min() >= 40
        # a window is an unbroken piece of its chain: consecutive Cα 2.8 (cis) to 4.2 Å apart
        d = bond_lengths(batch.coords, batch.mask)[batch.mask[:, 1:]]
        assert (d > 2.8).all() and (d <= 4.2).all()
    loss, logged = task.loss(task.model, first[0])
    assert loss.ndim == 0 and np.isfinite(logged["loss"])


def test_a_balanced_task_sees_one_chain_per_cluster_each_epoch():
    chains, _, _ = read_chains(FIXTURES, min_length=40, max_length=1000)
    # 16 chains in 4 clusters; a chain's length (40 + 2 × its cluster) tells its cluster
    pieces = [ProteinChain(c.coords[:40 + 2 * (k % 4)], c.sequence[:40 + 2 * (k % 4)], c.source, c.chain_id)
              for k, c in enumerate(chains[:1] * 16)]
    dataset = ProteinSet.from_chains(pieces)
    dataset.clusters = np.tile(np.arange(4), 4)
    task = ProteinAngleTask(model=_model(), dataset=dataset, balance="clusters")
    for epoch in range(3):
        seen = sorted(int(n) for b in task.batches(0, epoch, 0, 1, 2) for n in b.mask.sum(1))
        assert seen == [40, 42, 44, 46]                               # one chain of each cluster
    everything = [n for b in ProteinAngleTask(model=_model(), dataset=dataset).batches(0, 0, 0, 1, 2)
                  for n in b.mask.sum(1)]
    assert len(everything) == 16


def _tiny_config(tmp_path, out: str) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "protein_angles_tiny_test.yaml").read_text())
    cfg["data"]["path"] = str(FIXTURES)
    cfg["out_dir"] = str(tmp_path / out)
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_tiny_training_run_resumes_exactly_and_samples_from_its_checkpoint(tmp_path):
    from molediff.training import run_training
    from molediff.training.weights import load_model

    straight = run_training(_tiny_config(tmp_path, "a"))
    assert np.isfinite(straight["loss"])
    run_training(_tiny_config(tmp_path, "b"), steps=3)
    resumed = run_training(_tiny_config(tmp_path, "b"), resume=True)
    assert resumed["step"] == straight["step"] == 6

    def logged(run):
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    # run b really resumed at step 4 (no step twice), in a new epoch (fresh windows), with run a's losses
    assert [r["step"] for r in logged("b") if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in logged("b") if r["kind"] == "train"] == \
        [r["loss"] for r in logged("a") if r["kind"] == "train"]
    assert max(r["epoch"] for r in logged("b") if r["kind"] == "train") >= 1
    a = load_model(ProteinAngleDiffusion, tmp_path / "a", use_ema=False)
    b = load_model(ProteinAngleDiffusion, tmp_path / "b", use_ema=False)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    model = load_model(ProteinAngleDiffusion, tmp_path / "a")
    assert model.config.length_histogram and max(model.config.length_histogram) == 48
    coords, mask = model.sample(model.sample_lengths(2, torch.Generator().manual_seed(0)), seed=1, steps=5)
    d = bond_lengths(coords, mask)[mask[:, 1:]]
    torch.testing.assert_close(d, torch.full_like(d, 3.8))
