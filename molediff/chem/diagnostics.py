"""Diagnostics for scored molecules: whether the coordinates are real 3D (collapsed, collinear, flat, coincident
atoms), where a molecule breaks an assumption of EDM's metrics (formal charges, missing hydrogens, metals, elements
outside EDM's bond table, charged groups written without charges, file bonds that differ from perceived ones), and
the summary warnings that count them; and why a molecule is unstable or invalid under a rule (``failure_reasons``:
EDM's rule on bonds perceived from distances, or the file's own bonds, ``chem.valence``), with the short label a
``--png`` legend shows (``legend_label``, its words in ``LEGEND_HELP``). ``chem.stability.evaluate_molecules`` puts
these into each row's ``flags``, ``notes`` and ``*_reasons``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bonds import THRESHOLDS_PM, bond_list, perceive_bonds, to_rdkit
from .elements import METALS, SYMBOLS
from .valence import valence_problems

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


def coincident_atoms_fast(z: np.ndarray, positions, perceived: np.ndarray) -> list[tuple[int, int, float]]:
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


def assumption_notes(m, z: np.ndarray, perceived: np.ndarray, n_stable: int, file_rule: bool
                      ) -> list[tuple[str, str]]:
    """(flag, note) pairs for the ways a molecule breaks EDM's assumptions (no formal charges, explicit
    hydrogens, only elements of its bond table, perceived bonds); ``perceived`` is its bond rows; ``file_rule``
    says that the molecule is also scored with its own bonds and charges (the notes then point there)."""
    notes = []
    n = len(z)
    hint = "; the file's-bonds rule counts the file's bonds and charges" if file_rule else ""
    charges = getattr(m, "formal_charges", None)
    has_charges = charges is not None and np.any(np.asarray(charges) != 0)
    if has_charges:
        notes.append(("charges", f"formal charges in the file are ignored by EDM's metric (charged atoms score as "
                                 f"unstable){hint}"))
    if not (z == 1).any() and n_stable < n and _under_bonded_cno(z, perceived):
        notes.append(("no_hydrogens", "no explicit hydrogens: EDM's stability needs them (atoms without their H "
                                      "count as unstable); add hydrogens with 3D coordinates before scoring"))
    file_bonds = getattr(m, "bonds", None)
    metals = sorted({SYMBOLS[v] for v in z[_IS_METAL[z]].tolist()})
    if metals:
        keep = "; the file's-bonds rule keeps the file's bonds to metals" if file_rule else ""
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
                                          f"EDM's rule perceives from 3D{why}{hint}"))
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


def summary_warnings(flag_counts: dict[str, int], file_rule: bool = False) -> list[str]:
    """One-line summary warnings from per-flag molecule counts: one for geometry (collapsed / flat /
    collinear / coincident atoms), one for EDM's metric assumptions, one for RDKit failures. ``file_rule``: some
    molecules were also scored with their own bonds (the warning then says those figures use them)."""
    out = []
    geo = [f"{flag_counts[f]} {text}" for f, text in _GEOMETRY_TEXT.items() if flag_counts.get(f)]
    if geo:
        out.append("geometry problems: " + ", ".join(geo) + "; see the notes column")
    assumptions = [(t, flag_counts[f]) for f, t in _FLAG_TEXT.items() if flag_counts.get(f)]
    if assumptions:
        # the file's own bonds help only where the file has bonds/charges, which these two flags imply
        hint = "" if not file_rule or not (flag_counts.get("charges") or flag_counts.get("bonds_differ")) else \
            "; the file's-bonds figures use the file's bonds and charges"
        out.append("EDM's metric assumes neutral molecules with explicit hydrogens and one fragment: " +
                   ", ".join(f"{t} ({c})" for t, c in assumptions) + f" (see the notes column){hint}")
    if flag_counts.get("rdkit_error"):
        out.append(f"RDKit failed on {flag_counts['rdkit_error']} molecules: they count as invalid (see notes)")
    return out



# Why a molecule is unstable or invalid under a rule ---------------------------------------------------------------

RULES = {"edm": "EDM's rule (bonds from distances)", "file": "the file's bonds"}
"""The two rules a molecule is scored by, as ``failure_reasons`` names them: ``"edm"`` perceives bonds from
interatomic distances with EDM's table and applies EDM's valences, charges ignored (``chem.bonds``); ``"file"``
uses the molecule's own bonds and formal charges with the valences of ``chem.valence``."""

