"""The one symmetry-aware RMSD: heavy-atom RMSD (Å) after optimal superposition, minimised over the maps between two
molecular graphs (elements and connectivity), as RDKit's ``GetBestRMS``, vectorised over conformers.

- ``element_graph``: the graph the maps are found on: elements and connectivity only (every bond single, no
  charges), so the two O of a carboxylic acid are interchangeable once hydrogens are gone, as in RDKit's
  symmetrised terminal groups.
- ``atom_maps``: the maps from a probe graph onto a reference graph (RDKit substructure matches without
  uniquifying, so they include the automorphisms); with one graph they are its automorphisms.
- ``symmetric_rmsd``: probe conformers to one reference conformer over given maps.
- ``SymmetricRMSD``: all conformers of one RDKit molecule against each other (the conformer pipeline's selection).

Superposition is the Kabsch SVD with proper rotations only. Only the first ``max_maps`` maps RDKit enumerates are
tried: beyond that many the result is the minimum over those, an upper bound of the symmetric RMSD.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Caps on the atom maps tried per RMSD. SymmetricRMSD (conformer selection): more only tightens an upper bound,
# and selection is heuristic anyway. best_rmsd (COV/AMR metrics): RDKit's GetBestRMS tries 10⁶, but 10⁶ maps of
# ~30 atoms would take gigabytes as RDKit's tuples; 10⁵ is first passed by seven tert-butyl groups (6⁷ maps).
MAX_SYMMETRY_MAPS = 1000
METRIC_MAX_MAPS = 100_000
_MAPS_PER_CHUNK = 4096  # maps superposed at once: memory ~ chunk · conformers · 9 floats (the pipeline's fit in one)


def element_graph(atomic_numbers: Sequence[int], bonds: Iterable[tuple[int, int]]):
    """An RDKit graph of elements and connectivity only: atom k has element ``atomic_numbers[k]``, and every pair
    (i, j) of ``bonds`` (indices into ``atomic_numbers``) is a single bond; no charges, no hydrogens added.
    Raises RDKit's errors for an atom index out of range or a repeated bond."""
    from rdkit import Chem

    graph = Chem.RWMol()
    for z in atomic_numbers:
        graph.AddAtom(Chem.Atom(int(z)))
    for i, j in bonds:
        graph.AddBond(int(i), int(j), Chem.BondType.SINGLE)
    graph.UpdatePropertyCache(strict=False)
    return graph


def atom_maps(reference_graph, probe_graph, max_maps: int) -> np.ndarray:
    """Maps [K, h] int64 from the probe's atoms onto the reference's (``maps[k, a]``: the reference atom that probe atom
    ``a`` stands for), for graphs of h atoms each (``element_graph``): every substructure match of the probe graph
    in the reference graph, not uniquified (so they include the automorphisms), chirality ignored, at most
    ``max_maps`` (≥ 1) of them. K = 0 when the graphs do not match."""
    matches = reference_graph.GetSubstructMatches(probe_graph, uniquify=False, useChirality=False,
                                                  maxMatches=max_maps)
    return np.array(matches, dtype=np.int64).reshape(len(matches), probe_graph.GetNumAtoms())


def _min_over_maps(reference: np.ndarray, reference_sq, maps: np.ndarray, probes: np.ndarray,
                   probes_sq: np.ndarray) -> np.ndarray:
    """RMSD [P] from centred ``probes`` [P, h, 3] (squared norms ``probes_sq`` [P]) to the centred ``reference`` [h, 3]
    (squared norm ``reference_sq``) relabelled by each row of ``maps`` [K, h], K ≥ 1, minimised over the maps."""
    h = probes.shape[1]
    best = None
    for start in range(0, len(maps), _MAPS_PER_CHUNK):
        ref = reference[maps[start:start + _MAPS_PER_CHUNK]]  # [k, h, 3]: the reference relabelled by each map
        cov = np.einsum("khc,phd->kpcd", ref, probes)  # [k, P, 3, 3]
        sv = np.linalg.svd(cov, compute_uv=False)
        # a reflection would do better when det < 0: the proper rotation gives up the smallest singular value
        sign = np.sign(np.linalg.det(cov))
        trace = sv[..., 0] + sv[..., 1] + np.where(sign < 0, -1.0, 1.0) * sv[..., 2]
        msd = (reference_sq + probes_sq[None] - 2 * trace) / h
        rmsd = np.sqrt(np.clip(msd, 0, None)).min(axis=0)
        best = rmsd if best is None else np.minimum(best, rmsd)
    return best


