"""Benchmark: molecule-model training and sampling throughput on real QM9 batches.

Training molecules/s = full optimiser steps (forward, backward, AdamW) on size-bucketed QM9 training
batches; sampling molecules/s = whole molecules out of ``--sample-steps`` sampler steps.  Runs on CPU or
CUDA (bf16 autocast on CUDA) and prints a table naming the device.

    python scripts/bench_molecules.py                       # EDM size (9 x 256) and the CPU config
    python scripts/bench_molecules.py --sizes cpu-4x96 cpu-4x96-bonds --threads 1   # atoms only vs with bonds
    python scripts/bench_molecules.py --device cuda --batch 64 256 --sample-batch 100 1000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from molediff.data.qm9 import load_qm9
from molediff.molecules import MoleculeDiffusion, MoleculeDiffusionConfig, count_parameters
from molediff.molecules.training import MoleculeTask, atom_count_histogram

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _bench, also when this file is loaded by path
from _bench import Stopwatch, machine  # noqa: E402

SIZES = {"edm-9x256": {"name": "egnn", "hidden": 256, "layers": 9},
         "cpu-4x96": {"name": "egnn", "hidden": 96, "layers": 4},
         "cpu-4x96-bonds": {"name": "egnn", "hidden": 96, "layers": 4}}
# sizes whose model also diffuses bond orders (configs/qm9_bonds_cpu.yaml: one-hot Kekulé orders × 0.25)
BONDS = {"cpu-4x96-bonds": {"bond_orders": (1, 2, 3), "bond_scale": 0.25, "bond_loss_weight": 1.0}}


BF16 = False  # set in main: bf16 autocast for every row (the trainer follows the same setting)


def bench_training(model, dataset, batch_size, steps, device) -> float:
    """A bare loop (forward, backward, AdamW) over batches ``steps + 1 .. 2 * steps`` of the trainer's own
    batch order (seed 0, epoch 0) after ``steps`` warm-up steps, so it sees exactly the batches that the
    trainer's second logging window sees."""
    task = MoleculeTask(model=model, dataset=dataset)
    batches = task.batches(seed=0, epoch=0, rank=0, world_size=1, batch_size=batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> int:
        batch = next(batches)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=BF16):
            loss, _ = task.loss(model, batch)   # the trainer's loss: atoms, and bonds for a bond model
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return batch.mask.shape[0]

    for _ in range(steps):
        step()
    with Stopwatch(device) as watch:
        n = sum(step() for _ in range(steps))
    return n / watch.seconds


def bench_trainer(model, dataset, batch_size, steps, device) -> float:
    """The real trainer (EMA, clipping, LR schedule, logging, checkpoint at the end) on the same batches:
    molecules/s as the trainer itself logs it for steps ``steps + 1 .. 2 * steps``."""
    import json
    import tempfile
    from pathlib import Path

    from molediff.training import OptimConfig, TrainConfig, train

    task = MoleculeTask(model=model, dataset=dataset)
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(steps=2 * steps, batch_size=batch_size, log_every=steps, checkpoint_every=10 ** 9,
                             out_dir=out, optim=OptimConfig(lr=1e-4, warmup_steps=10), bf16=BF16)
        train(task, config, device=device)
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("kind") == "train"][-1]["items_per_s"]


@torch.no_grad()
def bench_sampling(model, batch_size, steps, device) -> float:
    counts = model.sample_atom_counts(batch_size, torch.Generator().manual_seed(0))
    with Stopwatch(device) as watch, torch.autocast(device.type, dtype=torch.bfloat16, enabled=BF16):
        model.sample(counts, sampler="ddpm", steps=steps, seeds=range(batch_size))
    return batch_size / watch.seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES), help="model sizes to time")
    p.add_argument("--batch", type=int, nargs="+", default=[64], help="training batch sizes")
    p.add_argument("--train-steps", type=int, default=100,
                   help="timed optimiser steps per setting (after as many warm-up steps on the same batch order)")
    p.add_argument("--no-trainer", action="store_true", help="skip the row for the real trainer")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="bf16 autocast for every row, or fp32; auto = what the trainer uses on this device (bf16 on "
                        "CUDA and on CPUs with native bf16)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--sample-batch", type=int, nargs="+", default=[100], help="sampling batch sizes")
    p.add_argument("--sample-steps", type=int, default=10, help="sampler steps timed (molecules/s scales ~1/steps)")
    args = p.parse_args()
    global BF16
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    from molediff.utils import use_bf16

    BF16 = use_bf16(args.precision, device)
    dataset = load_qm9("train")
    hist = atom_count_histogram(dataset)
    bonded = None
    if any(size in BONDS for size in args.sizes):
        from molediff.molecules.training import molecules_with_bonds

        # QM9's cached bond orders (molecules without an assignment left out, as the trainer does)
        bonded = molecules_with_bonds(load_qm9("train", bonds=True), None, BONDS["cpu-4x96-bonds"]["bond_orders"])
    print(f"# device: {machine(device)}; "
          f"{'bf16 autocast' if BF16 else 'fp32'}; batch order: QM9 train split, seed 0, epoch 0; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'model':<14} {'params':>9} {'what':<9} {'batch':>5} {'steps':>5} {'molecules/s':>12}")
    for size in args.sizes:
        torch.manual_seed(0)
        model = MoleculeDiffusion(MoleculeDiffusionConfig(denoiser=SIZES[size], atom_count_histogram=hist,
                                                          **BONDS.get(size, {}))).to(device)
        params = count_parameters(model)
        data = bonded if size in BONDS else dataset
        for b in args.batch:
            rate = bench_training(model, data, b, args.train_steps, device)
            print(f"{size:<14} {params:>9,} {'train':<9} {b:>5} {'':>5} {rate:>12.1f}", flush=True)
            if not args.no_trainer:
                torch.manual_seed(0)
                fresh = MoleculeDiffusion(model.config).to(device)
                rate_trainer = bench_trainer(fresh, data, b, args.train_steps, device)
                print(f"{size:<14} {params:>9,} {'trainer':<9} {b:>5} {'':>5} {rate_trainer:>12.1f}"
                      f"   ({rate_trainer / rate:.2f} of the bare loop)", flush=True)
        model.eval()
        for b in args.sample_batch:
            rate = bench_sampling(model, b, args.sample_steps, device)
            print(f"{size:<14} {params:>9,} {'sample':<9} {b:>5} {args.sample_steps:>5} {rate:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
