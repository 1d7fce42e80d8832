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

QED and SA are computed on the largest fragment of each valid molecule (hydrogens removed for SA). What a
molecule breaks of these metrics' assumptions, and whether its geometry is real 3D, is ``chem.diagnostics``.

Molecules that carry bonds of their own (an SDF bond block, a model's predicted bonds) are also scored by the
file's-bonds rule: the same figures with their own bonds and formal charges, atom stability by the valences of
``chem.valence`` and validity by RDKit on that molecule; ``evaluate_molecules`` reports both rules, each named,
how often they agree, and why each molecule fails under each (``diagnostics.failure_reasons``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .bonds import perceive_bonds, perceive_bonds_batch, stable_atoms, to_rdkit
from .diagnostics import (
    assumption_notes,
    coincident_atoms_fast,
    failure_reasons,
    geometry_check,
    rule_note,
    summary_warnings,
)
from .rdkit_log import rdkit_reason
from .valence import stable_by_valence

log = logging.getLogger(__name__)

PAIR_BUDGET: int | None = 1 << 19
"""Padded atom pairs (chunk size x N_max²) per stability chunk, 524,288: bond perception needs about 51
bytes per padded pair (float64 [B, N, N, 3] differences and their squares), so a chunk peaks near 27 MB
however many large molecules a file holds (a molecule larger than the budget is a chunk of its own).
Smaller chunks also ran faster than 2-4 M pairs (cache), see BENCHMARKS.md. None removes the limit (then
``MAX_CHUNK_MOLECULES`` alone bounds a chunk)."""
MAX_CHUNK_MOLECULES: int | None = None
"""Optional cap on molecules per chunk; the chunking before the pair budget was ``PAIR_BUDGET = None``,
``MAX_CHUNK_MOLECULES = 2048`` (kept reachable for ``scripts/bench_scoring.py``'s old-chunking arm)."""


class _ModuleDefault:
    """Default of ``pair_budget`` / ``max_chunk_molecules``: the module constant as it is at call time (None is a
    value of its own there: no limit)."""

    def __repr__(self) -> str:
        return "<module default>"


MODULE_DEFAULT = _ModuleDefault()


def atom_stability(atomic_numbers, positions) -> tuple[int, int]:
    """(number of stable atoms, number of atoms) of one molecule under EDM's bond perception."""
    a = perceive_bonds(atomic_numbers, positions)
    return int(stable_atoms(atomic_numbers, a.sum(1)).sum()), int(len(a))


def molecule_stability(atomic_numbers, positions) -> bool:
    """True when every atom of the molecule is stable (EDM)."""
    stable, n = atom_stability(atomic_numbers, positions)
    return n > 0 and stable == n


def _chunk_bounds(sorted_counts: np.ndarray, max_pairs: int | None, max_molecules: int | None) -> list[int]:
    """Start offsets (plus the end) of consecutive chunks of molecules sorted by size, each holding at most
    ``max_molecules`` molecules and ``max_pairs`` padded pairs (len x largest²), and at least one molecule."""
    bounds, start = [0], 0
    for k, n in enumerate(sorted_counts.tolist()):
        size = k - start + 1  # molecules in the chunk if k joins it; sorted, so n is its largest
        full = (max_molecules is not None and size > max_molecules) or \
            (max_pairs is not None and size * max(n, 1) ** 2 > max_pairs)
        if full and k > start:
            bounds.append(k)
            start = k
    if bounds[-1] != len(sorted_counts):
        bounds.append(len(sorted_counts))
    return bounds


def _stability_chunks(molecules: Sequence, pair_budget, max_chunk_molecules):
    """Yield ``(indices, counts, orders [B, N, N] int8, stable [B, N] bool)`` for padded chunks of molecules
    of similar size, at most ``pair_budget`` padded pairs and ``max_chunk_molecules`` molecules each (None: no
    limit; ``MODULE_DEFAULT``: ``PAIR_BUDGET`` / ``MAX_CHUNK_MOLECULES`` as they are at call time)."""
    if pair_budget is MODULE_DEFAULT:
        pair_budget = PAIR_BUDGET
    if max_chunk_molecules is MODULE_DEFAULT:
        max_chunk_molecules = MAX_CHUNK_MOLECULES
    counts = np.array([len(m.atomic_numbers) for m in molecules], dtype=np.int64)
    order = np.argsort(counts, kind="stable")
    bounds = _chunk_bounds(counts[order], pair_budget, max_chunk_molecules)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        idx = order[start:stop]
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
        yield idx, counts[idx], a, ok


def stability_batch(molecules: Sequence, *, pair_budget: int | None | _ModuleDefault = MODULE_DEFAULT,
                    max_chunk_molecules: int | None | _ModuleDefault = MODULE_DEFAULT
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stable-atom count per molecule ([M] int64) and each molecule's [n, n] int8 bond-order matrix.

    Computed on padded chunks of molecules of similar size (vectorised), at most ``pair_budget`` padded
    atom pairs (chunk size x N_max²) and ``max_chunk_molecules`` molecules each (None: no limit; defaults
    ``PAIR_BUDGET`` and ``MAX_CHUNK_MOLECULES``), so peak memory does not grow with the number of molecules;
    the chunking changes memory and speed only, never the results. Each matrix is a copy (a view would keep
    its whole padded chunk alive)."""
    n_stable = np.zeros(len(molecules), dtype=np.int64)
    matrices: list[np.ndarray] = [None] * len(molecules)  # type: ignore[list-item]
    for idx, counts, a, ok in _stability_chunks(molecules, pair_budget, max_chunk_molecules):
        n_stable[idx] = ok.sum(1)
        for b, (k, n) in enumerate(zip(idx, counts)):
            matrices[k] = a[b, :n, :n].copy()
    return n_stable, matrices


def stability_bonds(molecules: Sequence, *, pair_budget: int | None | _ModuleDefault = MODULE_DEFAULT,
                    max_chunk_molecules: int | None | _ModuleDefault = MODULE_DEFAULT
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Like ``stability_batch`` (same chunking arguments) but with each molecule's perceived bonds as [m, 3]
    int64 rows (i, j, order), i > j, in the order ``to_rdkit`` adds bonds from a matrix: the sparse form keeps
    memory proportional to the number of bonds rather than atoms²."""
    n_stable = np.zeros(len(molecules), dtype=np.int64)
    bonds: list[np.ndarray] = [None] * len(molecules)  # type: ignore[list-item]
    for idx, counts, a, ok in _stability_chunks(molecules, pair_budget, max_chunk_molecules):
        n_stable[idx] = ok.sum(1)
        for b, (k, n) in enumerate(zip(idx, counts)):
            i, j = np.nonzero(np.tril(a[b, :n, :n], -1))
            bonds[k] = np.stack([i, j, a[b, i, j]], axis=1).astype(np.int64)
    return n_stable, bonds



def _largest_fragment_smiles(mol):
    """EDM's validity: sanitise, keep the largest fragment, return (SMILES, fragment, #fragments, error) with
    SMILES and fragment None and ``error`` the exception RDKit raised when sanitisation fails (error None
    otherwise). ``mol`` itself is sanitised in place when the whole molecule sanitises."""
    from rdkit import Chem

    n_frags = len(Chem.GetMolFrags(mol)) if mol.GetNumAtoms() else 0
    # RDKit raises several exception types (ValueError, RuntimeError, its own MolSanitizeException
    # subclasses); any failure to sanitise means invalid, never an aborted run.
    try:
        Chem.SanitizeMol(mol)
    except Exception as e:
        return None, None, n_frags, e
    if n_frags == 1:  # the largest fragment is the sanitised molecule itself
        return Chem.MolToSmiles(mol), mol, n_frags, None
    frags = Chem.GetMolFrags(mol, asMols=True)
    largest = max(frags, default=mol, key=lambda m: m.GetNumAtoms())
    try:
        Chem.SanitizeMol(largest)
    except Exception as e:
        return None, None, n_frags, e
    return Chem.MolToSmiles(largest), largest, n_frags, None


def molecule_smiles(molecule, use_file_bonds: bool = False) -> str | None:
    """The SMILES EDM's validity check gives a molecule (largest fragment), or None when invalid; with
    ``use_file_bonds``, the one its own bonds and charges give (the file's-bonds rule)."""
    bonds = molecule.bonds if use_file_bonds else None
    mol = to_rdkit(molecule.atomic_numbers, molecule.positions, bonds=bonds,
                   formal_charges=molecule.formal_charges if use_file_bonds else None)
    return _largest_fragment_smiles(mol)[0]


def _drug_likeness(fragment) -> tuple[float | None, float | None, str | None]:
    """(QED, SA, reason) where reason is None or a one-line note on what RDKit could not compute."""
    from rdkit import Chem
    from rdkit.Chem import QED

    from .sascore import sa_score

    try:
        heavy = Chem.RemoveHs(fragment)
    except Exception as e:  # any RDKit failure is one molecule's problem
        return None, None, f"QED/SA not computed: {rdkit_reason(e)}"
    reasons = []
    try:
        qed = float(QED.qed(heavy))
    except Exception as e:
        qed = None
        reasons.append(f"QED not computed: {rdkit_reason(e)}")
    try:
        sa = float(sa_score(heavy))
    except Exception as e:
        sa = None
        reasons.append(f"SA not computed: {rdkit_reason(e)}")
    return qed, sa, "; ".join(reasons) or None


def drug_likeness(fragment) -> tuple[float | None, float | None]:
    """(QED, SA score) of a sanitised RDKit molecule; None where RDKit fails."""
    return _drug_likeness(fragment)[:2]



def evaluate_molecules(molecules: Sequence, train_smiles: set[str] | None = None, *, properties: bool = True,
                       file_bonds: bool = True, show_progress: bool = False,
                       pair_budget: int | None | _ModuleDefault = MODULE_DEFAULT,
                       max_chunk_molecules: int | None | _ModuleDefault = MODULE_DEFAULT) -> dict:
    """Score molecules (``Molecule``-like: ``atomic_numbers``, ``positions``, ``name``, optionally ``bonds`` and
    ``formal_charges``) under two rules, each named (``chem.diagnostics.RULES``):

    - **EDM's rule** (always): bonds perceived from 3D with EDM's distance table, EDM's valences, charges ignored
      (Hoogeboom et al. 2022; comparable with EDM's published figures). Its figures keep their plain keys:
      ``atom_stability``, ``mol_stability``, ``validity``, ``uniqueness`` (None without valid molecules),
      ``novelty`` (None without ``train_smiles``), ``connectivity`` (fractions in [0, 1]) and the counts behind
      them (``n_molecules``, ``n_atoms``, ``n_stable_atoms``, ``n_stable_molecules``, ``n_valid``, ``n_unique``,
      ``n_novel``, ``n_connected``);
    - **the file's bonds** (``file_bonds`` and a molecule with ``bonds``): its own bonds and formal charges, atom
      stability by the valences of ``chem.valence``, validity by RDKit sanitisation of that molecule (largest
      fragment, as EDM). ``file_bonds`` in the result holds the same figures and counts over the molecules that
      carry bonds (None when none does); ``agreement`` says per molecule whether EDM's perceived bonds are the
      file's: ``same_bonds`` (the same atom pairs bonded) and ``same_orders`` (and with the same orders, two
      Kekulé forms of one aromatic ring counting as the same when both molecules sanitise), as fractions and
      counts of those molecules (None when none carries bonds).

    ``headline`` is ``"file_bonds"`` when every molecule carries bonds (a file with bonds is judged by them),
    else ``"edm"``; ``qed`` / ``sa`` (when ``properties``) are means over the molecules valid under the headline
    rule, computed on their largest fragment under that rule. Also ``flag_counts`` ({flag: molecules}),
    ``warnings`` (summary lines, see ``summary_warnings``) and ``per_molecule``: one dict per molecule with name,
    n_atoms, formula; EDM's rule: stable_atoms, stable, valid, smiles, connected, n_fragments, novel,
    edm_reasons; the file's bonds (None without bonds): file_stable_atoms, file_stable, file_valid, file_smiles,
    file_connected, file_n_fragments, file_novel, file_reasons, same_bonds, same_orders; qed, sa; geometry ('3d',
    'flat', 'collinear' or 'collapsed'; see ``geometry_check``); flags (short codes); notes (one line each: why
    the molecule is unstable or invalid under each rule, what EDM's metric assumes that it breaks, geometry
    problems, what RDKit could not compute) and error. ``*_reasons`` are the short labels of
    ``diagnostics.failure_reasons`` ('valence 5 on C3', 'radical on N5', '2 fragments', ...).

    Molecules with no atoms, non-finite coordinates, impossible atomic numbers or collapsed coordinates count as
    unstable and invalid under both rules, with the reason in ``per_molecule[i]['error']``. No molecule raises:
    an RDKit failure, or bonds that name missing atoms, become a note in its row.

    ``pair_budget`` / ``max_chunk_molecules`` bound the padded chunks of the stability computation (see
    ``stability_batch``): memory and speed only, the results are the same.
    """
    from rdkit import rdBase

    molecules = list(molecules)
    n_stable, bonds = (stability_bonds(molecules, pair_budget=pair_budget, max_chunk_molecules=max_chunk_molecules)
                       if molecules else (np.zeros(0, np.int64), []))
    headline = "file" if file_bonds and molecules and all(getattr(m, "bonds", None) is not None
                                                          for m in molecules) else "edm"
    with rdBase.BlockLogs():  # sanitisation failures are expected and counted, not printed
        rows = _score_rows(molecules, n_stable, bonds, train_smiles, properties, file_bonds, headline, show_progress)
    return summarize(rows, novelty=train_smiles is not None)


_FILE_KEYS = ("file_stable_atoms", "file_stable", "file_valid", "file_smiles", "file_connected", "file_n_fragments",
              "file_novel", "file_reasons", "same_bonds", "same_orders")


def _score_rows(molecules, n_stable, perceived, train_smiles, properties, file_bonds, headline, show_progress):
    from ..utils import progress

    rows = []
    for k, m in enumerate(progress(molecules, desc="scoring", unit="mol", disable=None if show_progress else True)):
        z = np.asarray(m.atomic_numbers)
        n = len(z)
        file_rule = file_bonds and getattr(m, "bonds", None) is not None
        row = {"name": getattr(m, "name", "") or f"mol_{k}", "n_atoms": n,
               "formula": getattr(m, "formula", ""), "stable_atoms": int(n_stable[k]),
               "stable": bool(n > 0 and n_stable[k] == n), "valid": False, "smiles": None, "connected": False,
               "n_fragments": 0, "novel": None, "edm_reasons": [], **dict.fromkeys(_FILE_KEYS), "qed": None,
               "sa": None, "geometry": None, "flags": [], "notes": [], "error": None}
        if file_rule:
            row.update(file_stable_atoms=0, file_stable=False, file_valid=False, file_connected=False,
                       file_n_fragments=0, file_reasons=[])
        rows.append(row)
        if n == 0:
            row["error"] = "empty molecule"
        elif not np.all(np.isfinite(m.positions)):
            row["error"] = "non-finite coordinates"
        elif np.any((z < 1) | (z > 118)):
            row["error"] = f"invalid atomic number {int(z[(z < 1) | (z > 118)][0])}"
        else:
            own = getattr(m, "bonds", None)
            try:
                row["geometry"], note = geometry_check(z, m.positions, own if own is not None else perceived[k])
            except Exception as e:  # malformed file bonds, say: note it and score the rest
                row["geometry"], note = "3d", f"geometry check failed: {rdkit_reason(e)}"
            if row["geometry"] == "collapsed":
                row["error"] = note
                row["flags"].append("collapsed")
            elif note:
                if row["geometry"] != "3d":
                    row["flags"].append(row["geometry"])
                row["notes"].append(note)
        if row["error"]:
            row["stable"] = False
            row["stable_atoms"] = 0
            continue
        close = coincident_atoms_fast(z, m.positions, perceived[k])
        if close:
            i, j, d = close[0]
            row["flags"].append("coincident_atoms")
            row["notes"].append(f"{len(close)} pair{'s' if len(close) > 1 else ''} of coincident atoms, e.g. "
                                f"{i + 1} and {j + 1} ({d:.3f} Å apart): a zero-length bond")
        edm_mol = file_mol = fragment = None
        try:
            edm_mol, edm_fragment = _edm_validity(row, m, z, perceived[k], train_smiles)
            fragment = edm_fragment if headline == "edm" else None
        except Exception as e:  # an RDKit failure on one molecule must not end the run
            row["valid"], row["smiles"] = False, None
            row["flags"].append("rdkit_error")
            row["notes"].append(f"validity not computed: RDKit failed: {rdkit_reason(e)}")
        if file_rule:
            try:
                file_mol, file_fragment = _file_rule(row, m, z, train_smiles)
                fragment = file_fragment if headline == "file" else fragment
                row["same_bonds"], row["same_orders"] = _agreement(perceived[k], m.bonds, edm_mol, file_mol)
            except Exception as e:  # bonds naming missing atoms, an order RDKit cannot take, ...
                row.update(file_stable_atoms=0, file_stable=False, file_valid=False, file_smiles=None,
                           file_reasons=["unusable bonds"])
                row["flags"].append("rdkit_error")
                row["notes"].append(f"unstable and invalid under the file's bonds: unusable bonds: {rdkit_reason(e)}")
        if properties and fragment is not None:
            row["qed"], row["sa"], reason = _drug_likeness(fragment)
            if reason:
                row["notes"].append(reason)
        try:
            for flag, note in assumption_notes(m, z, perceived[k], int(n_stable[k]), file_rule):
                row["flags"].append(flag)
                row["notes"].append(note)
        except Exception as e:
            row["notes"].append(f"metric-assumption checks failed: {rdkit_reason(e)}")
    return rows


def _edm_validity(row: dict, m, z, perceived, train_smiles):
    """Fill EDM's-rule fields of ``row`` (valid, smiles, connected, n_fragments, novel, edm_reasons, notes);
    return (the whole molecule, sanitised, or None; its largest fragment or None)."""
    mol = to_rdkit(z, m.positions, bonds=perceived, conformer=False)
    smiles, fragment, n_frags, error = _largest_fragment_smiles(mol)
    row["n_fragments"] = n_frags
    row["connected"] = n_frags == 1
    if n_frags > 1:
        row["flags"].append("fragments")
        row["notes"].append(f"{n_frags} fragments (a salt, counter-ion or broken molecule): EDM's validity and "
                            f"SMILES keep only the largest")
    row["valid"] = smiles is not None
    reasons = failure_reasons(m, "edm", bonds=perceived, n_fragments=n_frags, sanitize_error=error)
    row["edm_reasons"] = [r.label for r in reasons]
    note = rule_note("edm", reasons, row["stable"], row["valid"])
    if note:
        row["notes"].append(note)
    if smiles is None:
        return None, None
    row["smiles"] = smiles
    if train_smiles is not None:
        row["novel"] = smiles not in train_smiles
    if (z == 1).any():
        filled = fragment.GetNumAtoms(onlyExplicit=False) - fragment.GetNumAtoms()  # implicit H count
        if filled:
            row["flags"].append("implicit_h")
            row["notes"].append(f"RDKit added {filled} implicit hydrogen{'s' if filled > 1 else ''} to under-bonded "
                                f"atoms to make the molecule valid under EDM's rule: its SMILES has hydrogens the 3D "
                                f"structure lacks")
    return mol, fragment


def _file_rule(row: dict, m, z, train_smiles):
    """Fill the file's-bonds fields of ``row`` from the molecule's own bonds and charges; return (the whole
    molecule, sanitised, or None; its largest fragment or None)."""
    charges = getattr(m, "formal_charges", None)
    stable = stable_by_valence(z, m.bonds, charges)  # checks the bonds before RDKit sees them
    row["file_stable_atoms"] = int(stable.sum())
    row["file_stable"] = bool(stable.all())
    mol = to_rdkit(z, m.positions, bonds=m.bonds, formal_charges=charges, conformer=False)
    smiles, fragment, n_frags, error = _largest_fragment_smiles(mol)
    row["file_n_fragments"] = n_frags
    row["file_connected"] = n_frags == 1
    row["file_valid"] = smiles is not None
    reasons = failure_reasons(m, "file", n_fragments=n_frags, sanitize_error=error)
    row["file_reasons"] = [r.label for r in reasons]
    note = rule_note("file", reasons, row["file_stable"], row["file_valid"])
    if note:
        row["notes"].append(note)
    if n_frags > 1:
        row["notes"].append(f"{n_frags} fragments in the file's bonds: validity and SMILES keep only the largest")
    if smiles is None:
        return None, None
    row["file_smiles"] = smiles
    if train_smiles is not None:
        row["file_novel"] = smiles not in train_smiles
    return mol, fragment


def _agreement(perceived: np.ndarray, own: np.ndarray, edm_mol, file_mol) -> tuple[bool, bool]:
    """(same bonded pairs, same pairs and orders) of EDM's perceived bonds and the file's; orders compare as
    RDKit's sanitised bond types when both molecules sanitised (two Kekulé forms of one aromatic ring are then the
    same), else as written (an aromatic order 4 never equals a perceived one)."""
    def pairs(rows):
        rows = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        return {(min(i, j), max(i, j)): o for i, j, o in rows.tolist()}

    def types(mol):
        return {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))): b.GetBondType() for b in mol.GetBonds()}
    a, b = pairs(perceived), pairs(own)
    if a.keys() != b.keys():
        return False, False
    if edm_mol is not None and file_mol is not None:
        return True, types(edm_mol) == types(file_mol)
    return True, a == b


