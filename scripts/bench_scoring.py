"""Benchmark molediff's scorer on QM9-size molecules: stability alone, and stability + validity (RDKit
sanitisation, largest fragment, SMILES), against a plain per-pair Python loop as EDM writes it.

    python scripts/bench_scoring.py [-n 10000] [--source qm9|fixture]

Uses the first n molecules of the QM9 training split (needs qm9pack), or with ``--source fixture`` the
500-molecule test fixture repeated to n.

    python scripts/bench_scoring.py --memory [--cases 1000x150 100x450]

Peak memory of ``evaluate_molecules(properties=False)`` (stability + validity + notes) on synthetic
molecules: n straight-chain alkanols C(k)H(2k+1)OH of the given atom count (all-trans zigzag, C-C 1.54 Å,
C-H 1.09 Å, C-O 1.43 Å, O-H 0.96 Å, tetrahedral angles, a random rotation and 0.01 Å noise each). Each
case runs in a fresh subprocess, once with the atoms² chunking (``PAIR_BUDGET``) and once with the old
chunking (2,048 molecules per chunk whatever their size), and reports tracemalloc's peak (NumPy's arrays
and Python objects; RDKit's C++ heap is not traced) and the rise in the process's maximum resident set
size (``resource.getrusage``) over the scoring.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from molediff.chem.bonds import THRESHOLDS_PM, stable_atoms
from molediff.chem.stability import evaluate_molecules, stability_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _bench, also when this file is loaded by path
from _bench import table_header  # noqa: E402


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


def alkanol(n_atoms: int, rng: np.random.Generator):
    """A straight-chain alkanol C(k)H(2k+1)OH with ``n_atoms`` = 3k + 3 atoms as a ``Molecule`` (see the module
    docstring for its geometry)."""
    from molediff.chem.molecule import Molecule

    if n_atoms < 6 or n_atoms % 3:
        raise ValueError(f"alkanol atom counts are 3k + 3 with k >= 1, got {n_atoms}")
    k = n_atoms // 3 - 1
    half = np.deg2rad(109.47) / 2
    a, b = 1.54 * np.sin(half), 1.54 * np.cos(half)

    def backbone(i):  # position i of the zigzag (i = -1 and k..k+1 are the virtual neighbours used for ends)
        return np.array([i * a, (i % 2) * b, 0.0])

    z, x = [], []
    for i in range(k):
        c = backbone(i)
        z.append(6)
        x.append(c)
        out = np.array([0.0, -1.0 if i % 2 == 0 else 1.0, 0.0])  # bisector pointing away from the neighbours
        for sign in (1, -1):
            z.append(1)
            x.append(c + 1.09 * (np.cos(half) * out + sign * np.sin(half) * np.array([0, 0, 1.0])))
    first = backbone(0)
    z.append(1)
    x.append(first + 1.09 * (backbone(-1) - first) / 1.54)
    last = backbone(k - 1)
    o = last + 1.43 * (backbone(k) - last) / 1.54
    z += [8, 1]
    x += [o, o + 0.96 * (backbone(k + 1) - backbone(k)) / 1.54]
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    pos = np.array(x) @ rot.T + rng.normal(0, 0.01, (len(x), 3))
    return Molecule(np.array(z), pos, name=f"alkanol_{k}")


def _memory_child(n_molecules: int, n_atoms: int, chunking: str) -> dict:
    """Score synthetic molecules once and measure memory (runs in its own process)."""
    import resource
    import tracemalloc

    # the old chunking: 2,048 molecules per chunk whatever their size, no pair budget
    chunks = {"pair_budget": None, "max_chunk_molecules": 2048} if chunking == "old" else {}
    rng = np.random.default_rng(0)
    molecules = [alkanol(n_atoms, rng) for _ in range(n_molecules)]
    evaluate_molecules(molecules[:2], properties=False, **chunks)  # import RDKit etc. before measuring
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t = time.perf_counter()
    s = evaluate_molecules(molecules, properties=False, **chunks)
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"molecules": n_molecules, "atoms": n_atoms, "chunking": chunking, "seconds": seconds,
            "tracemalloc_peak_mb": peak / 2**20, "maxrss_mb": rss1 / 1024, "maxrss_rise_mb": (rss1 - rss0) / 1024,
            "stable_atoms": s["n_stable_atoms"], "n_atoms_total": s["n_atoms"], "stable": s["n_stable_molecules"],
            "valid": s["n_valid"]}


def memory_benchmark(cases: list[str]) -> None:
    """Run each case with the new and the old chunking, each in a fresh subprocess, and print a table."""
    results = []
    for case in cases:
        n_molecules, n_atoms = (int(v) for v in case.lower().split("x"))
        for chunking in ("new", "old"):
            cmd = [sys.executable, __file__, "--memory-child", str(n_molecules), str(n_atoms), chunking]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"case {case} ({chunking}) failed:\n{proc.stderr}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(table_header(["molecules × atoms", "chunking", "tracemalloc peak (MB)", "max RSS (MB)", "RSS rise (MB)",
                        "seconds", "stable atoms", "stable", "valid"]))
    for r in results:
        name = "atoms² budget" if r["chunking"] == "new" else "2,048 molecules"
        print(f"| {r['molecules']:,} × {r['atoms']} | {name} | {r['tracemalloc_peak_mb']:.0f} | {r['maxrss_mb']:.0f} | "
              f"{r['maxrss_rise_mb']:.0f} | {r['seconds']:.1f} | {r['stable_atoms']:,}/{r['n_atoms_total']:,} | "
              f"{r['stable']} | {r['valid']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10_000, help="number of molecules")
    parser.add_argument("--source", choices=["qm9", "fixture"], default="qm9")
    parser.add_argument("--memory", action="store_true", help="measure peak memory on synthetic large molecules")
    parser.add_argument("--cases", nargs="+", default=["1000x150", "100x450"],
                        help="memory cases as MOLECULESxATOMS (atoms = 3k + 3)")
    parser.add_argument("--memory-child", nargs=3, metavar=("N", "ATOMS", "CHUNKING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        n, atoms, chunking = args.memory_child
        print(json.dumps(_memory_child(int(n), int(atoms), chunking)))
        return
    if args.memory:
        memory_benchmark(args.cases)
        return
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