def symmetric_rmsd(probe_positions: np.ndarray, reference_positions: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """RMSD [P] (Å) from each probe conformer to the reference conformer after optimal superposition, minimised over
    the atom ``maps`` (``atom_maps(reference_graph, probe_graph, ...)``).

    ``probe_positions`` [P, h, 3] and ``reference_positions`` [h, 3] in Å (any origin), ``maps`` [K, h] int64.
    Raises ValueError when there is no map or no atom (nothing to superpose)."""
    probes = np.asarray(probe_positions, dtype=np.float64)
    reference = np.asarray(reference_positions, dtype=np.float64)
    maps = np.asarray(maps, dtype=np.int64)
    if probes.ndim != 3 or reference.shape != probes.shape[1:] or maps.ndim != 2 or maps.shape[1] != len(reference):
        raise ValueError(f"positions [P, h, 3] and [h, 3] with maps [K, h] needed, got {list(probes.shape)}, "
                         f"{list(reference.shape)} and {list(maps.shape)}")
    if not len(maps) or not len(reference):
        raise ValueError("no atom map between the probe and the reference" if len(reference) else "no atoms")
    probes = probes - probes.mean(axis=1, keepdims=True)
    reference = reference - reference.mean(axis=0)
    return _min_over_maps(reference, (reference ** 2).sum(), maps, probes, (probes ** 2).sum(axis=(1, 2)))


class SymmetricRMSD:
    """Heavy-atom RMSD (Å) after optimal superposition, minimised over the heavy-atom graph's automorphisms, between
    conformers of one molecule (as RDKit's ``GetBestRMS``, vectorised over conformers).

    ``positions`` [P, n_atoms, 3] (Å) of the RDKit molecule ``mol``; automorphisms of the hydrogen-free graph
    (``element_graph``) are found once (``atom_maps``, at most ``max_maps``: beyond that many the RMSD is an upper
    bound). ``polar_hydrogens``: also count hydrogens bonded to N, O, S (for selection: rotamers of OH, NH and SH
    groups differ only there, so heavy atoms alone call them duplicates; benchmarks compare heavy atoms only).
    """

    def __init__(self, mol, positions: np.ndarray, polar_hydrogens: bool = False,
                 max_maps: int = MAX_SYMMETRY_MAPS):
        def counted(atom) -> bool:
            if atom.GetAtomicNum() > 1:
                return True
            return polar_hydrogens and any(b.GetAtomicNum() in (7, 8, 16) for b in atom.GetNeighbors())

        heavy = [a.GetIdx() for a in mol.GetAtoms() if counted(a)]
        x = np.asarray(positions, dtype=np.float64)[:, heavy]
        self.x = x - x.mean(axis=1, keepdims=True)  # [P, h, 3]
        self.sq = (self.x ** 2).sum(axis=(1, 2))  # [P]
        if len(heavy) < 2:
            self.maps = np.arange(len(heavy))[None]
            return
        where = {i: k for k, i in enumerate(heavy)}
        bonds = [(where[b.GetBeginAtomIdx()], where[b.GetEndAtomIdx()]) for b in mol.GetBonds()
                 if b.GetBeginAtomIdx() in where and b.GetEndAtomIdx() in where]
        graph = element_graph([mol.GetAtomWithIdx(i).GetAtomicNum() for i in heavy], bonds)
        maps = atom_maps(graph, graph, max_maps)
        self.maps = maps if len(maps) else np.arange(len(heavy))[None]

    def from_one(self, i: int) -> np.ndarray:
        """RMSD [P] from conformer ``i`` to every conformer."""
        if self.x.shape[1] < 2:
            return np.zeros(len(self.x))
        return _min_over_maps(self.x[i], self.sq[i], self.maps, self.x, self.sq)
