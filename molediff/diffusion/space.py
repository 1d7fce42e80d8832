"""Spaces: what differs per domain in the core — how noise is drawn, how it is projected, how many
degrees of freedom a sample has (for the likelihood) and how per-element terms reduce to per-sample sums.

Three spaces cover the domains:

* ``EuclideanSpace``: images and any unconstrained tensor ``[B, ...]``; an optional node mask
  ``[B, N]`` marks real entries of padded ``[B, N, D]`` tensors.
* ``ZeroCoMSpace``: point clouds ``[B, N, D]`` whose first ``com_dims`` channels are coordinates kept at
  zero centre of mass over the masked nodes (translation invariance).  Coordinates then have
  ``com_dims · (n − 1)`` degrees of freedom; any remaining channels (e.g. atom-type features) are
  ordinary masked Euclidean channels.
* ``ZeroCoMGraphSpace``: a zero-CoM point cloud plus a symmetric edge block (graph diffusion, e.g. bond
  orders diffused with the atoms as in JODO, Huang et al. 2023), flattened into one state ``[B, N, C + N·K]``
  so that every sampler runs on it unchanged: row i holds node i's C channels, then its K edge channels
  to each of the N nodes. Edges are symmetric, zero on the diagonal and at pairs touching padding.
* ``TorusSpace``: angles ``[B, ...]`` (radians) on the torus: every state is wrapped into [−π, π) by
  ``wrap`` (after noising and after every sampler step); the noise ε itself is ordinary Gaussian noise.

Every space has ``project`` (applied to ε̂ and to noise: a linear projection, never a wrap) and ``wrap``
(applied to the state z_t: the canonical representative of a point of the space; the identity, returning the
same tensor, for the Euclidean spaces, so their results are bit for bit what they were without it).

Noise can be drawn from one ``torch.Generator`` or from one generator per sample, so a sample's noise does
not depend on what else is in its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["EuclideanSpace", "ZeroCoMSpace", "ZeroCoMGraphSpace", "TorusSpace", "expand_like", "randn", "wrap_angle"]

Generator = torch.Generator | Sequence[torch.Generator] | None


def expand_like(values: Tensor, x: Tensor, batch: Tensor | None = None) -> Tensor:
    """Broadcast per-sample ``values [B]`` against ``x``.

    Dense tensors ``x [B, ...]`` get ``values.view(B, 1, …)``; graph node tensors ``x [n, ...]`` with a
    ``batch [n]`` vector get ``values[batch]`` reshaped the same way.
    """
    if batch is not None:
        values = values[batch]
    return values.reshape(values.shape[0], *([1] * (x.dim() - 1))).to(x.dtype)


def randn(shape: Sequence[int], generator: Generator = None, dtype=None, device=None,
          mask: Tensor | None = None) -> Tensor:
    """Standard normal noise; with a list of generators, sample b uses ``generator[b]`` alone.

    With per-sample generators and a node mask ``[B, N]``, sample b draws only its own ``n_b`` nodes, so
    its noise is the same whatever the padded size of the batch it is in.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(*shape, generator=generator, dtype=dtype, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} per-sample generators for a batch of {shape[0]}")
    if mask is None:
        return torch.stack([torch.randn(*shape[1:], generator=g, dtype=dtype, device=device) for g in generator])
    out = torch.zeros(*shape, dtype=dtype, device=device)
    for b, g in enumerate(generator):
        idx = mask[b].nonzero().flatten()
        out[b, idx] = torch.randn(len(idx), *shape[2:], generator=g, dtype=dtype, device=device)
    return out


def _check_mask(x: Tensor, mask: Tensor | None) -> None:
    if mask is None:
        return
    if mask.dim() != 2 or x.dim() < 3 or tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"node mask must have shape [B, N] = {tuple(x.shape[:2])} matching x of shape "
                         f"{tuple(x.shape)}, got {tuple(mask.shape)}")


