"""Bond perception from 3D coordinates with EDM's distance table, and conversion to RDKit.

EDM (Hoogeboom et al. 2022, ``qm9/bond_analyze.py``) assigns a bond order to each atom pair from its
distance d alone, using typical single/double/triple bond lengths L1/L2/L3 (pm) and margins
m1 = 10, m2 = 5, m3 = 3 pm::

    order = 0                    if d >= L1 + m1
            1                    if d <  L1 + m1 and (no L2 or d >= L2 + m2)
            2                    if d <  L2 + m2 and (no L3 or d >= L3 + m3)
            3                    if d <  L3 + m3

An atom is stable when the sum of its bond orders is one of its allowed valences (H 1, C 4, N 3, O 2,
F 1, ... below). Pairs missing from the table never bond (EDM's ``check_exists`` behaviour).
Here the table is expanded into [119, 119] threshold matrices so a whole batch of molecules is
perceived with a few NumPy operations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .elements import SYMBOLS, atomic_number

# Typical bond lengths in pm (single, double, triple), as tabulated by EDM.
_SINGLE = {
    "H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92, "B": 119, "Si": 148, "P": 144, "As": 152, "S": 134,
          "Cl": 127, "Br": 141, "I": 161},
    "C": {"C": 154, "N": 147, "O": 143, "F": 135, "Si": 185, "P": 184, "S": 182, "Cl": 177, "Br": 194, "I": 214},
    "N": {"N": 145, "O": 140, "F": 136, "Cl": 175, "Br": 214, "S": 168, "I": 222, "P": 177},
    "O": {"O": 148, "F": 142, "Br": 172, "S": 151, "P": 163, "Si": 163, "Cl": 164, "I": 194},
    "F": {"F": 142, "S": 158, "Si": 160, "Cl": 166, "Br": 178, "P": 156, "I": 187},
    "B": {"Cl": 175},
    "Si": {"Si": 233, "S": 200, "Cl": 202, "Br": 215, "I": 243},
    "Cl": {"Cl": 199, "P": 203, "S": 207, "Br": 214},
    "S": {"S": 204, "Br": 225, "P": 210, "I": 234},
    "Br": {"Br": 228, "P": 222},
    "P": {"P": 221},
    "I": {"I": 266},
}
_DOUBLE = {"C": {"C": 134, "N": 129, "O": 120, "S": 160}, "N": {"N": 125, "O": 121}, "O": {"O": 121, "P": 150},
           "P": {"S": 186}}
_TRIPLE = {"C": {"C": 120, "N": 116, "O": 113}, "N": {"N": 110}}
MARGINS_PM = (10.0, 5.0, 3.0)
"""EDM's margins (pm) added to the single, double and triple bond lengths."""

ALLOWED_VALENCES: dict[str, tuple[int, ...]] = {
    "H": (1,), "C": (4,), "N": (3,), "O": (2,), "F": (1,), "B": (3,), "Al": (3,), "Si": (4,), "P": (3, 5),
    "S": (4,), "Cl": (1,), "As": (3,), "Br": (1,), "I": (1,), "Hg": (1, 2), "Bi": (3, 5),
}
"""EDM's allowed valences (sum of bond orders) per element; other elements are never stable."""

_MAX_VALENCE_INDEX = 8


def _threshold_matrix(table: dict, margin: float) -> np.ndarray:
    m = np.full((len(SYMBOLS), len(SYMBOLS)), -np.inf)
    for a, row in table.items():
        for b, length in row.items():
            za, zb = atomic_number(a), atomic_number(b)
            m[za, zb] = m[zb, za] = length + margin
    return m


THRESHOLDS_PM = np.stack([_threshold_matrix(t, mg) for t, mg in zip((_SINGLE, _DOUBLE, _TRIPLE), MARGINS_PM)])
"""[3, 119, 119] distance thresholds (pm, margins included) below which a pair has order >= 1, 2, 3;
-inf where the table has no entry."""

_ALLOWED = np.zeros((len(SYMBOLS), _MAX_VALENCE_INDEX + 1), dtype=bool)
for _s, _vals in ALLOWED_VALENCES.items():
    _ALLOWED[atomic_number(_s), list(_vals)] = True


_ORDER_NAMES = {1: "single", 2: "double", 3: "triple"}


def typical_bond_length(za: int, zb: int, order: int) -> float | None:
    """EDM's typical length in Å of a bond of ``order`` (1, 2 or 3) between elements ``za`` and ``zb`` (atomic
    numbers, either order); None where its table has no such bond (e.g. C–F double, aromatic order 4)."""
    table = {1: _SINGLE, 2: _DOUBLE, 3: _TRIPLE}.get(int(order))
    if table is None:
        return None
    a, b = SYMBOLS[int(za)], SYMBOLS[int(zb)]
    length = table.get(a, {}).get(b, table.get(b, {}).get(a))
    return None if length is None else length / 100.0


