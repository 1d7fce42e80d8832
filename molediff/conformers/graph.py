"""The molecular graph as the conformer model sees it: per-atom and per-pair features computed with RDKit.

A molecule enters as an RDKit ``Mol`` with explicit hydrogens whose atom order is the coordinate order.
Element identity is *not* here: ``molediff.chem.features.AtomTypeEncoding`` encodes it over the model's
vocabulary; these features come on top of it.

Node features ``[n, NODE_FEATURES]`` (in this order)::

    formal charge (the integer) | aromatic | hybridisation SP, SP2, SP3, other | in a ring | H count 0, 1, 2, 3+

Edge features ``[n, n, EDGE_FEATURES]`` for every ordered pair i ≠ j (all zeros on the diagonal and at
padding)::

    bond none, single, double, triple, aromatic | hops 1, 2, 3, >=4 or disconnected | in a common ring

Hop distances are shortest paths in the bond graph; "common ring" means both atoms lie in one ring of RDKit's
smallest set of rings. To keep a whole training set in memory, a graph is stored compactly
(:class:`MolGraph`): node features as int8 and one uint8 code per atom pair, decoded by ``EDGE_TABLE``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NODE_FEATURES", "EDGE_FEATURES", "NODE_FEATURE_NAMES", "EDGE_FEATURE_NAMES", "EDGE_TABLE",
           "GraphError", "MolGraph", "mol_graph", "molecule_to_rdkit", "node_features", "edge_features"]

NODE_FEATURE_NAMES = ("formal_charge", "aromatic", "sp", "sp2", "sp3", "other_hybridisation", "in_ring",
                      "h0", "h1", "h2", "h3+")
EDGE_FEATURE_NAMES = ("no_bond", "single", "double", "triple", "aromatic", "hop1", "hop2", "hop3", "hop4+",
                      "same_ring")
NODE_FEATURES = len(NODE_FEATURE_NAMES)
"""Width of the per-atom graph features (11)."""
EDGE_FEATURES = len(EDGE_FEATURE_NAMES)
"""Width of the per-pair graph features (10)."""

_BOND_CHANNELS = 5  # none, single, double, triple, aromatic
_HOP_CHANNELS = 4  # 1, 2, 3, >=4 or disconnected
_HOP_CODES = _HOP_CHANNELS + 1  # 0 is the atom itself
_RING_CODES = 2
_N_CODES = _BOND_CHANNELS * _HOP_CODES * _RING_CODES


def _edge_table() -> np.ndarray:
    table = np.zeros((_N_CODES, EDGE_FEATURES), dtype=np.float32)
    for bond in range(_BOND_CHANNELS):
        for hop in range(1, _HOP_CODES):  # hop 0 (the diagonal) stays all zero
            for ring in range(_RING_CODES):
                row = table[_pair_code(bond, hop, ring)]
                row[bond] = 1.0
                row[_BOND_CHANNELS + hop - 1] = 1.0
                row[-1] = float(ring)
    return table


def _pair_code(bond, hop, ring):
    return (bond * _HOP_CODES + hop) * _RING_CODES + ring


EDGE_TABLE = _edge_table()
"""[50, EDGE_FEATURES] float32: row ``code`` is the edge feature vector of a pair code (row 0: the diagonal
and padding, all zero)."""


class GraphError(ValueError):
    """A molecule whose graph cannot be built (sanitisation failed, unpaired electrons, unknown bond type)."""


@dataclass
class MolGraph:
    """One molecule's graph features, compact: ``node`` [n, NODE_FEATURES] int8, ``pairs`` [n, n] uint8 codes.

    ``node_features()`` and ``edge_features()`` give the float arrays the model takes.
    """

    node: np.ndarray
    pairs: np.ndarray

    @property
    def num_atoms(self) -> int:
        return int(self.node.shape[0])

    def node_features(self) -> np.ndarray:
        """[n, NODE_FEATURES] float32."""
        return self.node.astype(np.float32)

    def edge_features(self) -> np.ndarray:
        """[n, n, EDGE_FEATURES] float32."""
        return EDGE_TABLE[self.pairs]


_HYBRIDISATION_INDEX = {"SP": 0, "SP2": 1, "SP3": 2}
_BOND_INDEX = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3, "AROMATIC": 4}


def node_features(mol) -> np.ndarray:
    """[n, NODE_FEATURES] int8 per-atom features of a sanitised RDKit Mol (see the module docstring)."""
    out = np.zeros((mol.GetNumAtoms(), NODE_FEATURES), dtype=np.int8)
    for atom in mol.GetAtoms():
        k = atom.GetIdx()
        charge = atom.GetFormalCharge()
        if not -128 <= charge <= 127:
            raise GraphError(f"atom {k} has formal charge {charge}")
        out[k, 0] = charge
        out[k, 1] = atom.GetIsAromatic()
        out[k, 2 + _HYBRIDISATION_INDEX.get(str(atom.GetHybridization()), 3)] = 1
        out[k, 6] = atom.IsInRing()
        out[k, 7 + min(atom.GetTotalNumHs(includeNeighbors=True), 3)] = 1
    return out


def _pair_codes(mol) -> np.ndarray:
    from rdkit import Chem

    n = mol.GetNumAtoms()
    bond = np.zeros((n, n), dtype=np.int64)
    for b in mol.GetBonds():
        kind = str(b.GetBondType())
        if kind not in _BOND_INDEX:
            raise GraphError(f"bond {b.GetBeginAtomIdx()}-{b.GetEndAtomIdx()} has type {kind}; the conformer "
                             f"model knows single, double, triple and aromatic bonds")
        bond[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] = bond[b.GetEndAtomIdx(), b.GetBeginAtomIdx()] = _BOND_INDEX[kind]
    hops = np.asarray(Chem.GetDistanceMatrix(mol), dtype=np.float64) if n else np.zeros((0, 0))
    hop = np.clip(hops, 0, _HOP_CHANNELS).astype(np.int64)  # disconnected pairs (1e8) land in ">= 4"
    ring = np.zeros((n, n), dtype=np.int64)
    for atoms in mol.GetRingInfo().AtomRings():
        idx = np.asarray(atoms)
        ring[np.ix_(idx, idx)] = 1
    np.fill_diagonal(ring, 0)
    codes = _pair_code(bond, hop, ring)
    np.fill_diagonal(codes, 0)
    return codes.astype(np.uint8)


def edge_features(mol) -> np.ndarray:
    """[n, n, EDGE_FEATURES] float32 pair features of a sanitised RDKit Mol (see the module docstring)."""
    return EDGE_TABLE[_pair_codes(mol)]


def mol_graph(mol) -> MolGraph:
    """The compact graph features of a sanitised RDKit Mol with explicit hydrogens (atom order kept).

    Raises GraphError for a bond type other than single, double, triple or aromatic.
    """
    return MolGraph(node=node_features(mol), pairs=_pair_codes(mol))


def molecule_to_rdkit(molecule, allow_radicals: bool = False):
    """A sanitised RDKit Mol for a molediff ``Molecule`` (atomic numbers and 3D positions, hydrogens explicit).

    The molecule's own bonds (and formal charges) are used when it carries them; otherwise bonds are perceived
    from the 3D coordinates with molediff's table (``molediff.chem.bonds.to_rdkit``). No hydrogens are added:
    every atom is marked as having no implicit hydrogens, so an atom left with too few bonds keeps unpaired
    electrons, and such a molecule is refused unless ``allow_radicals`` (with perceived bonds that usually means
    a missed bond or a charged group). Atom order is the molecule's.

    Raises GraphError with the molecule's name and the reason when sanitisation fails or radicals are refused.
    """
    from rdkit import Chem

    from ..chem.bonds import to_rdkit
    from ..chem.rdkit_log import rdkit_errors
    from ..chem.rdkit_log import rdkit_reason as error_reason

    name = molecule.name or "molecule"
    try:
        mol = to_rdkit(molecule.atomic_numbers, molecule.positions, bonds=molecule.bonds,
                       formal_charges=molecule.formal_charges)
    except ValueError as e:
        raise GraphError(f"{name}: {e}") from None
    mol = Chem.RWMol(mol)
    for atom in mol.GetAtoms():
        atom.SetNoImplicit(True)
    mol = mol.GetMol()
    source = "bonds from the file" if molecule.bonds is not None else "bonds perceived from 3D"
    with rdkit_errors():  # the exception carries the reason; keep RDKit's copy of it off stderr
        try:
            Chem.SanitizeMol(mol)
        except Exception as e:  # RDKit raises several exception types for sanitisation failures
            raise GraphError(f"{name}: sanitisation failed ({source}): {error_reason(e)}") from None
    if not allow_radicals:
        for atom in mol.GetAtoms():
            if atom.GetNumRadicalElectrons():
                raise GraphError(f"{name}: atom {atom.GetIdx()} ({atom.GetSymbol()}) has "
                                 f"{atom.GetNumRadicalElectrons()} unpaired electron(s); a bond or a hydrogen is "
                                 f"missing, or a charge is not given")
    return mol