class EuclideanSpace:
    """Unconstrained ℝ^d per sample; padded entries (mask False) are held at zero."""

    periodic: bool = False
    """True for spaces whose ``wrap`` is not the identity (the torus)."""

    def _mask(self, x: Tensor, mask: Tensor | None) -> Tensor | None:
        _check_mask(x, mask)
        return None if mask is None else mask.reshape(*mask.shape, *([1] * (x.dim() - 2))).to(x.dtype)

    def mask_out(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Zero the padded entries (no other projection)."""
        m = self._mask(x, mask)
        return x if m is None else x * m

    def project(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.mask_out(x, mask)

    def wrap(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """The canonical representative of the state ``z``: here ``z`` itself (the same tensor object)."""
        return z

    def randn(self, shape: Sequence[int], mask: Tensor | None = None, generator: Generator = None,
              dtype=None, device=None) -> Tensor:
        return self.project(randn(shape, generator, dtype, device, mask), mask)

    def sum(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-sample sum over all non-batch dimensions of real entries: ``[B, ...] → [B]``."""
        return self.mask_out(x, mask).flatten(1).sum(1)

    def dof(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Degrees of freedom per sample ``[B]``."""
        m = self._mask(x, mask)
        per_node = x[0, 0].numel() if m is not None else x[0].numel()
        if m is None:
            return torch.full((x.shape[0],), float(per_node), dtype=x.dtype, device=x.device)
        return mask.to(x.dtype).sum(1) * per_node


class ZeroCoMSpace(EuclideanSpace):
    """Point clouds ``[B, N, D]``: channels ``[:com_dims]`` have zero masked mean over nodes."""

    def __init__(self, com_dims: int = 3):
        if com_dims < 1:
            raise ValueError(f"com_dims must be >= 1, got {com_dims}")
        self.com_dims = com_dims

    def _check(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] < self.com_dims:
            raise ValueError(f"zero-CoM space expects x of shape [B, N, D>={self.com_dims}], got {tuple(x.shape)}")
        _check_mask(x, mask)
        if mask is None:
            return x.new_ones(x.shape[:2])
        return mask.to(x.dtype)

    def project(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self._check(x, mask).unsqueeze(-1)
        coords, rest = x[..., : self.com_dims], x[..., self.com_dims:]
        n = m.sum(1, keepdim=True).clamp(min=1)
        mean = (coords * m).sum(1, keepdim=True) / n
        return torch.cat([(coords - mean) * m, rest * m], dim=-1)

    def dof(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        n = self._check(x, mask).sum(1)
        return (n - 1).clamp(min=0) * self.com_dims + n * (x.shape[-1] - self.com_dims)


class ZeroCoMGraphSpace(ZeroCoMSpace):
    """A zero-CoM point cloud with a symmetric block of K edge channels, as one state ``[B, N, C + N·K]``.

    ``split`` gives the node channels ``[B, N, C]`` (the first ``com_dims`` are coordinates at zero centre of
    mass, the rest ordinary masked channels, as in :class:`ZeroCoMSpace`) and the edge block ``[B, N, N, K]``
    (entry ``[b, i, j]`` is the pair (i, j)); ``join`` is its inverse. The edge block lives in the subspace of
    symmetric matrices that are zero on the diagonal and at every pair touching padding:

    * ``project`` (ε̂, noise) symmetrises, ½(e + eᵀ), and zeroes the diagonal and padding: the orthogonal
      projection onto that subspace;
    * ``randn`` draws the K values of each pair i < j of real nodes once and mirrors them (symmetric noise);
      with per-sample generators sample b draws its node channels, then its own n_b(n_b − 1)/2 pairs, so its
      noise does not depend on the batch;
    * ``dof`` counts the independent entries: the node channels' degrees of freedom plus K · n(n − 1)/2, and
      ``sum`` sums each unordered pair once (½ the sum over the full block), so the Gaussian terms of the
      bound (``prior_kl``, ``gaussian_decoder_nll``) are those of the independent entries.

    ValueError for a state whose last axis is not C + N·K.
    """

    def __init__(self, com_dims: int = 3, node_channels: int = 3, edge_channels: int = 1):
        super().__init__(com_dims)
        if node_channels < com_dims or edge_channels < 1:
            raise ValueError(f"need node_channels >= com_dims = {com_dims} and edge_channels >= 1, got "
                             f"{node_channels}, {edge_channels}")
        self.node_channels = node_channels
        self.edge_channels = edge_channels

    def channels(self, num_nodes: int) -> int:
        """Width of the state's last axis for ``num_nodes`` (padded) nodes: C + N·K."""
        return self.node_channels + num_nodes * self.edge_channels

    def _check_width(self, shape: Sequence[int]) -> None:
        if len(shape) != 3 or shape[-1] != self.channels(shape[1]):
            raise ValueError(f"graph state must be [B, N, C + N·K] with C = {self.node_channels}, "
                             f"K = {self.edge_channels}, got {tuple(shape)}")

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, N, C + N·K]`` → nodes ``[B, N, C]`` and edges ``[B, N, N, K]`` (views)."""
        self._check_width(x.shape)
        B, N = x.shape[:2]
        return x[..., :self.node_channels], x[..., self.node_channels:].reshape(B, N, N, self.edge_channels)

    def join(self, nodes: Tensor, edges: Tensor) -> Tensor:
        """Nodes ``[B, N, C]`` and edges ``[B, N, N, K]`` → the state ``[B, N, C + N·K]``."""
        B, N = nodes.shape[:2]
        if nodes.shape[-1] != self.node_channels or tuple(edges.shape) != (B, N, N, self.edge_channels):
            raise ValueError(f"nodes must be [B, N, {self.node_channels}] and edges [B, N, N, {self.edge_channels}]"
                             f", got {tuple(nodes.shape)} and {tuple(edges.shape)}")
        return torch.cat([nodes, edges.reshape(B, N, N * self.edge_channels)], -1)

    @staticmethod
    def pair_mask(mask: Tensor | None, batch: int, num_nodes: int, device=None) -> Tensor:
        """[B, N, N] bool: both nodes real and i ≠ j (mask None: every node real)."""
        eye = torch.eye(num_nodes, dtype=torch.bool, device=device)
        if mask is None:
            return (~eye).expand(batch, num_nodes, num_nodes)
        return mask.unsqueeze(2) & mask.unsqueeze(1) & ~eye

    def mask_out(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Zero the padded nodes' channels and the edges of pairs touching padding (the diagonal is kept)."""
        nodes, edges = self.split(x)
        _check_mask(nodes, mask)
        if mask is None:
            return x
        pairs = (mask.unsqueeze(2) & mask.unsqueeze(1)).unsqueeze(-1).to(x.dtype)
        return self.join(nodes * mask.unsqueeze(-1).to(x.dtype), edges * pairs)

    def project(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        nodes, edges = self.split(x)
        nodes = super().project(nodes, mask)
        pairs = self.pair_mask(mask, x.shape[0], x.shape[1], x.device).unsqueeze(-1).to(x.dtype)
        return self.join(nodes, 0.5 * (edges + edges.transpose(1, 2)) * pairs)

    def randn(self, shape: Sequence[int], mask: Tensor | None = None, generator: Generator = None,
              dtype=None, device=None) -> Tensor:
        self._check_width(shape)
        B, N, K = shape[0], shape[1], self.edge_channels
        node_shape = (B, N, self.node_channels)
        if generator is None or isinstance(generator, torch.Generator):
            nodes = randn(node_shape, generator, dtype, device, mask)
            upper = torch.randn(B, N, N, K, generator=generator, dtype=dtype, device=device)
            above = torch.ones(N, N, dtype=torch.bool, device=device).triu(1)[None, :, :, None]
            upper = torch.where(above, upper, torch.zeros((), dtype=upper.dtype, device=device))
            edges = upper + upper.transpose(1, 2)
        else:
            if len(generator) != B:
                raise ValueError(f"got {len(generator)} per-sample generators for a batch of {B}")
            nodes = torch.zeros(node_shape, dtype=dtype, device=device)
            edges = torch.zeros(B, N, N, K, dtype=dtype, device=device)
            for b, g in enumerate(generator):
                idx = (torch.arange(N, device=device) if mask is None else mask[b].nonzero().flatten())
                n = len(idx)
                nodes[b, idx] = torch.randn(n, self.node_channels, generator=g, dtype=dtype, device=device)
                i, j = torch.triu_indices(n, n, 1, device=device)
                values = torch.randn(len(i), K, generator=g, dtype=dtype, device=device)
                edges[b, idx[i], idx[j]] = values
                edges[b, idx[j], idx[i]] = values
        return self.project(self.join(nodes, edges), mask)

    def sum(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-sample sum over the independent entries ``[B]``: node channels of real nodes plus each unordered
        pair of real nodes once."""
        nodes, edges = self.split(self.mask_out(x, mask))
        pairs = self.pair_mask(None, x.shape[0], x.shape[1], x.device).unsqueeze(-1).to(x.dtype)
        return nodes.flatten(1).sum(1) + 0.5 * (edges * pairs).flatten(1).sum(1)

    def dof(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        nodes, _ = self.split(x)
        n = self._check(nodes, mask).sum(1)
        return super().dof(nodes, mask) + self.edge_channels * n * (n - 1) / 2


def wrap_angle(x: Tensor) -> Tensor:
    """Angles (radians) mapped into [−π, π): x − 2π ⌊(x + π) / 2π⌋, elementwise, same shape and dtype.

    Values already in [−π, π) are returned exactly (bit for bit); the result never equals π. Differentiable
    almost everywhere (gradient 1).
    """
    y = torch.remainder(x + math.pi, 2 * math.pi) - math.pi
    y = torch.where(y >= math.pi, y - 2 * math.pi, y)
    return torch.where((x >= -math.pi) & (x < math.pi), x, y)


class TorusSpace(EuclideanSpace):
    """Angles on the torus (T^d): states ``[B, ...]`` in radians, wrapped into [−π, π); padding (mask False,
    for ``[B, N, ...]`` with a node mask ``[B, N]``) held at 0.

    The diffusion is FoldingDiff's (Wu et al. 2022, §3.2, following Jing et al. 2022 for the torus): the
    forward marginal is the wrapped normal z_t = wrap(α_t x + σ_t ε), ε ~ N(0, I), with density
    Σ_k N(z + 2πk; α_t x, σ_t²) on [−π, π); the ε-objective's target is the unwrapped ε and the network sees
    the wrapped z_t; every sampler step is wrapped back. The prior is wrap(N(0, I)).

    * ``project`` only zeroes padding: it acts on ε̂ and on fresh noise, which are not angles and are never
      wrapped. ``randn`` is therefore ordinary (unwrapped) Gaussian noise.
    * ``wrap`` maps a state into [−π, π) (the samplers call it on the starting noise, after every update and
      on the returned x̂; ``epsilon_loss`` on z_t).

    Samplers (all four in ``samplers.py`` call ``wrap`` and run unchanged): the VP update's factor α_s/α_t ≠ 1
    on z_t is not periodic, so on the torus every step is FoldingDiff's approximation, which is exact where
    the wrapped marginal does not wrap (low noise) and errs only where it is nearly uniform.
    ``tests/diffusion/test_diffusion_torus.py`` measures each sampler against the exact denoiser of a wrapped mixture.
    The variational bound (``prior_kl``, ``diffusion_kl``, ``vlb`` and the decoders) is Euclidean: it is not
    a bound on the torus and must not be used with this space.
    """

    periodic = True

    def wrap(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """``z`` wrapped into [−π, π) elementwise, zero at padding; same shape."""
        return self.mask_out(wrap_angle(z), mask)
