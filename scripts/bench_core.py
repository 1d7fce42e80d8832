"""Benchmark: wall time per sampling step of each core sampler on CPU (no network: a cheap analytic ε,
so the numbers measure the core's own overhead per step).

    python scripts/bench_core.py [--batch 4096] [--dim 3] [--nodes 29]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from molediff.diffusion import SAMPLERS, PolynomialSchedule, ZeroCoMSpace, sample

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _bench, also when this file is loaded by path
from _bench import Stopwatch, machine  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1024, help="point clouds per batch")
    p.add_argument("--nodes", type=int, default=29, help="nodes per cloud (QM9 maximum: 29)")
    p.add_argument("--features", type=int, default=6, help="extra channels after the 3 coordinates")
    p.add_argument("--steps", type=int, default=50, help="sampling steps")
    args = p.parse_args()
    torch.manual_seed(0)
    schedule = PolynomialSchedule(T=1000)
    space = ZeroCoMSpace(3)
    mask = torch.ones(args.batch, args.nodes, dtype=torch.bool)
    mask[:, args.nodes * 2 // 3:] = torch.rand(args.batch, args.nodes - args.nodes * 2 // 3) < 0.5
    eps_fn = lambda z, t: 0.1 * z  # noqa: E731  (cheap stand-in: the benchmark times the sampler)
    print(f"# {machine()}; batch {args.batch} x {args.nodes} nodes x {3 + args.features}")
    print(f"{'sampler':<8} {'steps':>5} {'network calls':>13} {'ms/step':>8}")
    for name in SAMPLERS:
        calls = 0

        def counted(z, t):
            nonlocal calls
            calls += 1
            return eps_fn(z, t)

        z = space.randn((args.batch, args.nodes, 3 + args.features), mask)
        with Stopwatch() as watch:
            sample(name, counted, z, schedule, space, steps=args.steps, mask=mask,
                   generator=torch.Generator().manual_seed(0))
        print(f"{name:<8} {args.steps:>5} {calls:>13} {1000 * watch.seconds / args.steps:>8.2f}")


if __name__ == "__main__":
    main()
