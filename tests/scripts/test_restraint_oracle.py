"""scripts/bench_restraint_oracle.py: the restrained minimum of a reference stays at the reference when the reference
is already an MMFF94 minimum, and moves less the stiffer the restraint when it is not."""

from __future__ import annotations

import numpy as np
from helpers import ROOT, etkdg_conformers, load_script
from rdkit import Chem

oracle = load_script(ROOT / "scripts" / "bench_restraint_oracle.py", "bench_restraint_oracle").oracle


def test_the_oracle_keeps_a_minimum_and_a_stiffer_restraint_moves_less():
    from rdkit.Chem import rdForceFieldHelpers

    relaxed = etkdg_conformers("CC(=O)Nc1ccc(O)cc1", count=1)
    rdForceFieldHelpers.MMFFOptimizeMolecule(relaxed, maxIters=5000)
    rmsd, strain = oracle([Chem.RemoveHs(relaxed)], [0])[0]
    # a minimum already (up to the hydrogens the oracle re-adds): little to mend
    assert rmsd[0] < 0.05 and strain[0] < 0.5
    embedded = Chem.RemoveHs(etkdg_conformers("CC(=O)Nc1ccc(O)cc1", count=1))   # strained as ETKDGv3 leaves it
    results = oracle([embedded], [1, 100])
    assert results[100][0][0] < results[1][0][0]   # closer to the reference
    assert results[100][1][0] > results[1][1][0]   # and more strained
    assert np.isfinite(results[1][1][0])
