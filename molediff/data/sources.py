"""A config's ``data`` section → a ``MoleculeDataset``: QM9, the Chemical Component Dictionary, or user files.

The section is typed (:class:`MoleculeDataConfig`), so a misspelt key fails before any data is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..chem.molecule import MoleculeDataset

DATASETS = ("qm9", "ccd", "files", "npz")


@dataclass(frozen=True)
class MoleculeDataConfig:
    """Where training molecules come from.

    Attributes:
        dataset: ``qm9`` (EDM's split, from the qm9pack package), ``ccd`` (Chemical Component Dictionary from
            biotite, reserved IDs excluded), ``files`` (a folder or file of SDF/XYZ) or ``npz`` (a saved
            ``MoleculeDataset``; needs no RDKit).
        split: ``train``, ``valid`` or ``test`` for qm9 and ccd.
        root: QM9 CSV folder (default: the qm9pack package).
        path: the file or folder for ``files`` and ``npz``.
        valid_path: for ``files`` and ``npz``: validation molecules in the same format (qm9 and ccd have their
            own split); ``molediff export --search`` scores EMA lengths on them.
        subset: keep the first k molecules (smoke tests, overfitting checks); None keeps all.
    """

    dataset: str = "qm9"
    split: str = "train"
    root: str | None = None
    path: str | None = None
    valid_path: str | None = None
    subset: int | None = None

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        if self.dataset in ("files", "npz") and not self.path:
            raise ValueError(f"data section: dataset '{self.dataset}' needs a 'path'")
        if self.valid_path and self.dataset not in ("files", "npz"):
            raise ValueError(f"data.valid_path is for datasets 'files' and 'npz'; '{self.dataset}' has its own "
                             f"validation split")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"data.subset must be at least 1 or null, got {self.subset}")


def load_molecule_dataset(config: MoleculeDataConfig, vocabulary: Sequence[int] | None = None,
                          max_atoms: int | None = None) -> MoleculeDataset:
    """The molecules named by ``config``. For user files, molecules with elements outside ``vocabulary``
    or more than ``max_atoms`` atoms are reported (logged) and skipped; ValueError when none remain."""
    if config.dataset == "qm9":
        from .qm9 import load_qm9

        dataset = load_qm9(config.split, root=config.root)
    elif config.dataset == "ccd":
        from .ccd import load_ccd

        dataset = load_ccd(config.split, **({} if max_atoms is None else {"max_atoms": max_atoms}))
        if vocabulary is not None:
            dataset = _within_vocabulary(dataset, vocabulary)
    else:
        from .files import load_molecule_files

        dataset, _ = load_molecule_files(config.path, vocabulary=vocabulary, max_atoms=max_atoms)  # logs skips
    if config.subset:
        dataset = dataset.subset(range(min(config.subset, len(dataset))))
    return dataset


def _within_vocabulary(dataset: MoleculeDataset, vocabulary: Sequence[int]) -> MoleculeDataset:
    """The molecules whose elements all lie in ``vocabulary``; logs how many were dropped."""
    import logging

    import numpy as np

    allowed = np.zeros(256, dtype=bool)
    allowed[np.asarray(vocabulary, dtype=np.int64)] = True
    ok_atom = allowed[dataset.atomic_numbers]
    owner = np.repeat(np.arange(len(dataset)), dataset.atom_counts)
    bad_per_molecule = np.bincount(owner, weights=~ok_atom, minlength=len(dataset))
    keep = np.flatnonzero(bad_per_molecule == 0)
    if len(keep) < len(dataset):
        logging.getLogger(__name__).warning("skipped %d of %d molecules with elements outside %s",
                                            len(dataset) - len(keep), len(dataset), tuple(vocabulary))
    return dataset.subset(keep)
