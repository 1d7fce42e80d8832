"""Symmetry checks for denoisers: random group elements and one assertion for E(3) and permutation equivariance.

Any callable with the denoiser contract ``model(pos, h, t, mask, context=None, edge_attr=None) -> (eps_pos,
eps_h)`` can be checked (see :class:`~molediff.nn.common.DenoiserBase`), e.g. in a test::

    from molediff.testing import assert_equivariant

    assert_equivariant(net.double().eval(), {"pos": pos, "h": h, "t": t, "mask": mask}, atol=1e-6)

Use float64 inputs: float32 round-off alone reaches ~1e-5 on a deep network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["assert_equivariant", "random_molecule_batch", "random_orthogonal", "random_permutation"]

_REQUIRED = ("pos", "h", "t", "mask")
_OPTIONAL = ("context", "edge_attr")


def random_orthogonal(determinant: int = 1, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """A Haar-random 3 × 3 orthogonal matrix with the given determinant: +1 a rotation, −1 a rotoreflection.

    Shapes:
        → [3, 3]; apply to row-vector coordinates as ``pos @ q.T``.
    """
    if determinant not in (1, -1):
        raise ValueError(f"determinant must be 1 or -1, got {determinant}")
    generator = torch.Generator().manual_seed(seed)
    # Sampled in float64 so the matrix is orthogonal to round-off whatever dtype is asked for.
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # the sign fix makes QR of a Gaussian Haar-distributed
    if torch.det(q) * determinant < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def random_permutation(mask: Tensor, seed: int = 0) -> Tensor:
    """An independent random permutation of the node slots (real and padding alike) of every row.

    Apply to a node tensor as ``x[rows, order]`` with ``rows = torch.arange(B)[:, None]``.

    Shapes:
        mask: [B, N] → [B, N] int64 on mask's device, each row a permutation of 0..N−1.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, N], got {tuple(mask.shape)}")
    batch_size, num_nodes = mask.shape
    generator = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(num_nodes, generator=generator) for _ in range(batch_size)])
    return order.reshape(batch_size, num_nodes).to(mask.device)


