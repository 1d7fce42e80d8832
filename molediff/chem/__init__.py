"""Chemistry: the in-memory molecule form (``Molecule``, ``MoleculeDataset``), element symbols, bond
perception from 3D (EDM's table), SDF/XYZ input and output, de novo metrics (stability, validity,
uniqueness, novelty, connectivity, QED, SA) with their diagnostics, conformer metrics and physical checks.

``molediff.chem`` depends on no other molediff package except ``molediff.utils``; the dataset loaders
of ``molediff.data`` build on it, never the reverse.

Submodules load RDKit lazily; import what you need from ``molediff.chem.molecule``, ``.elements``,
``.bonds``, ``.io`` (``read_molecules``), ``.sdf``, ``.xyz``, ``.records`` (what the readers share),
``.rdkit_log`` (RDKit's messages caught and condensed), ``.stability`` (EDM's metrics, ``evaluate_molecules``),
``.diagnostics`` (geometry and metric-assumption notes), ``.rmsd`` (the one symmetry-aware RMSD),
``.conformers`` (conformer-ensemble metrics), ``.physics`` or ``.sascore``.
"""

from .bonds import perceive_bonds, to_rdkit
from .io import read_molecules
from .molecule import Molecule, MoleculeDataset
from .sdf import write_sdf
from .stability import atom_stability, evaluate_molecules
from .xyz import write_xyz

__all__ = ["Molecule", "MoleculeDataset", "perceive_bonds", "to_rdkit", "read_molecules", "write_sdf", "write_xyz",
           "atom_stability", "evaluate_molecules"]
