"""A Cα chain as internal coordinates: virtual bond angles and dihedrals, with every Cα–Cα bond fixed.

A chain of L Cα atoms x_0 … x_{L−1} is, up to a rigid motion, its L − 1 bond lengths d_i = |x_{i+1} − x_i|,
its L − 2 virtual bond angles θ_i (at x_{i+1}, between x_i and x_{i+2}; radians in [0, π]) and its L − 3
virtual dihedrals τ_i (of x_i, x_{i+1}, x_{i+2}, x_{i+3}; radians in [−π, π), the IUPAC sign of
``proteins.metrics.dihedrals``: an α-helix has τ ≈ +50°). With every d_i = 3.80 Å (``CA_CA``) the angles
alone describe the chain: the representation of angle-based backbone diffusion (FoldingDiff, Wu et al. 2022,
with Cα–Cα instead of N–Cα–C bonds; the virtual-bond description of Levitt 1976).

Back to coordinates by NeRF (natural extension reference frame, Parsons et al. 2005): x_0 at the origin,
x_1 on the +x axis, x_2 in the xy-plane, then each next atom from the three before it. Both directions are
batched over padded chains ``[B, N, ·]`` with per-chain lengths, and differentiable.

The diffused state packs the angles of a chain of L residues as ``[L − 2, 2]``: row k holds (θ_k, τ_k); τ at
the last row does not exist (``angle_mask`` marks it False). Padding rows are zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["CA_CA", "bond_lengths", "bond_angles", "dihedrals", "chain_to_angles", "angles_to_chain", "angle_mask",
           "lengths_from_mask", "superposed_rmsd"]

CA_CA = 3.80
"""Å: the fixed Cα–Cα distance of trans peptides (3.80 ± 0.02 Å in real chains)."""

_EPS = 1e-12


def _normalise(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=_EPS)


def lengths_from_mask(mask: Tensor) -> Tensor:
    """Residues per chain ``[B]`` (long) from a residue mask ``[B, N]`` with residues first.

    ValueError when a mask row is not a prefix of True values.
    """
    lengths = mask.sum(1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None]
    if not torch.equal(prefix, mask.bool()):
        raise ValueError("the residue mask must hold each chain's residues first (True, then False padding)")
    return lengths.long()


def _residue_mask(coords: Tensor, mask: Tensor | None) -> Tensor:
    if coords.dim() != 3 or coords.shape[-1] != 3:
        raise ValueError(f"coordinates must be [B, N, 3], got {tuple(coords.shape)}")
    if mask is None:
        return torch.ones(coords.shape[:2], dtype=torch.bool, device=coords.device)
    if tuple(mask.shape) != tuple(coords.shape[:2]):
        raise ValueError(f"mask {tuple(mask.shape)} must be [B, N] = {tuple(coords.shape[:2])}")
    return mask.bool()


def bond_lengths(coords: Tensor, mask: Tensor | None = None) -> Tensor:
    """|x_{i+1} − x_i| ``[B, N − 1]`` in Å from coordinates ``[B, N, 3]``; 0 where x_{i+1} is padding."""
    m = _residue_mask(coords, mask)
    d = (coords[:, 1:] - coords[:, :-1]).norm(dim=-1)
    return d * m[:, 1:].to(d.dtype)


def bond_angles(coords: Tensor, mask: Tensor | None = None) -> Tensor:
    """θ_i ``[B, N − 2]`` in radians [0, π]: the angle at x_{i+1} between x_i and x_{i+2}; 0 at padding.

    Computed as atan2(|u × v|, u · v), whose gradient stays finite near 0 and π (unlike arccos).
    """
    m = _residue_mask(coords, mask)
    u, v = coords[:, :-2] - coords[:, 1:-1], coords[:, 2:] - coords[:, 1:-1]
    theta = torch.atan2(torch.linalg.cross(u, v).norm(dim=-1), (u * v).sum(-1))
    return theta * m[:, 2:].to(theta.dtype)


def dihedrals(coords: Tensor, mask: Tensor | None = None) -> Tensor:
    """τ_i ``[B, N − 3]`` in radians [−π, π] of x_i … x_{i+3} (IUPAC sign, as ``proteins.metrics.dihedrals``);
    0 at padding. A mirror image flips every sign."""
    m = _residue_mask(coords, mask)
    b0, b1, b2 = coords[:, 1:-2] - coords[:, :-3], coords[:, 2:-1] - coords[:, 1:-2], coords[:, 3:] - coords[:, 2:-1]
    n1, n2 = torch.linalg.cross(b0, b1), torch.linalg.cross(b1, b2)
    m1 = torch.linalg.cross(_normalise(b1), n1)
    tau = torch.atan2((m1 * n2).sum(-1), (n1 * n2).sum(-1))
    return tau * m[:, 3:].to(tau.dtype)


def angle_mask(lengths: Tensor, positions: int) -> Tensor:
    """Which entries of the packed angles ``[B, positions, 2]`` exist: θ_k for k < L − 2, τ_k for k < L − 3."""
    k = torch.arange(positions, device=lengths.device)[None]
    lengths = lengths[:, None]
    return torch.stack([k < lengths - 2, k < lengths - 3], dim=-1)


def chain_to_angles(coords: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Internal coordinates of padded chains.

    Shapes: coords ``[B, N, 3]`` (Å), mask ``[B, N]`` bool with residues first (None: all real); N ≥ 3.
    Returns ``(angles [B, N − 2, 2], angle_mask [B, N − 2, 2], bonds [B, N − 1])``: angles row k = (θ_k, τ_k) in
    radians, τ wrapped into [−π, π), zero where ``angle_mask`` is False; bonds in Å, zero at padding.
    Differentiable. ValueError for other shapes or a mask that is not residues-first.
    """
    m = _residue_mask(coords, mask)
    if coords.shape[1] < 3:
        raise ValueError(f"a chain needs at least 3 residues for a bond angle, got N = {coords.shape[1]}")
    lengths = lengths_from_mask(m)
    theta = bond_angles(coords, m)
    tau = dihedrals(coords, m)
    tau = torch.where(tau >= math.pi, tau - 2 * math.pi, tau)
    tau = torch.cat([tau, tau.new_zeros(tau.shape[0], 1)], dim=1)
    amask = angle_mask(lengths, coords.shape[1] - 2)
    angles = torch.stack([theta, tau], dim=-1) * amask.to(theta.dtype)
    return angles, amask, bond_lengths(coords, m)


