"""Synthetic accessibility (SA) score of Ertl & Schuffenhauer (J. Cheminf. 2009), 1 (easy) to 10 (hard).

SA = fragment score (mean contribution of the molecule's Morgan radius-2 fragments, from PubChem
statistics) minus complexity penalties (size, stereocentres, spiro and bridgehead atoms, macrocycles)
plus a symmetry correction, rescaled to 1..10. The fragment table is the one RDKit ships in
``Contrib/SA_Score/fpscores.pkl.gz``; it is read with an unpickler that accepts only plain lists and
numbers.
"""

from __future__ import annotations

import functools
import gzip
import math
import pickle
from pathlib import Path


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # no classes or functions: lists, ints and floats only
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the SA fragment table")


@functools.cache
def fragment_scores() -> dict[int, float]:
    """Morgan bit id -> fragment contribution, from RDKit's Contrib folder."""
    from rdkit import RDConfig

    path = Path(RDConfig.RDContribDir) / "SA_Score" / "fpscores.pkl.gz"
    if not path.exists():
        raise FileNotFoundError(f"SA score needs RDKit's fragment table {path}")
    with gzip.open(path, "rb") as f:
        table = _PlainUnpickler(f).load()
    scores: dict[int, float] = {}
    for entry in table:
        value = float(entry[0])
        for bit in entry[1:]:
            scores[int(bit)] = value
    return scores


@functools.cache
def _generator():
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=2)


def sa_score(mol) -> float:
    """SA score of a sanitised RDKit molecule (hydrogens should be implicit)."""
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    if mol.GetNumAtoms() == 0:
        raise ValueError("SA score of an empty molecule")
    counts = _generator().GetSparseCountFingerprint(mol).GetNonzeroElements()
    table = fragment_scores()
    n_frag = sum(counts.values())
    fragment = sum(table.get(bit, -4.0) * c for bit, c in counts.items()) / n_frag

    n_atoms = mol.GetNumAtoms()
    n_chiral = len(Chem.FindMolChiralCenters(mol, includeUnassigned=True))
    n_spiro = rdMolDescriptors.CalcNumSpiroAtoms(mol)
    n_bridge = rdMolDescriptors.CalcNumBridgeheadAtoms(mol)
    has_macrocycle = any(len(ring) > 8 for ring in mol.GetRingInfo().AtomRings())
    penalty = (n_atoms ** 1.005 - n_atoms) + math.log10(n_chiral + 1) + math.log10(n_spiro + 1) \
        + math.log10(n_bridge + 1) + (math.log10(2) if has_macrocycle else 0.0)
    symmetry = 0.5 * math.log(n_atoms / len(counts)) if n_atoms > len(counts) else 0.0

    raw = fragment - penalty + symmetry
    lo, hi = -4.0, 2.5
    score = 11.0 - (raw - lo + 1.0) / (hi - lo) * 9.0
    if score > 8.0:  # smooth the top end
        score = 8.0 + math.log(score - 8.0)
    return float(min(max(score, 1.0), 10.0))
