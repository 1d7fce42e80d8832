"""O(3)-equivariant tensor-product denoiser built on e3nn (NequIP-style point convolutions).

Node features are a direct sum of irreducible representations (default ``64x0e+16x1o+8x2e``), so
rotations *and* reflections act on them exactly: vectors are ``1o`` (they flip under inversion), and
``eps_pos`` is read from a single ``1o`` output channel. Per interaction layer, for the edge j → i with
``r_ij = x_i − x_j``::

    m_ij = TP_{w(‖r_ij‖)}(W₁ h_j, Y(r̂_ij))        Y: spherical harmonics, l ≤ lmax
    h_i ← h_i + Gate(W₂ Σ_j m_ij / Z + W₃ h_i)      Z = ``aggregation_normalisation``

where the tensor product uses per-edge weights ``w`` from a radial MLP on a Gaussian basis of the
distance (``TensorProduct(shared_weights=False)``, one weight per channel and path: "uvu"), ``W`` are
equivariant linear maps and the gate multiplies each l > 0 irrep by a sigmoid of a learned scalar.
Time and context enter as ``0e`` scalars in the node embedding. Optional invariant edge features
``edge_attr[b, i, j]`` (``edge_features = E > 0``, e.g. bond orders) are appended to the Gaussian basis of
the edge j → i, so the radial MLP sees ``[basis(‖r_ij‖), e_ij]`` (``radial_basis + E`` inputs).

The graph is fully connected within each molecule (``cutoff=None``) or limited to pairs closer than
``cutoff`` (smooth cosine envelope; edge features of pairs beyond the cutoff are then unused). Edges are
gathered from the dense ``[B, N, N]`` pair mask, so padding costs nothing. The tensor products run in the
input dtype: an enclosing autocast is switched off inside the network because bf16 Clebsch-Gordan
contractions lose the equivariance we pay for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from e3nn import o3
from e3nn.nn import Gate
from torch import Tensor, nn

from molediff.nn.common import DenoiserBase, check_feature_sizes, pairwise_mask

__all__ = ["E3nnConfig", "E3nnDenoiser"]


@dataclass(frozen=True)
class E3nnConfig:
    """Configuration of :class:`E3nnDenoiser`.

    Attributes:
        in_node_features: F, atom feature channels.
        context_features: C, per-molecule conditioning channels (``0e`` scalars on every node).
        edge_features: E, invariant scalar features per directed edge, ``edge_attr[b, i, j]`` for j → i, fed
            to the radial MLPs next to the distance basis (0: none; then ``forward`` must not get ``edge_attr``).
        hidden_irreps: node feature irreps; must contain ``1o`` (the output vector is read from it) and
            only even scalars ``0e``, with every ``l ≤ lmax``.
        layers: number of interaction layers.
        lmax: highest degree of the edge spherical harmonics.
        radial_basis: number of Gaussians in the distance expansion.
        radial_hidden: width of the radial MLP that produces the tensor-product weights.
        max_radius: the Gaussians cover [0, max_radius] Å (or [0, cutoff] when a cutoff is set).
        cutoff: None for a fully connected graph; else only pairs closer than this interact.
        aggregation_normalisation: summed messages are divided by this (≈ √(typical neighbour count)).
    """

    in_node_features: int
    context_features: int = 0
    edge_features: int = 0
    hidden_irreps: str = "64x0e+16x1o+8x2e"
    layers: int = 4
    lmax: int = 2
    radial_basis: int = 16
    radial_hidden: int = 64
    max_radius: float = 10.0
    cutoff: float | None = None
    aggregation_normalisation: float = 4.0

    def __post_init__(self) -> None:
        check_feature_sizes(self)
        if self.layers < 1 or self.lmax < 1 or self.radial_basis < 1 or self.radial_hidden < 1:
            raise ValueError("layers, lmax, radial_basis and radial_hidden must be >= 1")
        if self.cutoff is not None and self.cutoff <= 0:
            raise ValueError(f"cutoff must be positive or None, got {self.cutoff}")
        irreps = o3.Irreps(self.hidden_irreps)
        if o3.Irrep("1o") not in irreps:
            raise ValueError(f"hidden_irreps must contain 1o (vectors), got {self.hidden_irreps}")
        if any(ir.l == 0 and ir.p == -1 for _, ir in irreps):
            raise ValueError(f"hidden_irreps may only hold even scalars 0e, got {self.hidden_irreps}")
        if any(ir.l > self.lmax for _, ir in irreps):
            raise ValueError(f"hidden_irreps {self.hidden_irreps} has degrees above lmax={self.lmax}")


def _gaussian_basis(distance: Tensor, stop: float, number: int) -> Tensor:
    """Gaussians centred on ``linspace(0, stop, number)`` with width one spacing.

    Shapes:
        distance: [E] → [E, number]
    """
    centres = torch.linspace(0.0, stop, number, dtype=distance.dtype, device=distance.device)
    width = stop / max(number - 1, 1)
    return torch.exp(-(((distance.unsqueeze(-1) - centres) / width) ** 2))


class _Interaction(nn.Module):
    """One point convolution + gate with a residual connection.

    Shapes (here E counts edges):
        h: [V, dim(hidden)], edge_sh: [E, dim(sh)], edge_basis: [E, radial_basis + edge_features],
        edge_envelope: [E] or None, src, dst: [E] node indices into V → [V, dim(hidden)]
    """

    def __init__(self, irreps_hidden: o3.Irreps, irreps_sh: o3.Irreps, config: E3nnConfig) -> None:
        super().__init__()
        self.linear_in = o3.Linear(irreps_hidden, irreps_hidden)
        # "uvu" paths: each channel of h_j is multiplied by Y(r̂_ij) with its own per-edge weight. Only
        # outputs whose irrep type already appears in the hidden irreps are kept.
        kept = {ir for _, ir in irreps_hidden}
        mid, instructions = [], []
        for i_in, (mul, ir_in) in enumerate(irreps_hidden):
            for i_sh, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in kept:
                        instructions.append((i_in, i_sh, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        irreps_mid, permutation, _ = o3.Irreps(mid).sort()
        instructions = [(i_in, i_sh, permutation[i_out], mode, train)
                        for i_in, i_sh, i_out, mode, train in instructions]
        self.tensor_product = o3.TensorProduct(irreps_hidden, irreps_sh, irreps_mid, instructions,
                                               shared_weights=False, internal_weights=False)
        radial_in = config.radial_basis + config.edge_features  # distance basis, then the edge features
        self.radial = nn.Sequential(nn.Linear(radial_in, config.radial_hidden), nn.SiLU(),
                                    nn.Linear(config.radial_hidden, self.tensor_product.weight_numel))

        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
        gates = o3.Irreps(f"{gated.num_irreps}x0e")
        self.gate = Gate(scalars, [F.silu] * len(scalars), gates, [torch.sigmoid], gated)
        self.linear_out = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.self_interaction = o3.Linear(irreps_hidden, self.gate.irreps_in)
        self.aggregation_normalisation = config.aggregation_normalisation

    def forward(self, h: Tensor, edge_sh: Tensor, edge_basis: Tensor, edge_envelope: Tensor | None,
                src: Tensor, dst: Tensor) -> Tensor:
        weights = self.radial(edge_basis)
        if edge_envelope is not None:
            weights = weights * edge_envelope.unsqueeze(-1)
        messages = self.tensor_product(self.linear_in(h)[src], edge_sh, weights)
        aggregated = torch.zeros(h.shape[0], messages.shape[-1], dtype=messages.dtype, device=messages.device)
        aggregated = aggregated.index_add(0, dst, messages) / self.aggregation_normalisation
        return h + self.gate(self.linear_out(aggregated) + self.self_interaction(h))


class E3nnDenoiser(DenoiserBase):
    """Tensor-product (e3nn) ε-predictor; slower than :class:`~molediff.nn.egnn.EGNNDenoiser`, richer features.

    ``forward(pos, h, t, mask, context=None, edge_attr=None)`` on dense tensors, or ``forward(batch, t=t)`` /
    ``forward_pyg(batch, t)`` on a ``torch_geometric`` batch (see :class:`DenoiserBase`).

    Shapes:
        pos: [B, N, 3], h: [B, N, F], t: [B], mask: [B, N] bool, context: [B, C] or None,
        edge_attr: [B, N, N, E] or None → eps_pos: [B, N, 3] (zero centre of mass over real atoms),
        eps_h: [B, N, F]
    """

    def __init__(self, config: E3nnConfig) -> None:
        super().__init__()
        self.config = config
        self.irreps_hidden = o3.Irreps(config.hidden_irreps).sort().irreps.simplify()
        self.irreps_sh = o3.Irreps.spherical_harmonics(config.lmax)
        scalars_in = config.in_node_features + 1 + config.context_features
        self.embedding = o3.Linear(f"{scalars_in}x0e", self.irreps_hidden)
        self.interactions = nn.ModuleList(_Interaction(self.irreps_hidden, self.irreps_sh, config)
                                          for _ in range(config.layers))
        self.irreps_out = o3.Irreps(f"{config.in_node_features}x0e+1x1o")
        self.readout = o3.Linear(self.irreps_hidden, self.irreps_out)

    def _forward_dense(self, pos: Tensor, h: Tensor, t: Tensor, mask: Tensor, context: Tensor | None,
                       edge_attr: Tensor | None) -> tuple[Tensor, Tensor]:
        with torch.autocast(pos.device.type, enabled=False):
            return self._body(pos, h, t, mask, context, edge_attr)

    def _body(self, pos: Tensor, h: Tensor, t: Tensor, mask: Tensor, context: Tensor | None,
              edge_attr: Tensor | None) -> tuple[Tensor, Tensor]:
        config = self.config
        batch_size, num_nodes = mask.shape
        node_inputs = [h, t.view(batch_size, 1, 1).expand(batch_size, num_nodes, 1)]
        if context is not None:
            node_inputs.append(context.unsqueeze(1).expand(batch_size, num_nodes, context.shape[-1]))
        features = self.embedding(torch.cat(node_inputs, dim=-1).reshape(batch_size * num_nodes, -1))

        # Edge list of the (optionally cut-off) complete graph of each molecule, from the dense pair mask.
        edges = pairwise_mask(mask)
        if config.cutoff is not None:
            # Differences rather than torch.cdist: cdist's matmul shortcut is not exactly rotation invariant.
            pair_distance = (pos.unsqueeze(2) - pos.unsqueeze(1)).norm(dim=-1)
            edges = edges & (pair_distance < config.cutoff)
        b, i, j = edges.nonzero(as_tuple=True)
        dst, src = b * num_nodes + i, b * num_nodes + j
        flat_pos = pos.reshape(batch_size * num_nodes, 3)
        vectors = flat_pos[dst] - flat_pos[src]
        distance = vectors.norm(dim=-1)
        # Normalise by hand: e3nn's normalize=True divides 0/0 for coincident atoms.
        directions = vectors / distance.clamp_min(1e-9).unsqueeze(-1)
        edge_sh = o3.spherical_harmonics(self.irreps_sh, directions, normalize=False, normalization="component")
        stop = config.max_radius if config.cutoff is None else config.cutoff
        edge_basis = _gaussian_basis(distance, stop, config.radial_basis)
        if edge_attr is not None:
            # The same (b, i, j) list as the geometry: edge_attr[b, i, j] is the edge j → i = src → dst.
            edge_basis = torch.cat([edge_basis, edge_attr[b, i, j]], dim=-1)
        edge_envelope = None
        if config.cutoff is not None:
            edge_envelope = 0.5 * (torch.cos(math.pi * distance / config.cutoff) + 1.0)

        for interaction in self.interactions:
            features = interaction(features, edge_sh, edge_basis, edge_envelope, src, dst)
        out = self.readout(features).reshape(batch_size, num_nodes, -1)
        eps_h = out[..., : config.in_node_features]
        eps_pos = out[..., config.in_node_features:]
        return eps_pos, eps_h