def bond_length_report(molecules: Sequence) -> list[dict]:
    """How well the bonds a file states agree with its geometry: per bond type (elements and order, e.g.
    ``C=O double``) over the molecules' own bonds (``Molecule.bonds``; molecules without bonds are skipped), a
    dict with ``bond``, ``n``, ``median_length`` (Å), ``typical_length`` (Å, EDM's table, as
    :func:`typical_bond_length`) and ``median_abs_deviation`` = median |length − typical| (Å). Types without a
    typical length (aromatic bonds kept as order 4, pairs missing from the table) have None for the last two.
    Sorted by count, most common first."""
    lengths: dict[tuple[str, str, int], list[float]] = {}
    for m in molecules:
        if m.bonds is None or not len(m.bonds):
            continue
        i, j, order = m.bonds[:, 0], m.bonds[:, 1], m.bonds[:, 2]
        d = np.linalg.norm(m.positions[i].astype(np.float64) - m.positions[j].astype(np.float64), axis=1)
        for zi, zj, k, dist in zip(m.atomic_numbers[i], m.atomic_numbers[j], order, d):
            a, b = sorted((SYMBOLS[int(zi)], SYMBOLS[int(zj)]), key=atomic_number)
            lengths.setdefault((a, b, int(k)), []).append(float(dist))
    rows = []
    for (a, b, k), values in lengths.items():
        typical = typical_bond_length(atomic_number(a), atomic_number(b), k)
        values = np.asarray(values)
        symbol = {1: "-", 2: "=", 3: "#"}.get(k, ":")
        rows.append({"bond": f"{a}{symbol}{b} {_ORDER_NAMES.get(k, 'aromatic' if k == 4 else f'order {k}')}",
                     "n": len(values), "median_length": float(np.median(values)), "typical_length": typical,
                     "median_abs_deviation": None if typical is None else float(np.median(np.abs(values - typical)))})
    return sorted(rows, key=lambda r: (-r["n"], r["bond"]))


