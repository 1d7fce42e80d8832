"""QM9 (130,831 molecules, B3LYP/6-31G(2df,p) geometries, hydrogens included) with EDM's exact split.

The molecules come from the CSV files shipped in the ``qm9pack`` package (read directly; ``qm9pack``
itself is never imported). The first load parses the CSVs (about a minute) into a compact ``.npz``
cache under ``cache_dir()/qm9``; later loads take a second or two.

Split (EDM, from Cormorant): the 3,054 molecules that failed the QM9 consistency check are left out,
``included`` = the remaining 0-based GDB indices in sorted order, then with NumPy's legacy generator
seeded 0, ``perm = permutation(130831)``; train = ``included[perm[:100000]]``, valid = the next 17,748,
test = the last 13,083. ``qm9_split_indices`` recomputes this from the shipped excluded-index list
(``molediff/data/resources/qm9_excluded.txt``); ``datasets/qm9/qm9_split.npz`` in the repository holds
the resulting indices and a test checks the two agree.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

import numpy as np

from ..chem.elements import atomic_number
from ..chem.molecule import MoleculeDataset
from ..chem.stability import reference_smiles

log = logging.getLogger(__name__)

QM9_VOCABULARY = (1, 6, 7, 8, 9)
"""QM9's vocabulary: the atomic numbers of its elements (H, C, N, O, F) in EDM's one-hot order."""

QM9_NUM_GDB = 133885
SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}
_CACHE_VERSION = 1
_RESOURCES = Path(__file__).parent / "resources"


def qm9_root() -> Path:
    """The ``data`` folder of the installed ``qm9pack`` package (found without importing it)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("QM9 needs the qm9pack package (pip install qm9pack), or pass root= a folder "
                                "holding qm9_part*.csv")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _excluded_indices() -> np.ndarray:
    return np.loadtxt(_RESOURCES / "qm9_excluded.txt", dtype=np.int64, comments="#")


def qm9_split_indices() -> dict[str, np.ndarray]:
    """EDM's split as 0-based GDB-9 indices (``Index - 1`` in the QM9 files): keys train, valid, test.

    Recomputed from the seed-0 permutation; cheap (a few milliseconds) and needs no QM9 data.
    """
    included = np.setdiff1d(np.arange(QM9_NUM_GDB), _excluded_indices())
    perm = np.random.RandomState(0).permutation(len(included))
    a, b = SPLIT_SIZES["train"], SPLIT_SIZES["train"] + SPLIT_SIZES["valid"]
    return {"train": included[perm[:a]], "valid": included[perm[a:b]], "test": included[perm[b:]]}


def _csv_files(root: Path) -> list[Path]:
    files = sorted(p for p in root.glob("qm9_part*.csv"))
    if not files:
        raise FileNotFoundError(f"no qm9_part*.csv files in {root}")
    return files


def _parse_row(row: dict) -> tuple[int, np.ndarray, np.ndarray, str]:
    index = int(row["Index"])
    symbols = [s.strip().strip("'\"") for s in row["Elements"].strip("[]").split(",")]
    z = np.array([atomic_number(s) for s in symbols], dtype=np.uint8)
    xyz = np.array(row["XYZ_Ang"].replace("[", " ").replace("]", " ").split(","), dtype=np.float64)
    pos = xyz.reshape(-1, 3)
    if len(pos) != len(z) or len(z) != int(row["N_atoms"]):
        raise ValueError(f"QM9 molecule {index}: atom count mismatch")
    return index, z, pos.astype(np.float32), row["SMILES"]


def build_qm9_cache(root: Path, out: Path) -> None:
    """Parse the QM9 CSVs under ``root`` into one ``MoleculeDataset`` file at ``out`` (sorted by Index)."""
    from ..utils import progress

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows = []
    files = _csv_files(root)
    total = sum(p.stat().st_size for p in files)
    with progress(total=total, desc="building QM9 cache", unit="B", unit_scale=True) as bar:
        for path in files:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    rows.append(_parse_row(row))
                    bar.update(len(row["XYZ_Ang"]) + len(row["Mulliken_pop"]) + len(row["Harmonic_Freq_cmi"]) + 200)
            bar.n = sum(p.stat().st_size for p in files[:files.index(path) + 1])
            bar.refresh()
    rows.sort(key=lambda r: r[0])
    index = np.array([r[0] for r in rows], dtype=np.int64)
    if len(np.unique(index)) != len(index):
        raise ValueError(f"QM9 files in {root} contain duplicate molecules")
    counts = np.array([len(r[1]) for r in rows], dtype=np.int64)
    ds = MoleculeDataset(np.concatenate([r[1] for r in rows]), np.concatenate([r[2] for r in rows]),
                         np.concatenate([[0], np.cumsum(counts)]),
                         names=[f"gdb9_{i:06d}" for i in index], smiles=[r[3] for r in rows])
    ds.save(out)


