"""E(n)-equivariant graph network denoiser (Satorras et al. 2021) with the EDM dynamics (Hoogeboom et al. 2022).

The graph is fully connected within each molecule and stored densely: node tensors are ``[B, N, ·]``,
edge tensors ``[B, N, N, ·]`` where entry ``[b, i, j]`` is the message j → i. A QM9 batch then costs a
few large matrix products instead of gathers and scatters, and needs neither torch-cluster nor pyg-lib.

With ``graph="radius"`` the same weights run on an edge list instead (long chains: a protein of 256 residues
has ~25 neighbours within 10 Å, not 255): per forward call the pairs of real atoms whose *input* distance is
below ``radius_cutoff`` (plus, optionally, the pairs of node slots at most ``keep_sequence_neighbours`` apart)
are selected without gradient, the edge tensors become ``[n_edges, ·]`` (``edge_attr`` is gathered at those
pairs) and messages are summed with ``index_add``. The graph stays fixed through the blocks. Sums are divided by
the same ``aggregation_normalisation`` as the dense path, so with a cutoff above the diameter both modes compute
the same function (equal to round-off). The selection depends on distances only, so the net stays exactly
E(3)-equivariant.

Per block (``sublayers`` message-passing layers, then one coordinate update), with
``d_ij = ‖x_i − x_j‖²`` and ``d⁰_ij`` the squared distance of the *input* coordinates (EDM feeds it to
every block as an extra edge attribute)::

    m_ij  = φ_e(h_i, h_j, d_ij, d⁰_ij[, e_ij])               two-layer SiLU MLP
    a_ij  = σ(w_a · m_ij + b_a)                              attention gate (if ``attention``)
    h_i  ← h_i + φ_h(h_i, Σ_j a_ij m_ij / Z)                 Z = ``aggregation_normalisation``
    x_i  ← x_i + Σ_j (x_i − x_j) / (√d_ij + c) · r·tanh(w_x · φ_x(h_i, h_j, d_ij, d⁰_ij)) / Z

with ``c = norm_constant`` and ``r = coords_range / layers``; φ_x has the same inputs as φ_e. The network input
is ``[h, t, context]``; ``eps_pos = x_out − x_in`` projected to zero centre of mass, ``eps_h`` the first F
output channels. Optional invariant edge features ``e_ij = edge_attr[b, i, j]`` (``edge_features = E > 0``,
e.g. bond orders) join the first layer of every φ_e and φ_x; with ``E = 0`` the network is exactly EDM's.

Speed notes (why the code looks the way it does):

* The first edge-MLP layer ``Linear([h_i, h_j, d_ij, d⁰_ij])`` is factored into two per-node projections
  added pairwise plus rank-1 distance terms, so no ``[B, N, N, 2H + 2]`` concat is built. The weights are
  still stored as one ``nn.Linear(2H + 2, H)`` so that parameter layout and initialisation match EDM. Edge
  features add one ``[B, N, N, E] × [E, H]`` product, from a separate ``Linear(E, H, bias=False)`` that is
  created after all other parameters: EDM checkpoints still load, and the other parameters draw the same
  initial values whatever ``E`` is.
* Products with a width-1 side (attention gate, coordinate weight, distance features) are written as
  elementwise multiply + sum; as matmuls they would run at a fraction of peak.
* Edge tensors stay in the compute dtype (bf16 under autocast) end to end; masks are cast to that dtype
  before use because a float32 mask would silently promote every edge tensor to float32.
* Coordinates stay in the input dtype: the coordinate update is cheap (``[B, N, N, 3]``) and precision
  matters there.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molediff.nn.common import DenoiserBase, pairwise_mask

__all__ = ["EGNNConfig", "EGNNDenoiser", "radius_edges"]


@dataclass(frozen=True)
class EGNNConfig:
    """Configuration of :class:`EGNNDenoiser`; the defaults are EDM's QM9 model.

    Attributes:
        in_node_features: F, atom feature channels (e.g. 5 one-hot types + 1 charge for QM9 = 6).
        context_features: C, per-molecule conditioning channels appended to every node (0: none).
        edge_features: E, invariant scalar features per directed edge, ``edge_attr[b, i, j]`` for j → i
            (0: none; then ``forward`` must not receive ``edge_attr``).
        hidden: width of node and edge features.
        layers: number of equivariant blocks.
        sublayers: message-passing layers per block before its coordinate update (EDM ``inv_sublayers``).
        attention: gate each message with a sigmoid of a linear function of itself.
        tanh: bound coordinate updates by ``tanh`` times ``coords_range / layers``.
        coords_range: total coordinate range, shared equally by the blocks (EDM convention).
        norm_constant: c in ``(x_i − x_j) / (‖x_i − x_j‖ + c)``.
        aggregation_normalisation: messages are summed and divided by this (EDM ``normalization_factor``).
        autocast_bf16: run the body under ``torch.autocast(bfloat16)`` when inputs are float32 on CUDA.
            Outputs are returned in the input dtype. Float64 inputs and CPU inputs are never autocast by
            the net (an enclosing ``torch.autocast`` still applies).
        graph: ``"full"`` (every pair of real atoms, dense; EDM) or ``"radius"`` (sparse edge list: pairs
            whose input distance is below ``radius_cutoff``, plus the sequence neighbours below).
        radius_cutoff: the cutoff of the radius graph, in the coordinate units the net sees (``graph="radius"``
            only; ``inf`` keeps every pair, which reproduces ``"full"``).
        keep_sequence_neighbours: k; with ``graph="radius"``, the pairs of node slots with ``|i − j| ≤ k`` are
            edges whatever their distance (chains: residues in sequence order). The slot order then matters,
            so for k > 0 the net is permutation-equivariant only together with the caller's features.
    """

    in_node_features: int
    context_features: int = 0
    edge_features: int = 0
    hidden: int = 256
    layers: int = 9
    sublayers: int = 1
    attention: bool = True
    tanh: bool = True
    coords_range: float = 15.0
    norm_constant: float = 1.0
    aggregation_normalisation: float = 1.0
    autocast_bf16: bool = True
    graph: str = "full"
    radius_cutoff: float = 0.0
    keep_sequence_neighbours: int = 0

    def __post_init__(self) -> None:
        if self.in_node_features < 1:
            raise ValueError(f"in_node_features must be >= 1, got {self.in_node_features}")
        if self.context_features < 0:
            raise ValueError(f"context_features must be >= 0, got {self.context_features}")
        if self.edge_features < 0:
            raise ValueError(f"edge_features must be >= 0, got {self.edge_features}")
        if self.hidden < 1 or self.layers < 1 or self.sublayers < 1:
            raise ValueError(f"hidden, layers and sublayers must be >= 1, got {self.hidden}, {self.layers}, "
                             f"{self.sublayers}")
        if self.aggregation_normalisation <= 0:
            raise ValueError(f"aggregation_normalisation must be > 0, got {self.aggregation_normalisation}")
        if self.graph not in ("full", "radius"):
            raise ValueError(f"graph must be 'full' or 'radius', got {self.graph!r}")
        if self.graph == "radius":
            if not self.radius_cutoff > 0:
                raise ValueError(f"graph='radius' needs radius_cutoff > 0, got {self.radius_cutoff}")
            if self.keep_sequence_neighbours < 0:
                raise ValueError(f"keep_sequence_neighbours must be >= 0, got {self.keep_sequence_neighbours}")
        elif self.radius_cutoff or self.keep_sequence_neighbours:
            raise ValueError("radius_cutoff and keep_sequence_neighbours apply only with graph='radius'")


# Number of scalar edge attributes: current squared distance d_ij and input squared distance d⁰_ij.
_EDGE_ATTRIBUTES = 2

# The sparse path's edge list as flat node indices (receiver i, sender j) into [B * N] node rows: edge j → i.
_Edges = tuple[Tensor, Tensor]


@torch.no_grad()
def radius_edges(pos: Tensor, mask: Tensor, cutoff: float, keep_sequence_neighbours: int = 0
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """The radius graph as index triples ``(b, i, j)`` of the edges j → i (no gradient).

    An edge joins two different real atoms whose distance is below ``cutoff`` or whose slots satisfy
    ``|i − j| ≤ keep_sequence_neighbours``; padding never appears. Both directions of a pair are listed.

    Shapes:
        pos: [B, N, 3], mask: [B, N] bool → b, i, j: [n_edges] int64, sorted by (b, i, j)
    """
    num_nodes = mask.shape[1]
    sq_dist = (pos.unsqueeze(2) - pos.unsqueeze(1)).square().sum(-1)
    adjacency = sq_dist < cutoff * cutoff
    if keep_sequence_neighbours:
        index = torch.arange(num_nodes, device=mask.device)
        adjacency |= (index[:, None] - index[None, :]).abs() <= keep_sequence_neighbours
    adjacency &= pairwise_mask(mask)
    b, i, j = adjacency.nonzero(as_tuple=True)
    return b, i, j


def _scatter_sum(values: Tensor, receiver: Tensor, num_nodes: int) -> Tensor:
    """Σ over the edges of each receiver, accumulated in at least float32 (bf16 edge tensors under autocast).

    Shapes:
        values: [n_edges, D], receiver: [n_edges] → [num_nodes, D] (dtype of values)
    """
    accumulate = torch.promote_types(values.dtype, torch.float32)
    out = values.new_zeros(num_nodes, values.shape[-1], dtype=accumulate)
    return out.index_add_(0, receiver, values.to(accumulate)).to(values.dtype)


class _FactoredEdgeInput(nn.Module):
    """First edge-MLP layer ``Linear([h_i, h_j, e_ij, a_ij])`` without materialising the per-edge concat.

    ``W [h_i, h_j, e, a] + b = (W_i h_i + b) + W_j h_j + Σ_k e_k w_k + W_a a``: two ``[B, N, H]`` projections
    broadcast to ``[B, N, N, H]``, one rank-1 ``addcmul`` per scalar edge attribute ``e_k`` (distances) and, only
    after :meth:`add_edge_features`, one projection ``W_a`` of the edge features ``a = edge_attr``.

    Shapes:
        h: [B, N, H], edge_attributes: list of [B, N, N] (compute dtype),
        edge_attr: [B, N, N, E] (compute dtype) or None → [B, N, N, H]
    """

    def __init__(self, hidden: int, edge_attributes: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.linear = nn.Linear(2 * hidden + edge_attributes, hidden)
        self.edge_attr_projection: nn.Linear | None = None

    def add_edge_features(self, edge_features: int) -> None:
        """Create ``W_a`` as a separate module, so the EDM layout of ``self.linear`` is untouched."""
        self.edge_attr_projection = nn.Linear(edge_features, self.hidden, bias=False)
        # Same scale as if W_a were E more input columns of self.linear (nn.Linear: U(±1/√fan_in)).
        bound = 1.0 / math.sqrt(self.linear.in_features + edge_features)
        nn.init.uniform_(self.edge_attr_projection.weight, -bound, bound)

    def forward(self, h: Tensor, edge_attributes: list[Tensor], edge_attr: Tensor | None = None) -> Tensor:
        weight, hidden = self.linear.weight, self.hidden
        receiver = F.linear(h, weight[:, :hidden], self.linear.bias)
        sender = F.linear(h, weight[:, hidden:2 * hidden])
        out = receiver.unsqueeze(2) + sender.unsqueeze(1)
        for k, attribute in enumerate(edge_attributes):
            out.addcmul_(attribute.unsqueeze(-1), weight[:, 2 * hidden + k].to(out.dtype))
        if self.edge_attr_projection is not None:
            out.add_(self.edge_attr_projection(edge_attr).to(out.dtype))
        return out

    def forward_sparse(self, h: Tensor, edges: _Edges, edge_attributes: list[Tensor],
                       edge_attr: Tensor | None = None) -> Tensor:
        """The same layer on an edge list: per-node projections gathered at the receivers and senders.

        Shapes:
            h: [M, H] (M = B·N flat nodes), edges: ([n_edges], [n_edges]), edge_attributes: list of [n_edges],
            edge_attr: [n_edges, E] or None → [n_edges, H]
        """
        weight, hidden = self.linear.weight, self.hidden
        receiver, sender = edges
        out = (F.linear(h, weight[:, :hidden], self.linear.bias)[receiver]
               + F.linear(h, weight[:, hidden:2 * hidden])[sender])
        for k, attribute in enumerate(edge_attributes):
            out.addcmul_(attribute.unsqueeze(-1), weight[:, 2 * hidden + k].to(out.dtype))
        if self.edge_attr_projection is not None:
            out.add_(self.edge_attr_projection(edge_attr).to(out.dtype))
        return out


class _MessageLayer(nn.Module):
    """EDM's invariant graph convolution (GCL): gated messages, sum aggregation, residual node MLP.

    Shapes:
        h: [B, N, H], edge_attributes: list of [B, N, N], edge_weight: [B, N, N], node_weight: [B, N, 1],
        edge_attr: [B, N, N, E] or None → [B, N, H]
    """

    def __init__(self, hidden: int, attention: bool, aggregation_normalisation: float) -> None:
        super().__init__()
        self.edge_in = _FactoredEdgeInput(hidden, _EDGE_ATTRIBUTES)
        self.edge_out = nn.Linear(hidden, hidden)
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        # Stored as Linear(H, 1) like EDM, applied as multiply + sum (a width-1 matmul is slow).
        self.attention = nn.Linear(hidden, 1) if attention else None
        self.aggregation_normalisation = aggregation_normalisation

    def forward(self, h: Tensor, edge_attributes: list[Tensor], edge_weight: Tensor, node_weight: Tensor,
                edge_attr: Tensor | None = None) -> Tensor:
        messages = F.silu(self.edge_out(F.silu(self.edge_in(h, edge_attributes, edge_attr))))
        gate = edge_weight
        if self.attention is not None:
            logits = (messages * self.attention.weight[0].to(messages.dtype)).sum(-1)
            gate = torch.sigmoid(logits + self.attention.bias.to(messages.dtype)) * edge_weight
        aggregated = (messages * gate.unsqueeze(-1)).sum(2) / self.aggregation_normalisation
        h = h + self.node_mlp(torch.cat([h, aggregated], dim=-1))
        return h * node_weight

    def forward_sparse(self, h: Tensor, edges: _Edges, edge_attributes: list[Tensor], node_weight: Tensor,
                       edge_attr: Tensor | None = None) -> Tensor:
        """:meth:`forward` on an edge list (every listed edge has weight 1).

        Shapes:
            h: [M, H], edges: ([n_edges], [n_edges]), edge_attributes: list of [n_edges], node_weight: [M, 1],
            edge_attr: [n_edges, E] or None → [M, H]
        """
        messages = F.silu(self.edge_out(F.silu(self.edge_in.forward_sparse(h, edges, edge_attributes, edge_attr))))
        if self.attention is not None:
            logits = (messages * self.attention.weight[0].to(messages.dtype)).sum(-1)
            messages = messages * torch.sigmoid(logits + self.attention.bias.to(messages.dtype)).unsqueeze(-1)
        aggregated = _scatter_sum(messages, edges[0], h.shape[0]) / self.aggregation_normalisation
        h = h + self.node_mlp(torch.cat([h, aggregated], dim=-1))
        return h * node_weight


class _CoordinateUpdate(nn.Module):
    """EDM's equivariant coordinate update: x_i += Σ_j unit_ij · r·tanh(φ_x(m_ij)) / Z.

    Shapes:
        h: [B, N, H], x: [B, N, 3], unit_diff: [B, N, N, 3], edge_attributes: list of [B, N, N],
        edge_weight: [B, N, N] (dtype of x), edge_attr: [B, N, N, E] or None → [B, N, 3]
    """

    def __init__(self, hidden: int, tanh: bool, coords_range: float, aggregation_normalisation: float) -> None:
        super().__init__()
        self.edge_in = _FactoredEdgeInput(hidden, _EDGE_ATTRIBUTES)
        self.edge_hidden = nn.Linear(hidden, hidden)
        # EDM starts near the identity map: tiny output weights, no bias.
        self.edge_out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.edge_out.weight, gain=0.001)
        self.tanh = tanh
        self.coords_range = coords_range
        self.aggregation_normalisation = aggregation_normalisation

    def forward(self, h: Tensor, x: Tensor, unit_diff: Tensor, edge_attributes: list[Tensor],
                edge_weight: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        features = F.silu(self.edge_hidden(F.silu(self.edge_in(h, edge_attributes, edge_attr))))
        weight = (features * self.edge_out.weight[0].to(features.dtype)).sum(-1).to(x.dtype)
        if self.tanh:
            weight = torch.tanh(weight) * self.coords_range
        weight = weight * edge_weight
        return x + (unit_diff * weight.unsqueeze(-1)).sum(2) / self.aggregation_normalisation

    def forward_sparse(self, h: Tensor, x: Tensor, unit_diff: Tensor, edges: _Edges, edge_attributes: list[Tensor],
                       edge_attr: Tensor | None = None) -> Tensor:
        """:meth:`forward` on an edge list.

        Shapes:
            h: [M, H], x: [M, 3], unit_diff: [n_edges, 3], edges: ([n_edges], [n_edges]),
            edge_attributes: list of [n_edges], edge_attr: [n_edges, E] or None → [M, 3]
        """
        features = F.silu(self.edge_hidden(F.silu(self.edge_in.forward_sparse(h, edges, edge_attributes,
                                                                               edge_attr))))
        weight = (features * self.edge_out.weight[0].to(features.dtype)).sum(-1).to(x.dtype)
        if self.tanh:
            weight = torch.tanh(weight) * self.coords_range
        return x + _scatter_sum(unit_diff * weight.unsqueeze(-1), edges[0], x.shape[0]) / self.aggregation_normalisation


class _EquivariantBlock(nn.Module):
    """``sublayers`` message layers followed by one coordinate update (EDM ``EquivariantBlock``).

    Shapes:
        h: [B, N, H], x: [B, N, 3], initial_sq_dist: [B, N, N], edge_weight: [B, N, N] (compute dtype),
        node_weight: [B, N, 1] (compute dtype), edge_attr: [B, N, N, E] (compute dtype) or None
        → (h [B, N, H], x [B, N, 3])
    """

    def __init__(self, config: EGNNConfig) -> None:
        super().__init__()
        self.norm_constant = config.norm_constant
        self.message_layers = nn.ModuleList(
            _MessageLayer(config.hidden, config.attention, config.aggregation_normalisation)
            for _ in range(config.sublayers))
        self.coordinate_update = _CoordinateUpdate(config.hidden, config.tanh,
                                                   config.coords_range / config.layers,
                                                   config.aggregation_normalisation)

    def forward(self, h: Tensor, x: Tensor, initial_sq_dist: Tensor, edge_weight: Tensor,
                node_weight: Tensor, edge_attr: Tensor | None = None) -> tuple[Tensor, Tensor]:
        diff = x.unsqueeze(2) - x.unsqueeze(1)
        sq_dist = diff.square().sum(-1)
        # The 1e-8 keeps the gradient of sqrt finite on self-edges and padding (diff = 0).
        unit_diff = diff / (torch.sqrt(sq_dist + 1e-8) + self.norm_constant).unsqueeze(-1)
        edge_attributes = [sq_dist.to(edge_weight.dtype), initial_sq_dist]
        for layer in self.message_layers:
            h = layer(h, edge_attributes, edge_weight, node_weight, edge_attr)
        x = self.coordinate_update(h, x, unit_diff, edge_attributes, edge_weight.to(x.dtype), edge_attr)
        x = x * node_weight.to(x.dtype)
        return h, x

    def forward_sparse(self, h: Tensor, x: Tensor, edges: _Edges, initial_sq_dist: Tensor, node_weight: Tensor,
                       edge_attr: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`forward` on flat nodes and an edge list; the compute dtype is that of ``node_weight``.

        Shapes:
            h: [M, H], x: [M, 3], edges: ([n_edges], [n_edges]), initial_sq_dist: [n_edges],
            node_weight: [M, 1], edge_attr: [n_edges, E] or None → (h [M, H], x [M, 3])
        """
        receiver, sender = edges
        diff = x[receiver] - x[sender]
        sq_dist = diff.square().sum(-1)
        unit_diff = diff / (torch.sqrt(sq_dist + 1e-8) + self.norm_constant).unsqueeze(-1)
        edge_attributes = [sq_dist.to(node_weight.dtype), initial_sq_dist]
        for layer in self.message_layers:
            h = layer.forward_sparse(h, edges, edge_attributes, node_weight, edge_attr)
        x = self.coordinate_update.forward_sparse(h, x, unit_diff, edges, edge_attributes, edge_attr)
        x = x * node_weight.to(x.dtype)
        return h, x