def bond_orders_from_distances(zi: np.ndarray, zj: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """EDM bond orders (int8) for atom pairs with atomic numbers ``zi``, ``zj`` at ``distance`` Å (broadcast)."""
    d = 100.0 * np.asarray(distance, dtype=np.float64)
    t = THRESHOLDS_PM[:, zi, zj]
    return ((d < t[0]).astype(np.int8) * (1 + (d < t[1]) * (1 + (d < t[2])))).astype(np.int8)


def perceive_bonds(atomic_numbers, positions) -> np.ndarray:
    """[n, n] symmetric int64 bond-order matrix (0 = no bond) from 3D coordinates with EDM's table."""
    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(x) != len(z):
        raise ValueError(f"{len(z)} atomic numbers but {len(x)} positions")
    _check_numbers(z)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    a = bond_orders_from_distances(z[:, None], z[None, :], d).astype(np.int64)
    np.fill_diagonal(a, 0)
    return a


def perceive_bonds_batch(atomic_numbers: np.ndarray, positions: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Padded batch version: [B, N] numbers, [B, N, 3] positions, [B, N] bool mask -> [B, N, N] int8 orders
    (0 on the diagonal and for padding)."""
    z = np.where(mask, atomic_numbers, 0).astype(np.int64)
    x = np.asarray(positions, dtype=np.float64)
    d = np.sqrt(((x[:, :, None, :] - x[:, None, :, :]) ** 2).sum(-1))
    a = bond_orders_from_distances(z[:, :, None], z[:, None, :], d)
    a *= (mask[:, :, None] & mask[:, None, :])
    n = a.shape[1]
    a[:, np.arange(n), np.arange(n)] = 0
    return a


def stable_atoms(atomic_numbers, valences) -> np.ndarray:
    """Boolean per atom: is ``valences`` (sum of bond orders) one of the element's allowed valences?"""
    z = np.asarray(atomic_numbers, dtype=np.int64)
    v = np.clip(np.asarray(valences, dtype=np.int64), 0, _MAX_VALENCE_INDEX)
    ok = _ALLOWED[np.clip(z, 0, len(SYMBOLS) - 1), v]
    return ok & (v < _MAX_VALENCE_INDEX) & (z > 0) & (z < len(SYMBOLS))


def _check_numbers(z: np.ndarray) -> None:
    bad = z[(z < 1) | (z >= len(SYMBOLS))]
    if len(bad):
        raise ValueError(f"invalid atomic number {int(bad[0])}")


def bond_list(bond_orders: np.ndarray) -> np.ndarray:
    """[m, 3] int64 rows (i, j, order) with i < j from an [n, n] bond-order matrix."""
    a = np.asarray(bond_orders)
    i, j = np.nonzero(np.triu(a, 1))
    return np.stack([i, j, a[i, j]], axis=1).astype(np.int64)


def to_rdkit(atomic_numbers, positions, bond_orders=None, formal_charges=None, bonds=None, conformer: bool = True):
    """An unsanitised ``rdkit.Chem.Mol`` with one 3D conformer.

    Bonds come from ``bonds`` ([m, 3] rows (i, j, order)) if given, else from ``bond_orders`` ([n, n]
    matrix), else they are perceived with ``perceive_bonds``. Orders 1/2/3 are single/double/triple, 4
    aromatic. Perceived bonds are added as EDM's ``build_molecule`` adds them (pairs i > j in row order).
    The caller sanitises if wanted. ``conformer=False`` skips the 3D conformer (faster when only the graph
    matters).
    """
    from rdkit import Chem

    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(x) != len(z):
        raise ValueError(f"{len(z)} atomic numbers but {len(x)} positions")
    _check_numbers(z)
    if bonds is not None:
        rows = np.asarray(bonds, dtype=np.int64).reshape(-1, 3)
        if len(rows) and (rows[:, :2].min() < 0 or rows[:, :2].max() >= len(z)):
            raise ValueError("bond refers to an atom that does not exist")
    else:
        b = perceive_bonds(z, x) if bond_orders is None else np.asarray(bond_orders, dtype=np.int64)
        if b.shape != (len(z), len(z)):
            raise ValueError(f"bond_orders must be [{len(z)}, {len(z)}], got {list(b.shape)}")
        i, j = np.nonzero(np.tril(b, -1))
        rows = np.stack([i, j, b[i, j]], axis=1)
    types = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE, 4: Chem.BondType.AROMATIC}
    mol = Chem.RWMol()
    for k, zk in enumerate(z):
        atom = Chem.Atom(int(zk))
        if formal_charges is not None and formal_charges[k]:
            atom.SetFormalCharge(int(formal_charges[k]))
        mol.AddAtom(atom)
    for i, j, o in np.asarray(rows).tolist():
        if o not in types:
            raise ValueError(f"unsupported bond order {o} between atoms {i} and {j}")
        mol.AddBond(int(i), int(j), types[int(o)])
        if o == 4:
            mol.GetBondBetweenAtoms(int(i), int(j)).SetIsAromatic(True)
            mol.GetAtomWithIdx(int(i)).SetIsAromatic(True)
            mol.GetAtomWithIdx(int(j)).SetIsAromatic(True)
    mol = mol.GetMol()
    if not conformer:
        return mol
    mol.AddConformer(rdkit_conformer(x), assignId=True)
    return mol


def rdkit_conformer(positions, conf_id: int | None = None):
    """A 3D ``rdkit.Chem.Conformer`` holding ``positions`` [n_atoms, 3] (Å, stored as float64), with id ``conf_id``
    when given (the one way molediff turns coordinates into an RDKit conformer)."""
    from rdkit import Chem

    x = np.asarray(positions, dtype=np.float64)
    conf = Chem.Conformer(len(x))
    conf.SetPositions(x)
    conf.Set3D(True)
    if conf_id is not None:
        conf.SetId(int(conf_id))
    return conf


def bonds_from_geometry(atomic_numbers, positions, charge: int = 0) -> np.ndarray:
    """Kekulé bond orders of a neutral (``charge``) molecule from its 3D geometry alone, with RDKit's
    ``rdDetermineBonds.DetermineBonds`` (connectivity from covalent radii, then orders by the valence rules of
    Kim & Kim 2015, xyz2mol); the bonds molediff trains bond-diffusion models on for data without file bonds
    (QM9). Orders are 1, 2 or 3 (aromatic rings kekulised).

    Shapes: atomic_numbers [n], positions [n, 3] (Å) → [m, 3] int64 rows (i, j, order) with i < j, sorted.
    ValueError with RDKit's reason when it finds no assignment (on QM9 about 5 % of molecules: strained cages
    whose covalent-radius connectivity gives a carbon five neighbours, and zwitterions that are not neutral).
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdDetermineBonds

    mol = to_rdkit(atomic_numbers, positions, bonds=np.zeros((0, 3), dtype=np.int64))
    with rdBase.BlockLogs():
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=int(charge))
            Chem.SanitizeMol(mol)
            Chem.Kekulize(mol, clearAromaticFlags=True)
        except (ValueError, RuntimeError, Chem.rdchem.MolSanitizeException) as e:
            raise ValueError(f"no bond orders for this geometry: {str(e).splitlines()[0] if str(e) else e}") from None
    orders = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}
    rows = []
    for bond in mol.GetBonds():
        i, j = sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        if bond.GetBondType() not in orders:
            raise ValueError(f"no Kekulé bond order for the bond {i}-{j} ({bond.GetBondType()})")
        rows.append((i, j, orders[bond.GetBondType()]))
    return np.array(sorted(rows), dtype=np.int64).reshape(-1, 3)
