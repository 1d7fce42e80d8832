"""Real chains as references for sampled ones: the held-out chains shipped with the package, and the two
calibration sets of issue 20 that separate what angle statistics alone give from what a chain needs.

* :func:`heldout_chains`: the held-out validation (20) and test (39) chains of ``../shared/data/proteins-db55``
  (1,084 PDB files of Docking Benchmark 5.5, read and split by ``molediff.proteins.data`` with its defaults:
  40–256 residues, no chain breaks, deduplicated, split by 30 %-identity clusters), stored as a prepared
  ``ProteinSet`` (``resources/proteins_db55_heldout.npz``, Cα in Å) so that ``protein score --png`` can draw
  real chains without the data folder. ``python scripts/bench_proteins.py heldout`` rewrites it.
* :func:`rebuilt_windows`: windows of real chains rebuilt from their own virtual bond angles and dihedrals with
  every Cα–Cα at 3.80 Å: what a model that samples the angles exactly, correlations included, would give.
* :func:`independent_angle_chains`: chains whose (θ, τ) pairs are independent draws from the pooled pairs of
  real chains: the marginal of one residue's angles without any correlation along the chain. Such chains
  are neither compact nor free of clashes (the lever-arm effect FoldingDiff describes, Wu et al. 2022 §4):
  a model must learn the correlations, not only the marginal.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .angles import CA_CA, angles_to_chain, chain_to_angles

__all__ = ["HELDOUT_PATH", "angle_pairs", "heldout_chains", "independent_angle_chains", "rebuilt_windows"]

HELDOUT_PATH = Path(__file__).resolve().parent / "resources" / "proteins_db55_heldout.npz"
"""The shipped held-out chains (a prepared ``ProteinSet`` with split labels ``valid`` and ``test``)."""


def heldout_chains(split: str = "test") -> list[np.ndarray]:
    """The shipped held-out real chains of ``split`` (``test``: 39 chains, ``valid``: 20, ``all``: both) as
    Cα traces ``[L, 3]`` float32 (Å, 44–253 residues). FileNotFoundError when this installation lacks the
    file; ValueError for another split name."""
    from .data import load_proteins

    if split not in ("test", "valid", "all"):
        raise ValueError(f"the shipped held-out chains are split into 'test' and 'valid' (or 'all'), got {split!r}")
    chains = load_proteins({"path": str(HELDOUT_PATH), "split": split})
    return [chains[i].coords for i in range(len(chains))]


def _build(angles: np.ndarray, bond_length: float) -> list[np.ndarray]:
    """Chains [L, 3] float32 from packed angles ``[B, L − 2, 2]`` (radians; every chain L residues)."""
    coords = angles_to_chain(torch.as_tensor(angles, dtype=torch.float64), None, bond_length)
    return [c.float().numpy() for c in coords]


def rebuilt_windows(chains: Sequence[np.ndarray], window: int = 80, bond_length: float = CA_CA,
                    rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """One ``window``-residue window per chain of at least that length (a uniformly random start; chains in
    order), rebuilt from its own virtual bond angles and dihedrals with every Cα–Cα at ``bond_length`` Å.

    Shapes: chains ``[L_i, 3]`` Å; returns ``[window, 3]`` float32 arrays (NeRF frame). Chains shorter than
    ``window`` are skipped; ValueError for ``window < 4``. ``rng`` (default: seed 0) draws the starts.
    """
    if window < 4:
        raise ValueError(f"a window needs at least 4 residues (one dihedral), got {window}")
    rng = np.random.default_rng(0) if rng is None else rng
    pieces = []
    for c in chains:
        c = np.asarray(c, dtype=np.float64).reshape(-1, 3)
        if len(c) >= window:
            start = int(rng.integers(0, len(c) - window + 1))
            pieces.append(c[start:start + window])
    if not pieces:
        return []
    angles, _, _ = chain_to_angles(torch.as_tensor(np.stack(pieces)))
    return _build(angles.numpy(), bond_length)


def angle_pairs(chains: Sequence[np.ndarray]) -> np.ndarray:
    """The pooled (θ_k, τ_k) pairs ``[P, 2]`` (radians) of real chains: θ at Cα_{k+1} and the dihedral of
    Cα_k … Cα_{k+3}, every k with both (L − 3 per chain of L ≥ 4 residues)."""
    out = []
    for c in chains:
        c = np.asarray(c, dtype=np.float64).reshape(-1, 3)
        if len(c) >= 4:
            angles, _, _ = chain_to_angles(torch.as_tensor(c)[None])
            out.append(angles[0, :-1].numpy())
    return np.concatenate(out) if out else np.zeros((0, 2))


def independent_angle_chains(chains: Sequence[np.ndarray], length: int, n: int, bond_length: float = CA_CA,
                             rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """``n`` chains of ``length`` residues whose L − 2 (θ, τ) pairs are drawn independently, with replacement,
    from the pooled pairs of ``chains`` (:func:`angle_pairs`), every Cα–Cα at ``bond_length`` Å.

    Returns ``[length, 3]`` float32 arrays (Å). ValueError for ``length < 4``, ``n < 1`` or real chains with
    no dihedral. ``rng`` (default: seed 0) draws the pairs.
    """
    if length < 4 or n < 1:
        raise ValueError(f"need length >= 4 and n >= 1, got {length}, {n}")
    pairs = angle_pairs(chains)
    if len(pairs) == 0:
        raise ValueError("the real chains have no (bond angle, dihedral) pair")
    rng = np.random.default_rng(0) if rng is None else rng
    return _build(pairs[rng.integers(0, len(pairs), size=(n, length - 2))], bond_length)
