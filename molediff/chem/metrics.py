"""De novo generation metrics exactly as EDM defines them, plus connectivity, QED and SA score.

- **atom stability**: fraction of all atoms whose summed perceived bond order is an allowed valence
  (``molediff.chem.bonds``), pooled over molecules;
- **molecule stability**: fraction of molecules whose atoms are all stable;
- **validity**: fraction of molecules whose perceived-bond RDKit molecule sanitises; the molecule's
  SMILES is then that of its largest fragment (explicit hydrogens kept, as in EDM);
- **uniqueness**: distinct valid SMILES / valid molecules;
- **novelty**: distinct valid SMILES absent from the training SMILES / distinct valid SMILES (the
  training SMILES must be computed the same way: ``reference_smiles``);
- **connectivity**: fraction of all molecules whose bond graph is one connected piece.

QED and SA are computed on the largest fragment of each valid molecule (hydrogens removed for SA).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .bonds import perceive_bonds, perceive_bonds_batch, stable_atoms, to_rdkit

log = logging.getLogger(__name__)

_CHUNK = 2048


def atom_stability(atomic_numbers, positions) -> tuple[int, int]:
    """(number of stable atoms, number of atoms) of one molecule under EDM's bond perception."""
    a = perceive_bonds(atomic_numbers, positions)
    return int(stable_atoms(atomic_numbers, a.sum(1)).sum()), int(len(a))


def molecule_stability(atomic_numbers, positions) -> bool:
    """True when every atom of the molecule is stable (EDM)."""
    stable, n = atom_stability(atomic_numbers, positions)
    return n > 0 and stable == n


