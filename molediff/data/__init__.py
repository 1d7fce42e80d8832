"""Molecule data: the in-memory form, QM9 (EDM split), the Chemical Component Dictionary, user SDF/XYZ files,
and dense padded batches for the models."""

from .batching import DenseMoleculeBatch, collate_dense, from_pyg_batch
from .molecule import Molecule, MoleculeDataset
from .qm9 import QM9_ATOM_TYPES, load_qm9, qm9_split_indices

__all__ = ["Molecule", "MoleculeDataset", "QM9_ATOM_TYPES", "load_qm9", "qm9_split_indices", "DenseMoleculeBatch",
           "collate_dense", "from_pyg_batch", "load_molecule_files", "load_ccd"]


def __getattr__(name):
    if name == "load_molecule_files":
        from .files import load_molecule_files

        return load_molecule_files
    if name == "load_ccd":
        from .ccd import load_ccd

        return load_ccd
    raise AttributeError(name)
