"""Atom valence under a molecule's own bonds and formal charges: the file's-bonds rule of ``molediff score``.

EDM's rule (``chem.bonds``) perceives bonds from distances and allows one neutral valence per element (S only 4).
A file that carries bonds (an SDF bond block, or a model that predicts bonds) is judged here by those bonds:

- an atom's **valence** is the sum of its bond orders (single 1, double 2, triple 3; explicit hydrogens are
  bonds like any other, implicit hydrogens do not exist);
- an **aromatic** bond (order 4, kept only where a file's aromatic bonds could not be kekulised) counts 1, and an
  atom with aromatic bonds may add 1 for the one double bond a Kekulé structure can give it: it is stable when
  either sum is allowed. This is the integer form of counting 1.5 per aromatic bond and rounding as RDKit does
  (benzene C 1.5 + 1.5 + 1 = 4; pyrrole's NH 1 + 1 + 1 = 3; a fused C 1 + 1 + 1 + 1 = 4); whether the whole ring
  has a Kekulé structure is RDKit validity's question, not the atom's;
- the **allowed valences** of a neutral atom are RDKit's (``NEUTRAL_VALENCES``: C 4, N 3, O 2, P 3/5, S 2/4/6,
  I 1/3/5, ...). A **charged** non-metal takes the valences of the element it is isoelectronic with
  (atomic number Z - q) for charge q = ±1: N+ 4 as C, N- 2 as O, O+ 3 as N, O- 1 as F, C+ 3 as B, C- 3 as N,
  B- 4 as C, S+ 3/5 as P, S- 1 as Cl, P+ 4 as Si, halide anions 0 as the noble gases (a nitro group, an
  ammonium, a carboxylate and a zwitterion are stable). A metal is stable only as a free cation whose charge
  leaves a noble-gas shell with no bonds (Na+, K+, Mg2+, Ca2+, ...). Any other charge, and elements without an
  entry (transition metals, lanthanides, ...), have no rule: such an atom is never stable, with that reason.

``valence_problems`` lists, per atom that breaks a rule, what it breaks: too many bonds (``"valence"``), too few
(``"radical"``: an unpaired electron or a missing hydrogen), a charge without a rule (``"charge"``), or an element
without one (``"element"``). With ``table="edm"`` it explains EDM's verdict instead (EDM's table, charges ignored),
and agrees with ``chem.bonds.stable_atoms`` atom for atom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bonds import ALLOWED_VALENCES
from .elements import METALS, SYMBOLS, atomic_number

NEUTRAL_VALENCES: dict[str, tuple[int, ...]] = {
    "H": (1,), "He": (0,), "Li": (1,), "Be": (2,), "B": (3,), "C": (4,), "N": (3,), "O": (2,), "F": (1,),
    "Ne": (0,), "Na": (1,), "Mg": (2,), "Al": (3,), "Si": (4,), "P": (3, 5), "S": (2, 4, 6), "Cl": (1,),
    "Ar": (0,), "K": (1,), "Ca": (2,), "Ga": (3,), "Ge": (4,), "As": (3, 5), "Se": (2, 4, 6), "Br": (1,),
    "Kr": (0,), "Rb": (1,), "Sr": (2,), "In": (3,), "Sn": (4,), "Sb": (3, 5), "Te": (2, 4, 6), "I": (1, 3, 5),
    "Xe": (0,), "Cs": (1,), "Ba": (2,), "Hg": (1, 2), "Bi": (3, 5),
}
"""Allowed valences (sum of bond orders) of neutral atoms under the file's-bonds rule: RDKit's valence lists for the
main-group elements, plus EDM's Hg and Bi."""

_NEUTRAL = {atomic_number(s): v for s, v in NEUTRAL_VALENCES.items()}
_NOBLE = frozenset({2, 10, 18, 36, 54, 86})
_EDM = {atomic_number(s): v for s, v in ALLOWED_VALENCES.items()}
_EDM_MAX = 8  # EDM's table is indexed up to valence 7: a sum of 8 or more is never stable (chem.bonds)

TABLES = ("file", "edm")
"""The valence tables ``valence_problems`` applies: the file's-bonds rule, or EDM's table (charges ignored)."""


def allowed_valences(z: int, charge: int = 0) -> tuple[int, ...] | None:
    """Allowed valences of an atom of atomic number ``z`` with formal charge ``charge`` under the file's-bonds rule
    (see the module), or None where the rule has none (an element or a charge it does not cover)."""
    z, q = int(z), int(charge)
    if q == 0:
        return _NEUTRAL.get(z)
    if z in METALS:  # a free cation with a noble-gas shell, no bonds
        return (0,) if q > 0 and z - q in _NOBLE else None
    return _NEUTRAL.get(z - q) if abs(q) == 1 else None


@dataclass(frozen=True)
class AtomProblem:
    """Why one atom is not stable: ``atom`` (0-based index), ``element`` (symbol), ``kind`` (``"valence"``: more
    bonds than allowed, or EDM's table refusing a valence chemistry allows; ``"radical"``: fewer bonds than
    allowed; ``"charge"``: no rule for this charge; ``"element"``: no rule for this element), ``valence`` (sum of
    bond orders, aromatic bonds 1.5), ``charge`` (formal charge; 0 under EDM's table) and ``allowed`` (the
    allowed valences, empty without a rule)."""

    atom: int
    element: str
    kind: str
    valence: float
    charge: int
    allowed: tuple[int, ...]


