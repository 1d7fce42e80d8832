"""Shared plumbing for the denoisers: input checks, masking, zero-centre-of-mass output, PyG input.

Every denoiser subclasses :class:`DenoiserBase` and implements only ``_forward_dense`` on clean, masked,
validated dense tensors. The base class owns everything that must behave identically across backbones:

* the public ``forward(pos, h, t, mask, context=None, edge_attr=None)`` contract and its ``ValueError`` messages;
* padding hygiene (padded rows, and edge features of pairs touching padding or of self-edges, are replaced by
  zeros with ``torch.where``, so even NaN padding cannot leak);
* the final projection of ``eps_pos`` to zero centre of mass over the real nodes;
* the ``torch_geometric`` entry point ``forward_pyg(batch, t, context)``, which densifies ``batch.edge_attr``.

Edge features are dense and invariant: ``edge_attr[b, i, j]`` (``E`` scalars, e.g. one-hot bond orders)
belongs to the edge j → i, the same convention as :func:`pairwise_mask` and the backbones' edge tensors.

A backbone whose config has ``edge_out_features = K > 0`` also predicts ε for K diffused edge channels (bond
orders diffused with the atoms): ``forward`` then returns ``(eps_pos, eps_h, eps_edges)`` with ``eps_edges``
[B, N, N, K] symmetric in (i, j), zero on the diagonal and at pairs touching padding. With K = 0 (the default)
it returns the pair ``(eps_pos, eps_h)`` exactly as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..diffusion.space import ZeroCoMSpace

_ZERO_COM = ZeroCoMSpace(com_dims=3)  # the core's projection: zero centre of mass over real atoms

__all__ = ["DenoiserBase", "pairwise_mask"]


def pairwise_mask(mask: Tensor) -> Tensor:
    """Edges of the fully connected graph within each molecule: both ends real, no self-edges.

    Shapes:
        mask: [B, N] bool → [B, N, N] bool, entry [b, i, j] is the edge j → i.
    """
    n = mask.shape[1]
    not_self = ~torch.eye(n, dtype=torch.bool, device=mask.device)
    return mask.unsqueeze(2) & mask.unsqueeze(1) & not_self


def check_feature_sizes(config) -> None:
    """The input sizes every denoiser config shares: ValueError unless ``in_node_features`` >= 1 and
    ``context_features``, ``edge_features`` (and ``edge_out_features`` where the config has it) >= 0."""
    if config.in_node_features < 1:
        raise ValueError(f"in_node_features must be >= 1, got {config.in_node_features}")
    if config.context_features < 0:
        raise ValueError(f"context_features must be >= 0, got {config.context_features}")
    if config.edge_features < 0:
        raise ValueError(f"edge_features must be >= 0, got {config.edge_features}")
    if getattr(config, "edge_out_features", 0) < 0:
        raise ValueError(f"edge_out_features must be >= 0, got {config.edge_out_features}")


def _is_pyg_data(obj: Any) -> bool:
    try:
        from torch_geometric.data import Data, HeteroData
    except ImportError:  # pragma: no cover - torch_geometric is a hard dependency, but keep nets importable
        return False
    return isinstance(obj, Data | HeteroData)


class DenoiserBase(nn.Module):
    """Common contract of the molediff denoisers (ε-prediction for coordinates and atom features).

    Subclasses set ``self.config`` (a frozen dataclass with ``in_node_features``, ``context_features`` and
    optionally ``edge_features``, read as 0 when absent) and implement :meth:`_forward_dense`.
    """

    config: Any

    def forward(self, pos: Any, h: Tensor | None = None, t: Tensor | float | None = None,
                mask: Tensor | None = None, context: Tensor | None = None, edge_attr: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """Predict the noise ε on coordinates and on atom features.

        Either dense tensors ``forward(pos, h, t, mask, context=None, edge_attr=None)`` or a PyG batch
        ``forward(batch, t=t, context=None)`` (same as :meth:`forward_pyg`).

        Args:
            pos: atom coordinates (or a ``torch_geometric`` ``Data``/``Batch``).
            h: atom features (e.g. scaled one-hot types and charges).
            t: diffusion time in [0, 1], one per molecule (a Python float or 0-d tensor is broadcast).
            mask: True for real atoms, False for padding.
            context: per-molecule conditioning, appended to every atom's features.
            edge_attr: invariant edge features; entry ``[b, i, j]`` belongs to the edge j → i (it need not be
                symmetric). Required when ``config.edge_features > 0``, must be None otherwise. Entries of
                pairs touching padding and of self-edges are ignored (may hold anything, even NaN); pairs that
                are not bonded, say, should carry zeros (or a "no bond" channel).

        Returns:
            ``(eps_pos, eps_h)``: ``eps_pos`` has zero centre of mass over the real atoms; both are zero
            at padding and have the dtype of ``pos``. With ``config.edge_out_features = K > 0`` also
            ``eps_edges`` [B, N, N, K] (symmetric, zero on the diagonal and at padding, dtype of ``pos``).

        Shapes:
            pos: [B, N, 3], h: [B, N, F], t: [B], mask: [B, N] bool, context: [B, C] or None,
            edge_attr: [B, N, N, E] or None → eps_pos: [B, N, 3], eps_h: [B, N, F]
        """
        if _is_pyg_data(pos):
            if h is not None or mask is not None or edge_attr is not None:
                raise ValueError("with a torch_geometric batch, call forward(batch, t=t, context=context); "
                                 "h, mask and edge_attr are taken from the batch")
            return self.forward_pyg(pos, t, context)
        pos, h, t, mask, context, edge_attr = self._check_dense(pos, h, t, mask, context, edge_attr)
        # torch.where rather than a multiply: NaN or inf in padded rows must not leak (NaN * 0 = NaN).
        node = mask.unsqueeze(-1)
        pos = torch.where(node, pos, torch.zeros((), dtype=pos.dtype, device=pos.device))
        h = torch.where(node, h, torch.zeros((), dtype=h.dtype, device=h.device))
        if edge_attr is not None:
            pairs = pairwise_mask(mask).unsqueeze(-1)
            edge_attr = torch.where(pairs, edge_attr, torch.zeros((), dtype=edge_attr.dtype, device=edge_attr.device))
        out = self._forward_dense(pos, h, t, mask, context, edge_attr)
        eps_pos = _ZERO_COM.project(out[0].to(pos.dtype), mask)
        eps_h = out[1].to(h.dtype) * node.to(h.dtype)
        if len(out) == 2:
            return eps_pos, eps_h
        pairs = pairwise_mask(mask).unsqueeze(-1)
        eps_edges = torch.where(pairs, out[2].to(pos.dtype), torch.zeros((), dtype=pos.dtype, device=pos.device))
        return eps_pos, eps_h, eps_edges

    def forward_pyg(self, batch: Any, t: Tensor | float, context: Tensor | None = None
                    ) -> tuple[Tensor, Tensor]:
        """Node-level entry point for a ``torch_geometric`` ``Batch`` (or a single ``Data``).

        Atom features are read from ``batch.h`` if present, else ``batch.x``. The batch is padded to dense
        tensors, run through :meth:`forward` and unpadded again, so results equal the dense path exactly.

        When ``config.edge_features > 0``, ``batch.edge_attr`` holds the features of the edges
        ``batch.edge_index`` (PyG convention: row 0 is the source j, row 1 the target i); they are densified
        to ``edge_attr[b, i, j]``, pairs without an edge get zeros and duplicated edges are summed. With
        ``edge_features == 0`` any ``batch.edge_attr`` (e.g. integer bond orders) is ignored.

        Shapes:
            batch.pos: [n, 3], batch.h or batch.x: [n, F], batch.batch: [n] (optional for one graph),
            batch.edge_index: [2, n_edges] and batch.edge_attr: [n_edges, E] (only if E > 0),
            t: [G], context: [G, C] or None → eps_pos: [n, 3], eps_h: [n, F]
        """
        from torch_geometric.utils import to_dense_adj, to_dense_batch

        if getattr(self.config, "edge_out_features", 0):
            raise ValueError("a denoiser with edge_out_features predicts a dense edge block: call it with dense "
                             "tensors, forward(pos, h, t, mask, context, edge_attr)")

        pos = getattr(batch, "pos", None)
        if pos is None:
            raise ValueError("the torch_geometric batch has no `pos` attribute")
        h = getattr(batch, "h", None)
        if h is None:
            h = getattr(batch, "x", None)
        if h is None:
            raise ValueError("the torch_geometric batch needs atom features in `h` or `x`")
        if not torch.is_floating_point(h):
            h = h.to(pos.dtype)
        if h.dim() != 2 or pos.dim() != 2 or h.shape[0] != pos.shape[0]:
            raise ValueError(f"batch.pos must be [n, 3] and batch.h/x [n, F] with the same n, got "
                             f"{tuple(pos.shape)} and {tuple(h.shape)}")
        index = getattr(batch, "batch", None)
        if index is None:
            index = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        num_graphs = int(getattr(batch, "num_graphs", int(index.max()) + 1 if index.numel() else 1))
        dense_pos, mask = to_dense_batch(pos, index, batch_size=num_graphs)
        dense_h, _ = to_dense_batch(h, index, batch_size=num_graphs)
        dense_edge_attr = None
        edge_features = getattr(self.config, "edge_features", 0)
        if edge_features:
            edge_index = getattr(batch, "edge_index", None)
            edge_attr = getattr(batch, "edge_attr", None)
            if not isinstance(edge_index, Tensor) or not isinstance(edge_attr, Tensor):
                raise ValueError(f"the config has edge_features={edge_features}: the torch_geometric batch "
                                 f"needs `edge_index` [2, n_edges] and `edge_attr` [n_edges, {edge_features}]")
            if not torch.is_floating_point(edge_attr):
                edge_attr = edge_attr.to(pos.dtype)
            if edge_attr.dim() != 2 or edge_index.dim() != 2 or edge_index.shape[0] != 2 \
                    or edge_attr.shape[0] != edge_index.shape[1]:
                raise ValueError(f"batch.edge_index must be [2, n_edges] and batch.edge_attr "
                                 f"[n_edges, {edge_features}], got {tuple(edge_index.shape)} and "
                                 f"{tuple(edge_attr.shape)}")
            dense_edge_attr = to_dense_adj(edge_index, index, edge_attr, max_num_nodes=dense_pos.shape[1],
                                           batch_size=num_graphs)
            # to_dense_adj puts the edge (source j → target i) at [b, j, i]; the dense contract wants [b, i, j].
            dense_edge_attr = dense_edge_attr.transpose(1, 2)
        eps_pos, eps_h = self.forward(dense_pos, dense_h, t, mask, context, dense_edge_attr)
        return eps_pos[mask], eps_h[mask]

    def _forward_dense(self, pos: Tensor, h: Tensor, t: Tensor, mask: Tensor, context: Tensor | None,
                       edge_attr: Tensor | None) -> tuple[Tensor, Tensor]:
        """Backbone body on validated inputs with zeroed padding; returns raw (eps_pos, eps_h), and eps_edges
        [B, N, N, K] after them when ``config.edge_out_features = K > 0``.

        ``edge_attr`` is None exactly when ``config.edge_features == 0``; otherwise it is zero on every pair
        outside :func:`pairwise_mask`. The base class then projects ``eps_pos`` to zero centre of mass and
        zeroes padding.

        Shapes:
            pos: [B, N, 3], h: [B, N, F], t: [B], mask: [B, N], context: [B, C] or None,
            edge_attr: [B, N, N, E] or None → ([B, N, 3], [B, N, F])
        """
        raise NotImplementedError

    def _check_dense(self, pos: Any, h: Any, t: Any, mask: Any, context: Any, edge_attr: Any = None
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        features = self.config.in_node_features
        context_features = self.config.context_features
        edge_features = getattr(self.config, "edge_features", 0)
        if not isinstance(pos, Tensor) or pos.dim() != 3 or pos.shape[-1] != 3:
            raise ValueError(f"pos must be a [B, N, 3] tensor, got "
                             f"{tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__}")
        batch_size, num_nodes = pos.shape[:2]
        if not torch.is_floating_point(pos):
            raise ValueError(f"pos must be floating point, got {pos.dtype}")
        if not isinstance(h, Tensor) or tuple(h.shape) != (batch_size, num_nodes, features):
            raise ValueError(f"h must be a [B, N, F] = {(batch_size, num_nodes, features)} tensor, got "
                             f"{tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__}")
        if h.dtype != pos.dtype:
            raise ValueError(f"h and pos must share a dtype, got {h.dtype} and {pos.dtype}")
        if not isinstance(mask, Tensor) or tuple(mask.shape) != (batch_size, num_nodes):
            raise ValueError(f"mask must be a [B, N] = {(batch_size, num_nodes)} tensor, got "
                             f"{tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
        if t is None:
            raise ValueError("t (diffusion time per molecule, [B]) is required")
        t = torch.as_tensor(t, dtype=pos.dtype, device=pos.device)
        if t.dim() == 0:
            t = t.expand(batch_size)
        elif t.dim() == 2 and t.shape[1] == 1:
            t = t.squeeze(1)
        if tuple(t.shape) != (batch_size,):
            raise ValueError(f"t must have shape [B] = ({batch_size},) (or be a scalar), got {tuple(t.shape)}")
        if context_features:
            if not isinstance(context, Tensor) or tuple(context.shape) != (batch_size, context_features):
                raise ValueError(f"context must be a [B, C] = {(batch_size, context_features)} tensor, got "
                                 f"{tuple(context.shape) if isinstance(context, Tensor) else context}")
            context = context.to(pos.dtype)
        elif context is not None:
            raise ValueError("context was given but the config has context_features=0")
        if edge_features:
            shape = (batch_size, num_nodes, num_nodes, edge_features)
            if not isinstance(edge_attr, Tensor) or tuple(edge_attr.shape) != shape:
                raise ValueError(f"edge_attr must be a [B, N, N, E] = {shape} tensor, got "
                                 f"{tuple(edge_attr.shape) if isinstance(edge_attr, Tensor) else edge_attr}")
            if edge_attr.dtype != pos.dtype:
                raise ValueError(f"edge_attr and pos must share a dtype, got {edge_attr.dtype} and {pos.dtype}")
        elif edge_attr is not None:
            raise ValueError("edge_attr was given but the config has edge_features=0")
        # One host sync for all checks; only real atoms and real pairs count (padding may hold anything).
        node = mask.unsqueeze(-1)
        finite = (torch.isfinite(pos).logical_or(~node).all() & torch.isfinite(h).logical_or(~node).all()
                  & torch.isfinite(t).all())
        if context is not None:
            finite = finite & torch.isfinite(context).all()
        if edge_attr is not None:
            finite = finite & torch.isfinite(edge_attr).logical_or(~pairwise_mask(mask).unsqueeze(-1)).all()
        if not bool(finite):
            raise ValueError("pos, h, t, context and edge_attr must be finite at real atoms and between real "
                             "atoms (found NaN or inf)")
        return pos, h, t, mask, context, edge_attr
