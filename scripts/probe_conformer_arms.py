"""Per-molecule records of conformer-pipeline variants on a tuning set: a quicker companion of
``bench_conformers.py`` for choosing options (N = 10 only, no PoseBusters), whose rows can be compared molecule by
molecule and resumed.

    OMP_NUM_THREADS=1 python scripts/probe_conformer_arms.py --set qm9 --n-molecules 150 --out qm9.jsonl \\
        --arm "chosen:{}" --arm "adaptive:{'relax_when': 'adaptive'}" --arm "etkdg_mmff:baseline" [--strain]
    python scripts/probe_conformer_arms.py --summary qm9.jsonl [more.jsonl ...]

Each ``--arm NAME:SETTINGS`` is ``generate_conformers`` with the shipped refiner, seed 0, one thread, the
benchmark's MMFF94 step limit and SETTINGS (a Python dict literal) over the defaults; ``NAME:baseline`` is
ETKDGv3 + MMFF94 as ``bench_conformers.py`` runs it (``{'refiner': None}`` is the model-free pipeline).
Molecules are the benchmark's (``--set``; the tuning sets:
QM9's valid split, the CCD components outside the benchmark list, or ``drugs``), in its seeded order. One JSON
line per molecule: its name, heavy atoms, rotatable bonds and, per arm, [best-of-10 heavy-atom RMSD (Å, the
benchmark's ``best_rmsd``; 0 for the drugs, which have no reference), conformers written, process CPU seconds,
local MMFF94 strain of each conformer (kcal/mol, the benchmark's ``local_strain``; with ``--strain``)]; a molecule an
arm fails on has RMSD null. ``--summary`` prints mean / median RMSD, conformers written, CPU per molecule and
strain median / 95th percentile per arm over the molecules every arm embedded.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_conformers as bench  # noqa: E402


def parse_arm(spec: str) -> tuple[str, dict | None]:
    """``NAME:SETTINGS`` → (name, settings dict), or (name, None) for ``NAME:baseline``; ValueError otherwise."""
    name, sep, settings = spec.partition(":")
    if not sep or not name:
        raise ValueError(f"an arm is NAME:SETTINGS, got {spec!r}")
    if settings.strip() == "baseline":
        return name, None
    value = ast.literal_eval(settings)
    if not isinstance(value, dict):
        raise ValueError(f"the settings of arm {name!r} must be a dict literal, got {settings!r}")
    return name, value


def run(args) -> None:
    from rdkit.Chem import rdMolDescriptors

    from molediff.conformers.pipeline import Refiner, generate_conformers

    arms = dict(parse_arm(s) for s in args.arm)
    molecules, _ = bench.reference_molecules(args.n_molecules, args.seed, args.set, tuning=args.set != "drugs")
    out = Path(args.out)
    done = {json.loads(line)["name"] for line in out.read_text().splitlines()} if out.exists() else set()
    refiner = Refiner() if any(s is not None and "refiner" not in s for s in arms.values()) else None
    with out.open("a") as f:
        for ref in molecules:
            name = ref.GetProp("_Name")
            if name in done:
                continue
            row = {"name": name, "heavy": ref.GetNumHeavyAtoms(), "rot": rdMolDescriptors.CalcNumRotatableBonds(ref)}
            for arm, settings in arms.items():
                start = time.process_time()
                try:
                    if settings is None:
                        mol = bench.etkdg(ref, 10, 1, relax=True)
                    else:
                        mol = generate_conformers(ref, **{"refiner": refiner, "n": 10, "seed": 0, "threads": 1,
                                                          "max_iters": bench.MAX_ITERS, **settings})
                except (ValueError, RuntimeError):
                    row[arm] = [None, 0, time.process_time() - start, []]
                    continue
                seconds = time.process_time() - start
                rmsd = bench.best_rmsd(mol, ref) if args.set != "drugs" else 0.0
                row[arm] = [rmsd, mol.GetNumConformers(), seconds, bench.local_strain(mol)[0] if args.strain else []]
            f.write(json.dumps(row) + "\n")
            f.flush()


def summary(paths: list[str]) -> None:
    rows: dict[str, dict] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            rows.setdefault(r["name"], {}).update(r)
    arms = sorted({k for r in rows.values() for k, v in r.items() if isinstance(v, list)})
    both = [r for r in rows.values() if all(a in r and r[a][0] is not None for a in arms)]
    print(f"{len(rows)} molecules, {len(both)} embedded by every arm\n")
    print("| arm | mean / median RMSD (Å) | conformers | CPU s/molecule (mean / median) | strain median / 95th pct |")
    print("|---|---|---|---|---|")
    for a in arms:
        rmsd = np.array([r[a][0] for r in both])
        written = np.mean([r[a][1] for r in both])
        cpu = np.array([r[a][2] for r in both])
        strain = np.array([s for r in both for s in (r[a][3] if len(r[a]) > 3 else [])])
        st = f"{np.median(strain):.2f} / {np.percentile(strain, 95):.2f}" if len(strain) else "n/a"
        print(f"| {a} | {rmsd.mean():.4f} / {np.median(rmsd):.4f} | {written:.2f} | {cpu.mean():.3f} / "
              f"{np.median(cpu):.3f} | {st} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=["qm9", "ccd", "drugs"], default="qm9",
                        help="the tuning set of the benchmark's --set (QM9 valid split, CCD tuning components) or "
                             "the drug-like set")
    parser.add_argument("--n-molecules", type=int, default=100, help="molecules, in the benchmark's seeded order")
    parser.add_argument("--seed", type=int, default=0, help="seed of the molecule order")
    parser.add_argument("--arm", action="append", default=[], metavar="NAME:SETTINGS",
                        help="a variant: NAME:{'relax_when': 'pool', ...} (generate_conformers settings) or "
                             "NAME:baseline (ETKDGv3 + MMFF94); repeatable")
    parser.add_argument("--strain", action="store_true", help="also the MMFF94 local strain of every conformer")
    parser.add_argument("--out", help="JSON-lines file to append to (molecules already in it are skipped)")
    parser.add_argument("--summary", nargs="+", metavar="JSONL", help="summarise these files instead")
    args = parser.parse_args(argv)
    if args.summary:
        summary(args.summary)
        return
    if not args.arm or not args.out:
        parser.error("give --arm (at least one) and --out, or --summary")
    try:
        [parse_arm(s) for s in args.arm]
    except (ValueError, SyntaxError) as e:
        parser.error(str(e))
    run(args)


if __name__ == "__main__":
    main()
