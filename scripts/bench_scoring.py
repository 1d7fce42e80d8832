"""Benchmark molediff's scorer on QM9-size molecules: stability alone, and stability + validity (RDKit
sanitisation, largest fragment, SMILES), against a plain per-pair Python loop as EDM writes it.

    python scripts/bench_scoring.py [-n 10000] [--source qm9|fixture]

Uses the first n molecules of the QM9 training split (needs qm9pack), or with ``--source fixture`` the
500-molecule test fixture repeated to n.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from molediff.chem.bonds import THRESHOLDS_PM, stable_atoms
from molediff.chem.metrics import evaluate_molecules, stability_batch


def _loop_stability(molecules) -> int:
    """EDM-style reference: one Python-level distance and table lookup per atom pair."""
    single, double, triple = THRESHOLDS_PM.tolist()
    stable_mols = 0
    for m in molecules:
        z, x = m.atomic_numbers.tolist(), m.positions.tolist()
        n = len(z)
        nb = [0] * n
        for i in range(n):
            for j in range(i + 1, n):
                d = 100 * ((x[i][0] - x[j][0]) ** 2 + (x[i][1] - x[j][1]) ** 2 + (x[i][2] - x[j][2]) ** 2) ** 0.5
                o = 0
                if d < single[z[i]][z[j]]:
                    o = 1
                    if d < double[z[i]][z[j]]:
                        o = 2 if d >= triple[z[i]][z[j]] else 3
                nb[i] += o
                nb[j] += o
        stable_mols += bool(stable_atoms(z, nb).all())
    return stable_mols


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10_000, help="number of molecules")
    parser.add_argument("--source", choices=["qm9", "fixture"], default="qm9")
    args = parser.parse_args()
    if args.source == "qm9":
        from molediff.data.qm9 import load_qm9

        ds = load_qm9("train").subset(np.arange(args.n))
        molecules = [ds[i] for i in range(len(ds))]
    else:
        from molediff.chem.molecule import MoleculeDataset

        ds = MoleculeDataset.load(Path(__file__).resolve().parents[1] / "tests" / "data" / "qm9_test_500.npz")
        molecules = [ds[i % len(ds)] for i in range(args.n)]

    rows = []
    t = time.perf_counter()
    n_stable, _ = stability_batch(molecules)
    t_stab = time.perf_counter() - t
    counts = np.array([m.num_atoms for m in molecules])
    rows.append(("stability (vectorised)", t_stab, f"mol stable {np.mean(n_stable == counts):.4f}"))
    t = time.perf_counter()
    s = evaluate_molecules(molecules, properties=False)
    t_full = time.perf_counter() - t
    rows.append(("stability + validity", t_full, f"mol stable {s['mol_stability']:.4f}, valid {s['validity']:.4f}"))
    t = time.perf_counter()
    k = _loop_stability(molecules)
    rows.append(("stability, per-pair loop (lists)", time.perf_counter() - t, f"mol stable {k / len(molecules):.4f}"))

    print(f"{len(molecules)} molecules, {counts.mean():.1f} atoms on average")
    print(f"{'task':<34} {'seconds':>8}  check")
    for name, sec, note in rows:
        print(f"{name:<34} {sec:8.2f}  {note}")


if __name__ == "__main__":
    main()
