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
E(3)-equivariant. The layers are written once: an edge layout (``_DenseEdges`` or ``_SparseEdges``) pairs node
tensors into edge tensors (``pair_sum``, ``difference``) and sums edge tensors back per receiver (``sum``).

Per block (``sublayers`` message-passing layers, then one coordinate update), with
``d_ij = ‖x_i − x_j‖²`` and ``d⁰_ij`` the squared distance of the *input* coordinates (EDM feeds it to
every block as a second distance term)::

    m_ij  = φ_e(h_i, h_j, d_ij, d⁰_ij[, e_ij])               two-layer SiLU MLP
    a_ij  = σ(w_a · m_ij + b_a)                              attention gate (if ``attention``)
    h_i  ← h_i + φ_h(h_i, Σ_j a_ij m_ij / Z)                 Z = ``aggregation_normalisation``
    x_i  ← x_i + Σ_j (x_i − x_j) / (√d_ij + c) · r·tanh(w_x · φ_x(h_i, h_j, d_ij, d⁰_ij)) / Z

with ``c = norm_constant`` and ``r = coords_range / layers``; φ_x has the same inputs as φ_e. The network input
is ``[h, t, context]``; ``eps_pos = x_out − x_in`` projected to zero centre of mass, ``eps_h`` the first F
output channels. Optional invariant edge features ``e_ij = edge_attr[b, i, j]`` (``edge_features = E > 0``,
e.g. bond orders) join the first layer of every φ_e and φ_x; with ``E = 0`` the network is exactly EDM's.

Diffused edges (bond orders diffused with the atoms, JODO-style): with ``edge_out_features = K > 0`` the noisy
edge features arrive as (the first K channels of) ``edge_attr``, enter every message as above, and an edge head
predicts their ε from the last block's pair features, symmetric by construction::

    f_ij  = W_o SiLU(W_1 SiLU(φ(h_i, h_j, d_ij, d⁰_ij, e_ij)))     (φ: a first edge-MLP layer as above)
    ε_ij  = f_ij + f_ji                                            zero for i = j and at padding

so ε_ij = ε_ji for any weights, and the head is E(3)-invariant and permutation-equivariant (it reads only
invariants of the pair). The head needs the dense layout (``graph="full"``).

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

from molediff.nn.common import DenoiserBase, check_feature_sizes, pairwise_mask

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
        edge_out_features: K, edge channels whose ε the net predicts (0: none; ``forward`` then returns two
            outputs). K > 0 adds the symmetric edge head and a third output ``eps_edges`` [B, N, N, K]; it needs
            ``graph="full"`` and ``edge_features >= 1`` (the noisy edges are an input).
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
    edge_out_features: int = 0

    def __post_init__(self) -> None:
        check_feature_sizes(self)
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
        if self.edge_out_features:
            if self.graph != "full":
                raise ValueError(f"edge_out_features needs graph='full' (a dense edge block), got {self.graph!r}")
            if self.edge_features < 1:
                raise ValueError("edge_out_features needs edge_features >= 1: the noisy edges are an input")


# Number of scalar distance terms per edge: current squared distance d_ij and input squared distance d⁰_ij.
# (Not to be confused with ``edge_attr``, the E given edge features.)
_DISTANCE_TERMS = 2


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


# -- edge layouts ------------------------------------------------------------------------------------
# The layers below are written once against this interface (as PyG separates message from aggregation);
# the layout decides how node tensors become edge tensors and back. Entry / row ``e`` of an edge tensor is
# the message of one edge j → i.


