"""Forward + backward throughput of the denoisers on random QM9-like batches.

Molecules have round(Normal(18, 3)) atoms clipped to [3, 29] and are padded to 29 (QM9's largest), with
6 atom features (5 one-hot types + charge) like EDM. One step is forward, an MSE against random targets
and backward. On CUDA the EGNN runs under bf16 autocast (its config default); elsewhere float32.

Usage::

    python scripts/bench_denoisers.py                      # EGNN at EDM size (9 x 256) + e3nn default
    python scripts/bench_denoisers.py --backbones egnn --batch-sizes 64 256 --steps 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from molediff.nn import build_denoiser

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _bench, also when this file is loaded by path
from _bench import machine, seconds_per_call  # noqa: E402

QM9_MAX_ATOMS = 29
QM9_FEATURES = 6

CONFIGS = {
    "egnn": {"name": "egnn", "in_node_features": QM9_FEATURES, "hidden": 256, "layers": 9, "sublayers": 1},
    "e3nn": {"name": "e3nn", "in_node_features": QM9_FEATURES},
}


def random_qm9_batch(batch_size: int, device: torch.device, generator: torch.Generator):
    """Random positions/features with QM9-like molecule sizes; returns (pos, h, t, mask)."""
    sizes = torch.randn(batch_size, generator=generator).mul(3.0).add(18.0).round().clamp(3, QM9_MAX_ATOMS)
    mask = torch.arange(QM9_MAX_ATOMS)[None] < sizes[:, None]
    pos = torch.randn(batch_size, QM9_MAX_ATOMS, 3, generator=generator) * 1.5
    h = torch.randn(batch_size, QM9_MAX_ATOMS, QM9_FEATURES, generator=generator)
    t = torch.rand(batch_size, generator=generator)
    return pos.to(device), h.to(device), t.to(device), mask.to(device)


def benchmark(name: str, batch_size: int, device: torch.device, warmup: int, steps: int) -> dict:
    torch.manual_seed(0)
    net = build_denoiser(CONFIGS[name]).to(device).train()
    generator = torch.Generator().manual_seed(0)
    batch = random_qm9_batch(batch_size, device, generator)
    target_pos, target_h = torch.randn_like(batch[0]), torch.randn_like(batch[1])

    def step() -> None:
        eps_pos, eps_h = net(*batch)
        loss = (eps_pos - target_pos).square().mean() + (eps_h - target_h).square().mean()
        loss.backward()
        net.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = seconds_per_call(step, steps, device)
    autocast = name == "egnn" and device.type == "cuda" and net.config.autocast_bf16
    return {
        "backbone": name,
        "params": sum(p.numel() for p in net.parameters()),
        "dtype": "bf16 autocast" if autocast else "float32",
        "batch": batch_size,
        "ms/step": 1e3 * seconds,
        "molecules/s": batch_size / seconds,
        "peak GiB": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None,
                        help="default: 64 256 on CUDA, 16 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 2 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 5 on CUDA, 1 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    batch_sizes = args.batch_sizes or ([64, 256] if on_cuda else [16])
    steps = args.steps or (20 if on_cuda else 2)
    warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    print(f"device: {machine(device)}; forward+backward, {steps} timed steps")
    header = ["backbone", "params", "dtype", "batch", "ms/step", "molecules/s", "peak GiB"]
    print(" | ".join(f"{column:>13}" for column in header))
    for name in args.backbones:
        for batch_size in batch_sizes:
            row = benchmark(name, batch_size, device, warmup, steps)
            print(" | ".join(f"{row[c]:>13.1f}" if isinstance(row[c], float) else f"{row[c]:>13}"
                             for c in header), flush=True)


if __name__ == "__main__":
    main()
