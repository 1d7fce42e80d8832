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
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .bonds import THRESHOLDS_PM, bond_list, perceive_bonds, perceive_bonds_batch, stable_atoms, to_rdkit
from .elements import METALS, SYMBOLS

log = logging.getLogger(__name__)

PAIR_BUDGET: int | None = 1 << 19
"""Padded atom pairs (chunk size x N_max²) per stability chunk, 524,288: bond perception needs about 51
bytes per padded pair (float64 [B, N, N, 3] differences and their squares), so a chunk peaks near 27 MB
however many large molecules a file holds (a molecule larger than the budget is a chunk of its own).
Smaller chunks also ran faster than 2-4 M pairs (cache), see BENCHMARKS.md. None removes the limit (then
``MAX_CHUNK_MOLECULES`` alone bounds a chunk)."""
MAX_CHUNK_MOLECULES: int | None = None
"""Optional cap on molecules per chunk; the chunking before the pair budget was ``PAIR_BUDGET = None``,
``MAX_CHUNK_MOLECULES = 2048`` (kept reachable for ``scripts/bench_scoring.py --old-chunking``)."""


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


def _stability_chunks(molecules: Sequence):
    """Yield ``(indices, counts, orders [B, N, N] int8, stable [B, N] bool)`` for padded chunks of molecules
    of similar size, bounded by ``PAIR_BUDGET`` / ``MAX_CHUNK_MOLECULES`` (read at call time)."""
    counts = np.array([len(m.atomic_numbers) for m in molecules], dtype=np.int64)
    order = np.argsort(counts, kind="stable")
    bounds = _chunk_bounds(counts[order], PAIR_BUDGET, MAX_CHUNK_MOLECULES)
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


