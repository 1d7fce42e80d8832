"""The held-out CCD conformer benchmark: which Chemical Component Dictionary molecules, with which coordinates.

``ccd_benchmark_ids`` draws the set and ``write_ccd_benchmark`` writes ``datasets/ccd_conformer_benchmark.txt``;
``read_ccd_benchmark`` reads the IDs back. The rule (also the file's header):

- coordinates: the CCD's *model* coordinates (``_chem_comp_atom.model_Cartn_x/y/z``), taken from an
  experimentally determined PDB entry that contains the component (``_chem_comp.pdbx_model_coordinates_db_code``);
  the *ideal* coordinates (``pdbx_model_Cartn_x/y/z_ideal``) are computed (software-generated), so they are not
  the reference here. Components whose model coordinates are incomplete are left out by the data layer.
- molecules: ``molediff.data.ccd.load_ccd("all", coordinates="model")`` (organic elements, 2-64 atoms with
  hydrogens, RDKit-sanitisable), then the data layer's ``valid`` split (``ccd_split``): not a reserved ID
  (``reserved_ccd_ids``), no SMILES equal to a reserved component's, and a SMILES hash below the valid fraction,
  so never in the ``train`` split (which the split makes by SMILES, whatever the coordinates);
- at least 3 heavy atoms (an RMSD over fewer says nothing), one component per SMILES (stereo ignored; the
  alphabetically first ID), then ``n`` drawn with ``numpy.random.default_rng(seed).permutation`` over the
  candidate IDs sorted alphabetically, written sorted.

The set is held out from training but lies in the CCD validation split: a refiner trained on the CCD must not be
tuned (EMA length, recipe) on these IDs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["CCD_BENCHMARK_FILE", "CCD_BENCHMARK_SEED", "CCD_BENCHMARK_SIZE", "ccd_benchmark_ids",
           "ccd_tuning_ids", "read_ccd_benchmark", "write_ccd_benchmark"]

CCD_BENCHMARK_FILE = Path(__file__).resolve().parents[2] / "datasets" / "ccd_conformer_benchmark.txt"
"""Where the list lives in the source tree (not in an installed package)."""
CCD_BENCHMARK_SIZE = 500
CCD_BENCHMARK_SEED = 20250
MIN_HEAVY_ATOMS = 3


def ccd_benchmark_ids(n: int = CCD_BENCHMARK_SIZE, seed: int = CCD_BENCHMARK_SEED) -> list[str]:
    """The ``n`` benchmark component IDs (sorted) by the rule of the module docstring. Reads the CCD through the
    data layer (``load_ccd``: about half a minute the first time, cached after). ValueError when fewer than ``n``
    components qualify."""
    candidates = _candidates()
    if len(candidates) < n:
        raise ValueError(f"only {len(candidates)} CCD components qualify for the benchmark, fewer than n={n}")
    order = np.random.default_rng(seed).permutation(len(candidates))
    return sorted(candidates[int(k)] for k in order[:n])


def ccd_tuning_ids() -> list[str]:
    """The components that qualify by the same rule but are not in the benchmark list (sorted; about 1,000): the
    set on which a refiner's options (σ₀, steps, selection) are chosen, so the benchmark's 500 stay untouched."""
    held_out = set(read_ccd_benchmark())
    return [c for c in _candidates() if c not in held_out]


def _candidates() -> list[str]:
    """Every component ID that qualifies by the rule of the module docstring (one per SMILES), sorted."""
    from ..data.ccd import ccd_split, load_ccd

    dataset = load_ccd("all", coordinates="model")
    valid = ccd_split(dataset)["valid"]
    names = dataset.names.astype(str)
    smiles = dataset.smiles.astype(str)
    z = dataset.atomic_numbers
    heavy = np.add.reduceat((z > 1).astype(np.int64), dataset.offsets[:-1]) if len(z) else np.zeros(0, np.int64)
    first: dict[str, str] = {}
    for i in valid:
        if heavy[i] < MIN_HEAVY_ATOMS:
            continue
        name, key = names[i].upper(), smiles[i]
        if key not in first or name < first[key]:
            first[key] = name
    return sorted(first.values())


def _header(n: int, seed: int) -> str:
    import biotite

    return (f"# Held-out CCD conformer benchmark: {n} Chemical Component Dictionary IDs, one per line.\n"
            f"# Written by molediff.conformers.benchmark.write_ccd_benchmark(n={n}, seed={seed}) from the CCD in\n"
            f"# biotite {biotite.__version__}; scripts/bench_conformers.py --set ccd reads it.\n"
            "# Reference coordinates: the CCD's experimental 'model' coordinates (model_Cartn_x/y/z, from the PDB\n"
            "# entry named in pdbx_model_coordinates_db_code), not the computed 'ideal' ones; hydrogens included.\n"
            "# Rule: molediff.data.ccd.load_ccd('all', coordinates='model') -> ccd_split's 'valid' split (no\n"
            "# reserved ID, no SMILES of a reserved component, SMILES hash below the valid fraction, so never in\n"
            "# 'train') -> at least 3 heavy atoms -> one ID per SMILES (stereo ignored; the alphabetically first)\n"
            f"# -> numpy.random.default_rng({seed}).permutation over the sorted candidates, first {n}, sorted.\n"
            "# Held out from training, but in the CCD validation split: do not tune a CCD-trained model on these.\n")


def write_ccd_benchmark(path: str | os.PathLike = CCD_BENCHMARK_FILE, n: int = CCD_BENCHMARK_SIZE,
                        seed: int = CCD_BENCHMARK_SEED) -> list[str]:
    """Draw the set (``ccd_benchmark_ids``) and write it with its header, atomically; returns the IDs."""
    from ..utils import atomic_write

    ids = ccd_benchmark_ids(n, seed)
    with atomic_write(path) as f:
        f.write(_header(n, seed) + "".join(f"{i}\n" for i in ids))
    return ids


def read_ccd_benchmark(path: str | os.PathLike = CCD_BENCHMARK_FILE) -> list[str]:
    """The IDs of a benchmark file (``#`` lines are the header); FileNotFoundError when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CCD benchmark list at {path}; write it with "
                                f"molediff.conformers.benchmark.write_ccd_benchmark()")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