class _DenseEdges:
    """Every pair of a padded batch: node tensors ``[B, N, ·]``, edge tensors ``[B, N, N, ·]`` (entry [b, i, j]).

    Pairs touching padding and self-pairs are computed and then weighted by zero (``edge_weight``), which costs
    less than gathering for molecule-sized N. ``pair_weights`` replaces the full graph's 0/1 weights (still zero
    wherever ``pairwise_mask`` is False).

    Shapes:
        mask: [B, N] bool, pair_weights: [B, N, N] (bool or float) or None; ``edge_weight`` [B, N, N] (0/1 without
        ``pair_weights``) and ``node_weight`` [B, N, 1] (0/1) are in ``dtype``
    """

    def __init__(self, mask: Tensor, dtype: torch.dtype, pair_weights: Tensor | None = None) -> None:
        self.dtype = dtype
        if pair_weights is None:
            self.edge_weight = pairwise_mask(mask).to(dtype)
        else:
            # where, not a product: whatever pair_weights holds at padding (even NaN) must not leak
            self.edge_weight = torch.where(pairwise_mask(mask), pair_weights.to(device=mask.device, dtype=dtype),
                                           torch.zeros((), dtype=dtype, device=mask.device))
        self.node_weight = mask.unsqueeze(-1).to(dtype)

    def per_node(self, values: Tensor) -> Tensor:
        """Node tensor of this layout from a dense one: [B, N, D] → [B, N, D] (as is)."""
        return values

    def to_dense(self, values: Tensor) -> Tensor:
        """Back to [B, N, D] from this layout's node tensor."""
        return values

    def per_edge(self, edge_attr: Tensor) -> Tensor:
        """Edge tensor of this layout from a dense one: [B, N, N, E] → [B, N, N, E] (as is)."""
        return edge_attr

    def pair_sum(self, receiver: Tensor, sender: Tensor) -> Tensor:
        """``receiver_i + sender_j`` per edge: [B, N, D], [B, N, D] → [B, N, N, D]."""
        return receiver.unsqueeze(2) + sender.unsqueeze(1)

    def difference(self, x: Tensor) -> Tensor:
        """``x_i − x_j`` per edge: [B, N, D] → [B, N, N, D]."""
        return x.unsqueeze(2) - x.unsqueeze(1)

    def sum(self, values: Tensor, gate: Tensor | None = None) -> Tensor:
        """``Σ_j gate_ij · values_ij`` over the real edges of each receiver i: [B, N, N, D], gate [B, N, N] or
        None (1) → [B, N, D] in the dtype of the product."""
        weight = self.edge_weight.to(values.dtype) if gate is None else gate * self.edge_weight.to(gate.dtype)
        return (values * weight.unsqueeze(-1)).sum(2)


class _SparseEdges:
    """An edge list: node tensors flattened to ``[M, ·]`` (M = B·N, padding rows included), edge tensors
    ``[n_edges, ·]``; sums over edges are ``index_add`` accumulated in at least float32.

    Shapes:
        b, i, j: [n_edges] int64 (the edges j → i, e.g. from :func:`radius_edges`), mask: [B, N] bool;
        ``node_weight`` [M, 1] is 0/1 in ``dtype``
    """

    def __init__(self, b: Tensor, i: Tensor, j: Tensor, mask: Tensor, dtype: torch.dtype) -> None:
        batch_size, num_nodes = mask.shape
        self.dtype = dtype
        self.index = (b, i, j)
        self.shape = (batch_size, num_nodes)
        self.receiver = b * num_nodes + i
        self.sender = b * num_nodes + j
        self.node_weight = mask.reshape(-1, 1).to(dtype)

    def per_node(self, values: Tensor) -> Tensor:
        """Node tensor of this layout from a dense one: [B, N, D] → [M, D]."""
        return values.reshape(self.shape[0] * self.shape[1], values.shape[-1])

    def to_dense(self, values: Tensor) -> Tensor:
        """Back to [B, N, D] from [M, D]."""
        return values.reshape(*self.shape, values.shape[-1])

    def per_edge(self, edge_attr: Tensor) -> Tensor:
        """Edge tensor of this layout from a dense one: [B, N, N, E] gathered at the edges → [n_edges, E]."""
        return edge_attr[self.index]

    def pair_sum(self, receiver: Tensor, sender: Tensor) -> Tensor:
        """``receiver_i + sender_j`` per edge: [M, D], [M, D] → [n_edges, D]."""
        return receiver[self.receiver] + sender[self.sender]

    def difference(self, x: Tensor) -> Tensor:
        """``x_i − x_j`` per edge: [M, D] → [n_edges, D]."""
        return x[self.receiver] - x[self.sender]

    def sum(self, values: Tensor, gate: Tensor | None = None) -> Tensor:
        """``Σ_j gate_ij · values_ij`` over the listed edges of each receiver i: [n_edges, D], gate [n_edges] or
        None (1) → [M, D] in the dtype of the product (accumulated in at least float32: bf16 under autocast)."""
        if gate is not None:
            values = values * gate.unsqueeze(-1)
        accumulate = torch.promote_types(values.dtype, torch.float32)
        out = values.new_zeros(self.node_weight.shape[0], values.shape[-1], dtype=accumulate)
        return out.index_add_(0, self.receiver, values.to(accumulate)).to(values.dtype)


_EdgeLayout = _DenseEdges | _SparseEdges


