"""Regenerate the chemistry/data test fixtures in tests/data from real QM9 data (needs qm9pack installed).

    python scripts/make_test_fixtures.py

Writes:
- qm9_test_500.npz: the first 500 molecules of EDM's QM9 test split (EDM order), a compressed
  MoleculeDataset with exact float32 coordinates (SDF's 4 decimals would move a few bond lengths
  across EDM's thresholds). tests/chem/test_chem_metrics.py hard-codes the counts it scores to.
- qm9_small.sdf / qm9_small.xyz: the first 5 of those, written by molediff's writers.
- bad_records.sdf / bad_records.xyz: two good molecules mixed with malformed, unknown-element,
  NaN-coordinate, empty and truncated records, one of each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from molediff.chem.molecule import MoleculeDataset
from molediff.chem.sdf import molblock, write_sdf
from molediff.chem.xyz import write_xyz
from molediff.data.qm9 import load_qm9
from molediff.utils import atomic_write

OUT = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> None:
    test = load_qm9("test")
    subset = test.subset(np.arange(500))
    subset = MoleculeDataset(subset.atomic_numbers, subset.positions, subset.offsets, names=subset.names)
    subset.save(OUT / "qm9_test_500.npz", compress=True)
    small = [subset[i] for i in range(5)]
    write_sdf(OUT / "qm9_small.sdf", small)
    write_xyz(OUT / "qm9_small.xyz", small)

    good1, good2 = molblock(small[0]), molblock(small[1])
    lines = good1.splitlines()
    bad_counts = "\n".join(lines[:3] + ["abc" + lines[3][3:]] + lines[4:]) + "\n"
    unknown = "\n".join(lines[:4] + [lines[4][:31] + "Xx " + lines[4][34:]] + lines[5:]) + "\n"
    nan = "\n".join(lines[:4] + ["       nan" + lines[4][10:]] + lines[5:]) + "\n"
    empty = "empty\n     RDKit          3D\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n"
    truncated = "\n".join(good2.splitlines()[:9]) + "\n"
    first = small[0].name
    records = [good1, bad_counts.replace(first, "bad_counts", 1), unknown.replace(first, "unknown", 1), good2,
               nan.replace(first, "nan_coords", 1), empty, truncated.replace(small[1].name, "truncated", 1)]
    with atomic_write(OUT / "bad_records.sdf") as f:
        f.write("$$$$\n".join(records))

    xyz = (OUT / "qm9_small.xyz").read_text().splitlines()
    n0 = int(xyz[0])
    frame0 = xyz[:n0 + 2]
    with atomic_write(OUT / "bad_records.xyz") as f:
        f.write("\n".join(frame0) + "\n")
        f.write("3\nunknown\nC 0 0 0\nXx 1 0 0\nH 0 1 0\n")
        f.write("2\nnan_coords\nC nan 0 0\nH 0 0 1.1\n")
        f.write("0\nempty\n")
        f.write("two\nbad header\nC 0 0 0\n")
        f.write("\n".join(frame0).replace(frame0[1], "second_good", 1) + "\n")
        f.write("2\nbad_number\nC 0 0 zero\nH 0 0 1.1\n")
        f.write("5\ntruncated\nC 0 0 0\nH 0 0 1.1\n")


if __name__ == "__main__":
    main()
