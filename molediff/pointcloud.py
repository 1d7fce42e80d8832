"""The point-cloud layer: what every coordinate domain (molecules, conformers, proteins) shares.

A sample is a cloud of N points (atoms, Cα atoms) in 3-D, stored densely as ``[B, N, ·]`` with a node mask.
The diffused state is ``z = [coordinates | diffused node features]`` of shape ``[B, N, 3 + D]``: coordinates
live in the zero-centre-of-mass space (translation is not modelled), the D feature channels are ordinary
masked channels (EDM's one-hot atom types; D = 0 when only coordinates diffuse). The denoiser may also be
conditioned on *given* (clean, never noised) node features ``[B, N, G]``, edge features ``[B, N, N, E]``
and a context vector ``[B, C]``; its node input is ``[diffused | given]`` and its ε for the features is
read from the first D output channels.

Optionally K edge channels diffuse too (``diffused_edge_features = K > 0``; e.g. one-hot bond orders, as JODO,
Huang et al. 2023, diffuses them): a symmetric block ``[B, N, N, K]``, zero on the diagonal and at padding,
noised with the same schedule (α_t, σ_t) as the nodes. It is flattened into the one state
``[B, N, 3 + D + N·K]`` of the core's ``ZeroCoMGraphSpace`` (row i: node i, then its edges to every node), so
every sampler runs unchanged. The denoiser's edge input is ``[diffused | given]`` edges and it returns a third
output, ε for the edges, of which the first K channels are read. With K = 0 (every model before this) the state,
the space (``ZeroCoMSpace``), the noise draws and the loss are exactly what they were.

:class:`PointCloudDiffusion` binds a denoiser and a schedule to the shared core: the ε-closure the samplers
call, the per-sample ε-loss, sampling with one random generator per sample (a sample never depends on its
batch), the replacement guide for inpainting (Lugmayr et al. 2022, without resampling), and
:meth:`~PointCloudDiffusion.sample_many`, which draws many samples in batches of similar size to cut padding.
A domain subclasses it and adds only its encoding (atom types, residue features) and decoding.

Many samples, one door: :func:`sample_seeds` says which seed sample i uses (``seeds[i]``, else ``first + i``),
:func:`seed_generators` turns seeds into generators, and :func:`sample_by_seed` is the one seeded batching loop
(``PointCloudDiffusion.sample_many`` and the protein angle model call it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .diffusion import (
    SCHEDULES,
    NoiseSchedule,
    ZeroCoMGraphSpace,
    ZeroCoMSpace,
    eps_from_v,
    epsilon_loss,
    make_schedule,
    q_sample,
    sample,
    truncated_snr_weight,
)
from .nn import build_denoiser, check_denoiser_config
from .utils import build_config, progress

__all__ = ["PointCloudConfig", "PointCloudDiffusion", "draw_sizes", "node_mask", "sample_by_seed", "sample_seeds",
           "seed_generators", "size_histogram", "unpad_points"]


PREDICTIONS = ("eps", "v")


def size_histogram(sizes) -> dict[int, int]:
    """{size: number of samples} of a training set (atoms per molecule, residues per chain)."""
    values, freq = torch.unique(torch.as_tensor(sizes, dtype=torch.long).flatten(), return_counts=True)
    return {int(v): int(f) for v, f in zip(values.tolist(), freq.tolist())}


def draw_sizes(histogram: dict[int, int], n: int, generator: torch.Generator | None = None,
               what: str = "size") -> Tensor:
    """``n`` sizes ``[n]`` drawn with the frequencies of ``histogram`` (as EDM draws atom counts).

    ValueError when the histogram is empty.
    """
    if not histogram:
        raise ValueError(f"this model has no {what} histogram; give the {what}s explicitly")
    sizes = torch.tensor(sorted(histogram), dtype=torch.long)
    probs = torch.tensor([histogram[k] for k in sorted(histogram)], dtype=torch.float64)
    return sizes[torch.multinomial(probs, n, replacement=True, generator=generator)]


@dataclass(frozen=True)
class PointCloudConfig:
    """What every point-cloud model config holds: the noise schedule, the conditioning width and the denoiser.

    A domain's model config subclasses it, adds its own fields and is saved beside the weights (``to_dict``)
    and read back (``from_dict``), so a model can always be rebuilt from its weights file.

    Attributes:
        schedule, T, schedule_options: the noise schedule (``molediff.diffusion.make_schedule``).
        context_features: C, per-sample conditioning channels (0: unconditional).
        snr_clip: ``(low, high)`` weighs the ε-loss by clip(SNR, low, high) / SNR, i.e. the x̂-loss by
            clip(SNR, low, high) (``molediff.diffusion.truncated_snr_weight``; EQGAT-diff uses (0.05, 1.5),
            Min-SNR-5 is (0, 5)); None: EDM's unweighted ε-loss.
        denoiser: ``{"name": "egnn" | "e3nn", **fields}``; the widths in ``denoiser_set_by_model`` are filled
            in by the model from its data and must not be given.
        prediction: what the network's output F is. ``eps``: ε̂ = F (EDM). ``v``: F predicts
            v = α_t ε − σ_t x (Salimans & Ho 2022, §4), read as ε̂ = σ_t z_t + α_t F; the objective stays the
            ε-loss. ``v`` gives ε̂ → z_t as α_t → 0 whatever F is, which a network that sees only local
            neighbourhoods (a radius graph) cannot learn on its own: ε ≈ z_t at high noise is a global
            quantity (each point's offset from the centre).
    """

    schedule: str = "polynomial"
    T: int = 1000
    schedule_options: dict = field(default_factory=lambda: {"precision": 1e-5})
    context_features: int = 0
    snr_clip: tuple[float, float] | None = None
    denoiser: dict = field(default_factory=lambda: {"name": "egnn", "hidden": 256, "layers": 9})
    prediction: str = "eps"

    denoiser_set_by_model: ClassVar[tuple[str, ...]] = ("in_node_features", "context_features")

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {self.schedule!r}; choose one of {sorted(SCHEDULES)}")
        if self.T < 1 or self.context_features < 0:
            raise ValueError(f"T must be >= 1 and context_features >= 0, got {self.T}, {self.context_features}")
        check_denoiser_config(self.denoiser, fixed=self.denoiser_set_by_model)
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.snr_clip is not None:
            if len(self.snr_clip) != 2:
                raise ValueError(f"snr_clip must be [low, high] or null, got {self.snr_clip!r}")
            truncated_snr_weight(*self.snr_clip)  # checks the bounds

    def build_loss_weighting(self) -> Callable[[Tensor], Tensor] | None:
        return None if self.snr_clip is None else truncated_snr_weight(*self.snr_clip)

    def build_schedule(self) -> NoiseSchedule:
        return make_schedule(self.schedule, T=self.T, **self.schedule_options)

    def build_denoiser(self, in_node_features: int, **settings) -> nn.Module:
        """The denoiser with the settings the model fixes (node features, context, e.g. edge features or a graph)."""
        return build_denoiser({**self.denoiser, "in_node_features": in_node_features,
                               "context_features": self.context_features, **settings})

    def to_dict(self) -> dict:
        """JSON-ready data (tuples → lists, integer keys → strings); ``from_dict`` reads it back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict):
        """From a YAML ``model`` section or stored metadata; ValueError naming unknown keys or bad values."""
        return build_config(cls, d, "model.")


