"""Small molecules of the PDB Chemical Component Dictionary (the copy shipped inside biotite).

Each component keeps its experimental ("model") or ideal coordinates, hydrogens, CCD bond orders
(Kekulé: 1/2/3) and formal charges. Kept: organic elements only (H, C, N, O, F, P, S, Cl, Br, I),
``min_atoms``..``max_atoms`` atoms, complete coordinates, and a structure RDKit can sanitise.

Splits are by canonical SMILES (RDKit, hydrogens implicit, stereo ignored), so no molecule is in two
splits:
- ``test``: the 5,000 reserved component IDs (``resources/reserved_ccd_ids.txt``, also in
  ``datasets/ccd``), held out for evaluation;
- any other component whose SMILES equals a reserved one's is dropped from train and valid;
- ``valid``: the remaining SMILES whose SHA-1 hash falls in the lowest ``valid_fraction`` (5 %);
  ``train``: the rest.
The first load builds a cache in ``cache_dir()/ccd`` (about a minute); later loads take a second.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..chem.bonds import to_rdkit
from ..chem.elements import ORGANIC_ELEMENTS, atomic_number
from ..chem.molecule import Molecule, MoleculeDataset

log = logging.getLogger(__name__)

_RESOURCES = Path(__file__).parent / "resources"
_CACHE_VERSION = 1
_ORDERS = {"SING": 1, "DOUB": 2, "TRIP": 3}


def reserved_ccd_ids() -> frozenset[str]:
    """The CCD IDs reserved for evaluation (never in train or valid)."""
    lines = (_RESOURCES / "reserved_ccd_ids.txt").read_text().split()
    return frozenset(s.strip().upper() for s in lines if s.strip())


def _z_of(symbols: np.ndarray) -> np.ndarray:
    uniq, inv = np.unique(symbols, return_inverse=True)
    table = []
    for s in uniq:
        try:
            table.append(atomic_number(str(s)))
        except ValueError:
            table.append(0)
    return np.asarray(table, dtype=np.int64)[inv]


def _float_column(category, name: str) -> np.ndarray:
    col = category[name]
    values = col.as_array(np.float64)
    mask = col.mask
    if mask is not None:
        values = np.where(mask.array != 0, np.nan, values)
    return values


def build_ccd(coordinates: str = "ideal", min_atoms: int = 2, max_atoms: int = 64,
              ids: Iterable[str] | None = None) -> tuple[MoleculeDataset, dict[str, int]]:
    """All usable components (or only ``ids``) as a dataset with canonical SMILES, plus counts of what was
    dropped and why."""
    import biotite.structure.info as info
    from rdkit import Chem, rdBase

    if coordinates not in ("ideal", "model"):
        raise ValueError(f"coordinates must be 'ideal' or 'model', got {coordinates!r}")
    ccd = info.get_ccd()
    atoms, bonds = ccd["chem_comp_atom"], ccd["chem_comp_bond"]
    comp = atoms["comp_id"].as_array(str)
    atom_id = atoms["atom_id"].as_array(str)
    z = _z_of(np.char.upper(atoms["type_symbol"].as_array(str)))
    charge = np.nan_to_num(_float_column(atoms, "charge")).astype(np.int64)
    prefix = "pdbx_model_Cartn_{}_ideal" if coordinates == "ideal" else "model_Cartn_{}"
    xyz = np.stack([_float_column(atoms, prefix.format(c)) for c in "xyz"], axis=1)

    starts = np.flatnonzero(np.r_[True, comp[1:] != comp[:-1]])
    stops = np.r_[starts[1:], len(comp)]
    names = comp[starts]
    wanted = None if ids is None else {s.upper() for s in ids}

    b_comp = bonds["comp_id"].as_array(str)
    b_a1, b_a2 = bonds["atom_id_1"].as_array(str), bonds["atom_id_2"].as_array(str)
    b_order = np.array([_ORDERS.get(o, 0) for o in bonds["value_order"].as_array(str)], dtype=np.int64)
    b_starts = np.flatnonzero(np.r_[True, b_comp[1:] != b_comp[:-1]])
    b_ranges = dict(zip(b_comp[b_starts], zip(b_starts, np.r_[b_starts[1:], len(b_comp)])))

    organic = np.zeros(256, dtype=bool)
    organic[list(ORGANIC_ELEMENTS)] = True
    counts = {"components": 0, "not_organic": 0, "size": 0, "missing_coordinates": 0, "bad_bonds": 0,
              "rdkit_failed": 0, "kept": 0}
    mols = []
    with rdBase.BlockLogs():
        for name, lo, hi in zip(names, starts, stops):
            if wanted is not None and name.upper() not in wanted:
                continue
            counts["components"] += 1
            zk = z[lo:hi]
            if not organic[zk].all():
                counts["not_organic"] += 1
                continue
            if not min_atoms <= hi - lo <= max_atoms:
                counts["size"] += 1
                continue
            x = xyz[lo:hi]
            if not np.isfinite(x).all():
                counts["missing_coordinates"] += 1
                continue
            index = {a: k for k, a in enumerate(atom_id[lo:hi])}
            blo, bhi = b_ranges.get(name, (0, 0))
            try:
                rows = [(index[a1], index[a2], o) for a1, a2, o in zip(b_a1[blo:bhi], b_a2[blo:bhi], b_order[blo:bhi])]
            except KeyError:
                counts["bad_bonds"] += 1
                continue
            rows = np.array(rows, dtype=np.int64).reshape(-1, 3)
            if len(rows) and (rows[:, 2] == 0).any():
                counts["bad_bonds"] += 1
                continue
            rows[:, :2] = np.sort(rows[:, :2], axis=1)
            mol = to_rdkit(zk, x, bonds=rows, formal_charges=charge[lo:hi])
            try:
                Chem.SanitizeMol(mol)
                smiles = Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)
            except (ValueError, RuntimeError):
                counts["rdkit_failed"] += 1
                continue
            mols.append(Molecule(zk, x.astype(np.float32), name=str(name), smiles=smiles, bonds=rows,
                                 formal_charges=charge[lo:hi]))
    counts["kept"] = len(mols)
    if not mols:
        raise ValueError("no Chemical Component Dictionary molecule passed the filters")
    return MoleculeDataset.from_molecules(mols), counts


def ccd_split(dataset: MoleculeDataset, valid_fraction: float = 0.05) -> dict[str, np.ndarray]:
    """Indices of train / valid / test in ``dataset`` (see the module docstring)."""
    reserved = reserved_ccd_ids()
    names = np.char.upper(dataset.names.astype(str))
    smiles = dataset.smiles.astype(str)
    is_reserved = np.isin(names, list(reserved))
    reserved_smiles = set(smiles[is_reserved].tolist())
    leak = ~is_reserved & np.isin(smiles, list(reserved_smiles))
    h = np.array([int(hashlib.sha1(s.encode()).hexdigest()[:8], 16) / 2**32 for s in smiles])
    free = ~is_reserved & ~leak
    return {"train": np.flatnonzero(free & (h >= valid_fraction)), "valid": np.flatnonzero(free & (h < valid_fraction)),
            "test": np.flatnonzero(is_reserved)}


def load_ccd(split: str = "train", coordinates: str = "ideal", min_atoms: int = 2, max_atoms: int = 64,
             valid_fraction: float = 0.05) -> MoleculeDataset:
    """CCD molecules of ``split`` (train, valid, test = reserved IDs, or all) with ``coordinates`` 'ideal' or
    'model'; cached in ``cache_dir()/ccd``."""
    from ..utils import cache_dir

    if split not in ("train", "valid", "test", "all"):
        raise ValueError(f"unknown CCD split {split!r}; use train, valid, test or all")
    import biotite

    key = f"{coordinates}_{min_atoms}_{max_atoms}_biotite{biotite.__version__}_v{_CACHE_VERSION}"
    path = cache_dir() / "ccd" / f"ccd_{key}.npz"
    if not path.exists():
        log.info("building the CCD cache %s (once)", path)
        ds, counts = build_ccd(coordinates, min_atoms, max_atoms)
        log.info("CCD filter counts: %s", counts)
        ds.save(path)
    ds = MoleculeDataset.load(path)
    if split == "all":
        return ds
    return ds.subset(ccd_split(ds, valid_fraction)[split])