def _cache_file(root: Path) -> Path:
    from ..utils import cache_dir

    key = "|".join(f"{p.resolve()}:{p.stat().st_size}" for p in _csv_files(root))
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return cache_dir() / "qm9" / f"qm9_v{_CACHE_VERSION}_{digest}.npz"


def _load_all(root: Path) -> MoleculeDataset:
    path = _cache_file(root)
    if not path.exists():
        log.info("building the QM9 cache %s from %s (once)", path, root)
        build_qm9_cache(root, path)
    return MoleculeDataset.load(path)


def load_qm9(split: str = "train", root: str | os.PathLike | None = None, bonds: bool = False) -> MoleculeDataset:
    """QM9 molecules of EDM's ``split`` (train, valid, test) or ``all`` (sorted by GDB index).

    ``root`` is a folder with ``qm9_part*.csv`` (default: the installed qm9pack data). Molecules keep
    the order of EDM's split; names are ``gdb9_NNNNNN`` (1-based GDB index) and ``smiles`` is QM9's own
    (GDB) SMILES string.

    ``bonds=True``: each molecule also carries Kekulé bond orders (1/2/3) determined from its DFT geometry by
    ``molediff.chem.bonds.bonds_from_geometry`` (RDKit's ``DetermineBonds``, neutral), and molecules for which
    RDKit finds no assignment (about 5 %) are left out. Computed once per split (about 8 ms a molecule: some
    13 minutes of one core for the training split) and cached beside the QM9 cache (:func:`qm9_bonds`).
    """
    if split not in ("train", "valid", "test", "all"):
        raise ValueError(f"unknown QM9 split {split!r}; use train, valid, test or all")
    root = qm9_root() if root is None else Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"QM9 folder {root} does not exist")
    data = _load_all(root)
    if split != "all":
        gdb = np.array([int(n[5:]) - 1 for n in data.names], dtype=np.int64)
        wanted = qm9_split_indices()[split]
        pos = np.searchsorted(gdb, wanted)
        pos = np.minimum(pos, len(gdb) - 1)
        if not np.array_equal(gdb[pos], wanted):
            raise ValueError(f"the QM9 files in {root} do not hold all molecules of EDM's {split} split")
        data = data.subset(pos)
    if not bonds:
        return data
    bond_rows, bond_offsets, ok = qm9_bonds(data, _cache_file(root).with_name(
        f"{_cache_file(root).stem}_bonds_{split}_v{_BONDS_VERSION}.npz"))
    with_bonds = MoleculeDataset(data.atomic_numbers, data.positions, data.offsets, names=data.names,
                                 smiles=data.smiles, bonds=bond_rows, bond_offsets=bond_offsets)
    return with_bonds.subset(np.flatnonzero(ok))


_BONDS_VERSION = 1


def qm9_bonds(data: MoleculeDataset, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bond orders of every molecule of ``data`` from its geometry (``chem.bonds.bonds_from_geometry``), read
    from ``cache`` (an ``.npz``) when it exists and holds the same molecules, else computed and written there.

    Returns ``(bonds [M, 3] int64 rows (i, j, order), bond_offsets [len + 1], ok [len] bool)``; a molecule
    without an assignment has ``ok`` False and no bonds.
    """
    from ..chem.bonds import bonds_from_geometry
    from ..utils import atomic_path, progress

    names = np.asarray(data.names if data.names is not None else [], dtype=str)
    if cache is not None and cache.exists():
        stored = np.load(cache)
        if np.array_equal(stored["names"], names):
            return stored["bonds"], stored["bond_offsets"], stored["ok"]
    rows, counts, ok = [], [], np.zeros(len(data), dtype=bool)
    for k in progress(range(len(data)), desc="QM9 bond orders", unit="mol"):
        m = data[k]
        try:
            b = bonds_from_geometry(m.atomic_numbers, m.positions)
            ok[k] = True
        except ValueError:
            b = np.zeros((0, 3), dtype=np.int64)
        rows.append(b)
        counts.append(len(b))
    bonds = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, names=names, bonds=bonds, bond_offsets=offsets, ok=ok)
    log.info("QM9 bond orders: %d of %d molecules have an assignment", int(ok.sum()), len(ok))
    return bonds, offsets, ok


def qm9_train_smiles(root: str | os.PathLike | None = None) -> set[str]:
    """SMILES of EDM's QM9 training split recomputed with molediff's bond perception
    (``molediff.chem.stability.reference_smiles``), for novelty.

    ``root`` as for ``load_qm9``. Cached as text next to the QM9 cache in ``cache_dir()/qm9`` after the
    first call (about a minute).
    """
    from ..utils import atomic_write

    root_path = qm9_root() if root is None else Path(root)
    cache = _cache_file(root_path)
    path = cache.with_name(cache.stem + "_train_smiles_v1.txt")
    if path.exists():
        return {line for line in path.read_text().splitlines() if line}
    log.info("computing QM9 training SMILES with molediff's bond perception (once)")
    smiles = reference_smiles(load_qm9("train", root=root_path))
    with atomic_write(path) as f:
        f.write("\n".join(sorted(smiles)) + "\n")
    return smiles