def _check_bonds(n: int, bonds) -> np.ndarray:
    rows = np.asarray(bonds, dtype=np.int64).reshape(-1, 3) if bonds is not None else np.zeros((0, 3), np.int64)
    if len(rows):
        if rows[:, :2].min() < 0 or rows[:, :2].max() >= n:
            bad = rows[(rows[:, :2] < 0).any(1) | (rows[:, :2] >= n).any(1)][0]
            raise ValueError(f"bond ({int(bad[0])}, {int(bad[1])}) refers to an atom that does not exist "
                             f"({n} atoms)")
        if (rows[:, 0] == rows[:, 1]).any():
            raise ValueError(f"bond from atom {int(rows[rows[:, 0] == rows[:, 1]][0, 0])} to itself")
        bad = rows[(rows[:, 2] < 1) | (rows[:, 2] > 4), 2]
        if len(bad):
            raise ValueError(f"unsupported bond order {int(bad[0])} (1-3, or 4 for aromatic)")
    return rows


def bond_order_sums(n: int, bonds) -> tuple[np.ndarray, np.ndarray]:
    """(sum of non-aromatic bond orders [n] int64, number of aromatic bonds [n] int64) per atom of a molecule with
    ``n`` atoms and bonds [m, 3] rows (i, j, order), order 4 aromatic. ValueError for an atom index out of range,
    a bond from an atom to itself, or an order outside 1-4."""
    rows = _check_bonds(n, bonds)
    ends = rows[:, :2].reshape(-1)
    order = np.repeat(rows[:, 2], 2)
    plain = np.bincount(ends, weights=np.where(order == 4, 0, order), minlength=n).astype(np.int64)
    aromatic = np.bincount(ends, weights=(order == 4), minlength=n).astype(np.int64)
    return plain, aromatic


def valence_problems(atomic_numbers, bonds, formal_charges=None, *, table: str = "file") -> list[AtomProblem]:
    """The atoms that are not stable, with the reason (``AtomProblem``), in atom order; empty when all are.

    Shapes: atomic_numbers [n] (1..118), bonds [m, 3] rows (i, j, order) 0-based, order 1/2/3 or 4 aromatic,
    formal_charges [n] or None (all 0). ``table``: ``"file"`` (the file's-bonds rule of this module, charges used)
    or ``"edm"`` (EDM's table in ``chem.bonds.ALLOWED_VALENCES``, charges ignored as EDM ignores them; the
    bonds should then be the perceived ones). ValueError for an unknown table, an atomic number outside 1..118,
    charges of the wrong length or bad bonds (see ``bond_order_sums``).
    """
    if table not in TABLES:
        raise ValueError(f"unknown valence table {table!r}; use one of {', '.join(TABLES)}")
    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    n = len(z)
    bad = z[(z < 1) | (z >= len(SYMBOLS))]
    if len(bad):
        raise ValueError(f"invalid atomic number {int(bad[0])}")
    q = np.zeros(n, np.int64) if formal_charges is None or table == "edm" else \
        np.asarray(formal_charges, dtype=np.int64).reshape(-1)
    if len(q) != n:
        raise ValueError(f"{n} atoms but {len(q)} formal charges")
    plain, aromatic = bond_order_sums(n, bonds)
    problems = []
    for k in range(n):
        zk, qk, s, a = int(z[k]), int(q[k]), int(plain[k]), int(aromatic[k])
        options = (s + a, s + a + 1) if a else (s,)  # the Kekulé structure may give one double bond
        if table == "edm":
            allowed = _EDM.get(zk)
            if allowed is not None and any(v in allowed and v < _EDM_MAX for v in options):
                continue
        else:
            allowed = allowed_valences(zk, qk)
            if allowed is not None and any(v in allowed for v in options):
                continue
        valence = s + 1.5 * a
        if allowed is None:
            kind, allowed = ("element" if table == "edm" or qk == 0 or allowed_valences(zk) is None
                             else "charge"), ()
        elif options[0] > max(allowed) or (table == "edm" and options[0] in _NEUTRAL.get(zk, ())):
            kind = "valence"  # over-bonded, or a valence chemistry allows that EDM's one-valence table does not
        else:
            kind = "radical"
        problems.append(AtomProblem(k, SYMBOLS[zk], kind, valence, qk, tuple(allowed)))
    return problems


def stable_by_valence(atomic_numbers, bonds, formal_charges=None, *, table: str = "file") -> np.ndarray:
    """[n] bool: is each atom stable under ``table`` (see ``valence_problems``, same arguments and errors)?"""
    ok = np.ones(len(np.asarray(atomic_numbers).reshape(-1)), dtype=bool)
    for p in valence_problems(atomic_numbers, bonds, formal_charges, table=table):
        ok[p.atom] = False
    return ok
