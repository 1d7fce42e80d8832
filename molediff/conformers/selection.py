"""Choosing conformers from candidates: greedy farthest-point (max-min) ordering, the selection rules of the pipeline
(``select_conformers``: diverse, energy-ordered pruning, model score, embedding order) and the removal of
near-copies from an output (``distinct_conformers``). Distances are the symmetry-aware RMSD between conformers of
one molecule, ``molediff.chem.rmsd.SymmetricRMSD`` (at most ``chem.rmsd.MAX_SYMMETRY_MAPS`` automorphisms)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..chem.rmsd import SymmetricRMSD  # the one symmetric RMSD; scripts and tests import it from here too

SELECT_METHODS = ("diverse", "energy", "none", "model")
MODEL_FRACTION = 1 / 3  # select="model": the best-scored third of the candidates is what farthest-point picks from
DEFAULT_PRUNE_RMSD = 0.5  # Å: select="energy" keeps no two conformers closer than this
DEFAULT_DISTINCT_RMSD = 0.25  # Å: conformers this close count as one (relaxed minima; near-copies in the output)


def farthest_point_order(rmsd: SymmetricRMSD, candidates: Sequence[int], n: int,
                         start: int | Sequence[int], stop_within: float | None = None) -> list[int]:
    """Greedy max-min selection of ``n`` of ``candidates`` (indices into rmsd's conformers), beginning at ``start``
    (one candidate, or several chosen already, which lead the result, and need not be among ``candidates``); ties
    go to the earlier candidate (callers list them by energy). ``stop_within`` (Å): stop early once every
    candidate left lies within this RMSD of one chosen (only duplicates remain)."""
    chosen = [int(start)] if isinstance(start, (int, np.integer)) else [int(c) for c in start]
    taken = set(chosen)
    cand = chosen + [int(c) for c in candidates if int(c) not in taken]
    dmin = np.min([rmsd.from_one(c)[cand] for c in chosen], axis=0)
    for c in chosen:
        dmin[cand.index(c)] = -1.0
    while len(chosen) < min(n, len(cand)):
        k = int(np.argmax(dmin))
        if stop_within is not None and dmin[k] <= stop_within:
            break
        chosen.append(cand[k])
        dmin = np.minimum(dmin, rmsd.from_one(cand[k])[cand])
        for c in chosen:
            dmin[cand.index(c)] = -1.0
    return chosen


def select_conformers(mol, positions: np.ndarray, energies: Sequence[float] | None, n: int, select: str = "diverse",
                      energy_window: float = 10.0, scores: Sequence[float] | None = None,
                      model_fraction: float = MODEL_FRACTION, prune_rmsd: float = DEFAULT_PRUNE_RMSD,
                      unrelaxed: np.ndarray | None = None, distinct_rmsd: float = DEFAULT_DISTINCT_RMSD) -> list[int]:
    """Indices of the ``n`` conformers chosen from candidates ``positions`` [P, n_atoms, 3] (Å) of ``mol``.

    ``energies`` [P] in kcal/mol or None. ``"none"``: the first n.
    ``"energy"`` (needs energies): energy-ordered RMSD pruning, the usual way to reduce a conformer ensemble:
    candidates from the lowest energy up, each kept unless it lies within ``prune_rmsd`` Å (the RMSD below) of one
    kept already, until n are kept.
    ``"diverse"``: candidates within ``energy_window`` of the lowest (topped up with the next lowest if fewer
    than n), then farthest-point sampling on symmetry-aware RMSD over heavy atoms and polar hydrogens (so OH / NH
    rotamers count as distinct) starting from the lowest-energy candidate (the first without energies); ties go
    to the lower energy. With ``unrelaxed`` it stops once every candidate left lies within ``distinct_rmsd`` Å of
    one chosen (only duplicates of the same minimum remain).
    Slots left open are topped up by farthest-point sampling: from ``unrelaxed`` [Q, n_atoms, 3] when given
    (the candidates before force-field relaxation: a small molecule's candidates collapse onto a few minima of
    the force field, and its unrelaxed ones keep the other rotamers and puckers), then from the remaining
    candidates. Indices ≥ P refer to ``unrelaxed`` (index P + q).
    ``"model"``: ``scores`` [P] (lower is better: ``scoring.score_conformers``); the best-scored
    max(n, ⌈model_fraction · P⌉) candidates, then farthest-point sampling on the same RMSD among them starting
    from the best-scored one; ties go to the better score (``unrelaxed`` is not used).
    """
    count = len(positions)
    if select == "none":
        return list(range(min(n, count)))
    if select == "model":
        if scores is None or len(scores) != count:
            raise ValueError(f"select='model' needs one model score per candidate ({count})")
        if not 0.0 < model_fraction <= 1.0:
            raise ValueError(f"model_fraction must lie in (0, 1], got {model_fraction}")
        best = [int(k) for k in np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")]
        best = best[:max(n, int(np.ceil(model_fraction * count - 1e-9)))]
        rmsd = SymmetricRMSD(mol, np.asarray(positions)[best], polar_hydrogens=True)
        return [best[k] for k in farthest_point_order(rmsd, range(len(best)), n, start=0)]
    if select not in ("energy", "diverse"):
        raise ValueError(f"select must be one of {', '.join(SELECT_METHODS)}, got {select!r}")
    if select == "energy":
        if energies is None:
            raise ValueError("select='energy' needs energies")
        if not prune_rmsd >= 0:
            raise ValueError(f"prune_rmsd must be >= 0 (Å), got {prune_rmsd}")
    if not distinct_rmsd >= 0:
        raise ValueError(f"distinct_rmsd must be >= 0 (Å), got {distinct_rmsd}")
    order = list(np.argsort(energies, kind="stable")) if energies is not None else list(range(count))
    order = [int(k) for k in order]
    extra = 0 if unrelaxed is None else len(unrelaxed)
    stack = np.asarray(positions)[order]
    rmsd = SymmetricRMSD(mol, stack, polar_hydrogens=True)  # rows: candidates in energy order
    if select == "energy":
        kept: list[int] = []
        dmin = np.full(count, np.inf)   # RMSD from each candidate to the nearest kept one
        for k in range(count):
            if len(kept) == n:
                break
            if dmin[k] > prune_rmsd:
                kept.append(k)
                dmin = np.minimum(dmin, rmsd.from_one(k))
    else:
        inside = count
        if energies is not None:
            inside = max(n, sum(1 for k in order if energies[k] <= energies[order[0]] + energy_window))
        kept = farthest_point_order(rmsd, range(min(inside, count)), n, start=0,
                                    stop_within=distinct_rmsd if extra else None)
    if len(kept) < n and extra:   # only now the unrelaxed rows: most larger molecules never need them
        stack = np.concatenate([stack, np.asarray(unrelaxed, dtype=stack.dtype).reshape(extra, *stack.shape[1:])])
        rmsd = SymmetricRMSD(mol, stack, polar_hydrogens=True)
        kept = farthest_point_order(rmsd, range(count, count + extra), n, start=kept)
    if len(kept) < min(n, count):   # too few distinct ones: the farthest of the rest
        kept = farthest_point_order(rmsd, range(count), n, start=kept)
    return [order[k] if k < count else k for k in kept]


def distinct_conformers(mol, positions: np.ndarray, threshold: float) -> list[int]:
    """Indices of the conformers ``positions`` [K, n_atoms, 3] (Å) of ``mol`` to keep when near-copies go: in order,
    each one unless it lies within ``threshold`` Å (RMSD over heavy atoms and polar hydrogens, ``SymmetricRMSD``) of
    one kept before it. ``threshold`` 0 keeps all."""
    if threshold <= 0 or len(positions) < 2:
        return list(range(len(positions)))
    rmsd = SymmetricRMSD(mol, np.asarray(positions), polar_hydrogens=True)
    keep: list[int] = []
    for k in range(len(positions)):
        if not keep or rmsd.from_one(k)[keep].min() >= threshold:
            keep.append(k)
    return keep