LEGEND_HELP = (
    "Each molecule's label says why it failed, under the file's bonds when it has bonds (the predicted ones), else "
    "under EDM's rule (bonds from distances); atoms are numbered from 1 as in the SDF. 'stable': every atom has "
    "an allowed valence, RDKit accepts the molecule and it is one piece. 'valence V on Xk': atom k, element X, has "
    "bond orders summing to V (aromatic 1.5), more than X allows (or, under EDM's rule, a valence EDM's one-valence "
    "table refuses, e.g. S with 2). 'radical on Xk': atom k has fewer bonds than X needs (an unpaired electron or a "
    "missing hydrogen). 'charge +q on Xk': no valence rule for X with that charge. 'no rule for Xk': no valence "
    "rule for element X (transition metals, ...). 'N fragments': the bonds leave N separate pieces. "
    "'not kekulisable at Xk': aromatic bonds with no Kekulé structure. 'invalid (RDKit)': RDKit rejects it for "
    "another reason. 'unusable bonds': the file's bonds name missing atoms or an order other than 1-3 and "
    "aromatic. '+n more': n further reasons, all in the notes of `molediff score --csv`. "
    "'not scored: ...': no usable 3D structure.")
"""The words of ``legend_label`` (for ``generate --help``)."""


@dataclass(frozen=True)
class Reason:
    """One reason a molecule is unstable, invalid or in pieces: ``label`` (short, for a legend: ``"valence 5 on
    C3"``) and ``detail`` (one line for the notes: ``"valence 5 on C3 (allowed 4)"``)."""

    label: str
    detail: str


def _atom(symbol: str, k: int) -> str:
    return f"{symbol}{k + 1}"  # 1-based, as atoms are numbered in an SDF


def _number(v: float) -> str:
    return f"{v:g}"


def atom_problem_reason(problem, rule: str = "file") -> Reason:
    """The ``Reason`` for one ``chem.valence.AtomProblem`` found under ``rule`` (``"edm"`` or ``"file"``)."""
    where = _atom(problem.element, problem.atom)
    allowed = "/".join(map(str, problem.allowed))
    charge = f"{problem.charge:+d}" if problem.charge else ""
    table = "EDM's table allows" if rule == "edm" else "allowed"
    if problem.kind == "valence":
        return Reason(f"valence {_number(problem.valence)} on {where}",
                      f"valence {_number(problem.valence)} on {where}{charge} ({table} {allowed})")
    if problem.kind == "radical":
        return Reason(f"radical on {where}", f"radical on {where}{charge}: valence {_number(problem.valence)}, "
                                             f"{table} {allowed}")
    if problem.kind == "charge":
        return Reason(f"charge {charge} on {where}",
                      f"charge {charge} on {where}: no valence rule for {problem.element} with that charge")
    what = "EDM's table has" if rule == "edm" else "the file's-bonds rule has"
    return Reason(f"no rule for {where}", f"no rule for {where}: {what} no valence for {problem.element}")


def sanitization_reason(error: BaseException, atomic_numbers) -> Reason:
    """The ``Reason`` for RDKit's sanitisation failure ``error`` on a molecule with ``atomic_numbers`` [n] (the
    detail is RDKit's own message, condensed by ``rdkit_log.rdkit_reason``)."""
    from .rdkit_log import rdkit_reason

    z = np.asarray(atomic_numbers).reshape(-1)
    detail = f"RDKit: {rdkit_reason(error)}"
    cause = getattr(error, "cause", None)
    kind = cause.GetType() if cause is not None and hasattr(cause, "GetType") else ""

    def where(k):
        return _atom(SYMBOLS[int(z[k])], int(k)) if 0 <= k < len(z) and 0 < z[k] < len(SYMBOLS) else f"atom {k + 1}"
    if kind == "AtomValenceException":
        return Reason(f"RDKit rejects the valence of {where(cause.GetAtomIdx())}", detail)
    if kind == "KekulizeException":
        atoms = list(cause.GetAtomIndices())
        return Reason(f"not kekulisable at {where(atoms[0])}" if atoms else "not kekulisable", detail)
    if kind == "AtomKekulizeException":
        return Reason(f"not kekulisable at {where(cause.GetAtomIdx())}", detail)
    return Reason("invalid (RDKit)", detail)


