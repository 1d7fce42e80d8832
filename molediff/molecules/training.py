"""The de novo molecule training task for ``molediff train`` (task ``molecules``; ``qm9`` is its older name):
data order, loss and periodic sample-and-score evaluation.

A model that diffuses bonds (``model.bond_orders``) trains on molecules with bonds: a file's own bonds (SDF, or
an ``.npz`` saved with bonds), else bond orders determined from the geometry by RDKit
(``chem.bonds.bonds_from_geometry``; for QM9 computed once per split and cached, ``load_qm9(bonds=True)``).
Molecules without an assignment, or with an order the model does not list, are left out (logged)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..chem.molecule import MoleculeDataset
from ..data.batching import DenseMoleculeBatch
from ..data.sources import MoleculeDataConfig, load_molecule_dataset
from ..pointcloud import size_histogram
from .model import MoleculeDiffusion, MoleculeDiffusionConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MoleculeTaskData(MoleculeDataConfig):
    """The ``data`` section of a molecule config: where the molecules come from (``MoleculeDataConfig``) plus
    periodic evaluation during training (``eval_every`` steps in the top-level config)."""

    eval_samples: int = 0           # molecules sampled and scored at each evaluation (0: none)
    eval_sampler: str = "ddpm"
    eval_steps: int | None = None   # sampler steps (default: all T)


def atom_count_histogram(dataset) -> dict[int, int]:
    """{number of atoms: number of molecules} of a dataset."""
    return size_histogram(np.asarray(dataset.atom_counts))


@dataclass
class BondedMoleculeBatch(DenseMoleculeBatch):
    """A ``DenseMoleculeBatch`` plus ``bond_orders`` [B, N, N] int64 (symmetric, 0 = no bond and at padding): the
    batches of a model that diffuses bonds."""

    bond_orders: torch.Tensor


def collate_bonded(molecules, vocabulary) -> BondedMoleculeBatch:
    """``collate_dense`` plus each molecule's bond matrix (``Molecule.bond_matrix``) padded to [B, N, N].
    ValueError naming a molecule without bonds."""
    from ..data.batching import collate_dense

    dense = collate_dense(molecules, vocabulary=vocabulary)
    B, N = dense.mask.shape
    orders = np.zeros((B, N, N), dtype=np.int64)
    for k, m in enumerate(molecules):
        matrix = m.bond_matrix()
        if matrix is None:
            raise ValueError(f"molecule {m.name or k!r} has no bonds; a bond model trains on molecules with bonds")
        orders[k, :m.num_atoms, :m.num_atoms] = matrix
    return BondedMoleculeBatch(dense.positions, dense.type_index, dense.atomic_numbers, dense.mask,
                               torch.from_numpy(orders))


def molecules_with_bonds(dataset: MoleculeDataset, data: MoleculeDataConfig | None,
                         bond_orders) -> MoleculeDataset:
    """``dataset`` with bonds for a bond model (see the module docstring): QM9 from its cached bond orders
    (``data`` names the split and subset), other data without bonds from ``bonds_from_geometry``; molecules
    without an assignment or with an order outside ``bond_orders`` are left out (logged). ValueError when none
    remain."""
    if dataset.bonds is None:
        if data is not None and data.dataset == "qm9":
            from ..data.qm9 import load_qm9

            dataset = load_qm9(data.split, root=data.root, bonds=True)
            if data.subset:
                dataset = dataset.subset(range(min(data.subset, len(dataset))))
        else:
            from ..chem.bonds import bonds_from_geometry

            kept = []
            for m in dataset:
                try:
                    m.bonds = bonds_from_geometry(m.atomic_numbers, m.positions)
                except ValueError:
                    continue
                kept.append(m)
            if len(kept) < len(dataset):
                log.warning("bond orders determined for %d of %d molecules; the others are left out",
                            len(kept), len(dataset))
            dataset = MoleculeDataset.from_molecules(kept)
    allowed = np.zeros(8, dtype=bool)
    allowed[[int(o) for o in bond_orders]] = True
    owner = np.repeat(np.arange(len(dataset)), np.diff(dataset.bond_offsets))
    order = dataset.bonds[:, 2] if len(dataset.bonds) else np.zeros(0, dtype=np.int64)
    bad = ~allowed[np.clip(order, 0, 7)] | (order < 1) | (order > 7)
    keep = np.setdiff1d(np.arange(len(dataset)), owner[bad])
    if len(keep) < len(dataset):
        log.warning("left out %d of %d molecules with bond orders outside %s", len(dataset) - len(keep),
                    len(dataset), list(bond_orders))
        dataset = dataset.subset(keep)
    if not len(dataset):
        raise ValueError("no training molecules with usable bond orders")
    return dataset


@dataclass
class MoleculeTask:
    """Implements the trainer's task protocol for ``MoleculeDiffusion``."""

    model: MoleculeDiffusion
    dataset: object
    eval_samples: int = 0
    eval_sampler: str = "ddpm"
    eval_steps: int | None = None
    data: MoleculeDataConfig | None = None   # where the training molecules came from (for the validation split)

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        batch = batch.to(device)
        if isinstance(batch, BondedMoleculeBatch):
            per_molecule = model(batch.positions, batch.type_index, batch.mask, bond_orders=batch.bond_orders)
        else:
            per_molecule = model(batch.positions, batch.type_index, batch.mask)
        loss = per_molecule.mean()
        return loss, {"loss": float(loss.detach())}

    def batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> Iterator:
        """Rank ``rank``'s share of each global batch, in an order fixed by (seed, epoch), molecules of similar
        size together (``molediff.data.batching.size_bucketed_batches``); ``BondedMoleculeBatch`` for a model
        that diffuses bonds."""
        from ..data.batching import molecule_batches, size_bucketed_batches

        vocabulary = self.model.config.vocabulary
        if not self.model.has_bonds:
            yield from molecule_batches(self.dataset, vocabulary, batch_size, seed, epoch, rank, world_size)
            return
        sizes = np.asarray(self.dataset.atom_counts)
        for idx in size_bucketed_batches(sizes, batch_size, seed, epoch, rank, world_size):
            yield collate_bonded([self.dataset[int(i)] for i in idx], vocabulary)

    @torch.no_grad()
    def validation_loss(self, model: nn.Module, molecules: int = 1000, draws: int = 4, batch_size: int = 250) -> float:
        """Mean ε-loss of ``model`` on the first ``molecules`` of the validation split with fixed noise draws, so
        that two weight sets (e.g. EMA lengths) compare on exactly the same (molecule, t, ε).

        ValueError when the training data has no validation split (qm9 and ccd have one; user files and npz
        data need ``data.valid_path``).
        """
        from ..data.batching import collate_dense

        if self.data is not None and self.data.dataset in ("qm9", "ccd"):
            source = MoleculeDataConfig(dataset=self.data.dataset, split="valid", root=self.data.root)
        elif self.data is not None and self.data.valid_path:
            source = MoleculeDataConfig(dataset=self.data.dataset, path=self.data.valid_path)
        else:
            raise ValueError("this run's data has no validation split (qm9 and ccd have one; for files or npz "
                             "data set data.valid_path)")
        valid = load_molecule_dataset(source, self.model.config.vocabulary, self.model.config.max_atoms)
        if self.model.has_bonds:
            if source.dataset != "qm9":   # determine the bonds of the molecules used only (QM9's are cached)
                valid = valid.subset(range(min(molecules, len(valid))))
            valid = molecules_with_bonds(valid, source, self.model.config.bond_orders)
        valid = valid.subset(range(min(molecules, len(valid))))
        model = getattr(model, "module", model)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, count = 0.0, 0
        for start in range(0, len(valid), batch_size):
            chunk = [valid[i] for i in range(start, min(start + batch_size, len(valid)))]
            vocabulary = self.model.config.vocabulary
            batch = (collate_bonded(chunk, vocabulary) if self.model.has_bonds
                     else collate_dense(chunk, vocabulary=vocabulary)).to(device)
            bonds = {"bond_orders": batch.bond_orders} if self.model.has_bonds else {}
            for k in range(draws):
                gen = torch.Generator(device=device).manual_seed(1_000_003 * k + start)
                total += float(model(batch.positions, batch.type_index, batch.mask, generator=gen, **bonds).sum())
                count += len(batch)
        model.train(was_training)
        return total / count

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Sample ``eval_samples`` molecules and score stability and validity."""
        if not self.eval_samples:
            return {}
        from ..chem.stability import evaluate_molecules

        model = getattr(model, "module", model)
        was_training = model.training
        model.eval()
        counts = model.sample_atom_counts(self.eval_samples, torch.Generator().manual_seed(step))
        molecules = model.sample_molecules(counts, seeds=range(self.eval_samples), batch_size=self.eval_samples,
                                           sampler=self.eval_sampler, steps=self.eval_steps)
        model.train(was_training)
        scores = evaluate_molecules(molecules)
        return {k: float(v) for k, v in scores.items()
                if k in ("atom_stability", "mol_stability", "validity", "uniqueness") and v is not None}


def build_task(config) -> MoleculeTask:
    """``molediff train`` entry: the ``model`` section is a ``MoleculeDiffusionConfig`` (its atom-count
    histogram is filled from the training data when absent), the ``data`` section a ``MoleculeTaskData``.
    Both are checked before any data is read."""
    model_cfg = MoleculeDiffusionConfig.from_dict(config.model)
    data = _build_data_config(config.data)
    if model_cfg.context_features:
        raise ValueError("training with context (property conditioning) is not wired to the data loaders yet; "
                         "set model.context_features to 0")
    dataset = load_molecule_dataset(data, model_cfg.vocabulary, model_cfg.max_atoms)
    if model_cfg.bond_orders:
        dataset = molecules_with_bonds(dataset, data, model_cfg.bond_orders)
    if not model_cfg.atom_count_histogram:
        model_cfg = MoleculeDiffusionConfig.from_dict({**model_cfg.to_dict(),
                                                       "atom_count_histogram": atom_count_histogram(dataset)})
    return MoleculeTask(model=MoleculeDiffusion(model_cfg), dataset=dataset, eval_samples=data.eval_samples,
                        eval_sampler=data.eval_sampler, eval_steps=data.eval_steps, data=data)


def _build_data_config(data: dict) -> MoleculeTaskData:
    from ..diffusion import SAMPLERS
    from ..utils import build_config

    cfg = build_config(MoleculeTaskData, data, "data.")
    if cfg.eval_sampler not in SAMPLERS:
        raise ValueError(f"data.eval_sampler must be one of {sorted(SAMPLERS)}, got {cfg.eval_sampler!r}")
    return cfg