RULE_FIGURES = ("n_molecules", "n_atoms", "n_stable_atoms", "n_stable_molecules", "n_valid", "n_unique", "n_novel",
                "n_connected", "atom_stability", "mol_stability", "validity", "uniqueness", "novelty", "connectivity")
"""The keys of one rule's figures in ``evaluate_molecules``' result (EDM's at its top level, the file's bonds' in
its ``file_bonds`` block)."""


def _rule_figures(rows: list[dict], prefix: str, novelty: bool) -> dict:
    """Rates and counts of one rule over ``rows`` (EDM's keys with ``prefix`` "", the file's with "file_"), keyed
    as ``RULE_FIGURES``."""
    def ratio(a, b):
        return (a / b if b else None)
    n_mol = len(rows)
    n_atoms = sum(r["n_atoms"] for r in rows)
    n_stable_atoms = sum(r[f"{prefix}stable_atoms"] for r in rows)
    n_stable = sum(r[f"{prefix}stable"] for r in rows)
    valid = [r[f"{prefix}smiles"] for r in rows if r[f"{prefix}valid"]]
    unique = set(valid)
    n_novel = len({r[f"{prefix}smiles"] for r in rows if r[f"{prefix}valid"] and r[f"{prefix}novel"]}) \
        if novelty else None
    n_connected = sum(r[f"{prefix}connected"] for r in rows)
    return {
        "n_molecules": n_mol, "n_atoms": n_atoms, "n_stable_atoms": n_stable_atoms, "n_stable_molecules": n_stable,
        "n_valid": len(valid), "n_unique": len(unique), "n_novel": n_novel, "n_connected": n_connected,
        "atom_stability": ratio(n_stable_atoms, n_atoms) or 0.0,
        "mol_stability": ratio(n_stable, n_mol) or 0.0,
        "validity": ratio(len(valid), n_mol) or 0.0,
        "uniqueness": ratio(len(unique), len(valid)),
        "novelty": ratio(n_novel, len(unique)) if novelty else None,
        "connectivity": ratio(n_connected, n_mol) or 0.0,
    }


