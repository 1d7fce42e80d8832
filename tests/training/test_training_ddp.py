"""DDP: two gloo processes on CPU make the same updates as one process on the combined batch."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from molediff.training import config_from_dict, list_checkpoints, seed_everything, train
from molediff.training.toy import make_toy_task

STEPS = 3


def _config(out_dir) -> dict:
    return {
        "task": "toy", "steps": STEPS, "batch_size": 16, "seed": 5, "log_every": 1, "checkpoint_every": STEPS,
        "out_dir": str(out_dir), "bf16": False,  # float32: the two ways of batching must agree to 1e-6
        # clipping active (grad norm >> 0.05) so the clipped update must agree too
        "optim": {"lr": 1e-2, "warmup_steps": 2, "grad_clip": 0.05, "ema_decay": 0.5},
        "model": {"in_dim": 4, "hidden": 16, "layers": 2},
        "data": {"n": 64, "seed": 2, "input_noise": 0.0},  # no per-process noise: the updates must agree
    }


def _run(config: dict):
    cfg = config_from_dict(config)
    seed_everything(0)
    task = make_toy_task(cfg.model, cfg.data)
    init = {k: v.clone() for k, v in task.model.state_dict().items()}
    return train(task, cfg, device="cpu"), init


def _worker(rank: int, world: int, port: int, config: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    _run(config)
    assert not dist.is_initialized()  # train() cleans up the group it created


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _final(out_dir, name):
    return load_file(str(list_checkpoints(out_dir / "checkpoints")[-1] / f"{name}.safetensors"))


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_two_gloo_processes_match_one_process_on_the_combined_batch(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), _config(tmp_path / "ddp")), nprocs=2, join=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, init = _run(_config(tmp_path / "single"))
    finally:
        torch.set_num_threads(threads)

    for name in ("model", "ema"):
        ddp, single = _final(tmp_path / "ddp", name), _final(tmp_path / "single", name)
        assert ddp.keys() == single.keys() == init.keys()
        for k in single:
            assert torch.allclose(ddp[k], single[k], rtol=0, atol=1e-6), (name, k)
            assert (single[k] - init[k]).abs().max() > 1e-3, (name, k)   # the weights did move

    # only rank 0 logs; the logged loss is the mean over both processes = the combined batch's loss
    ddp_log = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    one_log = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ddp_log] == list(range(1, STEPS + 1))
    for a, b in zip(ddp_log, one_log):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5) and b["grad_norm"] > 0.05
    state = json.loads((list_checkpoints(tmp_path / "ddp" / "checkpoints")[-1] / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2