def stability_batch(molecules: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stable-atom count per molecule and each molecule's [n, n] int8 bond-order matrix, computed on
    padded chunks of molecules of similar size (vectorised)."""
    counts = np.array([len(m.atomic_numbers) for m in molecules], dtype=np.int64)
    order = np.argsort(counts, kind="stable")
    n_stable = np.zeros(len(molecules), dtype=np.int64)
    matrices: list[np.ndarray] = [None] * len(molecules)  # type: ignore[list-item]
    for start in range(0, len(order), _CHUNK):
        idx = order[start:start + _CHUNK]
        n_max = max(int(counts[idx].max()), 1)
        z = np.zeros((len(idx), n_max), dtype=np.int64)
        x = np.zeros((len(idx), n_max, 3), dtype=np.float64)
        mask = np.zeros((len(idx), n_max), dtype=bool)
        for b, k in enumerate(idx):
            n = counts[k]
            z[b, :n] = molecules[k].atomic_numbers
            x[b, :n] = molecules[k].positions
            mask[b, :n] = True
        z = np.where((z > 0) & (z < 119), z, 0)  # invalid numbers never bond and are never stable
        a = perceive_bonds_batch(z, x, mask)
        ok = stable_atoms(z, a.sum(-1, dtype=np.int64)) & mask
        n_stable[idx] = ok.sum(1)
        for b, k in enumerate(idx):
            n = counts[k]
            matrices[k] = a[b, :n, :n]
    return n_stable, matrices


def _largest_fragment_smiles(mol):
    """EDM's validity: sanitise, keep the largest fragment, return (SMILES, fragment, #fragments) or
    (None, None, #fragments) when sanitisation fails."""
    from rdkit import Chem

    n_frags = len(Chem.GetMolFrags(mol)) if mol.GetNumAtoms() else 0
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):
        return None, None, n_frags
    if n_frags == 1:  # the largest fragment is the sanitised molecule itself
        return Chem.MolToSmiles(mol), mol, n_frags
    frags = Chem.GetMolFrags(mol, asMols=True)
    largest = max(frags, default=mol, key=lambda m: m.GetNumAtoms())
    try:
        Chem.SanitizeMol(largest)
    except (ValueError, RuntimeError):
        return None, None, n_frags
    return Chem.MolToSmiles(largest), largest, n_frags


def molecule_smiles(molecule, use_file_bonds: bool = False) -> str | None:
    """The SMILES EDM's validity check gives a molecule (largest fragment), or None when invalid."""
    bonds = molecule.bonds if use_file_bonds else None
    mol = to_rdkit(molecule.atomic_numbers, molecule.positions, bonds=bonds,
                   formal_charges=molecule.formal_charges if use_file_bonds else None)
    return _largest_fragment_smiles(mol)[0]


def drug_likeness(fragment) -> tuple[float | None, float | None]:
    """(QED, SA score) of a sanitised RDKit molecule; None where RDKit fails."""
    from rdkit import Chem
    from rdkit.Chem import QED

    from .sascore import sa_score

    try:
        heavy = Chem.RemoveHs(fragment)
    except (ValueError, RuntimeError):
        return None, None
    try:
        qed = float(QED.qed(heavy))
    except (ValueError, RuntimeError):
        qed = None
    try:
        sa = float(sa_score(heavy))
    except (ValueError, RuntimeError, FileNotFoundError):
        sa = None
    return qed, sa


def evaluate_molecules(molecules: Sequence, train_smiles: set[str] | None = None, *, properties: bool = True,
                       use_file_bonds: bool = False, show_progress: bool = False) -> dict:
    """Score molecules (``Molecule``-like: ``atomic_numbers``, ``positions``, ``name``).

    Returns rates as fractions in [0, 1]: ``atom_stability``, ``mol_stability``, ``validity``,
    ``uniqueness`` (None without valid molecules), ``novelty`` (None without ``train_smiles``),
    ``connectivity``; means ``qed`` / ``sa`` over valid molecules (when ``properties``); the counts
    behind them (``n_molecules``, ``n_atoms``, ``n_stable_atoms``, ``n_stable_molecules``, ``n_valid``,
    ``n_unique``, ``n_novel``, ``n_connected``); and ``per_molecule``, one dict per molecule with name,
    n_atoms, formula, stable_atoms, stable, valid, smiles, connected, n_fragments, qed, sa, novel.

    Stability always uses EDM's bond perception from 3D. Validity, SMILES and connectivity use it too
    unless ``use_file_bonds`` (then a molecule's own bonds and formal charges are used where known).
    Molecules with no atoms, non-finite coordinates or impossible atomic numbers count as unstable and
    invalid, with the reason in ``per_molecule[i]['error']``.
    """
    from rdkit import rdBase

    molecules = list(molecules)
    n_stable, matrices = stability_batch(molecules) if molecules else (np.zeros(0, np.int64), [])
    with rdBase.BlockLogs():  # sanitisation failures are expected and counted, not printed
        rows = _score_rows(molecules, n_stable, matrices, train_smiles, properties, use_file_bonds, show_progress)
    return summarize(rows, novelty=train_smiles is not None)


def _score_rows(molecules, n_stable, matrices, train_smiles, properties, use_file_bonds, show_progress):
    from ..utils import progress

    rows = []
    for k, m in enumerate(progress(molecules, desc="scoring", unit="mol", disable=None if show_progress else True)):
        z = np.asarray(m.atomic_numbers)
        n = len(z)
        row = {"name": getattr(m, "name", "") or f"mol_{k}", "n_atoms": n,
               "formula": m.formula if hasattr(m, "formula") else "", "stable_atoms": int(n_stable[k]),
               "stable": bool(n > 0 and n_stable[k] == n), "valid": False, "smiles": None, "connected": False,
               "n_fragments": 0, "qed": None, "sa": None, "novel": None, "error": None}
        if n == 0:
            row["error"] = "empty molecule"
        elif not np.all(np.isfinite(m.positions)):
            row["error"] = "non-finite coordinates"
        elif np.any((z < 1) | (z > 118)):
            row["error"] = f"invalid atomic number {int(z[(z < 1) | (z > 118)][0])}"
        if row["error"]:
            row["stable"] = False
            row["stable_atoms"] = 0
            rows.append(row)
            continue
        bonds = getattr(m, "bonds", None) if use_file_bonds else None
        if bonds is not None:
            mol = to_rdkit(z, m.positions, bonds=bonds, formal_charges=getattr(m, "formal_charges", None))
        else:
            mol = to_rdkit(z, m.positions, bond_orders=matrices[k], conformer=False)
        smiles, fragment, n_frags = _largest_fragment_smiles(mol)
        row["n_fragments"] = n_frags
        row["connected"] = n_frags == 1
        if smiles is not None:
            row["valid"] = True
            row["smiles"] = smiles
            if train_smiles is not None:
                row["novel"] = smiles not in train_smiles
            if properties:
                row["qed"], row["sa"] = drug_likeness(fragment)
        rows.append(row)
    return rows


def summarize(rows: list[dict], novelty: bool = False) -> dict:
    """Aggregate per-molecule rows (as made by ``evaluate_molecules``) into the metrics dict."""
    n_mol = len(rows)
    n_atoms = sum(r["n_atoms"] for r in rows)
    n_stable_atoms = sum(r["stable_atoms"] for r in rows)
    valid = [r["smiles"] for r in rows if r["valid"]]
    unique = set(valid)
    n_novel = len({r["smiles"] for r in rows if r["valid"] and r["novel"]}) if novelty else None
    qeds = [r["qed"] for r in rows if r.get("qed") is not None]
    sas = [r["sa"] for r in rows if r.get("sa") is not None]
    def ratio(a, b):
        return (a / b if b else None)
    return {
        "n_molecules": n_mol,
        "n_atoms": n_atoms,
        "n_stable_atoms": n_stable_atoms,
        "n_stable_molecules": sum(r["stable"] for r in rows),
        "n_valid": len(valid),
        "n_unique": len(unique),
        "n_novel": n_novel,
        "n_connected": sum(r["connected"] for r in rows),
        "atom_stability": ratio(n_stable_atoms, n_atoms) or 0.0,
        "mol_stability": ratio(sum(r["stable"] for r in rows), n_mol) or 0.0,
        "validity": ratio(len(valid), n_mol) or 0.0,
        "uniqueness": ratio(len(unique), len(valid)),
        "novelty": ratio(n_novel, len(unique)) if novelty else None,
        "connectivity": ratio(sum(r["connected"] for r in rows), n_mol) or 0.0,
        "qed": float(np.mean(qeds)) if qeds else None,
        "sa": float(np.mean(sas)) if sas else None,
        "per_molecule": rows,
    }


def reference_smiles(molecules: Sequence, show_progress: bool = True) -> set[str]:
    """Valid largest-fragment SMILES of reference molecules (e.g. a training set), computed with the same
    bond perception as ``evaluate_molecules``, for novelty."""
    result = evaluate_molecules(molecules, properties=False, show_progress=show_progress)
    return {r["smiles"] for r in result["per_molecule"] if r["valid"]}

