"""Chemistry: the in-memory molecule form (``Molecule``, ``MoleculeDataset``), element symbols, bond
perception from 3D (EDM's table), SDF/XYZ input and output, de novo metrics (stability, validity,
uniqueness, novelty, connectivity, QED, SA), conformer metrics and physical checks.

``molediff.chem`` depends on no other molediff package except ``molediff.utils``; the dataset loaders
of ``molediff.data`` build on it, never the reverse.

Submodules load RDKit lazily; import what you need from ``molediff.chem.molecule``, ``.elements``,
``.bonds``, ``.io``, ``.metrics``, ``.conformers``, ``.physics`` or ``.sascore``.
"""

from .bonds import perceive_bonds, to_rdkit
from .io import read_molecules, write_sdf, write_xyz
from .metrics import atom_stability, evaluate_molecules
from .molecule import Molecule, MoleculeDataset

__all__ = ["Molecule", "MoleculeDataset", "perceive_bonds", "to_rdkit", "read_molecules", "write_sdf", "write_xyz",
           "atom_stability", "evaluate_molecules"]