def stability_batch(molecules: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stable-atom count per molecule ([M] int64) and each molecule's [n, n] int8 bond-order matrix.

    Computed on padded chunks of molecules of similar size (vectorised), at most ``PAIR_BUDGET`` padded
    atom pairs each, so peak memory does not grow with the number of molecules. Each matrix is a copy
    (a view would keep its whole padded chunk alive)."""
    n_stable = np.zeros(len(molecules), dtype=np.int64)
    matrices: list[np.ndarray] = [None] * len(molecules)  # type: ignore[list-item]
    for idx, counts, a, ok in _stability_chunks(molecules):
        n_stable[idx] = ok.sum(1)
        for b, (k, n) in enumerate(zip(idx, counts)):
            matrices[k] = a[b, :n, :n].copy()
    return n_stable, matrices


def stability_bonds(molecules: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
    """Like ``stability_batch`` but with each molecule's perceived bonds as [m, 3] int64 rows (i, j, order),
    i > j, in the order ``to_rdkit`` adds bonds from a matrix: the sparse form keeps memory proportional to
    the number of bonds rather than atoms²."""
    n_stable = np.zeros(len(molecules), dtype=np.int64)
    bonds: list[np.ndarray] = [None] * len(molecules)  # type: ignore[list-item]
    for idx, counts, a, ok in _stability_chunks(molecules):
        n_stable[idx] = ok.sum(1)
        for b, (k, n) in enumerate(zip(idx, counts)):
            i, j = np.nonzero(np.tril(a[b, :n, :n], -1))
            bonds[k] = np.stack([i, j, a[b, i, j]], axis=1).astype(np.int64)
    return n_stable, bonds


def error_reason(e: BaseException) -> str:
    """A one-line reason from an exception; RDKit's 'Invariant Violation' keeps its second line, which says
    what went wrong (e.g. 'Invariant Violation: bad direction in linearSearch')."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    if lines[0].lower().startswith("invariant violation") and len(lines) > 1:
        return f"{lines[0]}: {lines[1]}"
    return lines[0]


def _largest_fragment_smiles(mol):
    """EDM's validity: sanitise, keep the largest fragment, return (SMILES, fragment, #fragments) or
    (None, None, #fragments) when sanitisation fails."""
    from rdkit import Chem

    n_frags = len(Chem.GetMolFrags(mol)) if mol.GetNumAtoms() else 0
    # RDKit raises several exception types (ValueError, RuntimeError, its own MolSanitizeException
    # subclasses); any failure to sanitise means invalid, never an aborted run.
    try:
        Chem.SanitizeMol(mol)
    except Exception:
        return None, None, n_frags
    if n_frags == 1:  # the largest fragment is the sanitised molecule itself
        return Chem.MolToSmiles(mol), mol, n_frags
    frags = Chem.GetMolFrags(mol, asMols=True)
    largest = max(frags, default=mol, key=lambda m: m.GetNumAtoms())
    try:
        Chem.SanitizeMol(largest)
    except Exception:
        return None, None, n_frags
    return Chem.MolToSmiles(largest), largest, n_frags


def molecule_smiles(molecule, use_file_bonds: bool = False) -> str | None:
    """The SMILES EDM's validity check gives a molecule (largest fragment), or None when invalid."""
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
        return None, None, f"QED/SA not computed: {error_reason(e)}"
    reasons = []
    try:
        qed = float(QED.qed(heavy))
    except Exception as e:
        qed = None
        reasons.append(f"QED not computed: {error_reason(e)}")
    try:
        sa = float(sa_score(heavy))
    except Exception as e:
        sa = None
        reasons.append(f"SA not computed: {error_reason(e)}")
    return qed, sa, "; ".join(reasons) or None


def drug_likeness(fragment) -> tuple[float | None, float | None]:
    """(QED, SA score) of a sanitised RDKit molecule; None where RDKit fails."""
    return _drug_likeness(fragment)[:2]


# -- geometry and metric-assumption notes ---------------------------------------------------------------
COINCIDENT_ATOMS_A = 0.1
"""Atoms closer than this (Å) coincide: no bond is shorter than ~0.6 Å, and force fields cannot handle it."""
_FLAT_RMS_A = 0.01  # RMS distance (Å) from the best plane / line below which a geometry counts as flat / linear
_TETRAHEDRAL = frozenset({5, 6, 7, 14, 15, 16, 32, 33, 34})  # with 4+ neighbours these cannot be planar
_MONOVALENT = frozenset({1, 9, 17, 35, 53})  # H and halogens: always chain ends
_IS_METAL = np.isin(np.arange(len(SYMBOLS)), list(METALS))
_IN_EDM_TABLE = np.isfinite(THRESHOLDS_PM[0]).any(axis=1)  # elements that have at least one EDM bond length


def geometry_check(atomic_numbers, positions, bonds=None) -> tuple[str, str | None]:
    """Whether a molecule's coordinates are real 3D: (kind, note) with kind one of

    - ``"collapsed"``: two or more atoms, all at one point (within 1e-3 Å), e.g. all coordinates zero;
    - ``"collinear"``: three or more atoms on one line although the molecule cannot be linear (more than
      two H/halogen atoms, which must all be chain ends, or an atom with three or more neighbours);
    - ``"flat"``: more than three atoms in one plane (RMS distance from it < 0.01 Å, e.g. every z = 0)
      although a B/C/N/Si/P/S/Ge/As/Se atom has four or more neighbours and so must be tetrahedral;
    - ``"3d"`` otherwise (note None). Planar molecules such as benzene are not flagged.

    Shapes: atomic_numbers [n], positions [n, 3] Å (finite), bonds [m, 3] rows (i, j, order) or None to
    perceive them from 3D with EDM's table. Neighbours are counted from ``bonds``.
    """
    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(z)
    if n < 2:
        return "3d", None
    if np.ptp(x, axis=0).max() < 1e-3:
        return "collapsed", f"collapsed: all {n} atoms at one point (no 3D coordinates)"
    if n < 3:
        return "3d", None
    xc = x - x.mean(0)
    # RMS spread along the principal axes, largest first (eigenvalues of the 3x3 scatter: cheaper than an SVD)
    s = np.sqrt(np.clip(np.linalg.eigvalsh(xc.T @ xc)[::-1], 0, None) / n)
    if s[2] >= _FLAT_RMS_A:
        return "3d", None
    if bonds is None:
        bonds = bond_list(perceive_bonds(z, x))
    b = np.asarray(bonds, dtype=np.int64).reshape(-1, 3)
    degree = np.bincount(b[:, :2].reshape(-1), minlength=n)[:n] if len(b) else np.zeros(n, np.int64)
    if s[1] < _FLAT_RMS_A:
        ends = int(np.isin(z, list(_MONOVALENT)).sum())
        if ends > 2 or (degree >= 3).any():
            why = f"{ends} H/halogen atoms" if ends > 2 else "an atom with 3+ neighbours"
            return "collinear", f"collinear: all {n} atoms on one line, impossible with {why}"
        return "3d", None
    tetra = np.flatnonzero(np.isin(z, list(_TETRAHEDRAL)) & (degree >= 4))
    if n > 3 and len(tetra):
        k = int(tetra[0])
        axis = next((f"every {c} is 0" for c, col in zip("xyz", x.T) if np.all(col == 0)), "")
        return "flat", (f"flat: all {n} atoms in one plane{' (' + axis + ')' if axis else ''}, though atom {k + 1} "
                        f"({SYMBOLS[z[k]]}, {int(degree[k])} neighbours) must be tetrahedral: 2D coordinates?")
    return "3d", None


def coincident_atoms(positions, tolerance: float = COINCIDENT_ATOMS_A) -> list[tuple[int, int, float]]:
    """Pairs (i, j, distance Å), i < j, of atoms closer than ``tolerance``; positions [n, 3] Å."""
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(x) < 2:
        return []
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    i, j = np.nonzero(np.triu(d < tolerance, 1))
    return [(int(a), int(b), float(d[a, b])) for a, b in zip(i, j)]


_HAS_BOND_ENTRY = np.isfinite(THRESHOLDS_PM[0])  # [119, 119]: pairs that EDM's table can bond


def _coincident_fast(z: np.ndarray, positions, perceived: np.ndarray) -> list[tuple[int, int, float]]:
    """``coincident_atoms`` using the perceived bonds: two coincident atoms whose elements have an entry in
    EDM's table are always perceived as bonded, so when every pair of elements present has an entry only the
    bonded pairs need checking (the common case; otherwise all pairs are checked)."""
    elements = np.unique(z)
    if not _HAS_BOND_ENTRY[np.ix_(elements, elements)].all():
        return coincident_atoms(positions)
    if not len(perceived):
        return []
    x = np.asarray(positions, dtype=np.float64)
    i, j = np.minimum(perceived[:, 0], perceived[:, 1]), np.maximum(perceived[:, 0], perceived[:, 1])
    d = np.sqrt(((x[i] - x[j]) ** 2).sum(-1))
    close = np.flatnonzero(d < COINCIDENT_ATOMS_A)
    return sorted((int(i[c]), int(j[c]), float(d[c])) for c in close)


def _bond_matrix(n: int, rows: np.ndarray) -> np.ndarray:
    a = np.zeros((n, n), dtype=np.int64)
    if len(rows):
        a[rows[:, 0], rows[:, 1]] = rows[:, 2]
        a[rows[:, 1], rows[:, 0]] = rows[:, 2]
    return a


def _assumption_notes(m, z: np.ndarray, perceived: np.ndarray, n_stable: int, use_file_bonds: bool
                      ) -> list[tuple[str, str]]:
    """(flag, note) pairs for the ways a molecule breaks EDM's assumptions (no formal charges, explicit
    hydrogens, only elements of its bond table, perceived bonds); ``perceived`` is its bond rows."""
    notes = []
    n = len(z)
    hint = "" if use_file_bonds else "; --bonds file uses the file's bonds and charges for validity"
    charges = getattr(m, "formal_charges", None)
    has_charges = charges is not None and np.any(np.asarray(charges) != 0)
    if has_charges:
        where = "EDM's stability" if use_file_bonds else "EDM's metric"
        notes.append(("charges", f"formal charges in the file are ignored by {where} (charged atoms score as "
                                 f"unstable){hint}"))
    if not (z == 1).any() and n_stable < n and _under_bonded_cno(z, perceived):
        notes.append(("no_hydrogens", "no explicit hydrogens: EDM's stability needs them (atoms without their H "
                                      "count as unstable); add hydrogens with 3D coordinates before scoring"))
    file_bonds = getattr(m, "bonds", None)
    metals = sorted({SYMBOLS[v] for v in z[_IS_METAL[z]].tolist()})
    if metals:
        keep = "; --bonds file keeps the file's metal bonds for validity" if file_bonds is not None and \
            not use_file_bonds else ""
        notes.append(("metal", f"metal atom{'s' if len(metals) > 1 else ''} {', '.join(metals)}: EDM's bond table "
                               f"has no bonds to metals, so {'they are' if len(metals) > 1 else 'it is'} never "
                               f"stable and split{'' if len(metals) > 1 else 's'} off as a fragment{keep}"))
    other = sorted({SYMBOLS[v] for v in z[~_IN_EDM_TABLE[z] & ~_IS_METAL[z]].tolist()})
    if other:
        notes.append(("element", f"element{'s' if len(other) > 1 else ''} {', '.join(other)} not in EDM's bond "
                                 f"table: never bonded, never stable"))
    a = _bond_matrix(n, perceived) if n_stable < n or file_bonds is not None else None
    if not has_charges and n_stable < n:  # a charged group is always unstable in EDM's metric
        # Charged groups written without charges (XYZ has none): EDM scores them as unstable, silently.
        degree = (a > 0).sum(1)
        ammonium = (z == 7) & (degree == 4) & (a.max(1) == 1)
        terminal_o = (z == 8) & (degree == 1) & (a.sum(1) == 1)
        carboxylate = (z == 6) & ((a > 0) & terminal_o[None, :]).sum(1) >= 2
        groups = [g for g, hit in (("ammonium N with 4 bonds", ammonium.any()),
                                   ("carboxylate C with two single-bonded O", carboxylate.any())) if hit]
        if groups:
            notes.append(("charged_group", f"looks charged ({', '.join(groups)}) but EDM's metric has no formal "
                                           f"charges, so the group scores as unstable/invalid"))
    if file_bonds is not None:
        f = _bond_matrix(n, np.asarray(file_bonds, dtype=np.int64).reshape(-1, 3))
        f = np.where(f == 4, -1, f)  # an aromatic bond never equals a perceived order
        i, j = np.nonzero(np.triu(f != a, 1))
        if len(i):
            aromatic = _aromatic_pairs(m, list(zip(i.tolist(), j.tolist())))
            why = f", {aromatic} of them aromatic bonds that EDM's table perceives as single" if aromatic else ""
            notes.append(("bonds_differ", f"{len(i)} bond{'s' if len(i) > 1 else ''} in the file differ from those "
                                          f"EDM perceives from 3D{why} (stability always perceives){hint}"))
    return notes


def _under_bonded_cno(z: np.ndarray, bonds: np.ndarray) -> bool:
    """Does a C, N or O atom have fewer bonds (sum of orders) than its valence (4, 3, 2)? These are the atoms
    that carry hydrogens, so in a file without any H this says the hydrogens were left out."""
    valence = np.bincount(bonds[:, :2].reshape(-1), weights=np.repeat(bonds[:, 2], 2), minlength=len(z)) \
        if len(bonds) else np.zeros(len(z))
    need = np.select([z == 6, z == 7, z == 8], [4, 3, 2], 0)
    return bool((valence < need).any())


def _aromatic_pairs(m, pairs: list[tuple[int, int]]) -> int:
    """How many atom pairs are aromatic bonds in the molecule built from its own bonds (0 when RDKit fails)."""
    from rdkit import Chem

    try:
        mol = to_rdkit(m.atomic_numbers, m.positions, bonds=m.bonds, formal_charges=m.formal_charges,
                       conformer=False)
        Chem.SanitizeMol(mol)
    except Exception:  # only a hint: a file whose bonds RDKit rejects gets the plain note
        return 0
    count = 0
    for i, j in pairs:
        b = mol.GetBondBetweenAtoms(i, j)
        count += bool(b is not None and b.GetIsAromatic())
    return count


def evaluate_molecules(molecules: Sequence, train_smiles: set[str] | None = None, *, properties: bool = True,
                       use_file_bonds: bool = False, show_progress: bool = False) -> dict:
    """Score molecules (``Molecule``-like: ``atomic_numbers``, ``positions``, ``name``).

    Returns rates as fractions in [0, 1]: ``atom_stability``, ``mol_stability``, ``validity``,
    ``uniqueness`` (None without valid molecules), ``novelty`` (None without ``train_smiles``),
    ``connectivity``; means ``qed`` / ``sa`` over valid molecules (when ``properties``); the counts
    behind them (``n_molecules``, ``n_atoms``, ``n_stable_atoms``, ``n_stable_molecules``, ``n_valid``,
    ``n_unique``, ``n_novel``, ``n_connected``); ``flag_counts`` ({flag: molecules}) and ``warnings``
    (summary lines, see ``summary_warnings``); and ``per_molecule``, one dict per molecule with name,
    n_atoms, formula, stable_atoms, stable, valid, smiles, connected, n_fragments, qed, sa, novel,
    geometry ('3d', 'flat', 'collinear' or 'collapsed'; see ``geometry_check``), flags (list of short
    codes), notes (list of one-line explanations: what EDM's metric assumes that the molecule breaks,
    geometry problems, what RDKit could not compute) and error.

    Stability always uses EDM's bond perception from 3D. Validity, SMILES and connectivity use it too
    unless ``use_file_bonds`` (then a molecule's own bonds and formal charges are used where known).
    Molecules with no atoms, non-finite coordinates, impossible atomic numbers or collapsed coordinates
    count as unstable and invalid, with the reason in ``per_molecule[i]['error']``. No molecule raises:
    an RDKit failure becomes a note in its row.
    """
    from rdkit import rdBase

    molecules = list(molecules)
    n_stable, bonds = stability_bonds(molecules) if molecules else (np.zeros(0, np.int64), [])
    with rdBase.BlockLogs():  # sanitisation failures are expected and counted, not printed
        rows = _score_rows(molecules, n_stable, bonds, train_smiles, properties, use_file_bonds, show_progress)
    return summarize(rows, novelty=train_smiles is not None, use_file_bonds=use_file_bonds)


def _score_rows(molecules, n_stable, perceived, train_smiles, properties, use_file_bonds, show_progress):
    from ..utils import progress

    rows = []
    for k, m in enumerate(progress(molecules, desc="scoring", unit="mol", disable=None if show_progress else True)):
        z = np.asarray(m.atomic_numbers)
        n = len(z)
        row = {"name": getattr(m, "name", "") or f"mol_{k}", "n_atoms": n,
               "formula": getattr(m, "formula", ""), "stable_atoms": int(n_stable[k]),
               "stable": bool(n > 0 and n_stable[k] == n), "valid": False, "smiles": None, "connected": False,
               "n_fragments": 0, "qed": None, "sa": None, "novel": None, "geometry": None, "flags": [],
               "notes": [], "error": None}
        rows.append(row)
        if n == 0:
            row["error"] = "empty molecule"
        elif not np.all(np.isfinite(m.positions)):
            row["error"] = "non-finite coordinates"
        elif np.any((z < 1) | (z > 118)):
            row["error"] = f"invalid atomic number {int(z[(z < 1) | (z > 118)][0])}"
        else:
            file_bonds = getattr(m, "bonds", None)
            try:
                row["geometry"], note = geometry_check(z, m.positions, file_bonds if file_bonds is not None
                                                       else perceived[k])
            except Exception as e:  # malformed file bonds, say: note it and score the rest
                row["geometry"], note = "3d", f"geometry check failed: {error_reason(e)}"
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
        close = _coincident_fast(z, m.positions, perceived[k])
        if close:
            i, j, d = close[0]
            row["flags"].append("coincident_atoms")
            row["notes"].append(f"{len(close)} pair{'s' if len(close) > 1 else ''} of coincident atoms, e.g. "
                                f"{i + 1} and {j + 1} ({d:.3f} Å apart): a zero-length bond")
        try:
            _validity(row, m, z, perceived[k], train_smiles, properties, use_file_bonds)
        except Exception as e:  # an RDKit failure on one molecule must not end the run
            row["valid"], row["smiles"] = False, None
            row["flags"].append("rdkit_error")
            row["notes"].append(f"validity not computed: RDKit failed: {error_reason(e)}")
        try:
            for flag, note in _assumption_notes(m, z, perceived[k], int(n_stable[k]), use_file_bonds):
                row["flags"].append(flag)
                row["notes"].append(note)
        except Exception as e:
            row["notes"].append(f"metric-assumption checks failed: {error_reason(e)}")
    return rows


def _validity(row: dict, m, z, perceived, train_smiles, properties: bool, use_file_bonds: bool) -> None:
    """Fill the validity fields of ``row`` (valid, smiles, connected, n_fragments, novel, qed, sa)."""
    bonds = getattr(m, "bonds", None) if use_file_bonds else None
    if bonds is not None:
        mol = to_rdkit(z, m.positions, bonds=bonds, formal_charges=getattr(m, "formal_charges", None))
    else:
        mol = to_rdkit(z, m.positions, bonds=perceived, conformer=False)
    smiles, fragment, n_frags = _largest_fragment_smiles(mol)
    row["n_fragments"] = n_frags
    row["connected"] = n_frags == 1
    if n_frags > 1:
        row["flags"].append("fragments")
        row["notes"].append(f"{n_frags} fragments (a salt, counter-ion or broken molecule): EDM's validity and "
                            f"SMILES keep only the largest")
    if smiles is None:
        return
    row["valid"] = True
    row["smiles"] = smiles
    if train_smiles is not None:
        row["novel"] = smiles not in train_smiles
    if (z == 1).any():
        filled = fragment.GetNumAtoms(onlyExplicit=False) - fragment.GetNumAtoms()  # implicit H count
        if filled:
            row["flags"].append("implicit_h")
            row["notes"].append(f"RDKit added {filled} implicit hydrogen{'s' if filled > 1 else ''} to under-bonded "
                                f"atoms to make the molecule valid: its SMILES has hydrogens the 3D structure lacks")
    if properties:
        row["qed"], row["sa"], reason = _drug_likeness(fragment)
        if reason:
            row["notes"].append(reason)


_FLAG_TEXT = {
    "charges": "formal charges ignored", "no_hydrogens": "no explicit hydrogens", "metal": "metal atoms",
    "element": "elements outside EDM's table", "charged_group": "charged groups without charges",
    "fragments": "several fragments (largest kept)", "bonds_differ": "file bonds differ from perceived ones",
    "implicit_h": "implicit hydrogens added by RDKit",
}
_GEOMETRY_TEXT = {
    "collapsed": "collapsed (all atoms at one point: not scored)",
    "flat": "flat (all atoms in one plane though not planar: 2D coordinates scored as 3D)",
    "collinear": "collinear (all atoms on one line though not linear: scored as given)",
    "coincident_atoms": "with coincident atoms (zero-length bonds)",
}


def summary_warnings(flag_counts: dict[str, int], use_file_bonds: bool = False) -> list[str]:
    """One-line summary warnings from per-flag molecule counts: one for geometry (collapsed / flat /
    collinear / coincident atoms), one for EDM's metric assumptions, one for RDKit failures."""
    out = []
    geo = [f"{flag_counts[f]} {text}" for f, text in _GEOMETRY_TEXT.items() if flag_counts.get(f)]
    if geo:
        out.append("geometry problems: " + ", ".join(geo) + "; see the notes column")
    assumptions = [(t, flag_counts[f]) for f, t in _FLAG_TEXT.items() if flag_counts.get(f)]
    if assumptions:
        # --bonds file only helps where the file has bonds/charges, which these two flags imply
        hint = "" if use_file_bonds or not (flag_counts.get("charges") or flag_counts.get("bonds_differ")) else \
            "; --bonds file scores validity with the file's bonds and charges"
        out.append("EDM's metric assumes neutral molecules with explicit hydrogens and one fragment: " +
                   ", ".join(f"{t} ({c})" for t, c in assumptions) + f" (see the notes column){hint}")
    if flag_counts.get("rdkit_error"):
        out.append(f"RDKit failed on {flag_counts['rdkit_error']} molecules: they count as invalid (see notes)")
    return out


def summarize(rows: list[dict], novelty: bool = False, use_file_bonds: bool = False) -> dict:
    """Aggregate per-molecule rows (as made by ``evaluate_molecules``) into the metrics dict."""
    n_mol = len(rows)
    n_atoms = sum(r["n_atoms"] for r in rows)
    n_stable_atoms = sum(r["stable_atoms"] for r in rows)
    valid = [r["smiles"] for r in rows if r["valid"]]
    unique = set(valid)
    n_novel = len({r["smiles"] for r in rows if r["valid"] and r["novel"]}) if novelty else None
    qeds = [r["qed"] for r in rows if r.get("qed") is not None]
    sas = [r["sa"] for r in rows if r.get("sa") is not None]
    flag_counts = dict(Counter(f for r in rows for f in dict.fromkeys(r.get("flags") or [])))
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
        "flag_counts": flag_counts,
        "warnings": summary_warnings(flag_counts, use_file_bonds),
        "per_molecule": rows,
    }


def reference_smiles(molecules: Sequence, show_progress: bool = True) -> set[str]:
    """Valid largest-fragment SMILES of reference molecules (e.g. a training set), computed with the same
    bond perception as ``evaluate_molecules``, for novelty."""
    result = evaluate_molecules(molecules, properties=False, show_progress=show_progress)
    return {r["smiles"] for r in result["per_molecule"] if r["valid"]}
