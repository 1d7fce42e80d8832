"""Ranking conformers by the diffusion model: the denoising error at low noise.

A conformer x that looks like the training data is one the model denoises well. The score of x is its ε-loss
(Ho et al. 2020, Eq. 14; the ε-objective the model was trained with) at a few small times, with fixed noise:

    score(x) = 1/(J·K) Σ_j Σ_k ‖ε̂(α_{t_j} x + σ_{t_j} ε_k, t_j) − ε_k‖² / (3n)

over J times t_j (the grid times whose σ_t is nearest to ``sigmas``, Å) and K noise draws ε_k [n, 3] (zero
centre of mass), the same draws for every conformer of the molecule (common random numbers: differences
between conformers are not hidden by the noise of the estimate). Lower is better. At low noise the ε-loss is,
up to constants, the variational bound's terms at those times (Kingma et al. 2021, Eq. 17), so the score is a
noisy, truncated estimate of −log p(x | graph): the diffusion models' analogue of an energy.

Invariances. The noise of atom i is the draw of its slot in a canonical order, and is expressed in a frame
built from the conformer's own atoms, so the score does not depend on how the conformer is posed or numbered:

- order: atoms by RDKit's symmetry class (``CanonicalRankAtoms(breakTies=False)``), ties (symmetry-equivalent
  atoms) by the sum of their distances to all atoms in this conformer, then by index;
- frame: the first three non-collinear heavy atoms a, b, c of that order (all atoms when there are fewer than
  three heavy ones): e₁ = (b − a)/‖b − a‖, e₂ = the part of c − a orthogonal to e₁, normalised, e₃ = e₁ × e₂;
  a draw ε_k is used as ε_k · Fᵀ with F = [e₁ e₂ e₃] (a proper rotation).

With an E(3)-equivariant denoiser (EGNN), rotating, translating or renumbering the conformer therefore leaves the
score unchanged (up to rounding), except for exact ties in the distance sums and linear molecules, whose frame
is not defined about their axis. A mirror image is scored with mirrored draws, so enantiomers' scores differ by
noise only (an E(3) model cannot tell them apart).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .refine import conformer_coordinates, model_inputs, time_for_sigma

__all__ = ["SCORE_SIGMAS", "canonical_atom_order", "conformer_frame", "score_conformers"]

SCORE_SIGMAS = (0.05, 0.1, 0.2)
"""σ (Å) of the default scoring times: low noise, where a refiner trained up to σ ≈ 0.5 Å knows the data."""


def canonical_atom_order(mol, positions: np.ndarray, classes: Sequence[int] | None = None) -> np.ndarray:
    """Atom indices [n] in the score's canonical order for one conformer ``positions`` [n, 3] (Å): symmetry class,
    then the sum of distances to all atoms (rounded to 1e-6 Å), then index. ``classes``: RDKit's
    ``CanonicalRankAtoms(mol, breakTies=False)``, computed when not given."""
    if classes is None:
        from rdkit import Chem

        classes = list(Chem.CanonicalRankAtoms(mol, breakTies=False))
    x = np.asarray(positions, dtype=np.float64)
    spread = np.round(np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)).sum(1), 6)
    return np.lexsort((np.arange(len(x)), spread, np.asarray(classes)))


def conformer_frame(positions: np.ndarray, order: np.ndarray, heavy: np.ndarray) -> np.ndarray:
    """[3, 3] proper rotation F = [e₁ e₂ e₃] (columns) built from the first non-collinear heavy atoms of ``order``
    (see the module docstring); ``heavy`` [n] bool. Rotating the conformer by R gives R F. For fewer than two
    distinct atoms: the identity; for collinear atoms, e₂ completes e₁ with the lab axis least parallel to it."""
    x = np.asarray(positions, dtype=np.float64)
    atoms = [int(i) for i in order if heavy[i]]
    if len(atoms) < 3:
        atoms = [int(i) for i in order]
    a = atoms[0]
    e1 = next(((x[i] - x[a]) / np.linalg.norm(x[i] - x[a]) for i in atoms[1:]
               if np.linalg.norm(x[i] - x[a]) > 1e-3), None)
    if e1 is None:
        return np.eye(3)
    e2 = None
    for i in atoms[1:]:
        v = x[i] - x[a]
        w = v - v.dot(e1) * e1
        if np.linalg.norm(w) > 1e-3:  # Å off the line a-b
            e2 = w / np.linalg.norm(w)
            break
    if e2 is None:  # linear: no frame about the axis
        axis = np.eye(3)[int(np.argmin(np.abs(e1)))]
        w = axis - axis.dot(e1) * e1
        e2 = w / np.linalg.norm(w)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


def score_conformers(model, mol, coordinates: np.ndarray | None = None, sigmas: Sequence[float] = SCORE_SIGMAS,
                     draws: int = 4, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Denoising-error scores [K] (float64, lower is better; mean squared ε error per coordinate) of K conformers of
    one molecule under a trained ``ConformerDiffusion`` (see the module docstring for the definition).

    Args:
        model: a ``ConformerDiffusion`` in eval mode (never changed).
        mol: a sanitised RDKit Mol with explicit hydrogens; its atom order is the coordinates' order.
        coordinates: [K, n, 3] conformers in Å; None takes every conformer of ``mol``.
        sigmas: the noise levels σ (Å) of the scoring times (each mapped to the nearest grid time; repeats
            count once); every time must lie within the model's training times (``config.t_max``).
        draws: K noise draws per time.
        seed: seeds the draws (``torch.Generator().manual_seed(seed)``); the same seed gives the same scores.
        batch_size: noised copies per model call.

    An untrained model scores everything about 1 (ε̂ ≈ 0); the exact denoiser of a point mass at x₀ scores x₀ 0.

    Raises ValueError for coordinates that do not fit, non-finite coordinates, draws or batch_size < 1, no σ, a σ
    outside the schedule or beyond ``t_max``, and for what ``refine.model_inputs`` refuses.
    """
    from rdkit import Chem

    n = mol.GetNumAtoms()
    coordinates = conformer_coordinates(mol, coordinates, "score", "conformer")
    if draws < 1 or batch_size < 1:
        raise ValueError(f"draws and batch_size must be at least 1, got {draws}, {batch_size}")
    if not len(sigmas):
        raise ValueError("give at least one scoring noise level (sigmas, Å)")
    cfg = model.config
    times = sorted({time_for_sigma(model.schedule, float(s)) for s in sigmas})
    if round(times[-1] * cfg.T) > cfg.t_max_index:
        raise ValueError(f"scoring at sigma = {max(sigmas)} Å needs t = {times[-1]:.3f}, beyond the times this "
                         f"model was trained on (t_max = {cfg.t_max})")
    types, node, edge = model_inputs(model, mol)
    device = types.device
    dtype = next(model.parameters()).dtype

    gen = torch.Generator().manual_seed(int(seed))
    eps0 = torch.randn(draws, n, 3, generator=gen, dtype=torch.float64).numpy()
    eps0 = eps0 - eps0.mean(1, keepdims=True)  # zero centre of mass, as the model's noise
    classes = list(Chem.CanonicalRankAtoms(mol, breakTies=False))
    heavy = np.array([a.GetAtomicNum() > 1 for a in mol.GetAtoms()])

    # every (conformer, time, draw) as one noised copy: x [C, n, 3], ε [C, n, 3], t [C]
    xs, noise, ts, owner = [], [], [], []
    for k, pos in enumerate(coordinates):
        x = pos - pos.mean(0)
        order = canonical_atom_order(mol, x, classes)
        frame = conformer_frame(x, order, heavy)
        slot = np.empty(n, dtype=np.int64)
        slot[order] = np.arange(n)            # atom order[j] takes draw row j
        eps = eps0[:, slot] @ frame.T         # [K, n, 3], in the conformer's frame
        for t in times:
            for e in eps:
                xs.append(x)
                noise.append(e)
                ts.append(t)
                owner.append(k)
    xs, noise = np.stack(xs), np.stack(noise)
    ts, owner = np.asarray(ts), np.asarray(owner)
    errors = np.empty(len(xs))
    with torch.no_grad():
        for start in range(0, len(xs), batch_size):
            sl = slice(start, start + batch_size)
            b = len(xs[sl])
            t = torch.as_tensor(ts[sl], dtype=torch.float64, device=device)
            x = torch.as_tensor(xs[sl], dtype=dtype, device=device)
            e = torch.as_tensor(noise[sl], dtype=dtype, device=device)
            alpha = model.schedule.alpha(t).to(dtype).view(-1, 1, 1)
            sigma = model.schedule.sigma(t).to(dtype).view(-1, 1, 1)
            mask = torch.ones(b, n, dtype=torch.bool, device=device)
            feats = model.node_features(types.expand(b, n), mask, dtype,
                                        None if node is None else node.expand(b, n, -1))
            edge_attr = None if edge is None else edge.to(dtype).expand(b, n, n, -1)
            eps_hat = model.eps_fn(mask, None, feats, edge_attr)(alpha * x + sigma * e, t)
            errors[sl] = ((eps_hat - e) ** 2).double().sum((1, 2)).cpu().numpy() / (3 * n)
    return np.bincount(owner, weights=errors, minlength=len(coordinates)) / (len(times) * draws)
