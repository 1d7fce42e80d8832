"""The training engine on the toy regression task: config, exact resume, divergence, checkpoints, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import ROOT, toy_config, toy_task
from safetensors.torch import load_file, save_file

from molediff.training import (
    TrainingDiverged,
    config_from_dict,
    config_to_dict,
    export_weights,
    list_checkpoints,
    load_checkpoint,
    load_config,
    load_weights,
    lr_factor,
    train,
)
from molediff.training.config import OptimConfig
from molediff.training.toy import ToyMLP, ToyMLPConfig


def weights(out_dir, name="model") -> dict:
    return load_file(str(list_checkpoints(Path(out_dir) / "checkpoints")[-1] / f"{name}.safetensors"))


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------------------------- config
def test_config_roundtrip_and_errors(tmp_path):
    cfg = load_config(ROOT / "configs" / "toy.yaml")
    assert cfg.task == "toy" and isinstance(cfg.optim, OptimConfig) and cfg.optim.betas == (0.9, 0.999)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    json.dumps(config_to_dict(cfg))

    bad = tmp_path / "bad.yaml"
    bad.write_text("task: toy\nsteps: 10\nbatch_size: 4\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*unknown config key 'learning_rate'"):
        load_config(bad)
    bad.write_text("steps: 10\nbatch_size: 4\noptim:\n  lr: 1e-3\n  warmup: 5\n")
    with pytest.raises(ValueError, match=r"optim.warmup"):
        load_config(bad)
    bad.write_text("steps: ten\nbatch_size: 4\n")
    with pytest.raises(ValueError, match=r"'steps' must be int"):
        load_config(bad)
    bad.write_text("steps: 10\nbatch_size: 4\noptim:\n  betas: [0.9]\n")
    with pytest.raises(ValueError, match=r"optim.betas"):
        load_config(bad)
    bad.write_text("batch_size: 4\n")
    with pytest.raises(ValueError, match=r"missing required keys \['steps'\]"):
        load_config(bad)
    # PyYAML reads 1e-3 (no dot) as a string; it is still a float here. null disables clipping and the EMA.
    bad.write_text("steps: 10\nbatch_size: 4\noptim:\n  lr: 1e-3\n  grad_clip: null\n  ema_decay: null\n")
    cfg = load_config(bad)
    assert cfg.optim.lr == 1e-3 and cfg.optim.grad_clip is None and cfg.optim.ema_decay is None


def test_lr_schedule():
    oc = OptimConfig(lr=1.0, warmup_steps=4)
    assert [lr_factor(s, oc, 100) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = OptimConfig(lr=1.0, warmup_steps=2, lr_schedule="cosine")
    f = [lr_factor(s, cos, 12) for s in range(12)]
    assert f[:3] == [0.5, 1.0, 1.0] and all(a >= b for a, b in zip(f[2:], f[3:]))
    assert lr_factor(12, cos, 12) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------- resume
def test_resume_is_bitwise_identical(tmp_path):
    straight = toy_config(tmp_path / "straight")
    init = {k: v.clone() for k, v in toy_task(straight).model.state_dict().items()}
    metrics = train(toy_task(straight), straight)
    assert metrics["step"] == 10 and math.isfinite(metrics["loss"])

    halves = toy_config(tmp_path / "halves", steps=5)
    train(toy_task(halves), halves)
    half_weights = weights(tmp_path / "halves")
    state = json.loads((list_checkpoints(tmp_path / "halves" / "checkpoints")[-1] / "state.json").read_text())
    assert (state["step"], state["epoch"], state["batches_in_epoch"]) == (5, 1, 2)  # stopped mid-epoch
    # a fresh task (fresh model, fresh RNG) resumed from the checkpoint continues exactly
    torch.manual_seed(1234)
    np.random.seed(1234)
    train(toy_task(straight), dataclasses.replace(straight, out_dir=str(tmp_path / "halves")), resume=True)

    for name in ("model", "ema"):
        assert_bitwise_equal(weights(tmp_path / "straight", name), weights(tmp_path / "halves", name))
    final = weights(tmp_path / "straight")
    assert not all(torch.equal(final[k], half_weights[k]) for k in final)   # the second half did train
    assert all((final[k] - init[k]).abs().max() > 1e-3 for k in final)       # ... and so did the first
    # the metrics log reads as one run
    steps = [r["step"] for r in map(json.loads, (tmp_path / "halves" / "metrics.jsonl").read_text().splitlines())]
    assert steps == list(range(1, 11))


def test_evaluation_does_not_disturb_training(tmp_path):
    """Evaluation runs on EMA weights and draws random numbers, yet training continues as without it."""

    class NoisyEval:
        calls: list = []

        def __init__(self, task):
            self.task, self.model = task, task.model

        def loss(self, model, batch):
            return self.task.loss(model, batch)

        def batches(self, *args):
            return self.task.batches(*args)

        def evaluate(self, model, step):
            NoisyEval.calls.append(step)
            ema = load_file(str(list_checkpoints(tmp_path / "a" / "checkpoints")[-1] / "ema.safetensors")) \
                if step == 10 else None
            torch.randn(100), np.random.rand(10)
            out = {"eval_mse": float(sum(p.detach().sum() for p in model.parameters()))}
            if ema is not None:  # the weights handed to evaluate are the EMA weights
                assert all(torch.equal(model.state_dict()[k], ema[k]) for k in ema)
            return out

    a = toy_config(tmp_path / "a", checkpoint_every=10)
    b = toy_config(tmp_path / "b", checkpoint_every=10, eval_every=2)
    train(toy_task(a), a)
    metrics = train(NoisyEval(toy_task(b)), b)
    assert NoisyEval.calls == [2, 4, 6, 8, 10] and "eval_mse" in metrics
    assert_bitwise_equal(weights(tmp_path / "a"), weights(tmp_path / "b"))
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 4, 6, 8, 10]
    train_rec = [r for r in records if r["kind"] == "train"][-1]
    assert {"step", "loss", "lr", "grad_norm", "items_per_s", "time_s"} <= set(train_rec)


def test_refuses_to_overwrite_a_run(tmp_path):
    cfg = toy_config(tmp_path, steps=5)
    train(toy_task(cfg), cfg)
    with pytest.raises(ValueError, match="already holds checkpoints; pass --resume"):
        train(toy_task(cfg), cfg)
    assert train(toy_task(cfg), cfg, resume=True)["step"] == 5   # already done: nothing to train


# ------------------------------------------------------------------------------------------- divergence
class FailingTask:
    """The toy task whose loss (or only its gradient) turns NaN at optimiser step ``bad_step``."""

    def __init__(self, task, bad_step, where="loss"):
        self.task, self.model, self.bad_step, self.where, self.calls = task, task.model, bad_step, where, 0

    def loss(self, model, batch):
        self.calls += 1
        loss, info = self.task.loss(model, batch)
        if self.calls == self.bad_step:
            if self.where == "loss":
                loss = loss * float("nan")
            else:  # finite loss, infinite gradient: d sqrt(u)/du at u = 0
                w = next(model.parameters())
                loss = loss + 0.0 * torch.sqrt(w.sum() * 0.0)
        return loss, info

    def batches(self, *args):
        return self.task.batches(*args)


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, where):
    cfg = toy_config(tmp_path, checkpoint_every=3)
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 7: .*step_00000006$") as e:
        train(FailingTask(toy_task(cfg), bad_step=7, where=where), cfg)
    assert e.value.step == 7 and "\n" not in str(e.value)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000003", "step_00000006"]
    good = weights(tmp_path)
    assert all(torch.isfinite(v).all() for v in good.values())
    # the kept checkpoint is the healthy run's step 6, and training resumes from it
    ref = toy_config(tmp_path / "ref", steps=6, checkpoint_every=3)
    train(toy_task(ref), ref)
    assert_bitwise_equal(good, weights(tmp_path / "ref"))
    assert train(toy_task(cfg), cfg, resume=True)["step"] == 10


def test_divergence_before_any_checkpoint(tmp_path):
    cfg = toy_config(tmp_path)
    with pytest.raises(TrainingDiverged, match="at step 1: loss=nan.*last good checkpoint: none"):
        train(FailingTask(toy_task(cfg), bad_step=1), cfg)
    assert list_checkpoints(tmp_path / "checkpoints") == []


# ------------------------------------------------------------------------------------------ checkpoints
def test_wrong_checkpoint_for_model(tmp_path):
    cfg = toy_config(tmp_path, steps=2)
    train(toy_task(cfg), cfg)
    other = ToyMLP(ToyMLPConfig(in_dim=4, hidden=8, layers=2))
    with pytest.raises(ValueError, match=r"was trained for model ToyMLP with hidden=16 but this model has hidden=8$"):
        load_checkpoint(tmp_path, other)
    with pytest.raises(ValueError, match=r"hidden=16 but this model has hidden=8"):
        load_weights(tmp_path, other)
    plain = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"was trained for model ToyMLP but this model is Sequential"):
        load_checkpoint(tmp_path, plain)
    with pytest.raises(ValueError, match=r"does not fit model Sequential: missing \['0.bias', '0.weight'\]"):
        save_file(weights(tmp_path), str(tmp_path / "bare.safetensors"))   # no metadata to compare
        load_weights(tmp_path / "bare.safetensors", plain)
    with pytest.raises(ValueError, match=r"does not fit model Sequential: no tensor names in common"):
        load_checkpoint(tmp_path, plain, strict=False)
    with pytest.raises(ValueError, match=r"'net.0.weight' has shape \[16, 4\] in the checkpoint but \[8, 4\]"):
        load_checkpoint(tmp_path, other, strict=False)   # non-strict still refuses wrong shapes
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere", plain)


def test_export_and_load_weights(tmp_path):
    cfg = toy_config(tmp_path, steps=3)
    train(toy_task(cfg), cfg)
    out = export_weights(tmp_path, tmp_path / "toy.safetensors")
    exported = load_file(str(out))
    assert all(v.dtype == torch.bfloat16 for v in exported.values())
    model = toy_task(cfg).model
    meta = load_weights(out, model)
    assert json.loads(meta["model_config"])["hidden"] == 16 and meta["ema"] == "true"
    ema = weights(tmp_path, "ema")
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.allclose(v, ema[k], rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="hidden=16 but this model has hidden=8"):
        load_weights(out, ToyMLP(ToyMLPConfig(in_dim=4, hidden=8)))
    raw = toy_task(cfg).model
    load_weights(tmp_path, raw, use_ema=False)
    assert_bitwise_equal(raw.state_dict(), weights(tmp_path))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    import molediff.training.checkpoint as ckpt_mod

    cfg = toy_config(tmp_path, steps=4, checkpoint_every=2, keep_last=1)
    train(toy_task(cfg), cfg)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000004"]   # pruned
    assert (tmp_path / "checkpoints" / "last").resolve().name == "step_00000004"
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "step_00000004").iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        train(toy_task(cfg), dataclasses.replace(cfg, steps=6), resume=True)
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000004"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "step_00000004").iterdir()} == before
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_train_and_resume(tmp_path, capsys):
    from molediff.cli import main
    from molediff.train import main as module_main

    out = tmp_path / "run"
    assert main(["train", str(ROOT / "configs" / "toy.yaml"), "--out", str(out), "--steps", "4"]) == 0
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000004"]
    assert module_main([str(ROOT / "configs" / "toy.yaml"), "--out", str(out), "--steps", "6", "--resume"]) == 0
    assert json.loads((out / "checkpoints" / "last" / "state.json").read_text())["step"] == 6

    bad = tmp_path / "bad.yaml"
    bad.write_text("task: nope\nsteps: 3\nbatch_size: 4\n")
    capsys.readouterr()
    assert module_main([str(bad), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("molediff train: error: unknown task 'nope'") and "\n" not in err

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("CONFIG", "--resume", "--out", "--steps", "--device", "--threads", "--time-limit"):
        assert option in text


def test_init_starts_a_new_run_from_weights_and_refuses_another_architecture(tmp_path, capsys):
    """--init: a fresh run starts from the given weights (its first checkpoint's EMA starts there too), a
    run with a checkpoint resumes instead, and weights of another shape fail in one line naming the parameter."""
    from molediff.cli import main
    from molediff.training.tasks import initialise_from

    first = tmp_path / "first"
    assert main(["train", str(ROOT / "configs" / "toy.yaml"), "--out", str(first), "--steps", "3"]) == 0
    source = weights(first, "ema")
    toy = ToyMLP(ToyMLPConfig(**yaml_model(ROOT / "configs" / "toy.yaml")))
    initialise_from(toy, first)
    assert_bitwise_equal({k: v for k, v in toy.state_dict().items()}, source)
    with pytest.raises(ValueError, match="does not fit this model's architecture: parameter"):
        initialise_from(ToyMLP(ToyMLPConfig(in_dim=toy.config.in_dim, hidden=toy.config.hidden + 1,
                                            layers=toy.config.layers)), first)

    second = tmp_path / "second"    # lr tiny: after one step the weights are still those of the init
    cfg = tmp_path / "tiny_lr.yaml"
    d = yaml.safe_load((ROOT / "configs" / "toy.yaml").read_text())
    d["optim"] = {**d.get("optim", {}), "lr": 1e-12, "warmup_steps": 0}
    cfg.write_text(yaml.safe_dump(d))
    assert main(["train", str(cfg), "--out", str(second), "--steps", "1", "--init", str(first)]) == 0
    for k, v in weights(second).items():
        assert torch.allclose(v, source[k], atol=1e-6), k
    # resuming ignores --init: the run continues from its own step 1
    assert main(["train", str(cfg), "--out", str(second), "--steps", "2", "--resume", "--init",
                 str(tmp_path / "nowhere")]) == 0
    assert json.loads((second / "checkpoints" / "last" / "state.json").read_text())["step"] == 2


def yaml_model(path) -> dict:
    return yaml.safe_load(Path(path).read_text())["model"]


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_time_limit_counts_the_chosen_clock(tmp_path, monkeypatch, clock):
    # a machine where every step takes a wall second and no CPU (another process has the core): the wall
    # limit stops at the first step, the CPU limit lets the run finish its 10 steps
    import types

    from molediff.training import trainer

    wall = iter(range(10**6))
    fake = types.SimpleNamespace(perf_counter=lambda: float(next(wall)), process_time=lambda: 0.0)
    monkeypatch.setattr(trainer, "time", fake)
    cfg = toy_config(tmp_path / clock, time_limit_s=0.5, time_limit_clock=clock)
    metrics = train(toy_task(cfg), cfg)
    assert metrics["step"] == (1 if clock == "wall" else 10)
    assert list_checkpoints(tmp_path / clock / "checkpoints")[-1].name.endswith(
        "00000001" if clock == "wall" else "00000010")


def test_time_limit_clock_is_checked():
    import argparse

    from molediff.commands import train as train_command
    from molediff.training.config import TIME_LIMIT_CLOCKS

    with pytest.raises(ValueError, match="time_limit_clock must be 'wall' or 'cpu', got 'gpu'"):
        config_from_dict({"steps": 1, "batch_size": 1, "time_limit_clock": "gpu"})
    parser = argparse.ArgumentParser()
    train_command.configure(parser)   # the CLI writes the clocks out (no torch at start-up): the same ones
    assert next(a for a in parser._actions if a.dest == "time_clock").choices == TIME_LIMIT_CLOCKS
