"""Write the pinned samples of shipped molecule weights, which `tests/molecules/test_molecules.py` reproduces.

    python scripts/pin_qm9_samples.py qm9_bonds      # → tests/data/qm9_bonds_pinned_samples.npz

Three molecules (9, 14 and 19 atoms; seeds 3, 7, 11) in float64 with DPM-Solver++(2M)-20 and DDPM-30: positions
[3, 19, 3] Å, atomic numbers [3, 19] and, for a model that generates bonds, bond orders [3, 19, 19]. Run it once
when new weights are shipped; any later change of the sampling path that alters these samples fails the test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

COUNTS, SEEDS = [9, 14, 19], [3, 7, 11]
RUNS = (("dpm2m", 20), ("ddpm", 30))


def pinned_samples(name: str) -> dict[str, np.ndarray]:
    """The arrays of the pin file of shipped weights ``name`` (see the module docstring)."""
    from molediff.molecules.pretrained import load_model

    model = load_model(name).double()
    arrays = {"counts": np.array(COUNTS), "seeds": np.array(SEEDS)}
    for sampler, steps in RUNS:
        out = model.sample(COUNTS, sampler=sampler, steps=steps, seeds=SEEDS)
        arrays[f"{sampler}_{steps}_positions"] = out.positions.numpy()
        arrays[f"{sampler}_{steps}_atomic_numbers"] = out.atomic_numbers.numpy()
        if out.bond_orders is not None:
            arrays[f"{sampler}_{steps}_bond_orders"] = out.bond_orders.numpy()
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="shipped weights, e.g. qm9_bonds")
    parser.add_argument("-o", "--output", default=None, help="default: tests/data/NAME_pinned_samples.npz")
    args = parser.parse_args()
    tests_data = Path(__file__).resolve().parents[1] / "tests" / "data"
    out = Path(args.output or tests_data / f"{args.name}_pinned_samples.npz")
    np.savez_compressed(out, **pinned_samples(args.name))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