def angles_to_chain(angles: Tensor, lengths: Tensor | None = None, bonds: Tensor | float = CA_CA) -> Tensor:
    """Place the Cα atoms from packed angles by NeRF (Parsons et al. 2005).

    Shapes: angles ``[B, M, 2]`` (θ_k, τ_k in radians, any branch of τ) for chains of up to N = M + 2 residues;
    lengths ``[B]`` (None: every chain has N residues); bonds a float (Å, default 3.80) or ``[B, N − 1]`` Å.
    Returns coordinates ``[B, N, 3]`` in Å, zero at padding: x_0 at the origin, x_1 on +x, x_2 in the xy-plane
    (the frame is arbitrary; superpose to compare). Differentiable in the angles and bonds; entries past a
    chain's end are ignored. ValueError for other shapes or a length outside 3..N.
    """
    if angles.dim() != 3 or angles.shape[-1] != 2:
        raise ValueError(f"packed angles must be [B, M, 2], got {tuple(angles.shape)}")
    B, M = angles.shape[:2]
    n = M + 2
    if lengths is None:
        lengths = torch.full((B,), n, dtype=torch.long, device=angles.device)
    lengths = torch.as_tensor(lengths, device=angles.device).long()
    if lengths.shape != (B,) or (B and not (3 <= int(lengths.min()) and int(lengths.max()) <= n)):
        raise ValueError(f"lengths must be [B] = [{B}] values in 3..{n}, got {lengths.tolist()}")
    bonds = torch.as_tensor(bonds, dtype=angles.dtype, device=angles.device)
    bonds = bonds.expand(B, n - 1) if bonds.dim() == 0 else bonds
    if bonds.shape != (B, n - 1):
        raise ValueError(f"bonds must be a float or [B, N − 1] = [{B}, {n - 1}], got {tuple(bonds.shape)}")
    amask = angle_mask(lengths, M)
    # padding gets a harmless right angle and unit bonds, so no frame degenerates (no NaN gradients)
    theta = torch.where(amask[..., 0], angles[..., 0], torch.full_like(angles[..., 0], math.pi / 2))
    tau = torch.where(amask[..., 1], angles[..., 1], torch.zeros_like(angles[..., 1]))
    bond_ok = torch.arange(n - 1, device=angles.device)[None] < (lengths[:, None] - 1)
    bonds = torch.where(bond_ok, bonds, torch.ones_like(bonds))

    zeros = angles.new_zeros(B)
    x0 = angles.new_zeros(B, 3)
    x1 = torch.stack([bonds[:, 0], zeros, zeros], -1)
    x2 = x1 + bonds[:, 1:2] * torch.stack([-torch.cos(theta[:, 0]), torch.sin(theta[:, 0]), zeros], -1)
    atoms = [x0, x1, x2]
    for k in range(M - 1):
        # the next atom x_{k+3}: bond d_{k+2}, angle θ_{k+1} at x_{k+2}, dihedral τ_k of x_k … x_{k+3}
        a, b, c = atoms[k], atoms[k + 1], atoms[k + 2]
        bc = _normalise(c - b)
        nrm = _normalise(torch.linalg.cross(b - a, bc))
        m = torch.linalg.cross(nrm, bc)
        th, ta = theta[:, k + 1, None], tau[:, k, None]
        step = -torch.cos(th) * bc + torch.sin(th) * (torch.cos(ta) * m + torch.sin(ta) * nrm)
        atoms.append(c + bonds[:, k + 2, None] * step)
    coords = torch.stack(atoms, dim=1)
    real = torch.arange(n, device=angles.device)[None] < lengths[:, None]
    return coords * real[..., None].to(coords.dtype)


def superposed_rmsd(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """RMSD ``[B]`` (Å) of ``a`` and ``b`` ``[B, N, 3]`` after the optimal proper rotation and translation
    (Kabsch 1976), over the residues of ``mask`` ``[B, N]`` (None: all)."""
    m = _residue_mask(a, mask).to(a.dtype)[..., None]
    n = m.sum(1, keepdim=True).clamp(min=1)
    a0 = (a - (a * m).sum(1, keepdim=True) / n) * m
    b0 = (b - (b * m).sum(1, keepdim=True) / n) * m
    u, _, vt = torch.linalg.svd(a0.transpose(1, 2) @ b0)
    d = torch.sign(torch.linalg.det(u @ vt))
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = u @ fix @ vt                                       # a0 @ rot ≈ b0
    return (((a0 @ rot - b0) ** 2).sum(-1) * m[..., 0]).sum(1).div(n[:, 0, 0]).sqrt()