def summarize(rows: list[dict], novelty: bool = False) -> dict:
    """Aggregate per-molecule rows (as made by ``evaluate_molecules``) into its metrics dict."""
    qeds = [r["qed"] for r in rows if r.get("qed") is not None]
    sas = [r["sa"] for r in rows if r.get("sa") is not None]
    flag_counts = dict(Counter(f for r in rows for f in dict.fromkeys(r.get("flags") or [])))
    with_bonds = [r for r in rows if r.get("file_stable") is not None]
    agreement = None
    if with_bonds:
        compared = [r for r in with_bonds if r.get("same_bonds") is not None]
        same_bonds = sum(bool(r["same_bonds"]) for r in compared)
        same_orders = sum(bool(r["same_orders"]) for r in compared)
        agreement = {"n_molecules": len(compared), "n_same_bonds": same_bonds, "n_same_orders": same_orders,
                     "same_bonds": same_bonds / len(compared) if compared else None,
                     "same_orders": same_orders / len(compared) if compared else None}
    return {
        **_rule_figures(rows, "", novelty),
        "file_bonds": _rule_figures(with_bonds, "file_", novelty) if with_bonds else None,
        "agreement": agreement,
        "headline": "file_bonds" if rows and len(with_bonds) == len(rows) else "edm",
        "qed": float(np.mean(qeds)) if qeds else None,
        "sa": float(np.mean(sas)) if sas else None,
        "flag_counts": flag_counts,
        "warnings": summary_warnings(flag_counts, file_rule=bool(with_bonds)),
        "per_molecule": rows,
    }


def reference_smiles(molecules: Sequence, show_progress: bool = True) -> set[str]:
    """Valid largest-fragment SMILES of reference molecules (e.g. a training set), computed with the same
    bond perception as ``evaluate_molecules``, for novelty."""
    result = evaluate_molecules(molecules, properties=False, show_progress=show_progress)
    return {r["smiles"] for r in result["per_molecule"] if r["valid"]}
