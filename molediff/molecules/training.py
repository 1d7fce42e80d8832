"""The de novo molecule training task for ``molediff train`` (task ``molecules``; ``qm9`` is its older name):
data order, loss and periodic sample-and-score evaluation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

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
        per_molecule = model(batch.positions, batch.type_index, batch.mask)
        loss = per_molecule.mean()
        return loss, {"loss": float(loss.detach())}

    def batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> Iterator:
        """Rank ``rank``'s share of each global batch, in an order fixed by (seed, epoch), molecules of similar
        size together (``molediff.data.batching.size_bucketed_batches``)."""
        from ..data.batching import molecule_batches

        yield from molecule_batches(self.dataset, self.model.config.vocabulary, batch_size, seed, epoch, rank,
                                    world_size)

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
        valid = valid.subset(range(min(molecules, len(valid))))
        model = getattr(model, "module", model)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, count = 0.0, 0
        for start in range(0, len(valid), batch_size):
            batch = collate_dense([valid[i] for i in range(start, min(start + batch_size, len(valid)))],
                                  vocabulary=self.model.config.vocabulary).to(device)
            for k in range(draws):
                gen = torch.Generator(device=device).manual_seed(1_000_003 * k + start)
                total += float(model(batch.positions, batch.type_index, batch.mask, generator=gen).sum())
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
