"""The model-card curve's horizontal axis: core-hours of joined CPU runs, or samples seen across CPU and GPU runs."""

import json
from pathlib import Path

import pytest
from helpers import ROOT, load_script

SCRIPT = ROOT / "scripts" / "plot_training_curve.py"


@pytest.fixture(scope="module")
def plot():
    return load_script(SCRIPT, "plot_training_curve")


def _metrics(path: Path, rows: list[tuple[int, float, float]]) -> str:
    path.write_text("".join(json.dumps({"kind": "train", "step": s, "time_s": t, "loss": loss}) + "\n"
                            for s, t, loss in rows) + json.dumps({"kind": "eval", "step": rows[-1][0],
                                                                  "eval_bits_per_dim": 3.5}) + "\n")
    return str(path)


def test_samples_axis_adds_runs_with_their_own_batch_sizes(plot, tmp_path):
    # a CPU run of 2,000 steps at batch 32, then a GPU run started from its weights (steps restart) at batch 256
    cpu = _metrics(tmp_path / "cpu.jsonl", [(1000, 100.0, 0.5), (2000, 200.0, 0.4)])
    gpu = _metrics(tmp_path / "gpu.jsonl", [(500, 10.0, 0.3), (1000, 20.0, 0.2)])
    x, loss, eval_x, bpd = plot.loss_curve([cpu, gpu], batch_sizes=[32, 256])
    assert x == pytest.approx([0.032, 0.064, 0.064 + 0.128, 0.064 + 0.256])
    assert loss == [0.5, 0.4, 0.3, 0.2]
    assert eval_x == pytest.approx([0.064, 0.32]) and bpd == [3.5, 3.5]


def test_core_hours_axis_joins_restarted_clocks(plot, tmp_path):
    first = _metrics(tmp_path / "a.jsonl", [(50, 1800.0, 0.9), (100, 3600.0, 0.8)])
    resumed = _metrics(tmp_path / "b.jsonl", [(150, 1800.0, 0.7)])
    x, loss, _, _ = plot.loss_curve([first, resumed], offset_hours=1.0, threads=2)
    assert x == pytest.approx([2.0, 3.0, 4.0])
