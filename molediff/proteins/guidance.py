"""Clash and compactness guidance for Cα chains sampled as virtual bond angles and dihedrals.

A chain built from angles inherits every angle error along its length: small errors compound into chains that
are extended or pass through themselves (FoldingDiff's lever-arm effect, Wu et al. 2022 §4). The angle model
learns the local statistics well on CPU but not the long-range packing, so its samples keep the right helix and
strand content and miss compactness and self-avoidance. :class:`ChainGuide` corrects exactly that during
sampling, through the core samplers' ``guide`` hook: after each step at low noise (t ≤ ``start``) it takes a few
gradient steps on the angles of the energy

    E(θ, τ) = w_c · Σ_{j ≥ i + 3} max(0, d₀ − d_ij)²  +  max(0, R_g − c · L^0.38)²

(d_ij the Cα–Cα distances of the chain rebuilt by NeRF, d₀ = ``clash_distance``, c = ``rg_ceiling``), and after
the last step ``final_iterations`` more with a step size decaying to 0.005 rad. A chain with no pair closer than
d₀ and R_g under the ceiling is left exactly as sampled. The gradient flows through the NeRF placement, so the
guide moves the angles whose lever arm matters, as little as it can; each step is scaled per chain so that no
angle moves more than ``step`` radians. Like classifier guidance (Dhariwal & Nichol 2021) it steers the sampler
with a gradient, here of a hand-written physical energy instead of a learned classifier; nothing of it is
learned, and BENCHMARKS.md reports the model with and without it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .angles import CA_CA, angles_to_chain
from .metrics import RG_EXPONENT

__all__ = ["ChainGuide", "chain_energy"]

MIN_STEP = 0.005
"""Radians: the step size the final iterations decay to."""


@dataclass(frozen=True)
class ChainGuide:
    """Settings of the clash and compactness guide (see the module docstring for the energy).

    Attributes:
        start: diffusion time t ∈ (0, 1] at or below which the guide acts after every sampler step.
        clash_distance: d₀ in Å; non-adjacent Cα pairs (|i − j| ≥ 3) closer than this are pushed apart. Real
            chains keep such pairs above about 4 Å; ``protein score`` counts a clash under 3.0 Å.
        clash_weight: w_c, the weight of the clash term against the compactness term.
        rg_ceiling: c in Å; R_g above c · L^0.38 is pulled in. None: no compactness term. The default 2.6 is
            the 90th percentile of R_g / L^0.38 over the whole training chains of 40–160 residues (median 2.25).
        learning_rate: gradient step (radians per unit of energy gradient) before the per-chain cap.
        step: the largest change of any angle in one iteration, radians.
        iterations: gradient iterations after every sampler step at t ≤ ``start``.
        final_iterations: iterations after the last sampler step, the cap decaying linearly from ``step`` to
            0.005 rad.

    The Cα–Cα distance of the NeRF rebuild is the model's, given where the guide is used (``bond_length``).

    ValueError for a setting outside its range.
    """

    start: float = 0.3
    clash_distance: float = 4.0
    clash_weight: float = 10.0
    rg_ceiling: float | None = 2.6
    learning_rate: float = 0.01
    step: float = 0.1
    iterations: int = 3
    final_iterations: int = 100

    def __post_init__(self):
        checks = [(0 < self.start <= 1, "start must lie in (0, 1]"),
                  (self.clash_distance > 0, "clash_distance must be > 0 Å"),
                  (self.clash_weight >= 0, "clash_weight must be >= 0"),
                  (self.rg_ceiling is None or self.rg_ceiling > 0, "rg_ceiling must be > 0 Å or None"),
                  (self.learning_rate > 0 and self.step > 0, "learning_rate and step must be > 0"),
                  (self.iterations >= 0 and self.final_iterations >= 0, "iterations must be >= 0")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"chain guide: {message}, got {asdict(self)}")

    def build(self, lengths: Tensor, bond_length: float = CA_CA):
        """The core sampler's ``guide(z_t, t) → z_t`` for packed angles ``z_t [B, M, 2]`` of chains with
        ``lengths [B]`` residues (padding untouched) and Cα–Cα ``bond_length`` Å; it enables gradients itself,
        so it runs inside ``torch.no_grad`` sampling."""
        lengths = torch.as_tensor(lengths).long()

        def guide(z: Tensor, t: Tensor) -> Tensor:
            time = float(t.flatten()[0])
            final = time <= 0
            if (time > self.start and not final) or (final and not self.final_iterations):
                return z
            return self.descend(z, lengths, self.final_iterations if final else self.iterations, decay=final,
                                bond_length=bond_length)

        return guide

    def descend(self, angles: Tensor, lengths: Tensor, iterations: int, decay: bool = False,
                bond_length: float = CA_CA) -> Tensor:
        """``iterations`` capped gradient steps on :func:`chain_energy`; angles ``[B, M, 2]`` radians → the same
        shape, τ wrapped into [−π, π). ``decay``: the cap falls linearly from ``step`` to 0.005 rad."""
        original = x = angles.detach()
        if iterations == 0:
            return angles
        lengths = lengths.to(x.device)
        with torch.enable_grad():
            for k in range(iterations):
                x = x.detach().requires_grad_(True)
                energy = chain_energy(x, lengths, self, bond_length)
                if not bool((energy > 0).any()):
                    break
                grad, = torch.autograd.grad(energy.sum(), x)
                cap = self.step * (1 - k / iterations) + MIN_STEP if decay else self.step
                move = self.learning_rate * grad
                scale = move.abs().flatten(1).amax(1).clamp(min=cap) / cap    # per chain: no angle moves > cap
                x = x.detach() - move / scale[:, None, None]
        x = x.detach()
        # wrap only what moved, so that a chain the guide leaves alone stays bit for bit as sampled
        return torch.where(x != original, torch.remainder(x + math.pi, 2 * math.pi) - math.pi, original)


def chain_energy(angles: Tensor, lengths: Tensor, guide: ChainGuide, bond_length: float = CA_CA) -> Tensor:
    """The guide's energy ``[B]`` (Å²) of chains given as packed angles ``[B, M, 2]`` (θ, τ in radians; a
    negative θ reads as |θ|, as the angle model's sampler does) with ``lengths [B]`` residues and every Cα–Cα at
    ``bond_length`` Å: the clash term
    over non-adjacent Cα pairs plus, with ``guide.rg_ceiling``, the compactness term (module docstring).
    Zero for a chain without pairs under ``clash_distance`` and with R_g under the ceiling. Differentiable."""
    theta_tau = torch.stack([angles[..., 0].abs(), angles[..., 1]], dim=-1)
    coords = angles_to_chain(theta_tau.double(), lengths, bond_length)   # float64: errors add up along L
    n = coords.shape[1]
    index = torch.arange(n, device=coords.device)
    real = index[None] < lengths[:, None]
    pairs = ((index[None] - index[:, None]).abs() >= 3)[None] & real[:, :, None] & real[:, None, :]
    # float32 distances (about 2.5x faster; 1e-6 Å is far below what the guide resolves), and no matrix-product
    # shortcut: a chain's distances must not depend on the batch it is sampled in
    points = coords.float()
    distances = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")
    clash = (torch.relu(guide.clash_distance - distances) ** 2 * pairs).sum((1, 2)).double() / 2
    energy = guide.clash_weight * clash
    if guide.rg_ceiling is not None:
        count = lengths.to(coords.dtype)
        centre = (coords * real[..., None]).sum(1) / count[:, None]
        rg = ((((coords - centre[:, None]) ** 2).sum(-1) * real).sum(1) / count).sqrt()
        energy = energy + torch.relu(rg - guide.rg_ceiling * count ** RG_EXPONENT) ** 2
    return energy.to(angles.dtype)
