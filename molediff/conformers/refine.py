"""Refinement of given conformers by partial diffusion (SDEdit, Meng et al., ICLR 2022).

Each seed conformer x (ETKDG, force field, ...) is taken to a time t₀, z = α_{t₀} x + σ_{t₀} ε, and the reverse
process of a trained ``ConformerDiffusion`` runs from t₀ down to 0. t₀ is chosen by σ₀ (Å), the schedule's σ_t
(the noise standard deviation per coordinate of z): t₀ is the grid time whose σ_t is nearest to σ₀. A small σ₀
keeps the seed's conformation and lets the model correct local geometry.

With ``fresh_noise=False`` no ε is drawn (z = α_{t₀} x): the seed's own departure from the data (a force field's
bond lengths and angles, of order 0.05–0.3 Å) stands in for the noise of time t₀, and a deterministic sampler
(DDIM) moves it to the model's nearest data-like geometry. On QM9's validation molecules this beat SDEdit's fresh
noise at every σ₀ tried (scripts/bench_conformers.py, BENCHMARKS.md), so the pipeline uses it by default.

The core samplers (``molediff.diffusion.sample``) always start at t = 1. To run them from t₀ = i₀ / T this
module hands them the schedule's first i₀ + 1 log-SNR values as a schedule of its own (T' = i₀, so its
t' = 1 is t₀) and gives the model t = t' · i₀ / T: the log-SNR of the two agrees at every t, because both
interpolate the same table linearly in time. Any core sampler and spacing then works unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..diffusion import NoiseSchedule, q_sample, sample
from ..diffusion.objective import EpsFn

__all__ = ["time_for_sigma", "refine_time", "refine_positions", "refine_conformers", "sample_conformers",
           "load_refiner", "model_inputs"]


def time_for_sigma(schedule: NoiseSchedule, sigma0: float) -> float:
    """The grid time t₀ = i / T (i ≥ 1) whose σ_t is nearest to ``sigma0``.

    ValueError when ``sigma0`` lies outside [σ(1/T), σ(1)] (a refinement adds at least one step of noise).
    """
    t = torch.arange(1, schedule.T + 1, dtype=torch.float64) / schedule.T
    sig = schedule.sigma(t)
    if not float(sig[0]) <= float(sigma0) <= float(sig[-1]):
        raise ValueError(f"sigma0 must lie between {float(sig[0]):.4g} (one step) and {float(sig[-1]):.4g} "
                         f"(t = 1) for this schedule, got {sigma0}")
    return float(t[int((sig - float(sigma0)).abs().argmin())])


def refine_time(model, sigma0: float | None = None, t0: float | None = None) -> float:
    """The grid time t₀ = i / T (1 <= i <= T) a refinement starts from, given by ``sigma0`` (Å, the noise added:
    the nearest grid σ_t, ``time_for_sigma``) or by ``t0`` itself (rounded to the nearest grid time); exactly one
    of them. ``model`` is a ``ConformerDiffusion``.

    ValueError (one line) for both or neither, values outside the schedule, or a t₀ beyond the times the model
    was trained on (``config.t_max``).
    """
    cfg = model.config
    if (sigma0 is None) == (t0 is None):
        raise ValueError(f"give the start of refinement as sigma0 (Å) or as t0, not both or neither "
                         f"(got sigma0={sigma0}, t0={t0})")
    if sigma0 is not None:
        t = time_for_sigma(model.schedule, float(sigma0))
    else:
        i = round(float(t0) * cfg.T)
        if not 0.0 < float(t0) <= 1.0 or i < 1:
            raise ValueError(f"t0 must lie in (0, 1] and cover at least one grid step (t0 >= {0.5 / cfg.T:.3g} "
                             f"for T = {cfg.T}), got {t0}")
        t = i / cfg.T
    if round(t * cfg.T) > cfg.t_max_index:
        what = f"sigma0 = {sigma0} Å needs t0 = {t:.3f}" if sigma0 is not None else f"t0 = {t:.3f} lies"
        raise ValueError(f"{what}, beyond the times this model was trained on (t_max = {cfg.t_max})")
    return t


def load_refiner(refiner, device: str = "cpu"):
    """A ``ConformerDiffusion`` in eval mode from ``refiner``: a weights file, run directory or the NAME of shipped
    weights (loaded on ``device`` with ``molediff.training.weights.load_model``) or a model, returned as it is.

    FileNotFoundError for missing weights; ValueError for weights of another model class or a device this torch
    cannot use.
    """
    from .model import ConformerDiffusion

    if isinstance(refiner, ConformerDiffusion):
        return refiner
    if not isinstance(refiner, (str, os.PathLike)):
        raise ValueError(f"refiner must be a weights path or a ConformerDiffusion, got {type(refiner).__name__}")
    from ..training.weights import load_model

    return load_model(ConformerDiffusion, refiner, device=device)


def model_inputs(model, mol) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """What the model takes for ``mol`` (a sanitised RDKit Mol with explicit hydrogens, atom order kept), on the
    model's device: type indices [n] into ``config.vocabulary``, graph node features [n, G] and edge features
    [n, n, E] (None when the model takes none; ``molediff.conformers.graph``).

    ValueError for hydrogens that are not atoms, an element outside the model's vocabulary or more atoms than
    ``config.max_atoms``; ``graph.GraphError`` (a ValueError) for a bond type the graph features do not know.
    """
    from .graph import mol_graph

    cfg = model.config
    n = mol.GetNumAtoms()
    if not 1 <= n <= cfg.max_atoms:
        raise ValueError(f"the molecule has {n} atoms; this model takes 1..{cfg.max_atoms}")
    _explicit_hydrogens(mol)
    lookup = {int(z): k for k, z in enumerate(cfg.vocabulary)}
    missing = sorted({a.GetSymbol() for a in mol.GetAtoms() if a.GetAtomicNum() not in lookup})
    if missing:
        raise ValueError(f"elements {missing} are not in the model's vocabulary {tuple(cfg.vocabulary)}")
    device = next(model.parameters()).device
    types = torch.tensor([lookup[a.GetAtomicNum()] for a in mol.GetAtoms()], device=device)
    graph = mol_graph(mol) if (cfg.node_features or cfg.edge_features) else None
    node = None if graph is None or not cfg.node_features else torch.from_numpy(graph.node_features()).to(device)
    edge = None if graph is None or not cfg.edge_features else torch.from_numpy(graph.edge_features()).to(device)
    return types, node, edge


def refine_positions(eps_fn: EpsFn, positions: Tensor, mask: Tensor, schedule: NoiseSchedule, space, t0: float,
                     sampler: str = "ddim", steps: int | None = 20, seeds: Sequence[int] | None = None,
                     fresh_noise: bool = True, **sampler_options) -> Tensor:
    """SDEdit on a batch: noise ``positions`` to ``t0`` and run the core sampler ``sampler`` back to t = 0.

    ``fresh_noise=False`` draws no noise: z_t0 = α_t0 x, i.e. the seed's own error (a force field's or ETKDG's
    departure from the data) stands in for the noise of time t0; with DDIM (η = 0) the refinement is then
    deterministic.

    ``eps_fn(z_t, t) → ε̂`` is the model (``PointCloudDiffusion.eps_fn``), ``space`` its space (zero CoM).
    ``t0`` must be a grid time i₀ / T with i₀ ≥ 1; ``steps`` (capped at i₀; None: i₀) sampler steps from t0 to 0.
    Sample b uses ``torch.Generator().manual_seed(seeds[b])`` alone (default ``0..B-1``) for its initial noise and
    any sampler noise, so it does not depend on its batch.

    Shapes: positions [B, N, 3], mask [B, N] bool → [B, N, 3] with zero centre of mass, 0 at padding.
    """
    T = schedule.T
    i0 = round(float(t0) * T)
    if i0 < 1 or i0 > T or abs(i0 - float(t0) * T) > 1e-6:
        raise ValueError(f"t0 must be a grid time i / T with 1 <= i <= T={T}, got {t0}")
    if positions.dim() != 3 or positions.shape[-1] != 3 or tuple(positions.shape[:2]) != tuple(mask.shape):
        raise ValueError(f"positions must be [B, N, 3] with mask [B, N], got {tuple(positions.shape)} and "
                         f"{tuple(mask.shape)}")
    B = positions.shape[0]
    seeds = list(range(B)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != B:
        raise ValueError(f"got {len(seeds)} seeds for {B} conformers")
    steps = i0 if steps is None else min(int(steps), i0)
    generators = [torch.Generator(device=positions.device).manual_seed(s) for s in seeds]
    x = space.project(positions, mask)
    fresh = space.randn(x.shape, mask, generators, x.dtype, x.device) if fresh_noise else torch.zeros_like(x)
    z = q_sample(x, torch.full((B,), i0 / T, dtype=torch.float64, device=x.device), schedule, fresh)
    head = NoiseSchedule(schedule.table[:i0 + 1])  # t' ∈ [0, 1] here is t = t' · i0 / T of the model
    scale = i0 / T

    def eps_head(z_t: Tensor, t: Tensor) -> Tensor:
        return eps_fn(z_t, t * scale)

    return sample(sampler, eps_head, z, head, space, steps, mask, generators, **sampler_options)


def _explicit_hydrogens(mol) -> None:
    for atom in mol.GetAtoms():
        if atom.GetNumImplicitHs() or atom.GetNumExplicitHs():
            raise ValueError(f"atom {atom.GetIdx()} ({atom.GetSymbol()}) carries hydrogens that are not atoms; "
                             f"add them as atoms first (rdkit.Chem.AddHs)")


def conformer_coordinates(mol, coordinates, purpose: str, kind: str) -> np.ndarray:
    """``coordinates`` as float64 ``[K, n, 3]`` for ``mol`` (n atoms; ``[n, 3]`` is one conformer), or every
    conformer of ``mol`` when None. ValueError, naming ``purpose`` ("refine", "score") and the ``kind`` of
    coordinates, for a molecule without conformers, a shape that does not fit or non-finite values."""
    n = mol.GetNumAtoms()
    if coordinates is None:
        if not mol.GetNumConformers():
            raise ValueError(f"the molecule has no conformers to {purpose}; give coordinates [K, n, 3]")
        coordinates = np.stack([c.GetPositions() for c in mol.GetConformers()])
    coordinates = np.asarray(coordinates, dtype=np.float64)
    if coordinates.ndim == 2:
        coordinates = coordinates[None]
    if coordinates.ndim != 3 or coordinates.shape[1:] != (n, 3) or not len(coordinates):
        raise ValueError(f"coordinates must be [K, {n}, 3] for this molecule of {n} atoms, got "
                         f"{list(coordinates.shape)}")
    if not np.isfinite(coordinates).all():
        raise ValueError(f"{kind} coordinates contain NaN or infinite values")
    return coordinates


def refine_conformers(model, mol, coordinates: np.ndarray | None = None, sigma0: float | None = 0.1,
                      steps: int | None = 20, sampler: str = "ddim", seed: int = 0, batch_size: int = 32,
                      t0: float | None = None, fresh_noise: bool = True, passes: int = 1, bf16: bool = False,
                      inputs=None, **sampler_options) -> np.ndarray:
    """Refine K seed conformers of one molecule with a trained ``ConformerDiffusion`` (SDEdit from σ₀ Å).

    Args:
        model: a ``ConformerDiffusion``; used as it is (call ``model.eval()`` first), never changed.
        mol: a sanitised RDKit Mol with explicit hydrogens; its atom order is the coordinates' order.
        coordinates: [K, n, 3] seed conformers in Å; None takes every conformer of ``mol``.
        sigma0: the noise added to the seeds, as the schedule's σ at t₀ (``time_for_sigma``); the model must have
            been trained up to t₀ (``config.t_max``).
        t0: the start time itself instead of ``sigma0`` (``refine_time``; pass ``sigma0=None``).
        steps, sampler, sampler_options: the core sampler run from t₀ to 0 (``refine_positions``).
        fresh_noise: False starts from z_t₀ = α_t₀ x, drawing no noise (``refine_positions``).
        passes: refinements in a row, each from the previous one's output (iterated partial diffusion: one
            pass removes only part of a seed's error, since the model's ε̂ explains part of it, so the next pass
            starts closer to the data). With fresh noise, pass p draws it with seed ``seed + k + p·K``.
        bf16: run the model under bfloat16 autocast (about 2× faster on a CPU that computes bf16 natively,
            ``molediff.utils.native_bf16``; slower where it is emulated); coordinates stay float64.
        seed: conformer k is refined with seed ``seed + k`` whatever the batch size.
        batch_size: conformers per model call.
        inputs: ``model_inputs(model, mol)`` computed already (the pipeline reads each molecule's graph once).

    Returns [K, n, 3] float64 refined coordinates, each with its seed's centre of mass.
    Raises ValueError for hydrogens that are not atoms, an element outside the model's vocabulary, too many
    atoms, coordinates that do not fit the molecule, σ₀ beyond the model's training times, and
    ``graph.GraphError`` for a graph the model cannot read.
    """
    n = mol.GetNumAtoms()
    coordinates = conformer_coordinates(mol, coordinates, "refine", "seed")
    types, node, edge = model_inputs(model, mol) if inputs is None else inputs
    t0 = refine_time(model, sigma0, t0)
    if batch_size < 1 or passes < 1:
        raise ValueError(f"batch_size and passes must be at least 1, got {batch_size} and {passes}")

    device = types.device
    dtype = next(model.parameters()).dtype
    centres = coordinates.mean(1, keepdims=True)
    K = len(coordinates)
    out = np.empty_like(coordinates)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, K, batch_size):
            chunk = coordinates[start:start + batch_size]
            b = len(chunk)
            mask = torch.ones(b, n, dtype=torch.bool, device=device)
            feats = model.node_features(types.expand(b, n), mask, dtype,
                                        None if node is None else node.expand(b, n, -1))
            edge_attr = None if edge is None else edge.to(dtype).expand(b, n, n, -1)
            eps = model.eps_fn(mask, None, feats, edge_attr)
            x = torch.as_tensor(chunk, dtype=dtype, device=device)
            for p in range(passes):
                first = seed + start + p * K
                x = refine_positions(eps, x, mask, model.schedule, model.space, t0, sampler, steps,
                                     range(first, first + b), fresh_noise=fresh_noise, **sampler_options).to(dtype)
            out[start:start + b] = x.double().cpu().numpy()
    return out + centres


def sample_conformers(model, mol, count: int, steps: int | None = None, sampler: str = "ddim", seed: int = 0,
                      batch_size: int = 32, **sampler_options) -> np.ndarray:
    """``count`` conformers of ``mol`` from the model's full reverse process, started from N(0, I) at t = 1.

    The model must have been trained on all times (``config.t_max = 1``); ``mol`` as for ``refine_conformers``.
    Conformer k uses seed ``seed + k`` alone. ``steps``: sampler steps from t = 1 to 0 (None: all T).

    Returns [count, n, 3] float64 coordinates (Å, zero centre of mass). ValueError for a model trained only on
    low noise (t_max < 1), count < 1 or batch_size < 1, and for what ``model_inputs`` refuses.
    """
    cfg = model.config
    if cfg.t_max < 1.0:
        raise ValueError(f"sampling from noise needs a model trained on all noise levels (t_max = 1); this one was "
                         f"trained up to t_max = {cfg.t_max} (a refiner: use it on seed conformers)")
    if count < 1 or batch_size < 1:
        raise ValueError(f"count and batch_size must be at least 1, got {count}, {batch_size}")
    types, node, edge = model_inputs(model, mol)
    n = mol.GetNumAtoms()
    dtype = next(model.parameters()).dtype
    out = np.empty((count, n, 3), dtype=np.float64)
    for start in range(0, count, batch_size):
        b = min(batch_size, count - start)
        mask = torch.ones(b, n, dtype=torch.bool, device=types.device)
        x = model.sample(types.expand(b, n), mask, sampler, steps, range(seed + start, seed + start + b),
                         edge_attr=None if edge is None else edge.to(dtype).expand(b, n, n, -1),
                         node_features=None if node is None else node.expand(b, n, -1), **sampler_options)
        out[start:start + b] = x.double().cpu().numpy()
    return out
