"""Molecule data: QM9 (EDM split), the Chemical Component Dictionary, user SDF/XYZ files, dense padded
batches for the models and the size-bucketed training order.

The in-memory form (``Molecule``, ``MoleculeDataset``) lives in ``molediff.chem.molecule`` and is
re-exported here. Dependencies point one way: ``molediff.data`` uses ``molediff.chem``, never the reverse.
"""

from ..chem.molecule import Molecule, MoleculeDataset
from .batching import DenseMoleculeBatch, collate_dense, from_pyg_batch, size_bucketed_batches
from .qm9 import QM9_VOCABULARY, load_qm9, qm9_split_indices, qm9_train_smiles

__all__ = ["Molecule", "MoleculeDataset", "QM9_VOCABULARY", "load_qm9", "qm9_split_indices", "qm9_train_smiles",
           "DenseMoleculeBatch", "collate_dense", "from_pyg_batch", "size_bucketed_batches", "load_molecule_files",
           "load_ccd"]


def __getattr__(name):
    if name == "load_molecule_files":
        from .files import load_molecule_files

        return load_molecule_files
    if name == "load_ccd":
        from .ccd import load_ccd

        return load_ccd
    raise AttributeError(name)