def _call(model: Callable[..., Any], inputs: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    # Optional inputs are passed only when given, so models without an edge_attr argument can be checked too.
    kwargs = {key: inputs[key] for key in _OPTIONAL if inputs.get(key) is not None}
    eps_pos, eps_h = model(inputs["pos"], inputs["h"], inputs["t"], inputs["mask"], **kwargs)
    # No torch.no_grad around the call: a model may differentiate internally (e.g. forces from an energy).
    return eps_pos.detach(), eps_h.detach()


def _compare(prop: str, got: Tensor, expected: Tensor, mask: Tensor, atol: float) -> None:
    # Only real atoms: what a model writes at padding is a separate part of the contract.
    got, expected = got[mask], expected[mask]
    if got.shape != expected.shape:
        raise AssertionError(f"{prop} failed: output shape {tuple(got.shape)} != expected {tuple(expected.shape)}")
    error = (got - expected).abs().max().item() if got.numel() else 0.0
    if not error <= atol:  # also catches NaN
        raise AssertionError(f"{prop} failed: max abs error at real atoms {error:.3g} > atol {atol:.3g}")


def assert_equivariant(model: Callable[..., Any], inputs: Mapping[str, Any], atol: float = 1e-6,
                       seed: int = 0) -> None:
    """Assert that ``model`` is E(3)-equivariant in ``pos`` and permutation-equivariant in the nodes.

    With ``(eps_pos, eps_h) = model(pos, h, t, mask, context, edge_attr)`` on the given inputs, checks at the
    real atoms (``mask``), to ``atol`` in max abs error:

    * **rotation**: ``pos @ Q.T`` with a random ``det Q = +1`` gives ``eps_pos @ Q.T`` and the same ``eps_h``;
    * **reflection**: the same with ``det Q = −1`` (an improper rotation: E(3), not only SE(3));
    * **translation**: ``pos + s`` with a random shift ``s`` per molecule gives the same outputs;
    * **permutation**: reordering the node slots of each molecule independently (``pos``, ``h``, ``mask`` on
      the node axis, ``edge_attr`` on both node axes) reorders the outputs the same way.

    ``t``, ``context`` and ``edge_attr`` are invariant inputs and are not transformed by rotations,
    reflections or translations. Inputs are used as given (pass float64 for a tight ``atol``); run the model
    in eval mode so dropout and the like cannot break the comparison. ``seed`` fixes the random group
    elements.

    Shapes:
        inputs: pos [B, N, 3], h [B, N, F], t [B] (or anything the model accepts), mask [B, N] bool,
        optional context [B, C] and edge_attr [B, N, N, E]; the model returns eps_pos [B, N, 3], eps_h [B, N, F].

    Raises:
        AssertionError: naming the property that failed (e.g. "reflection equivariance of eps_pos failed").
        ValueError: if ``inputs`` lacks a required key or has an unknown one.
    """
    missing = [key for key in _REQUIRED if key not in inputs]
    unknown = sorted(set(inputs) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise ValueError(f"inputs needs keys {list(_REQUIRED)} (optional {list(_OPTIONAL)}); missing {missing}, "
                         f"unknown {unknown}")
    pos, mask = inputs["pos"], inputs["mask"]
    eps_pos, eps_h = _call(model, inputs)
    if eps_pos.shape != pos.shape:
        raise AssertionError(f"eps_pos must have the shape of pos {tuple(pos.shape)}, got {tuple(eps_pos.shape)}")
    if not (torch.isfinite(eps_pos[mask]).all() and torch.isfinite(eps_h[mask]).all()):
        raise AssertionError("the model output is not finite at real atoms on the untransformed inputs")

    for name, determinant, offset in (("rotation", 1, 0), ("reflection", -1, 1)):
        q = random_orthogonal(determinant, seed=seed + offset, dtype=pos.dtype).to(pos.device)
        got_pos, got_h = _call(model, {**inputs, "pos": pos @ q.T})
        _compare(f"{name} equivariance of eps_pos", got_pos, eps_pos @ q.T, mask, atol)
        _compare(f"{name} invariance of eps_h", got_h, eps_h, mask, atol)

    generator = torch.Generator().manual_seed(seed + 2)
    shift = torch.randn(pos.shape[0], 1, 3, generator=generator, dtype=torch.float64) * 5.0
    got_pos, got_h = _call(model, {**inputs, "pos": pos + shift.to(dtype=pos.dtype, device=pos.device)})
    _compare("translation invariance of eps_pos", got_pos, eps_pos, mask, atol)
    _compare("translation invariance of eps_h", got_h, eps_h, mask, atol)

    order = random_permutation(mask, seed=seed + 3)
    rows = torch.arange(mask.shape[0], device=mask.device)[:, None]
    permuted = {**inputs, "pos": pos[rows, order], "h": inputs["h"][rows, order], "mask": mask[rows, order]}
    if inputs.get("edge_attr") is not None:
        # new[b, i, j] = old[b, order[b, i], order[b, j]], like new[b, i] = old[b, order[b, i]] for the nodes.
        permuted["edge_attr"] = inputs["edge_attr"][rows[:, :, None], order[:, :, None], order[:, None, :]]
    got_pos, got_h = _call(model, permuted)
    permuted_mask = permuted["mask"]
    _compare("permutation equivariance of eps_pos", got_pos, eps_pos[rows, order], permuted_mask, atol)
    _compare("permutation equivariance of eps_h", got_h, eps_h[rows, order], permuted_mask, atol)


def random_molecule_batch(counts: Sequence[int] = (6, 4, 5), num_nodes: int = 6, vocabulary_size: int = 5,
                          seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """A padded batch of random molecules for model tests: ``(positions, type_index, mask)``.

    Shapes: positions [B, N, 3] (≈1.5 Å spread, 0 at padding), type_index [B, N] in 0..vocabulary_size-1
    (0 at padding), mask [B, N] bool with ``counts[b]`` real atoms first.
    """
    generator = torch.Generator().manual_seed(seed)
    counts = torch.as_tensor(counts)
    mask = torch.arange(num_nodes)[None] < counts[:, None]
    positions = torch.randn(len(counts), num_nodes, 3, generator=generator, dtype=dtype) * 1.5 * mask.unsqueeze(-1)
    type_index = torch.randint(0, vocabulary_size, (len(counts), num_nodes), generator=generator) * mask
    return positions, type_index, mask