# -- layers --------------------------------------------------------------------------------------------
class _FactoredEdgeInput(nn.Module):
    """First edge-MLP layer ``Linear([h_i, h_j, d_ij, a_ij])`` without materialising the per-edge concat.

    ``W [h_i, h_j, d, a] + b = (W_i h_i + b) + W_j h_j + Σ_k d_k w_k + W_a a``: two per-node projections paired
    per edge (``edges.pair_sum``), one rank-1 ``addcmul`` per scalar distance term ``d_k`` and, only after
    :meth:`add_edge_features`, one projection ``W_a`` of the given edge features ``a = edge_attr``.

    Shapes (``·`` is the layout's node or edge prefix: [B, N] / [B, N, N] dense, [M] / [n_edges] sparse):
        h: [·, H], distance_terms: list of [·edges] (compute dtype), edge_attr: [·edges, E] (compute dtype)
        or None → [·edges, H]
    """

    def __init__(self, hidden: int, distance_terms: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.linear = nn.Linear(2 * hidden + distance_terms, hidden)
        self.edge_attr_projection: nn.Linear | None = None

    def add_edge_features(self, edge_features: int) -> None:
        """Create ``W_a`` as a separate module, so the EDM layout of ``self.linear`` is untouched."""
        self.edge_attr_projection = nn.Linear(edge_features, self.hidden, bias=False)
        # Same scale as if W_a were E more input columns of self.linear (nn.Linear: U(±1/√fan_in)).
        bound = 1.0 / math.sqrt(self.linear.in_features + edge_features)
        nn.init.uniform_(self.edge_attr_projection.weight, -bound, bound)

    def forward(self, h: Tensor, edges: _EdgeLayout, distance_terms: list[Tensor],
                edge_attr: Tensor | None = None) -> Tensor:
        weight, hidden = self.linear.weight, self.hidden
        out = edges.pair_sum(F.linear(h, weight[:, :hidden], self.linear.bias),
                             F.linear(h, weight[:, hidden:2 * hidden]))
        for k, term in enumerate(distance_terms):
            out.addcmul_(term.unsqueeze(-1), weight[:, 2 * hidden + k].to(out.dtype))
        if self.edge_attr_projection is not None:
            out.add_(self.edge_attr_projection(edge_attr).to(out.dtype))
        return out


class _MessageLayer(nn.Module):
    """EDM's invariant graph convolution (GCL): gated messages, sum aggregation, residual node MLP.

    Shapes:
        h: [·, H], distance_terms: list of [·edges], edge_attr: [·edges, E] or None → [·, H]
    """

    def __init__(self, hidden: int, attention: bool, aggregation_normalisation: float) -> None:
        super().__init__()
        self.edge_in = _FactoredEdgeInput(hidden, _DISTANCE_TERMS)
        self.edge_out = nn.Linear(hidden, hidden)
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        # Stored as Linear(H, 1) like EDM, applied as multiply + sum (a width-1 matmul is slow).
        self.attention = nn.Linear(hidden, 1) if attention else None
        self.aggregation_normalisation = aggregation_normalisation

    def forward(self, h: Tensor, edges: _EdgeLayout, distance_terms: list[Tensor],
                edge_attr: Tensor | None = None) -> Tensor:
        messages = F.silu(self.edge_out(F.silu(self.edge_in(h, edges, distance_terms, edge_attr))))
        gate = None
        if self.attention is not None:
            logits = (messages * self.attention.weight[0].to(messages.dtype)).sum(-1)
            gate = torch.sigmoid(logits + self.attention.bias.to(messages.dtype))
        aggregated = edges.sum(messages, gate) / self.aggregation_normalisation
        h = h + self.node_mlp(torch.cat([h, aggregated], dim=-1))
        return h * edges.node_weight


class _CoordinateUpdate(nn.Module):
    """EDM's equivariant coordinate update: x_i += Σ_j unit_ij · r·tanh(φ_x(m_ij)) / Z.

    Shapes:
        h: [·, H], x: [·, 3], unit_diff: [·edges, 3] (dtype of x), distance_terms: list of [·edges],
        edge_attr: [·edges, E] or None → [·, 3]
    """

    def __init__(self, hidden: int, tanh: bool, coords_range: float, aggregation_normalisation: float) -> None:
        super().__init__()
        self.edge_in = _FactoredEdgeInput(hidden, _DISTANCE_TERMS)
        self.edge_hidden = nn.Linear(hidden, hidden)
        # EDM starts near the identity map: tiny output weights, no bias.
        self.edge_out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.edge_out.weight, gain=0.001)
        self.tanh = tanh
        self.coords_range = coords_range
        self.aggregation_normalisation = aggregation_normalisation

    def forward(self, h: Tensor, x: Tensor, unit_diff: Tensor, edges: _EdgeLayout, distance_terms: list[Tensor],
                edge_attr: Tensor | None = None) -> Tensor:
        features = F.silu(self.edge_hidden(F.silu(self.edge_in(h, edges, distance_terms, edge_attr))))
        weight = (features * self.edge_out.weight[0].to(features.dtype)).sum(-1).to(x.dtype)
        if self.tanh:
            weight = torch.tanh(weight) * self.coords_range
        return x + edges.sum(unit_diff, weight) / self.aggregation_normalisation