def node_mask(counts: Sequence[int] | Tensor, max_nodes: int, device=None) -> Tensor:
    """Node mask ``[B, max(counts)]`` (True for real points) from per-sample point counts ``[B]``.

    ValueError when ``counts`` is empty or a count lies outside ``1..max_nodes``.
    """
    counts = torch.as_tensor(counts, dtype=torch.long).flatten()
    if counts.numel() == 0:
        raise ValueError("nothing to sample: no atom counts given")
    if int(counts.min()) < 1 or int(counts.max()) > max_nodes:
        raise ValueError(f"atom counts must lie in 1..{max_nodes}, got {int(counts.min())}..{int(counts.max())}")
    n = int(counts.max())
    return torch.arange(n, device=device)[None] < counts.to(device)[:, None]


def sample_seeds(count: int, seeds: Sequence[int] | None = None, first: int = 0, what: str = "samples") -> list[int]:
    """The seed of each of ``count`` samples: ``seeds[i]`` as given, else ``first + i``; the one place a sample's
    seed (its identity: the name a domain gives it, the noise it draws) is decided.

    ValueError when ``seeds`` does not hold ``count`` entries (``what`` names the samples in the message).
    """
    seeds = list(range(first, first + count)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} {what}")
    return seeds


def seed_generators(seeds: Sequence[int], device=None) -> list[torch.Generator]:
    """One generator per sample, so that a sample depends on its seed alone, not on its batch."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


class PointCloudDiffusion(nn.Module):
    """Diffusion of point coordinates (zero CoM) plus ``diffused_features`` node channels on the shared core.

    Args:
        denoiser: a backbone with the :class:`~molediff.nn.DenoiserBase` contract
            ``denoiser(pos, h, t, mask, context, edge_attr) → (eps_pos, eps_h)``; its ``in_node_features``
            must equal ``diffused_features`` plus the width of the given node features.
        schedule: the noise schedule (``molediff.diffusion``).
        diffused_features: D, node feature channels that are diffused together with the coordinates.
        max_nodes: the largest point count accepted when sampling (a model trained on small clouds says so).
        loss_weighting: w(λ) of the ε-loss (None: unweighted).
        prediction: ``eps`` or ``v``, the meaning of the denoiser's output (``PointCloudConfig.prediction``).
        diffused_edge_features: K, edge channels diffused with the nodes (0: none). The denoiser must then take
            ``K + E`` edge features (``[diffused | given]``) and return ``(eps_pos, eps_h, eps_edges)`` with
            ``eps_edges`` [B, N, N, ≥ K].
        edge_loss_weight: λ_e, the weight of the edge term of the ε-loss (see :meth:`loss`).
    """

    # What a domain calls one sample, in the seed-count error ("got 3 seeds for 4 chains") and the progress bar
    # of sample_many.
    sample_noun: ClassVar[str] = "samples"
    progress_desc: ClassVar[str] = "sampling"

    def __init__(self, denoiser: nn.Module, schedule: NoiseSchedule, diffused_features: int, max_nodes: int,
                 loss_weighting: Callable[[Tensor], Tensor] | None = None, prediction: str = "eps",
                 diffused_edge_features: int = 0, edge_loss_weight: float = 1.0):
        super().__init__()
        if diffused_features < 0 or max_nodes < 1:
            raise ValueError(f"diffused_features must be >= 0 and max_nodes >= 1, got {diffused_features}, "
                             f"{max_nodes}")
        if diffused_edge_features < 0 or edge_loss_weight < 0:
            raise ValueError(f"diffused_edge_features and edge_loss_weight must be >= 0, got "
                             f"{diffused_edge_features}, {edge_loss_weight}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.prediction = prediction
        self.denoiser = denoiser
        self.schedule = schedule
        self.diffused_edge_features = diffused_edge_features
        self.edge_loss_weight = edge_loss_weight
        self.space = (ZeroCoMSpace(com_dims=3) if not diffused_edge_features else
                      ZeroCoMGraphSpace(3, 3 + diffused_features, diffused_edge_features))
        self.diffused_features = diffused_features
        self.max_nodes = max_nodes
        self.loss_weighting = loss_weighting

    @property
    def state_dim(self) -> int:
        """Node channels of the diffused state: 3 coordinates + D features."""
        return 3 + self.diffused_features

    def state_channels(self, num_nodes: int) -> int:
        """Width of the state's last axis for ``num_nodes`` padded nodes: 3 + D, plus N·K with diffused edges."""
        return self.state_dim + num_nodes * self.diffused_edge_features

    # -- the ε-model ----------------------------------------------------------------------------------
    def eps_fn(self, mask: Tensor, context: Tensor | None = None, given_features: Tensor | None = None,
               edge_attr: Tensor | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """Bind the mask and the conditioning: returns ``eps(z_t, t) → ε̂`` for the core's samplers and loss.

        Shapes:
            mask: [B, N] bool, context: [B, C], given_features: [B, N, G], edge_attr: [B, N, N, E];
            z_t: [B, N, 3 + D (+ N·K)], t: [B] → ε̂: same shape as z_t
        """
        d = self.diffused_features
        if self.diffused_edge_features:
            return self._graph_eps_fn(mask, context, given_features, edge_attr)

        def net(z: Tensor, t: Tensor) -> Tensor:
            h = z[..., 3:]
            if given_features is not None:
                h = torch.cat([h, given_features.to(z.dtype)], -1) if d else given_features.to(z.dtype)
            out_pos, out_h = self.denoiser(z[..., :3], h, t, mask, context, edge_attr)
            return torch.cat([out_pos, out_h[..., :d]], -1) if d else out_pos

        return eps_from_v(net, self.schedule) if self.prediction == "v" else net

    def _graph_eps_fn(self, mask: Tensor, context: Tensor | None, given_features: Tensor | None,
                      edge_attr: Tensor | None) -> Callable[[Tensor, Tensor], Tensor]:
        """``eps_fn`` with diffused edges: split the state, run the denoiser on ``[diffused | given]`` node and
        edge features, join ``[ε_pos | ε_h[:D]]`` and ``ε_edges[..., :K]`` back into one state."""
        d, k = self.diffused_features, self.diffused_edge_features
        space = self.space

        def net(z: Tensor, t: Tensor) -> Tensor:
            nodes, edges = space.split(z)
            h = nodes[..., 3:]
            if given_features is not None:
                h = torch.cat([h, given_features.to(z.dtype)], -1) if d else given_features.to(z.dtype)
            if edge_attr is not None:
                edges = torch.cat([edges, edge_attr.to(z.dtype)], -1)
            out = self.denoiser(nodes[..., :3], h, t, mask, context, edges)
            if len(out) != 3:
                raise ValueError("a model with diffused edges needs a denoiser that returns (eps_pos, eps_h, "
                                 "eps_edges): set its edge_out_features")
            out_pos, out_h, out_edges = out
            out_nodes = torch.cat([out_pos, out_h[..., :d]], -1) if d else out_pos
            return space.join(out_nodes, out_edges[..., :k])

        return eps_from_v(net, self.schedule) if self.prediction == "v" else net

    def loss(self, x: Tensor, mask: Tensor, context: Tensor | None = None, given_features: Tensor | None = None,
             edge_attr: Tensor | None = None, generator: torch.Generator | None = None,
             return_x0: bool = False, t: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Per-sample ε-loss ``[B]``: w(λ_t) ‖ε̂ − ε‖² averaged over the sample's real entries (EDM's l2 loss;
        w = 1 unless ``loss_weighting`` is set).

        With K diffused edge channels the loss is ``L_nodes + λ_e · L_edges``: L_nodes the mean over the real
        nodes' 3 + D channels as above, L_edges the mean of w(λ_t) ‖ε̂ − ε‖² over the K channels of the ordered
        pairs (i, j), i ≠ j, of real nodes (n(n − 1) K entries; a one-node sample has no edge term), λ_e =
        ``edge_loss_weight``.

        Shapes: x (clean state) [B, N, 3 + D (+ N·K)], mask [B, N] → [B]. ``return_x0=True`` also returns the
        clean estimate x̂ (shape of x) and the times t [B] (for a domain's auxiliary losses). ``t`` [B] (float64
        grid times) replaces the uniform draw over all times, e.g. with ``sample_time(..., highest=...)``.
        """
        if x.dim() != 3 or x.shape[-1] != self.state_channels(x.shape[1]):
            k = f" + N·{self.diffused_edge_features}" if self.diffused_edge_features else ""
            raise ValueError(f"the state must have 3 + {self.diffused_features}{k} channels, got "
                             f"{tuple(x.shape)}")
        out = epsilon_loss(self.eps_fn(mask, context, given_features, edge_attr), x, self.schedule, self.space,
                           mask, t=t, generator=generator, weighting=self.loss_weighting, return_x0=return_x0)
        err = out[0] if return_x0 else out
        n = mask.sum(1)
        if not self.diffused_edge_features:
            per_sample = err.flatten(1).sum(1) / (n * err.shape[-1]).clamp(min=1)
        else:
            nodes, edges = self.space.split(err)
            per_sample = nodes.flatten(1).sum(1) / (n * nodes.shape[-1]).clamp(min=1)
            pairs = (n * (n - 1) * self.diffused_edge_features).clamp(min=1)
            per_sample = per_sample + self.edge_loss_weight * edges.flatten(1).sum(1) / pairs
        return (per_sample, out[1], out[2]) if return_x0 else per_sample

    # -- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_state(self, counts: Sequence[int] | Tensor, sampler: str = "ddpm", steps: int | None = None,
                     seeds: Sequence[int] | None = None, context: Tensor | None = None,
                     given_features: Tensor | None = None, edge_attr: Tensor | None = None,
                     fixed_positions: Tensor | None = None, fixed_mask: Tensor | None = None,
                     show_progress: bool = False, **sampler_options) -> tuple[Tensor, Tensor]:
        """Draw one clean state per entry of ``counts`` with the core sampler ``sampler``.

        ``seeds[i]`` seeds sample i (default ``0..B-1``). Inpainting: ``fixed_positions [B, N, 3]`` with
        ``fixed_mask [B, N]`` holds the marked points' coordinates (up to a common translation) while the
        rest is sampled. Conditioning tensors must be padded to ``N = max(counts)``.

        Returns ``(x, mask)``: x [B, N, 3 + D (+ N·K)] (coordinates with zero CoM; with diffused edges
        ``self.space.split(x)`` gives the nodes and the symmetric edge block), mask [B, N] bool.
        Raises ValueError for counts outside ``1..max_nodes``, a seed count that does not match, or
        inconsistent inpainting inputs.
        """
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        mask = node_mask(counts, self.max_nodes, device)
        B, N = mask.shape
        seeds = sample_seeds(B, seeds, what=self.sample_noun)
        if given_features is not None and tuple(given_features.shape[:2]) != (B, N):
            raise ValueError(f"given_features must be [B, N, G] with [B, N] = [{B}, {N}], got "
                             f"{tuple(given_features.shape)}")
        gens = seed_generators(seeds, device)
        guide = None
        if fixed_positions is not None or fixed_mask is not None:
            if fixed_positions is None or fixed_mask is None:
                raise ValueError("inpainting needs both fixed_positions [B, N, 3] and fixed_mask [B, N]")
            if tuple(fixed_positions.shape) != (B, N, 3) or tuple(fixed_mask.shape) != (B, N):
                raise ValueError(f"fixed_positions must be [B, N, 3] = [{B}, {N}, 3] and fixed_mask [{B}, {N}]")
            fixed_mask = fixed_mask.to(device)
            if bool((fixed_mask & ~mask).any()):
                raise ValueError("fixed_mask marks atoms beyond a molecule's atom count")
            guide = self.inpainting_guide(fixed_positions.to(device, dtype), fixed_mask, mask, gens)
        eps = self.eps_fn(mask, context, None if given_features is None else given_features.to(device),
                          None if edge_attr is None else edge_attr.to(device))
        z = self.space.randn((B, N, self.state_channels(N)), mask, gens, dtype, device)
        x = sample(sampler, eps, z, self.schedule, self.space, steps, mask, gens, show_progress, guide=guide,
                   **sampler_options)
        return x, mask

    def sample_many(self, sizes: Sequence[int] | Tensor, seeds: Sequence[int], batch_size: int,
                    show_progress: bool = False, split: Callable[[Any, list[int]], Sequence] | None = None,
                    **sample_options) -> list:
        """Many samples in batches of similar size, one result per sample in input order (:func:`sample_by_seed`
        over the domain's ``sample(sizes, seeds=..., show_progress=..., **sample_options)``).

        ``split(batch output, batch seeds)`` turns one batch into one result per sample; by default the output
        ``(coords [B, N, 3], mask [B, N])`` becomes ``[n_i, 3]`` float32 arrays (:func:`unpad_points`). Sample i
        depends on ``seeds[i]`` alone. ValueError when the seed count does not match ``sizes`` [M].
        """
        return sample_by_seed(self.sample, sizes, seeds, batch_size, split or unpad_points, show_progress,
                              desc=self.progress_desc, what=self.sample_noun, **sample_options)

    def inpainting_guide(self, known: Tensor, known_mask: Tensor, mask: Tensor, generators):
        """Replacement guide (Lugmayr et al. 2022, without resampling): after every sampler update the known
        points are set to their forward-noised coordinates α_t x + σ_t ε.

        Translation is free in the zero-CoM space, so the known block is shifted as a whole to keep the
        state's centre of mass at zero with the free points left where the sampler put them; at t = 0 the
        known coordinates go in exactly. Diffused features of the known points are sampled, not fixed.

        Shapes: known [B, N, 3], known_mask [B, N] bool, mask [B, N] bool → guide(z [B, N, 3 + D], t [B])
        """
        km = known_mask.unsqueeze(-1).to(known.dtype)
        free = mask.unsqueeze(-1).to(known.dtype) * (1 - km)
        n_known = km.sum(1, keepdim=True).clamp(min=1)
        coordinates = ZeroCoMSpace(com_dims=3)   # the known points' noise: coordinates only, also with edges

        def guide(z: Tensor, t: Tensor) -> Tensor:
            if bool((t == 0).all()):
                noisy = known
            else:
                noisy = q_sample(known, t, self.schedule,
                                 coordinates.randn(known.shape, mask, generators, z.dtype, z.device))
            pos = z[..., :3]
            shift = -((pos * free).sum(1, keepdim=True) + (noisy * km).sum(1, keepdim=True)) / n_known
            pos = torch.where(known_mask.unsqueeze(-1), noisy + shift, pos)
            return torch.cat([pos, z[..., 3:]], -1)

        return guide


def unpad_points(batch: tuple[Tensor, Tensor], seeds: Sequence[int]) -> list:
    """``(coords [B, N, 3], mask [B, N])`` → the B real-point arrays ``[n_b, 3]`` (float32 numpy), in batch order;
    the ``split`` of :func:`sample_by_seed` for samplers that return padded coordinates."""
    coords, mask = batch
    return [coords[b][mask[b]].float().cpu().numpy() for b in range(len(seeds))]


def sample_by_seed(sample: Callable[..., Any], sizes: Sequence[int] | Tensor, seeds: Sequence[int], batch_size: int,
                   split: Callable[[Any, list[int]], Sequence], show_progress: bool = False, desc: str = "sampling",
                   what: str = "samples", **sample_options) -> list:
    """The one seeded batching loop: sample i of size ``sizes[i]`` is drawn with ``seeds[i]`` alone, in batches of
    at most ``batch_size`` samples of similar size; one result per sample, in input order.

    Each batch runs ``split(sample(sizes[idx], seeds=..., show_progress=..., **sample_options), seeds of idx)``,
    which must give one result per sample. Sorting by size cuts the padding in the dense [B, N, N] edge tensors;
    with per-sample seeds (``PointCloudDiffusion.sample_state``) neither the batch size nor the order changes any
    sample. With ``show_progress`` a bar (``desc``) counts finished samples (the sampler's steps may show below).

    Shapes: sizes [M] (points per sample), seeds [M]. ValueError when the seed count does not match (``what``
    names the samples), ``batch_size < 1``, or ``split`` returns the wrong number of results.
    """
    sizes = torch.as_tensor(sizes, dtype=torch.long).flatten()
    seeds = sample_seeds(sizes.numel(), seeds, what=what)
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    order = torch.argsort(sizes, stable=True).tolist()
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    results: list = [None] * len(order)
    bar = progress(total=len(order), desc=desc, unit="mol", disable=None if show_progress else True)
    # Denormal floats from the near-zero coordinate heads slow CPU kernels by about a quarter; torch has no
    # getter for this flag, so it is restored to torch's default (off) afterwards.
    torch.set_flush_denormal(True)
    try:
        for idx in chunks:
            batch_seeds = [seeds[i] for i in idx]
            out = list(split(sample(sizes[idx], seeds=batch_seeds, show_progress=show_progress, **sample_options),
                             batch_seeds))
            if len(out) != len(idx):
                raise ValueError(f"split returned {len(out)} results for {len(idx)} samples")
            for i, result in zip(idx, out):
                results[i] = result
            bar.update(len(idx))
    finally:
        torch.set_flush_denormal(False)
        bar.close()
    return results
