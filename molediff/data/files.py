"""User data: a folder or file of SDF/XYZ molecules (or a saved ``.npz`` dataset) as a ``MoleculeDataset``."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ..chem.io import read_molecules
from ..chem.molecule import MoleculeDataset

log = logging.getLogger(__name__)


def load_molecule_files(path: str | os.PathLike, vocabulary: Sequence[int] | None = None,
                        max_atoms: int | None = None,
                        cache: bool = True) -> tuple[MoleculeDataset, list[tuple[str, str]]]:
    """Read every molecule under ``path`` (bad records are skipped and returned as (record, reason)).

    ``vocabulary`` (the atomic numbers allowed, e.g. ``QM9_VOCABULARY``) and ``max_atoms`` filter molecules,
    reporting why each was dropped.
    With ``cache`` the parsed molecules of a single file are kept as ``.npz`` in ``cache_dir()/files``
    keyed by the file's path, size and modification time. ValueError when nothing usable remains.
    """
    from ..utils import cache_dir

    p = Path(path)
    if p.suffix == ".npz":
        ds, errors = MoleculeDataset.load(p), []
        molecules = [ds[i] for i in range(len(ds))]
    else:
        cached = None
        if cache and p.is_file():
            st = p.stat()
            key = hashlib.sha1(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
            cached = cache_dir() / "files" / f"{p.stem}_{key}.npz"
        if cached is not None and cached.exists():
            ds = MoleculeDataset.load(cached)
            molecules, errors = [ds[i] for i in range(len(ds))], []
        else:
            molecules, errors = read_molecules(p)
            if cached is not None and molecules:
                MoleculeDataset.from_molecules(molecules).save(cached)
    vocab = None if vocabulary is None else tuple(int(z) for z in vocabulary)
    allowed = set(vocab or ())
    kept = []
    for m in molecules:
        if vocab is not None and not set(m.atomic_numbers.tolist()) <= allowed:
            extra = sorted(set(m.atomic_numbers.tolist()) - allowed)
            errors.append((m.name, f"element(s) {extra} outside the vocabulary {vocab}"))
        elif max_atoms is not None and m.num_atoms > max_atoms:
            errors.append((m.name, f"{m.num_atoms} atoms, more than {max_atoms}"))
        else:
            kept.append(m)
    for record, reason in errors:
        log.warning("skipped %s: %s", record, reason)
    if not kept:
        raise ValueError(f"no usable molecules in {p}")
    return MoleculeDataset.from_molecules(kept), errors
