"""Chemistry: bond perception from 3D (EDM's table), SDF/XYZ input and output, de novo metrics (stability,
validity, uniqueness, novelty, connectivity, QED, SA), conformer metrics and physical checks.

Submodules import RDKit lazily; import what you need from ``molediff.chem.bonds``, ``.io``, ``.metrics``,
``.conformers``, ``.physics`` or ``.sascore``.
"""

from .bonds import perceive_bonds, to_rdkit
from .io import read_molecules, write_sdf, write_xyz
from .metrics import atom_stability, evaluate_molecules

__all__ = ["perceive_bonds", "to_rdkit", "read_molecules", "write_sdf", "write_xyz", "atom_stability",
           "evaluate_molecules"]