class EGNNDenoiser(DenoiserBase):
    """EDM's EGNN dynamics as a dense, masked, batched ε-predictor.

    ``forward(pos, h, t, mask, context=None, edge_attr=None)`` on dense tensors, or ``forward(batch, t=t)`` /
    ``forward_pyg(batch, t)`` on a ``torch_geometric`` batch (see :class:`DenoiserBase`).

    The output layer is ``Linear(hidden, F + 1 + C)`` of which the first F channels are ``eps_h``; the extra
    time and context channels are unused but kept so parameter shapes match EDM's QM9 checkpoints. With
    ``edge_features = E > 0`` every first edge-MLP layer gains a parameter ``edge_attr_projection.weight``
    [H, E]; with ``E = 0`` parameters and outputs are exactly those of the network without edge features.

    Shapes:
        pos: [B, N, 3], h: [B, N, F], t: [B], mask: [B, N] bool, context: [B, C] or None,
        edge_attr: [B, N, N, E] or None → eps_pos: [B, N, 3] (zero centre of mass over real atoms),
        eps_h: [B, N, F]
    """

    def __init__(self, config: EGNNConfig) -> None:
        super().__init__()
        self.config = config
        width_in = config.in_node_features + 1 + config.context_features
        self.embedding = nn.Linear(width_in, config.hidden)
        self.blocks = nn.ModuleList(_EquivariantBlock(config) for _ in range(config.layers))
        self.embedding_out = nn.Linear(config.hidden, width_in)
        if config.edge_features:
            # Created last, so every other parameter draws the same initial values as with edge_features=0.
            for module in [m for m in self.modules() if isinstance(m, _FactoredEdgeInput)]:
                module.add_edge_features(config.edge_features)

    def _forward_dense(self, pos: Tensor, h: Tensor, t: Tensor, mask: Tensor, context: Tensor | None,
                       edge_attr: Tensor | None) -> tuple[Tensor, Tensor]:
        use_autocast = self.config.autocast_bf16 and pos.is_cuda and pos.dtype == torch.float32
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if use_autocast
                    else contextlib.nullcontext())
        with autocast:
            return self._body(pos, h, t, mask, context, edge_attr)

    def edge_index(self, pos: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The edges ``(b, i, j)`` (j → i) that ``graph="radius"`` uses for these coordinates; see
        :func:`radius_edges`. ValueError with ``graph="full"``.

        Shapes:
            pos: [B, N, 3], mask: [B, N] bool → b, i, j: [n_edges] int64
        """
        if self.config.graph != "radius":
            raise ValueError("edge_index needs graph='radius' (the full graph is dense)")
        return radius_edges(pos, mask, self.config.radius_cutoff, self.config.keep_sequence_neighbours)

    def _body(self, pos: Tensor, h: Tensor, t: Tensor, mask: Tensor, context: Tensor | None,
              edge_attr: Tensor | None) -> tuple[Tensor, Tensor]:
        features = self._embed_nodes(h, t, mask, context)
        if self.config.graph == "radius":
            return self._body_sparse(pos, features, mask, edge_attr)
        compute_dtype = features.dtype  # bf16 under autocast, else the input dtype
        edge_weight = pairwise_mask(mask).to(compute_dtype)
        node_weight = mask.unsqueeze(-1).to(compute_dtype)
        initial_sq_dist = (pos.unsqueeze(2) - pos.unsqueeze(1)).square().sum(-1).to(compute_dtype)
        if edge_attr is not None:
            # Cast once: a float32 edge_attr would promote every edge tensor it is added to under autocast.
            edge_attr = edge_attr.to(compute_dtype)

        x = pos
        for block in self.blocks:
            features, x = block(features, x, initial_sq_dist, edge_weight, node_weight, edge_attr)
        out = self.embedding_out(features)
        return x - pos, out[..., : self.config.in_node_features]

    def _embed_nodes(self, h: Tensor, t: Tensor, mask: Tensor, context: Tensor | None) -> Tensor:
        """The embedded node inputs ``[h | t | context]``: [B, N, H] (bf16 under autocast)."""
        batch_size, num_nodes = mask.shape
        node_inputs = [h, t.view(batch_size, 1, 1).expand(batch_size, num_nodes, 1)]
        if context is not None:
            node_inputs.append(context.unsqueeze(1).expand(batch_size, num_nodes, context.shape[-1]))
        return self.embedding(torch.cat(node_inputs, dim=-1))

    def _body_sparse(self, pos: Tensor, features: Tensor, mask: Tensor, edge_attr: Tensor | None
                     ) -> tuple[Tensor, Tensor]:
        """:meth:`_body` on the radius graph, from the embedded nodes ``features`` [B, N, H]: nodes flattened to
        ``[B·N, ·]``, edges to ``[n_edges, ·]``."""
        batch_size, num_nodes = mask.shape
        features = features.reshape(batch_size * num_nodes, -1)
        compute_dtype = features.dtype
        node_weight = mask.reshape(-1, 1).to(compute_dtype)
        b, i, j = self.edge_index(pos, mask)
        edges = (b * num_nodes + i, b * num_nodes + j)
        flat_pos = pos.reshape(-1, 3)
        initial_sq_dist = (flat_pos[edges[0]] - flat_pos[edges[1]]).square().sum(-1).to(compute_dtype)
        if edge_attr is not None:
            edge_attr = edge_attr[b, i, j].to(compute_dtype)

        x = flat_pos
        for block in self.blocks:
            features, x = block.forward_sparse(features, x, edges, initial_sq_dist, node_weight, edge_attr)
        out = self.embedding_out(features).reshape(batch_size, num_nodes, -1)
        return (x - flat_pos).reshape(batch_size, num_nodes, 3), out[..., : self.config.in_node_features]
