"""Benchmark: quality and speed of the core samplers on one molecule model, on the same seeds.

Every setting samples the same molecules (molecule i: atom count i of one fixed draw from the model's
histogram, seed i), so the settings differ only in the sampler and its number of steps. Quality is EDM's
metrics (atom and molecule stability, validity, connectivity: ``molediff.chem.stability``); speed is molecules/s
of wall time for sampling alone (model loaded, scoring excluded). Prints a Markdown table and, with --json,
writes every figure.

    python scripts/bench_sampling.py -n 1000 --settings ddpm:1000 ddpm:250 dpm2m:50 dpm2m:100 dpm2m:250 \\
        ddim:100 heun:50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _bench, also when this file is loaded by path
from _bench import Stopwatch, machine, table_header  # noqa: E402


def parse_setting(text: str) -> tuple[str, int]:
    from molediff.diffusion import SAMPLERS

    name, _, steps = text.partition(":")
    if name not in SAMPLERS or not steps.isdigit():
        raise argparse.ArgumentTypeError(f"settings look like SAMPLER:STEPS with SAMPLER in {sorted(SAMPLERS)}, "
                                         f"got {text!r}")
    return name, int(steps)


def main() -> None:
    from molediff.chem.stability import evaluate_molecules
    from molediff.molecules.pretrained import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="weights or checkpoint (default: the shipped QM9 model)")
    p.add_argument("-n", "--num-molecules", type=int, default=1000, help="molecules per setting (same seeds)")
    p.add_argument("--settings", nargs="+", type=parse_setting, metavar="SAMPLER:STEPS",
                   default=[parse_setting(s) for s in ("ddpm:1000", "dpm2m:50", "dpm2m:100", "ddim:100", "heun:50")],
                   help="sampler and number of steps of each setting")
    p.add_argument("--batch-size", type=int, default=250, help="molecules sampled together")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32"],
                   help="run every setting in each of these precisions (bf16: network under bf16 autocast)")
    p.add_argument("--json", default=None, help="also write the results as JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    n = args.num_molecules
    counts = model.sample_atom_counts(n, torch.Generator().manual_seed(12345))
    print(f"# {args.checkpoint or 'shipped qm9_egnn'}; {n} molecules per setting (seeds 0..{n - 1}); "
          f"{machine()}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(table_header(["sampler", "steps", "precision", "network calls / molecule", "atom stab.", "mol. stab.",
                        "valid", "connected", "molecules/s"]))
    results = []
    for (sampler, steps), precision in [(s, p) for s in args.settings for p in args.precision]:
        with Stopwatch() as watch, torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            molecules = model.sample_molecules(counts, seeds=range(n), batch_size=args.batch_size, sampler=sampler,
                                               steps=steps)
        seconds = watch.seconds
        s = evaluate_molecules(molecules, properties=False)
        calls = 2 * steps if sampler == "heun" else steps + 1
        row = {"sampler": sampler, "steps": steps, "precision": precision, "network_calls": calls, "seconds": seconds,
               "molecules_per_s": n / seconds, **{k: s[k] for k in ("atom_stability", "mol_stability", "validity",
                                                                      "connectivity", "n_molecules")}}
        results.append(row)
        print(f"| {sampler} | {steps} | {precision} | {calls} | {100 * row['atom_stability']:.1f} % | "
              f"{100 * row['mol_stability']:.1f} % | {100 * row['validity']:.1f} % | "
              f"{100 * row['connectivity']:.1f} % | {row['molecules_per_s']:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
