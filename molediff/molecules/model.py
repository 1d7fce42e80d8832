"""Joint diffusion of atom coordinates and atom types (EDM, Hoogeboom et al. 2022) on the point-cloud layer.

A molecule of n atoms is one state x = [positions | one-hot types · 0.25 | atomic number · 0.1] of shape
``[n, 3 + K + 1]`` (padded to ``[B, N, ·]`` with a node mask): the point-cloud layer
(:mod:`molediff.pointcloud`) diffuses the positions in the zero-centre-of-mass space and the K + 1 feature
channels as ordinary masked channels, with one schedule and one ε-objective for both. This module adds only
what is molecular: the type/charge encoding and decoding and the atom-count histogram.

Bonds diffused with the atoms (``bond_orders`` set in the config; JODO, Huang et al. 2023, continuous diffusion
of one-hot bond types): every pair of atoms carries a one-hot over K = 1 + len(bond_orders) classes (no bond,
then the listed orders; QM9 uses the Kekulé orders 1, 2, 3) times ``bond_scale``, diffused as the point-cloud
layer's symmetric edge block with the same schedule; the ε-loss adds ``bond_loss_weight`` × the mean over
atom pairs. Sampling decodes each pair by argmax over the K classes, and the molecules carry those bonds (the
SDF writer writes them). Off by default: models without bonds are exactly what they were.

Conditioning hooks (from the point-cloud layer):
* ``context`` — a property vector ``[B, C]`` handed to the denoiser (conditional generation);
* ``fixed_positions`` / ``fixed_mask`` — inpainting: coordinates of chosen atoms are held to given values
  while the rest is sampled.

Graph-conditioned conformers (atom types given, only coordinates diffuse) are the conformer domain's job:
:class:`molediff.conformers.ConformerDiffusion`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..chem.bonds import bond_list
from ..chem.features import AtomTypeEncoding, check_vocabulary
from ..pointcloud import PointCloudConfig, PointCloudDiffusion, draw_sizes

MAX_ATOMS = 64
"""Default largest molecule of the de novo model (QM9 has at most 29 atoms with hydrogens)."""


@dataclass(frozen=True)
class MoleculeDiffusionConfig(PointCloudConfig):
    """Everything needed to rebuild the model; saved beside its weights.

    Attributes (besides the schedule, context width and denoiser of ``PointCloudConfig``):
        vocabulary: atomic numbers of the one-hot atom types, in one-hot order (QM9: H, C, N, O, F).
        type_scale, charge_scale, include_charges: the feature encoding (``molediff.chem.features``).
        atom_count_histogram: {number of atoms: count} of the training set; sampling draws sizes from it.
        max_atoms: the largest molecule the model accepts.
        type_loss_weight: λ of an auxiliary cross-entropy on the atom types of the clean estimate x̂ (0: off).
            The logits are EDM's categorical decoder (Hoogeboom et al. 2022, eq. 13) applied to x̂ at every t,
            ``type_scale · x̂_k · min(SNR_t, 100)``: flat at high noise, sharp as the noise vanishes.
        bond_orders: the bond orders diffused with the atoms, e.g. ``[1, 2, 3]`` (Kekulé; 4 = aromatic may be
            listed for data that keeps aromatic bonds); the K = 1 + len classes are "no bond" then these orders.
            Empty (the default): atoms only, bonds are perceived from the generated geometry.
        bond_scale: the value of a bond class's one-hot (as ``type_scale`` is for atom types).
        bond_loss_weight: λ_e, the weight of the bond term of the ε-loss, a mean over ordered atom pairs
            (``PointCloudDiffusion.loss``).
    """

    vocabulary: tuple[int, ...] = (1, 6, 7, 8, 9)
    type_scale: float = 0.25
    charge_scale: float = 0.1
    include_charges: bool = True
    atom_count_histogram: dict[int, int] = field(default_factory=dict)
    max_atoms: int = MAX_ATOMS
    type_loss_weight: float = 0.0
    bond_orders: tuple[int, ...] = ()
    bond_scale: float = 0.25
    bond_loss_weight: float = 1.0

    denoiser_set_by_model: ClassVar[tuple[str, ...]] = ("in_node_features", "context_features", "edge_features",
                                                        "edge_out_features")

    def __post_init__(self):
        super().__post_init__()
        if self.bond_orders:
            orders = [int(o) for o in self.bond_orders]
            if len(set(orders)) != len(orders) or not set(orders) <= {1, 2, 3, 4}:
                raise ValueError(f"bond_orders must be distinct orders among 1, 2, 3, 4 (aromatic), got "
                                 f"{list(self.bond_orders)}")
            if self.denoiser.get("name") != "egnn" or self.denoiser.get("graph", "full") != "full":
                raise ValueError("bond diffusion (bond_orders) needs the egnn denoiser with graph 'full'")
        if not self.bond_scale > 0 or self.bond_loss_weight < 0:
            raise ValueError(f"bond_scale must be > 0 and bond_loss_weight >= 0, got {self.bond_scale}, "
                             f"{self.bond_loss_weight}")
        check_vocabulary(self.vocabulary)
        if self.type_loss_weight < 0:
            raise ValueError(f"type_loss_weight must be >= 0, got {self.type_loss_weight}")
        if self.max_atoms < 1:
            raise ValueError(f"max_atoms must be at least 1, got {self.max_atoms}")
        bad = [n for n in self.atom_count_histogram if not 1 <= int(n) <= self.max_atoms]
        if bad:
            raise ValueError(f"atom counts must lie in 1..{self.max_atoms}, histogram has {sorted(bad)}")

    @classmethod
    def from_dict(cls, d: dict) -> MoleculeDiffusionConfig:
        d = dict(d)
        # Configs stored before the layering change called the vocabulary "atom_types" and carried a mode.
        if "atom_types" in d and "vocabulary" not in d:
            d["vocabulary"] = d.pop("atom_types")
        mode = d.pop("mode", "joint")
        if mode != "joint":
            raise ValueError(f"model mode {mode!r}: graph-conditioned conformer models are ConformerDiffusion "
                             f"models now (molediff.conformers, task 'conformers')")
        return super().from_dict(d)

    @property
    def bond_classes(self) -> int:
        """K, the diffused bond classes: 1 + len(bond_orders) ("no bond" first), 0 without bonds."""
        return len(self.bond_orders) + 1 if self.bond_orders else 0


@dataclass
class GeneratedMolecules:
    """Samples as padded tensors. Shapes: positions [B, N, 3], atomic_numbers [B, N], mask [B, N]; bond_orders
    [B, N, N] int64 (symmetric, 0 = no bond, on the diagonal and at padding) from a model that diffuses bonds,
    else None."""

    positions: Tensor
    atomic_numbers: Tensor
    mask: Tensor
    bond_orders: Tensor | None = None

    def to_molecules(self, name_prefix: str = "sample", ids: Sequence[int] | None = None) -> list:
        """One ``Molecule`` per sample (real atoms only), molecule b named ``f"{name_prefix}_{ids[b]}"``: its
        seed when ``ids`` are the seeds (``sample_molecules``), else ``b``."""
        from ..chem.molecule import Molecule

        out = []
        for b in range(self.positions.shape[0]):
            m = self.mask[b].detach().cpu().numpy().astype(bool)
            bonds = None
            if self.bond_orders is not None:
                bonds = bond_list(self.bond_orders[b].detach().cpu().numpy()[np.ix_(m, m)])
            out.append(Molecule(atomic_numbers=self.atomic_numbers[b].detach().cpu().numpy()[m].astype(np.int64),
                                positions=self.positions[b].detach().float().cpu().numpy()[m].astype(np.float32),
                                name=f"{name_prefix}_{b if ids is None else ids[b]}", bonds=bonds))
        return out


class MoleculeDiffusion(PointCloudDiffusion):
    """The de novo molecule model: the point-cloud layer plus the encoding of atom types and charges."""

    config_class = MoleculeDiffusionConfig
    sample_noun = "molecules"

    def __init__(self, config: MoleculeDiffusionConfig):
        atoms = AtomTypeEncoding(config.vocabulary, config.type_scale, config.charge_scale, config.include_charges)
        k = config.bond_classes
        bond_settings = {"edge_features": k, "edge_out_features": k} if k else {}
        super().__init__(config.build_denoiser(atoms.width, **bond_settings), config.build_schedule(),
                         diffused_features=atoms.width, max_nodes=config.max_atoms,
                         loss_weighting=config.build_loss_weighting(), prediction=config.prediction,
                         diffused_edge_features=k, edge_loss_weight=config.bond_loss_weight)
        self.config = config
        self.atom_encoding = atoms
        # bond order → class (0: no bond); orders the config does not list map to -1
        order_to_class = torch.full((5,), -1, dtype=torch.long)
        order_to_class[0] = 0
        for c, order in enumerate(config.bond_orders, start=1):
            order_to_class[int(order)] = c
        self.register_buffer("_order_to_class", order_to_class, persistent=False)
        self.register_buffer("_class_to_order", torch.tensor([0, *config.bond_orders], dtype=torch.long),
                             persistent=False)

    @property
    def has_bonds(self) -> bool:
        """Whether this model diffuses bond orders (``config.bond_orders``)."""
        return bool(self.config.bond_orders)

    # -- encoding -------------------------------------------------------------------------------------
    def encode(self, positions: Tensor, type_index: Tensor, mask: Tensor, bond_orders: Tensor | None = None
               ) -> Tensor:
        """Molecules → x ``[B, N, 3 + K (+1)]`` with zero centre of mass; with bonds (``config.bond_orders``)
        ``[B, N, 3 + K (+1) + N·K_b]``, the bond block one-hot × ``bond_scale`` (``self.space.split`` undoes it).

        Shapes: positions [B, N, 3] (Å), type_index [B, N] (indices into ``config.vocabulary``), mask [B, N],
        bond_orders [B, N, N] integer (0 = no bond; symmetric; ignored on the diagonal and at padding), given
        exactly when the model has bonds.
        ValueError for mismatched shapes, non-finite positions of real atoms, missing or unexpected bond orders,
        an asymmetric bond matrix or an order the config does not list.
        """
        if positions.shape[:2] != mask.shape or type_index.shape != mask.shape:
            raise ValueError(f"positions {tuple(positions.shape)}, type_index {tuple(type_index.shape)} and "
                             f"mask {tuple(mask.shape)} must agree on [B, N]")
        if not torch.isfinite(positions[mask]).all():
            raise ValueError("molecule positions contain NaN or infinite values")
        positions = torch.where(mask.unsqueeze(-1), positions, torch.zeros((), dtype=positions.dtype))
        x = torch.cat([positions, self.atom_encoding(type_index, mask, positions.dtype)], -1)
        if not self.has_bonds:
            if bond_orders is not None:
                raise ValueError("bond_orders given, but this model does not diffuse bonds (config.bond_orders "
                                 "is empty)")
            return self.space.project(x, mask)
        return self.space.project(self.space.join(x, self._encode_bonds(bond_orders, mask, x.dtype)), mask)

    def _encode_bonds(self, bond_orders: Tensor | None, mask: Tensor, dtype: torch.dtype) -> Tensor:
        """[B, N, N] integer bond orders → [B, N, N, K] one-hot × bond_scale (zero off the real pairs)."""
        B, N = mask.shape
        if bond_orders is None:
            raise ValueError(f"this model diffuses bonds (orders {list(self.config.bond_orders)}): give "
                             f"bond_orders [B, N, N]")
        if tuple(bond_orders.shape) != (B, N, N) or torch.is_floating_point(bond_orders):
            raise ValueError(f"bond_orders must be an integer [B, N, N] = {(B, N, N)} tensor, got "
                             f"{bond_orders.dtype} {tuple(bond_orders.shape)}")
        pairs = self.space.pair_mask(mask, B, N, mask.device)
        orders = torch.where(pairs, bond_orders.to(mask.device).long(), torch.zeros((), dtype=torch.long,
                                                                                    device=mask.device))
        if not torch.equal(orders, orders.transpose(1, 2)):
            raise ValueError("bond_orders must be symmetric between real atoms")
        classes = self._order_to_class[orders.clamp(0, 4)]
        bad = (classes < 0) | (orders < 0) | (orders > 4)
        if bool(bad.any()):
            raise ValueError(f"bond order {int(orders[bad][0])} is not one of this model's orders "
                             f"{list(self.config.bond_orders)}")
        onehot = nn.functional.one_hot(classes, self.config.bond_classes).to(dtype) * self.config.bond_scale
        return onehot * pairs.unsqueeze(-1).to(dtype)

    def decode(self, x: Tensor, mask: Tensor) -> GeneratedMolecules:
        """x → positions and atomic numbers (argmax over the one-hot channels), and with bonds the bond orders
        (argmax over the bond classes of each pair, symmetric, 0 on the diagonal and at padding)."""
        bond_orders = None
        if self.has_bonds:
            x, edges = self.space.split(x)
            pairs = self.space.pair_mask(mask, *mask.shape, mask.device)
            bond_orders = torch.where(pairs, self._class_to_order[edges.argmax(-1)],
                                      torch.zeros((), dtype=torch.long, device=mask.device))
        return GeneratedMolecules(positions=x[..., :3] * mask.unsqueeze(-1),
                                  atomic_numbers=self.atom_encoding.atomic_numbers(x[..., 3:], mask), mask=mask,
                                  bond_orders=bond_orders)

    def forward(self, positions: Tensor, type_index: Tensor, mask: Tensor, context: Tensor | None = None,
                generator: torch.Generator | None = None, bond_orders: Tensor | None = None) -> Tensor:
        """Per-molecule ε-loss ``[B]`` (see ``PointCloudDiffusion.loss``), plus ``type_loss_weight`` × the
        per-molecule mean cross-entropy of the atom types of x̂ when that weight is positive.

        ``bond_orders`` [B, N, N] (integer orders) are required exactly when the model diffuses bonds.
        The loss is the module's forward so that DistributedDataParallel sees the call.
        """
        x = self.encode(positions, type_index, mask, bond_orders)
        if not self.config.type_loss_weight:
            return self.loss(x, mask, context, generator=generator)
        eps_loss, x0_hat, t = self.loss(x, mask, context, generator=generator, return_x0=True)
        k = len(self.config.vocabulary)
        sharpness = self.schedule.snr(t).clamp(max=100.0) * self.config.type_scale            # [B]
        logits = x0_hat[..., 3:3 + k].float() * sharpness.float()[:, None, None]
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), type_index.clamp(min=0), reduction="none")
        ce = (ce * mask).sum(1) / mask.sum(1).clamp(min=1)
        return eps_loss + self.config.type_loss_weight * ce.to(eps_loss.dtype)

    # -- sampling -------------------------------------------------------------------------------------
    def sample_atom_counts(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` atom counts ``[n]`` drawn from the training set's histogram."""
        return draw_sizes(self.config.atom_count_histogram, n, generator, what="atom count")

    @torch.no_grad()
    def sample(self, atom_counts: Sequence[int] | Tensor, sampler: str = "ddpm", steps: int | None = None,
               seeds: Sequence[int] | None = None, context: Tensor | None = None,
               fixed_positions: Tensor | None = None, fixed_mask: Tensor | None = None,
               show_progress: bool = False, **sampler_options) -> GeneratedMolecules:
        """Draw one molecule per entry of ``atom_counts`` (see ``PointCloudDiffusion.sample_state``).

        ``seeds`` gives each molecule its own generator, so a molecule does not depend on its batch.
        Inpainting: ``fixed_positions [B, N, 3]`` with ``fixed_mask [B, N]``.
        """
        x, mask = self.sample_state(atom_counts, sampler, steps, seeds, context=context,
                                    fixed_positions=fixed_positions, fixed_mask=fixed_mask,
                                    show_progress=show_progress, **sampler_options)
        return self.decode(x, mask)

    def sample_molecules(self, atom_counts: Sequence[int] | Tensor, seeds: Sequence[int], batch_size: int = 100,
                         show_progress: bool = False, name_prefix: str = "sample", **sample_options) -> list:
        """Sample many molecules in batches of similar size (``PointCloudDiffusion.sample_many``); returns
        ``Molecule`` objects in input order, molecule i named ``f"{name_prefix}_{seeds[i]}"``.

        Molecule i uses ``seeds[i]`` alone, so neither the batch size nor the batching order changes it.
        ``sample_options`` go to :meth:`sample`. ValueError when the seed count does not match ``atom_counts``.
        """
        return self.sample_many(atom_counts, seeds, batch_size, show_progress,
                                split=lambda batch, batch_seeds: batch.to_molecules(name_prefix, ids=batch_seeds),
                                **sample_options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

