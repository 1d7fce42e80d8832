"""Bond lengths against bond orders: generated molecules beside real QM9 molecules, one Markdown table.

    python scripts/bench_bond_lengths.py generated.sdf --qm9-split train --qm9-n 2000

For each bond type (elements and order) of the molecules' own bonds: count, median length and median |length −
typical length| (EDM's table; `molediff.chem.bonds.bond_length_report`, what `molediff score` prints), for the
SDF's molecules and for the first N molecules of a QM9 split (B3LYP geometries; bond orders assigned once from
the geometry by RDKit's DetermineBonds and cached, as the bond model's training data). The QM9 column says what
the typical lengths give on real molecules: EDM's table is not QM9's mean (C–N single 1.47 Å in the table, 1.45
Å in QM9), so a generator matches real molecules when its column matches QM9's, not when it reaches 0.
"""

from __future__ import annotations

import argparse
import datetime
import sys

from _bench import machine


def main() -> None:
    from molediff.chem.bonds import bond_length_report
    from molediff.chem.io import read_molecules
    from molediff.data.qm9 import load_qm9

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sdf", help="generated molecules with their bonds (SDF)")
    p.add_argument("--qm9-split", default="train", choices=["train", "valid", "test"])
    p.add_argument("--qm9-n", type=int, default=2000, help="QM9 molecules (the first N of the split)")
    p.add_argument("--min-count", type=int, default=20, help="leave out types with fewer bonds in the SDF")
    args = p.parse_args()
    generated, errors = read_molecules(args.sdf)
    real = load_qm9(args.qm9_split, bonds=True)
    real = real.subset(range(min(args.qm9_n, len(real))))
    ours = {r["bond"]: r for r in bond_length_report(generated)}
    qm9 = {r["bond"]: r for r in bond_length_report([real[i] for i in range(len(real))])}
    print(f"Command: `{' '.join(['python', 'scripts/bench_bond_lengths.py'] + sys.argv[1:])}`  \n"
          f"Machine: {machine(rdkit=True)}  \nDate: {datetime.date.today().isoformat()}")
    print(f"\n{len(generated)} molecules of {args.sdf} ({len(errors)} unreadable) beside the first {len(real)} of "
          f"QM9's {args.qm9_split} split. Deviation: median |length − typical length| (EDM's table), Å.\n")
    print("| bond | typical Å | n (generated) | median Å (generated) | deviation (generated) | n (QM9) "
          "| median Å (QM9) | deviation (QM9) |")
    print("|---|---|---|---|---|---|---|---|")

    def f(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    for bond, r in ours.items():
        if r["n"] < args.min_count:
            continue
        q = qm9.get(bond, {})
        print(f"| {bond} | {f(r['typical_length'], '.2f')} | {r['n']} | {f(r['median_length'])} "
              f"| {f(r['median_abs_deviation'])} | {q.get('n', 0)} | {f(q.get('median_length'))} "
              f"| {f(q.get('median_abs_deviation'))} |")


if __name__ == "__main__":
    main()
