"""Post-hoc EMA (Karras et al. 2024): σ_rel ↔ γ, the power-function EMA, the engine's snapshots and exact
resume, and the least-squares reconstruction of an EMA width that was never tracked."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from functools import partial
from pathlib import Path

import helpers
import pytest
import torch
from helpers import toy_task
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from molediff.training import (
    PosthocEMAConfig,
    PowerEMA,
    config_from_dict,
    config_to_dict,
    export_posthoc_ema,
    gamma_to_sigma_rel,
    list_checkpoints,
    list_snapshots,
    load_config,
    load_model,
    load_weights,
    reconstruct,
    sigma_rel_to_gamma,
    train,
)
from molediff.training.posthoc_ema import Snapshot, solve_coefficients
from molediff.training.toy import ToyMLP, ToyMLPConfig

# the engine's toy run, twice as long, with post-hoc EMA snapshots every 5 steps
POSTHOC_RUN = {
    "steps": 20, "log_every": 1000, "checkpoint_every": 10, "optim": {"warmup_steps": 10},
    "posthoc_ema": {"sigma_rels": [0.05, 0.10], "snapshot_every": 5},
}
toy_config = partial(helpers.toy_config, base=POSTHOC_RUN)


def flat(tensors: dict) -> torch.Tensor:
    return torch.cat([tensors[k].detach().flatten().double() for k in sorted(tensors)])


def snapshot_files(run) -> dict[str, tuple[dict, dict]]:
    """name -> (tensors, metadata) of a run's snapshots (safetensors orders its metadata arbitrarily, so the
    files are compared by content rather than byte for byte)."""
    out = {}
    for p in sorted((Path(run) / "ema_snapshots").iterdir()):
        with safe_open(str(p), "pt") as f:
            out[p.name] = ({k: f.get_tensor(k) for k in f.keys()}, f.metadata())
    return out


# ------------------------------------------------------------------------------------------ σ_rel ↔ γ
def test_sigma_rel_gamma_known_values_and_roundtrip():
    # the paper's pair of EMAs tracked during training (§3.2)
    assert gamma_to_sigma_rel(6.94) == pytest.approx(0.10, abs=1e-4)
    assert gamma_to_sigma_rel(16.97) == pytest.approx(0.05, abs=1e-4)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert gamma_to_sigma_rel(0.0) == pytest.approx(12 ** -0.5)   # uniform average
    sigmas = [1e-4, 1e-3, 0.01, 0.05, 0.07, 0.1, 0.13, 0.2, 0.28, 0.2886]
    gammas = [sigma_rel_to_gamma(s) for s in sigmas]
    assert all(a > b for a, b in zip(gammas, gammas[1:]))          # wider window, smaller exponent
    for s, g in zip(sigmas, gammas):
        assert gamma_to_sigma_rel(g) == pytest.approx(s, rel=1e-12)
    for g in (1e-6, 0.5, 3.0, 6.94, 100.0, 1e5):
        assert sigma_rel_to_gamma(gamma_to_sigma_rel(g)) == pytest.approx(g, rel=1e-9, abs=1e-9)
    for bad in (0.0, -0.1, 0.289, 0.3, math.nan):
        with pytest.raises(ValueError, match="sigma_rel must lie in"):
            sigma_rel_to_gamma(bad)
    with pytest.raises(ValueError, match="gamma must be"):
        gamma_to_sigma_rel(-0.5)


# ---------------------------------------------------------------------------------------------- PowerEMA
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)   # float buffers and an integer one


def test_power_ema_of_constant_and_linear_sequences():
    net = Net()
    ema = PowerEMA(net, 0.10)
    assert ema.gamma == pytest.approx(6.94, abs=0.01) and ema.beta(1) == 0.0
    assert set(ema.buffer_names) == {"norm.running_mean", "norm.running_var", "norm.num_batches_tracked"}

    with torch.no_grad():   # a constant sequence averages to itself
        for p in net.parameters():
            p.fill_(0.3)
        for _ in range(7):
            ema.update(net)
    assert all(torch.equal(ema.shadow[n], torch.full_like(p, 0.3)) for n, p in net.named_parameters())

    # θ_t = t: θ̂_t = Σ_τ w_τ τ with w_τ = (τ^(γ+1) − (τ−1)^(γ+1)) / t^(γ+1)
    ema = PowerEMA(net, 0.10)
    g = ema.gamma
    for t in range(1, 201):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(t))
            net.norm.running_mean.fill_(-t)
        ema.update(net)
        if t in (1, 2, 10, 200):
            expected = sum((tau ** (g + 1) - (tau - 1) ** (g + 1)) * tau for tau in range(1, t + 1)) / t ** (g + 1)
            assert ema.shadow["lin.weight"] == pytest.approx(torch.full((2, 3), expected), rel=1e-5), t
            assert torch.equal(ema.shadow["norm.running_mean"], torch.full((2,), -float(t)))   # copied
    assert ema.num_updates == 200
    # the continuous profile's mean, (γ+1)/(γ+2)·t, is the large-t limit; σ_rel·t its spread
    assert expected == pytest.approx((g + 1) / (g + 2) * 200, rel=0.01)

    other = PowerEMA(Net(), 0.10)
    other.load_state_dict(ema.state_dict(), num_updates=ema.num_updates)
    assert other.num_updates == 200 and all(torch.equal(other.shadow[k], v) for k, v in ema.shadow.items())
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"lin.weight": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="sigma_rel must lie in"):
        PowerEMA(net, 0.5)


def test_solve_coefficients_exact_cases():
    steps, gammas = [10, 20, 30, 10, 20, 30], [sigma_rel_to_gamma(s) for s in [0.05] * 3 + [0.10] * 3]
    x, err = solve_coefficients(steps, gammas, 30, gammas[-1])   # the target is one of the inputs
    assert err < 1e-6 and torch.allclose(x, torch.eye(6, dtype=torch.float64)[-1], atol=1e-6)
    # a duplicated snapshot makes the Gram matrix singular: still solved (minimum norm), no error
    x, err = solve_coefficients(steps + [30], gammas + [gammas[-1]], 30, sigma_rel_to_gamma(0.07))
    assert torch.isfinite(x).all() and err < 0.05
    # a long run with a narrow target: no overflow of t^(γ+1)
    x, err = solve_coefficients([10**6, 2 * 10**6], [sigma_rel_to_gamma(0.001)] * 2, 2 * 10**6,
                                sigma_rel_to_gamma(0.001))
    assert torch.isfinite(x).all() and err < 1e-6


# ------------------------------------------------------------------------------------- reconstruction
@pytest.mark.slow
def test_reconstruction_matches_a_directly_tracked_ema(tmp_path):
    """Track σ_rel 0.05 and 0.10 (and, for reference only, 0.07 and 0.13) through 300 real training steps;
    reconstructing 0.07 and 0.13 from the 0.05/0.10 snapshots alone (30 each) matches the directly tracked EMAs.

    Measured at step 300: ‖rec − direct‖ / ‖direct − θ_300‖ = 2.6e-4 (σ_rel 0.07) and 2.2e-4 (0.13), asserted
    < 1e-3 (relative profile-fit errors 1.1e-3 and 1.5e-3). Against the distance to the nearer tracked EMA,
    ‖rec − direct‖ / min_k ‖θ̂_k − direct‖ = 7.6e-4 and 5.8e-4 at step 300, 5.5e-3 and 8.6e-3 at step 150
    (15 snapshots each), asserted < 0.03.
    """
    cfg = toy_config(tmp_path, steps=300, checkpoint_every=300,
                     posthoc_ema={"sigma_rels": [0.05, 0.10, 0.07, 0.13], "snapshot_every": 10})
    train(toy_task(cfg), cfg)
    snaps = list_snapshots(tmp_path)
    assert len(snaps) == 4 * 30 and [s.step for s in snaps[:4]] == [10] * 4
    assert snaps[-1].path.name == "step_00000300_sigma0.130.safetensors"
    final = load_file(str(list_checkpoints(tmp_path / "checkpoints")[-1] / "model.safetensors"))
    tracked = [s for s in snaps if s.sigma_rel in (0.05, 0.10)]

    def direct(sigma, step):
        return next(s for s in snaps if s.sigma_rel == sigma and s.step == step).load()

    for sigma in (0.07, 0.13):
        for step in (300, 150):
            rec, ref = reconstruct(tracked, sigma, step_target=step), direct(sigma, step)
            assert rec.keys() == ref.keys() and all(v.dtype == torch.float32 for v in rec.values())
            error = (flat(rec) - flat(ref)).norm()
            nearest = min((flat(direct(s, step)) - flat(ref)).norm() for s in (0.05, 0.10))
            assert nearest > 1e-2   # the widths differ visibly: the test can tell a good reconstruction
            assert error / nearest < 0.03, (sigma, step)
            if step == 300:
                assert error / (flat(ref) - flat(final)).norm() < 1e-3, sigma
    # a tracked width comes back unchanged
    assert torch.allclose(flat(reconstruct(tracked, 0.10)), flat(direct(0.10, 300)), rtol=0, atol=1e-6)
    # in-memory snapshots work the same way
    mem = [Snapshot(step=s.step, sigma_rel=s.sigma_rel, tensors=s.load()) for s in tracked]
    assert torch.equal(flat(reconstruct(mem, 0.07)), flat(reconstruct(tracked, 0.07)))
    with pytest.raises(ValueError, match=r"step_target must lie in \[1, 300\]"):
        reconstruct(tracked, 0.07, step_target=301)
    with pytest.raises(ValueError, match="sigma_rel must lie in"):
        reconstruct(tracked, 0.3)


# ------------------------------------------------------------------------------------------ the engine
def test_resume_with_posthoc_ema_is_bitwise_identical(tmp_path):
    straight = toy_config(tmp_path / "straight")
    train(toy_task(straight), straight)
    halves = toy_config(tmp_path / "halves", steps=10)
    train(toy_task(halves), halves)
    # a snapshot left behind by a run that crashed after step 10's checkpoint is dropped on resume
    stale = tmp_path / "halves" / "ema_snapshots" / "step_00000017_sigma0.050.safetensors"
    stale.write_bytes((tmp_path / "halves" / "ema_snapshots" / "step_00000010_sigma0.050.safetensors").read_bytes())
    torch.manual_seed(1234)
    train(toy_task(straight), dataclasses.replace(straight, out_dir=str(tmp_path / "halves")), resume=True)

    files = snapshot_files(tmp_path / "straight")
    assert list(files) == [f"step_{s:08d}_sigma{x}.safetensors" for s in (5, 10, 15, 20) for x in ("0.050", "0.100")]
    resumed = snapshot_files(tmp_path / "halves")
    assert files.keys() == resumed.keys()
    for name, (tensors, meta) in files.items():
        assert meta == resumed[name][1] and tensors.keys() == resumed[name][0].keys(), name
        assert all(torch.equal(v, resumed[name][0][k]) for k, v in tensors.items()), name
    ckpts = [list_checkpoints(tmp_path / run / "checkpoints")[-1] for run in ("straight", "halves")]
    for name in ("model", "ema", "posthoc_ema_0", "posthoc_ema_1"):
        a, b = (load_file(str(c / f"{name}.safetensors")) for c in ckpts)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    state = json.loads((ckpts[0] / "state.json").read_text())
    assert [(e["sigma_rel"], e["num_updates"]) for e in state["posthoc_ema"]] == [(0.05, 20), (0.10, 20)]
    with safe_open(str(tmp_path / "straight" / "ema_snapshots" / "step_00000015_sigma0.100.safetensors"), "pt") as f:
        meta = f.metadata()
    assert (meta["step"], meta["sigma_rel"], meta["model_class"]) == ("15", "0.1", "ToyMLP")
    assert float(meta["gamma"]) == pytest.approx(6.94, abs=0.01)


def test_time_limit_and_old_checkpoints(tmp_path):
    # the time-limit stop writes a snapshot with its checkpoint, off the snapshot grid
    cfg = toy_config(tmp_path / "timed", time_limit_s=1e-9)
    train(toy_task(cfg), cfg)
    assert list(snapshot_files(tmp_path / "timed")) == ["step_00000001_sigma0.050.safetensors",
                                                         "step_00000001_sigma0.100.safetensors"]
    # a checkpoint written without posthoc_ema resumes with it: the power EMAs start from the loaded weights
    old = toy_config(tmp_path / "old", steps=5, posthoc_ema=None)
    train(toy_task(old), old)
    train(toy_task(old), dataclasses.replace(old, steps=10, posthoc_ema=PosthocEMAConfig((0.07,), 5)), resume=True)
    assert list(snapshot_files(tmp_path / "old")) == ["step_00000010_sigma0.070.safetensors"]
    state = json.loads((list_checkpoints(tmp_path / "old" / "checkpoints")[-1] / "state.json").read_text())
    assert state["posthoc_ema"][0]["num_updates"] == 10
    # a fresh run (no checkpoint) refuses to mix its snapshots with those already in its directory
    shutil.copytree(tmp_path / "timed" / "ema_snapshots", tmp_path / "fresh" / "ema_snapshots")
    with pytest.raises(ValueError, match="already holds post-hoc EMA snapshots but there is no checkpoint"):
        train(toy_task(cfg), dataclasses.replace(cfg, out_dir=str(tmp_path / "fresh")))


def test_posthoc_config_keys_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 10\nbatch_size: 4\nposthoc_ema:\n  sigma_rels: [0.05, 0.1]\n  snapshot_every: 8\n")
    cfg = load_config(path)
    assert cfg.posthoc_ema == PosthocEMAConfig(sigma_rels=(0.05, 0.1), snapshot_every=8)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    plain = json.loads(json.dumps(config_to_dict(cfg)))
    assert plain["posthoc_ema"] == {"sigma_rels": [0.05, 0.1], "snapshot_every": 8}
    assert config_from_dict({"steps": 1, "batch_size": 1}).posthoc_ema is None
    assert config_from_dict({"steps": 1, "batch_size": 1, "posthoc_ema": {}}).posthoc_ema == PosthocEMAConfig()
    bad = {
        "sigma_rels: [0.05, 0.3]": r"posthoc_ema.sigma_rels values must lie in \(0, 0.2887\), got 0.3",
        "sigma_rels: [0.0]": r"posthoc_ema.sigma_rels values must lie in",
        "sigma_rels: []": r"posthoc_ema.sigma_rels must list at least one value",
        "sigma_rels: [0.05, 0.0501]": r"posthoc_ema.sigma_rels must differ in their first three decimals",
        "sigma_rels: 0.05": r"'posthoc_ema.sigma_rels' must be",
        "snapshot_every: 0": r"posthoc_ema.snapshot_every must be at least 1, got 0",
        "snapshot_evry: 5": r"unknown config key 'posthoc_ema.snapshot_evry'",
    }
    for line, message in bad.items():
        path.write_text(f"steps: 10\nbatch_size: 4\nposthoc_ema:\n  {line}\n")
        with pytest.raises(ValueError, match=message):
            load_config(path)


def test_export_and_load_model(tmp_path, monkeypatch):
    cfg = toy_config(tmp_path / "run", steps=40)
    train(toy_task(cfg), cfg)
    snaps = list_snapshots(tmp_path / "run")
    rec = reconstruct(snaps, 0.07)
    out = export_posthoc_ema(tmp_path / "run", 0.07, tmp_path / "toy_ema07.safetensors")
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["posthoc_ema_sigma_rel"] == "0.07" and meta["step"] == "40" and meta["model_class"] == "ToyMLP"
    assert meta["format"] == "molediff-weights" and json.loads(meta["model_config"])["hidden"] == 16
    assert all(v.dtype == torch.bfloat16 for v in load_file(str(out)).values())

    monkeypatch.setattr(ToyMLP, "config_class", ToyMLPConfig, raising=False)   # the toy model has none
    model = load_model(ToyMLP, out)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.allclose(v, rec[k], rtol=1e-2, atol=1e-2), k
    # full precision, at an earlier step, into an existing model
    out32 = export_posthoc_ema(tmp_path / "run", 0.07, tmp_path / "ema32.safetensors", dtype=None, step=20)
    model = toy_task(cfg).model
    assert load_weights(out32, model)["step"] == "20"
    rec20 = reconstruct(snaps, 0.07, step_target=20)
    assert all(torch.equal(v, rec20[k]) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="holds no post-hoc EMA snapshots"):
        export_posthoc_ema(tmp_path, 0.07, tmp_path / "x.safetensors")