def count_fragments(n: int, bonds) -> int:
    """Connected pieces of a molecule with ``n`` atoms and bonds [m, 3] rows (i, j, order) (0 without atoms)."""
    parent = list(range(n))

    def root(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for i, j, _ in np.asarray(bonds, dtype=np.int64).reshape(-1, 3).tolist():
        parent[root(i)] = root(j)
    return len({root(a) for a in range(n)})


_UNSET = object()


def failure_reasons(molecule, rule: str, *, bonds=None, n_fragments: int | None = None,
                    sanitize_error: BaseException | None | object = _UNSET) -> list[Reason]:
    """Why ``molecule`` is unstable, invalid or in pieces under ``rule`` (see ``RULES``); empty when it is stable,
    valid and one piece. In order: one ``Reason`` per atom whose valence breaks the rule (``chem.valence``: 'valence
    5 on C3', 'radical on N5', 'charge +2 on C1', 'no rule for Pt7'), then 'N fragments' when the bonds leave
    several pieces, then RDKit's sanitisation failure unless an atom's valence already says it (validity).

    ``molecule``: ``Molecule``-like (``atomic_numbers`` [n], ``positions`` [n, 3] Å, ``bonds`` [m, 3] or None,
    ``formal_charges`` [n] or None). Under ``"edm"`` the bonds are ``bonds`` if given (the perceived rows
    ``evaluate_molecules`` already has) or perceived from 3D; under ``"file"`` they are the molecule's own.
    ``n_fragments`` and ``sanitize_error`` (the exception RDKit raised sanitising the whole molecule, or None when
    it sanitised) save the work when the caller has them. ValueError for an unknown rule, a molecule without
    bonds under ``"file"``, or bonds that name atoms it does not have.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
    z = np.asarray(molecule.atomic_numbers, dtype=np.int64).reshape(-1)
    charges = None
    if rule == "file":
        if molecule.bonds is None:
            raise ValueError("the molecule has no bonds of its own: the file's-bonds rule needs them")
        bonds, charges = molecule.bonds, getattr(molecule, "formal_charges", None)
    elif bonds is None:
        bonds = bond_list(perceive_bonds(z, molecule.positions))
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 3)
    problems = valence_problems(z, bonds, charges, table=rule)
    reasons = [atom_problem_reason(p, rule) for p in problems]
    if sanitize_error is _UNSET:
        sanitize_error = _sanitize_error(z, molecule.positions, bonds, charges)
    if n_fragments is None:
        n_fragments = count_fragments(len(z), bonds)
    if n_fragments > 1:
        reasons.append(Reason(f"{n_fragments} fragments",
                              f"{n_fragments} fragments: validity and SMILES keep the largest"))
    if sanitize_error is not None:
        reason = sanitization_reason(sanitize_error, z)
        over = {_atom(p.element, p.atom) for p in problems if p.kind in ("valence", "charge", "element")}
        if not (reason.label.startswith("RDKit rejects the valence of ") and reason.label.rsplit(" ", 1)[-1] in over):
            reasons.append(reason)
    return reasons


def _sanitize_error(z, positions, bonds, charges) -> BaseException | None:
    """The exception RDKit raises sanitising the molecule built from these bonds and charges, or None."""
    from rdkit import Chem, rdBase

    mol = to_rdkit(z, positions, bonds=bonds, formal_charges=charges, conformer=False)
    with rdBase.BlockLogs():
        try:
            Chem.SanitizeMol(mol)
        except Exception as e:  # RDKit raises several types; any of them is the answer
            return e
    return None


def rule_note(rule: str, reasons: list[Reason], stable: bool, valid: bool) -> str | None:
    """The notes line for a molecule that is unstable or invalid under ``rule``: the verdict, then every reason's
    detail except fragments (a separate note says those); None when it is stable and valid."""
    if stable and valid:
        return None
    verdict = " and ".join(w for w, bad in (("unstable", not stable), ("invalid", not valid)) if bad)
    details = [r.detail for r in reasons if not r.label.endswith(" fragments")]
    return f"{verdict} under {RULES[rule]}: " + ("; ".join(details) or "no atom or RDKit message says why")


def legend_label(row: dict, max_reasons: int = 1) -> str:
    """The short label of a scored molecule for a ``--png`` legend (words in ``LEGEND_HELP``): 'stable', the
    first ``max_reasons`` reasons under the molecule's headline rule (its own bonds when it has them, else EDM's
    rule), e.g. 'valence 5 on C3', 'radical on N5, +2 more', '2 fragments', or 'not scored: collapsed'.
    ``row``: one of ``evaluate_molecules``' ``per_molecule`` rows."""
    if row.get("error"):
        return "not scored: " + str(row["error"]).split(":")[0]
    rule = "file" if row.get("file_stable") is not None else "edm"
    prefix = "file_" if rule == "file" else ""
    reasons = list(row.get(f"{rule}_reasons") or [])
    if not reasons:
        if row[f"{prefix}stable"] and row[f"{prefix}valid"]:
            return "stable"
        reasons = [w for w, bad in (("unstable", not row[f"{prefix}stable"]), ("invalid", not row[f"{prefix}valid"]))
                   if bad]
    shown = reasons[:max_reasons]
    more = len(reasons) - len(shown)
    return ", ".join(shown) + (f", +{more} more" if more else "")