class _EdgeHead(nn.Module):
    """ε for K diffused edge channels from the last block's pair features: ``f_ij + f_ji`` (see the module
    docstring), symmetric by construction, zero on the diagonal and at padding (dense layout only).

    Shapes:
        h: [B, N, H], distance_terms: list of [B, N, N], edge_attr: [B, N, N, E] → [B, N, N, K]
    """

    def __init__(self, hidden: int, edge_features: int, edge_out_features: int) -> None:
        super().__init__()
        self.edge_in = _FactoredEdgeInput(hidden, _DISTANCE_TERMS)
        self.edge_in.add_edge_features(edge_features)
        self.edge_hidden = nn.Linear(hidden, hidden)
        self.edge_out = nn.Linear(hidden, edge_out_features)

    def forward(self, h: Tensor, edges: _DenseEdges, distance_terms: list[Tensor], edge_attr: Tensor) -> Tensor:
        f = self.edge_out(F.silu(self.edge_hidden(F.silu(self.edge_in(h, edges, distance_terms, edge_attr)))))
        return (f + f.transpose(1, 2)) * edges.edge_weight.to(f.dtype).unsqueeze(-1)


class _EquivariantBlock(nn.Module):
    """``sublayers`` message layers followed by one coordinate update (EDM ``EquivariantBlock``).

    Shapes:
        h: [·, H], x: [·, 3], initial_sq_dist: [·edges] (compute dtype), edge_attr: [·edges, E] (compute dtype)
        or None → (h [·, H], x [·, 3])
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

    def forward(self, h: Tensor, x: Tensor, edges: _EdgeLayout, initial_sq_dist: Tensor,
                edge_attr: Tensor | None = None) -> tuple[Tensor, Tensor]:
        diff = edges.difference(x)
        sq_dist = diff.square().sum(-1)
        # The 1e-8 keeps the gradient of sqrt finite on self-edges and padding (diff = 0).
        unit_diff = diff / (torch.sqrt(sq_dist + 1e-8) + self.norm_constant).unsqueeze(-1)
        distance_terms = [sq_dist.to(edges.dtype), initial_sq_dist]
        for layer in self.message_layers:
            h = layer(h, edges, distance_terms, edge_attr)
        x = self.coordinate_update(h, x, unit_diff, edges, distance_terms, edge_attr)
        x = x * edges.node_weight.to(x.dtype)
        return h, x


class EGNNDenoiser(DenoiserBase):
    """EDM's EGNN dynamics as a dense, masked, batched ε-predictor.

    ``forward(pos, h, t, mask, context=None, edge_attr=None)`` on dense tensors, or ``forward(batch, t=t)`` /
    ``forward_pyg(batch, t)`` on a ``torch_geometric`` batch (see :class:`DenoiserBase`).

    The output layer is ``Linear(hidden, F + 1 + C)`` of which the first F channels are ``eps_h``; the extra
    time and context channels are unused but kept so parameter shapes match EDM's QM9 checkpoints. With
    ``edge_features = E > 0`` every first edge-MLP layer gains a parameter ``edge_attr_projection.weight``
    [H, E]; with ``E = 0`` parameters and outputs are exactly those of the network without edge features.
    With ``edge_out_features = K > 0`` the edge head (``edge_head.*``, created after every other parameter) adds
    the third output ``eps_edges`` [B, N, N, K].

    ``forward(..., pair_weights=W)`` (``graph="full"`` only) runs the dense body with ``W`` [B, N, N] in place of
    the full graph: ``W[b, i, j]`` weights the message j → i in every sum over edges (e.g. a radius graph's 0/1
    adjacency at the dense path's cost). Pairs touching padding and self-pairs still count zero.

    Shapes:
        pos: [B, N, 3], h: [B, N, F], t: [B], mask: [B, N] bool, context: [B, C] or None,
        edge_attr: [B, N, N, E] or None, pair_weights: [B, N, N] or None → eps_pos: [B, N, 3] (zero centre of
        mass over real atoms), eps_h: [B, N, F]
    """

    def __init__(self, config: EGNNConfig) -> None:
        super().__init__()
        self.config = config
        self._pair_weights: Tensor | None = None  # set by forward(..., pair_weights=) for that call only
        width_in = config.in_node_features + 1 + config.context_features
        self.embedding = nn.Linear(width_in, config.hidden)
        self.blocks = nn.ModuleList(_EquivariantBlock(config) for _ in range(config.layers))
        self.embedding_out = nn.Linear(config.hidden, width_in)
        if config.edge_features:
            # Created last, so every other parameter draws the same initial values as with edge_features=0.
            for module in [m for m in self.modules() if isinstance(m, _FactoredEdgeInput)]:
                module.add_edge_features(config.edge_features)
        if config.edge_out_features:
            # Last of all, so the rest of the network initialises as it does without it.
            self.edge_head = _EdgeHead(config.hidden, config.edge_features, config.edge_out_features)

    def forward(self, pos, h: Tensor | None = None, t: Tensor | float | None = None, mask: Tensor | None = None,
                context: Tensor | None = None, edge_attr: Tensor | None = None, *,
                pair_weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The denoiser contract (:meth:`DenoiserBase.forward`), plus ``pair_weights`` [B, N, N] (bool or float) or
        None: the weight of each message j → i at ``[b, i, j]`` in place of the full graph's 0/1 (dense tensors and
        ``graph="full"`` only; ValueError otherwise, or for another shape)."""
        if pair_weights is None:
            return super().forward(pos, h, t, mask, context, edge_attr)
        if self.config.graph != "full":
            raise ValueError(f"pair_weights needs graph='full' (the dense layout), got graph={self.config.graph!r}")
        if not isinstance(pos, Tensor):
            raise ValueError("pair_weights needs dense tensors: forward(pos, h, t, mask, ..., pair_weights=...)")
        if pos.dim() == 3:  # otherwise the base class names what is wrong with pos
            expected = (pos.shape[0], pos.shape[1], pos.shape[1])
            got = tuple(pair_weights.shape) if isinstance(pair_weights, Tensor) else type(pair_weights).__name__
            if got != expected:
                raise ValueError(f"pair_weights must be a [B, N, N] = {expected} tensor, got {got}")
        # The base class validates and masks the inputs before it calls _forward_dense with a fixed argument list,
        # so the weights reach the body through the module for this one call.
        self._pair_weights = pair_weights
        try:
            return super().forward(pos, h, t, mask, context, edge_attr)
        finally:
            self._pair_weights = None

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
        compute_dtype = features.dtype  # bf16 under autocast, else the input dtype
        if self.config.graph == "radius":
            edges: _EdgeLayout = _SparseEdges(*self.edge_index(pos, mask), mask, compute_dtype)
        else:
            edges = _DenseEdges(mask, compute_dtype, self._pair_weights)
        features = edges.per_node(features)
        initial_pos = edges.per_node(pos)
        initial_sq_dist = edges.difference(initial_pos).square().sum(-1).to(compute_dtype)
        if edge_attr is not None:
            # Cast once: a float32 edge_attr would promote every edge tensor it is added to under autocast.
            edge_attr = edges.per_edge(edge_attr).to(compute_dtype)

        x = initial_pos
        for block in self.blocks:
            features, x = block(features, x, edges, initial_sq_dist, edge_attr)
        out = edges.to_dense(self.embedding_out(features))
        if not self.config.edge_out_features:
            return edges.to_dense(x - initial_pos), out[..., : self.config.in_node_features]
        sq_dist = edges.difference(x).square().sum(-1).to(compute_dtype)
        eps_edges = self.edge_head(features, edges, [sq_dist, initial_sq_dist], edge_attr)
        return edges.to_dense(x - initial_pos), out[..., : self.config.in_node_features], eps_edges

    def _embed_nodes(self, h: Tensor, t: Tensor, mask: Tensor, context: Tensor | None) -> Tensor:
        """The embedded node inputs ``[h | t | context]``: [B, N, H] (bf16 under autocast)."""
        batch_size, num_nodes = mask.shape
        node_inputs = [h, t.view(batch_size, 1, 1).expand(batch_size, num_nodes, 1)]
        if context is not None:
            node_inputs.append(context.unsqueeze(1).expand(batch_size, num_nodes, context.shape[-1]))
        return self.embedding(torch.cat(node_inputs, dim=-1))
