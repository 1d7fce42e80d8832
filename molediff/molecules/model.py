"""Joint diffusion of atom coordinates and atom types (EDM, Hoogeboom et al. 2022) on the shared core.

A molecule of n atoms is one tensor x = [positions | one-hot types · 0.25 | atomic number · 0.1] of shape
``[n, 3 + K + 1]`` (padded to ``[B, N, ·]`` with a node mask).  Positions live in the zero-centre-of-mass
space, the features are ordinary masked channels; one schedule and one ε-objective act on both.

Conditioning hooks:
* ``context`` — a property vector ``[B, C]`` handed to the denoiser (conditional generation);
* ``mode="conformer"`` — atom types are given and only coordinates diffuse (graph-conditioned conformers);
* ``fixed_positions`` / ``fixed_mask`` — inpainting: coordinates of chosen atoms are held to given values
  while the rest is sampled (the known part is replaced by its forward-noised value after every sampler
  step, Lugmayr et al. 2022 without resampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..diffusion import ZeroCoMSpace, epsilon_loss, make_schedule, q_sample, sample
from ..nn import build_denoiser

MAX_ATOMS = 64


@dataclass(frozen=True)
class MoleculeDiffusionConfig:
    """Everything needed to rebuild the model; saved beside its weights."""

    atom_types: tuple[int, ...] = (1, 6, 7, 8, 9)          # atomic numbers of the one-hot vocabulary
    type_scale: float = 0.25                               # EDM's one-hot normalisation (1/4)
    charge_scale: float = 0.1                              # EDM's atomic-number normalisation (1/10)
    include_charges: bool = True
    mode: str = "joint"                                    # "joint" (de novo) or "conformer" (types given)
    schedule: str = "polynomial"
    T: int = 1000
    schedule_options: dict = field(default_factory=lambda: {"precision": 1e-5})
    context_features: int = 0
    atom_count_histogram: dict = field(default_factory=dict)   # {n_atoms: count} of the training set
    denoiser: dict = field(default_factory=lambda: {"name": "egnn", "hidden": 256, "layers": 9})

    def __post_init__(self):
        if self.mode not in ("joint", "conformer"):
            raise ValueError(f"mode must be 'joint' or 'conformer', got {self.mode!r}")
        bad = [n for n in self.atom_count_histogram if not 1 <= int(n) <= MAX_ATOMS]
        if bad:
            raise ValueError(f"atom counts must lie in 1..{MAX_ATOMS}, histogram has {sorted(bad)}")

    @property
    def feature_dim(self) -> int:
        return len(self.atom_types) + int(self.include_charges)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["atom_types"] = list(self.atom_types)
        d["atom_count_histogram"] = {str(k): int(v) for k, v in self.atom_count_histogram.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MoleculeDiffusionConfig:
        d = dict(d)
        d["atom_types"] = tuple(d.get("atom_types", cls.atom_types))
        d["atom_count_histogram"] = {int(k): int(v) for k, v in d.get("atom_count_histogram", {}).items()}
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown molecule-model config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class GeneratedMolecules:
    """Samples as padded tensors. Shapes: positions [B, N, 3], atomic_numbers [B, N], mask [B, N]."""

    positions: Tensor
    atomic_numbers: Tensor
    mask: Tensor

    def to_molecules(self, name_prefix: str = "sample"):
        from ..data.molecule import Molecule

        out = []
        for b in range(self.positions.shape[0]):
            m = self.mask[b].cpu().numpy().astype(bool)
            out.append(Molecule(atomic_numbers=self.atomic_numbers[b].cpu().numpy()[m].astype(np.int64),
                                positions=self.positions[b].float().cpu().numpy()[m].astype(np.float32),
                                name=f"{name_prefix}_{b}"))
        return out


class MoleculeDiffusion(nn.Module):
    """The molecule model: a denoiser plus the bookkeeping that turns molecules into one diffusion tensor."""

    def __init__(self, config: MoleculeDiffusionConfig):
        super().__init__()
        self.config = config
        den = dict(config.denoiser)
        den.setdefault("in_node_features", config.feature_dim)
        den.setdefault("context_features", config.context_features)
        self.denoiser = build_denoiser(den)
        self.schedule = make_schedule(config.schedule, T=config.T, **config.schedule_options)
        self.space = ZeroCoMSpace(com_dims=3)
        self.register_buffer("atomic_number_of_type", torch.tensor(config.atom_types, dtype=torch.long),
                             persistent=False)

    # -- encoding -------------------------------------------------------------------------------------
    def encode(self, positions: Tensor, atom_types: Tensor, mask: Tensor) -> Tensor:
        """Molecules → x ``[B, N, 3 + K (+1)]``; ``atom_types`` are indices into ``config.atom_types``."""
        cfg = self.config
        if positions.shape[:2] != mask.shape or atom_types.shape != mask.shape:
            raise ValueError(f"positions {tuple(positions.shape)}, atom_types {tuple(atom_types.shape)} and "
                             f"mask {tuple(mask.shape)} must agree on [B, N]")
        if not torch.isfinite(positions[mask]).all():
            raise ValueError("molecule positions contain NaN or infinite values")
        m = mask.unsqueeze(-1).to(positions.dtype)
        onehot = nn.functional.one_hot(atom_types.clamp(min=0), len(cfg.atom_types)).to(positions.dtype)
        parts = [positions, onehot * cfg.type_scale]
        if cfg.include_charges:
            z = self.atomic_number_of_type[atom_types.clamp(min=0)].to(positions.dtype)
            parts.append(z.unsqueeze(-1) * cfg.charge_scale)
        return self.space.project(torch.cat(parts, -1) * m, mask)

    def decode(self, x: Tensor, mask: Tensor) -> GeneratedMolecules:
        """x → positions and atomic numbers (argmax over the one-hot channels)."""
        k = len(self.config.atom_types)
        types = x[..., 3:3 + k].argmax(-1)
        z = torch.where(mask, self.atomic_number_of_type[types], torch.zeros_like(types))
        return GeneratedMolecules(positions=x[..., :3] * mask.unsqueeze(-1), atomic_numbers=z, mask=mask)

    # -- the ε-model --------------------------------------------------------------------------------
    def eps_fn(self, mask: Tensor, context: Tensor | None = None, given_features: Tensor | None = None):
        """Bind masks and conditioning: returns ``eps_fn(z_t, t)`` for the core.

        In conformer mode ``z_t`` holds coordinates only and ``given_features`` the (clean) features.
        """

        def eps(z: Tensor, t: Tensor) -> Tensor:
            if given_features is not None:
                eps_pos, _ = self.denoiser(z, given_features, t, mask, context)
                return eps_pos
            eps_pos, eps_h = self.denoiser(z[..., :3], z[..., 3:], t, mask, context)
            return torch.cat([eps_pos, eps_h], -1)

        return eps

    def forward(self, positions: Tensor, atom_types: Tensor, mask: Tensor, context: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """Per-molecule ε-loss ``[B]``: squared error averaged over the molecule's entries (EDM's l2).

        The loss is the module's forward so that DistributedDataParallel sees the call.
        """
        x = self.encode(positions, atom_types, mask)
        if self.config.mode == "conformer":
            feats = x[..., 3:]
            err = epsilon_loss(self.eps_fn(mask, context, feats), x[..., :3], self.schedule, self.space, mask,
                               generator=generator)
        else:
            err = epsilon_loss(self.eps_fn(mask, context), x, self.schedule, self.space, mask,
                               generator=generator)
        return err.flatten(1).sum(1) / (mask.sum(1) * err.shape[-1]).clamp(min=1)

    # -- sampling -------------------------------------------------------------------------------------
    def sample_atom_counts(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        hist = self.config.atom_count_histogram
        if not hist:
            raise ValueError("this model has no atom-count histogram; pass atom counts explicitly")
        counts = torch.tensor(sorted(hist), dtype=torch.long)
        probs = torch.tensor([hist[c] for c in sorted(hist)], dtype=torch.float64)
        return counts[torch.multinomial(probs, n, replacement=True, generator=generator)]

    @torch.no_grad()
    def sample(self, atom_counts: Sequence[int] | Tensor, sampler: str = "ddpm", steps: int | None = None,
               seeds: Sequence[int] | None = None, context: Tensor | None = None,
               atom_types: Tensor | None = None, fixed_positions: Tensor | None = None,
               fixed_mask: Tensor | None = None, show_progress: bool = False,
               **sampler_options) -> GeneratedMolecules:
        """Draw one molecule per entry of ``atom_counts``.

        ``seeds`` gives each molecule its own generator, so a molecule does not depend on its batch.
        Conformer mode needs ``atom_types [B, N]``.  Inpainting: ``fixed_positions [B, N, 3]`` with
        ``fixed_mask [B, N]`` (zero-CoM-consistent coordinates of the atoms to keep).
        """
        counts = torch.as_tensor(atom_counts, dtype=torch.long).flatten()
        if counts.numel() == 0:
            raise ValueError("nothing to sample: no atom counts given")
        if int(counts.min()) < 1 or int(counts.max()) > MAX_ATOMS:
            raise ValueError(f"atom counts must lie in 1..{MAX_ATOMS}, got {counts.min()}..{counts.max()}")
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        B, N = counts.numel(), int(counts.max())
        mask = (torch.arange(N, device=device)[None] < counts.to(device)[:, None])
        seeds = list(range(B)) if seeds is None else list(seeds)
        if len(seeds) != B:
            raise ValueError(f"got {len(seeds)} seeds for {B} molecules")
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        if self.config.mode == "conformer":
            if fixed_positions is not None or fixed_mask is not None:
                raise ValueError("inpainting (fixed atoms) is not available in conformer mode")
            if atom_types is None:
                raise ValueError("conformer mode needs the atom types of each molecule")
            feats = self.encode(torch.zeros(B, N, 3, device=device, dtype=dtype), atom_types.to(device), mask)[..., 3:]
            eps = self.eps_fn(mask, context, feats)
            z = self.space.randn((B, N, 3), mask, gens, dtype, device)
            pos = sample(sampler, eps, z, self.schedule, self.space, steps, mask, gens, show_progress,
                         **sampler_options)
            return self.decode(torch.cat([pos, feats], -1), mask)
        eps = self.eps_fn(mask, context)
        guide = None
        if fixed_positions is not None or fixed_mask is not None:
            if fixed_positions is None or fixed_mask is None:
                raise ValueError("inpainting needs both fixed_positions [B, N, 3] and fixed_mask [B, N]")
            if tuple(fixed_positions.shape) != (B, N, 3) or tuple(fixed_mask.shape) != (B, N):
                raise ValueError(f"fixed_positions must be [B, N, 3] = [{B}, {N}, 3] and fixed_mask [{B}, {N}]")
            fixed_mask = fixed_mask.to(device)
            if bool((fixed_mask & ~mask).any()):
                raise ValueError("fixed_mask marks atoms beyond a molecule's atom count")
            guide = self._inpainting_guide(fixed_positions.to(device, dtype), fixed_mask, mask, gens)
        z = self.space.randn((B, N, 3 + self.config.feature_dim), mask, gens, dtype, device)
        x = sample(sampler, eps, z, self.schedule, self.space, steps, mask, gens, show_progress, guide=guide,
                   **sampler_options)
        return self.decode(x, mask)

    def sample_molecules(self, atom_counts: Sequence[int] | Tensor, seeds: Sequence[int], batch_size: int = 100,
                         show_progress: bool = False, name_prefix: str = "sample", **sample_options) -> list:
        """Sample many molecules in batches of similar size; returns ``Molecule`` objects in input order.

        Molecule i uses ``seeds[i]`` alone, so neither the batch size nor the batching order changes it.
        Sorting by atom count cuts the padding in the dense [B, N, N] edge tensors.
        """
        from ..utils import progress

        counts = torch.as_tensor(atom_counts, dtype=torch.long).flatten()
        seeds = list(seeds)
        if len(seeds) != counts.numel():
            raise ValueError(f"got {len(seeds)} seeds for {counts.numel()} molecules")
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        order = torch.argsort(counts, stable=True).tolist()
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        molecules = [None] * len(order)
        # Denormal floats from the near-zero coordinate heads slow CPU kernels by about a quarter; torch has
        # no getter for this flag, so it is restored to torch's default (off) afterwards.
        torch.set_flush_denormal(True)
        try:
            for idx in progress(chunks, desc="sampling", unit="batch", disable=None if show_progress else True):
                out = self.sample(counts[idx], seeds=[seeds[i] for i in idx], **sample_options)
                for i, m in zip(idx, out.to_molecules()):
                    m.name = f"{name_prefix}_{seeds[i]}"
                    molecules[i] = m
        finally:
            torch.set_flush_denormal(False)
        return molecules

    def _inpainting_guide(self, known: Tensor, known_mask: Tensor, mask: Tensor, gens):
        """Replacement guide for inpainting (Lugmayr et al. 2022, without resampling): after every sampler
        update the known atoms are set to their forward-noised coordinates α_t x + σ_t ε.

        Translation is free in the zero-CoM space, so the known block is shifted as a whole to keep the
        state's centre of mass at zero with the free atoms left where the sampler put them; at t = 0 the
        known coordinates go in exactly.  Atom types of the known atoms are sampled, not fixed.
        """
        km = known_mask.unsqueeze(-1).to(known.dtype)
        free = mask.unsqueeze(-1).to(known.dtype) * (1 - km)
        n_known = km.sum(1, keepdim=True).clamp(min=1)

        def guide(z: Tensor, t: Tensor) -> Tensor:
            if bool((t == 0).all()):
                noisy = known
            else:
                noisy = q_sample(known, t, self.schedule, self.space.randn(known.shape, mask, gens, z.dtype,
                                                                            z.device))
            pos = z[..., :3]
            shift = -((pos * free).sum(1, keepdim=True) + (noisy * km).sum(1, keepdim=True)) / n_known
            pos = torch.where(known_mask.unsqueeze(-1), noisy + shift, pos)
            return torch.cat([pos, z[..., 3:]], -1)

        return guide


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

