"""The QM9 (or user data) training task for ``molediff train``: data order, loss and periodic scoring."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .model import MoleculeDiffusion, MoleculeDiffusionConfig

log = logging.getLogger(__name__)


def load_dataset(data: dict, atom_types=None):
    """The training molecules named by a config's ``data`` section.

    ``{"dataset": "qm9", "split": "train", "root": None, "subset": None}``,
    ``{"dataset": "files", "path": "my_molecules/"}`` (a folder or file of SDF/XYZ molecules; molecules
    with elements outside ``atom_types`` or more than 64 atoms are reported and skipped), or
    ``{"dataset": "npz", "path": "qm9_train.npz"}`` (a saved ``MoleculeDataset``; no RDKit needed).
    ``subset: k`` keeps the first k molecules (for smoke tests and overfitting checks).
    """
    from .model import MAX_ATOMS

    kind = data.get("dataset", "qm9")
    if kind in ("files", "npz") and not data.get("path"):
        raise ValueError(f"data section: dataset '{kind}' needs a 'path'")
    if kind == "qm9":
        from ..data.qm9 import load_qm9

        dataset = load_qm9(data.get("split", "train"), root=data.get("root"))
    elif kind in ("files", "npz"):
        from ..data.files import load_molecule_files

        dataset, _ = load_molecule_files(data["path"], atom_types=atom_types, max_atoms=MAX_ATOMS)  # logs skips
    else:
        raise ValueError(f"unknown dataset {kind!r}; use 'qm9', 'npz' or 'files'")
    subset = data.get("subset")
    if subset:
        dataset = dataset.subset(range(min(int(subset), len(dataset))))
    return dataset


def atom_counts(dataset) -> np.ndarray:
    counts = getattr(dataset, "atom_counts", None)
    if counts is None:
        counts = np.array([len(m.atomic_numbers) for m in dataset])
    return np.asarray(counts)


def atom_count_histogram(dataset) -> dict[int, int]:
    values, freq = np.unique(atom_counts(dataset), return_counts=True)
    return {int(v): int(f) for v, f in zip(values, freq)}


@dataclass
class MoleculeTask:
    """Implements the trainer's task protocol for ``MoleculeDiffusion``."""

    model: MoleculeDiffusion
    dataset: object
    eval_samples: int = 0
    eval_sampler: str = "ddpm"
    eval_steps: int | None = None

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        batch = batch.to(device)
        per_molecule = model(batch.positions, batch.atom_types, batch.mask)
        loss = per_molecule.mean()
        return loss, {"loss": float(loss.detach())}

    def batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> Iterator:
        """Rank ``rank``'s share of each global batch, in an order fixed by (seed, epoch).

        Molecules of similar size are batched together (sorted within windows of 32 batches of a random
        permutation, then the batches shuffled), which cuts padding in the dense [B, N, N] edge tensors
        about in half on QM9 while every epoch still visits every molecule once.
        """
        from ..data.batching import collate_dense

        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must divide evenly over {world_size} processes")
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self.dataset))
        sizes = atom_counts(self.dataset)
        window = 32 * batch_size
        batches = []
        for start in range(0, len(order) - batch_size + 1, window):
            chunk = order[start:start + window]
            chunk = chunk[np.argsort(sizes[chunk], kind="stable")]
            batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size))
        per_rank = batch_size // world_size
        atom_types = self.model.config.atom_types
        for b in rng.permutation(len(batches)):
            idx = batches[b][rank * per_rank:(rank + 1) * per_rank]
            yield collate_dense([self.dataset[int(i)] for i in idx], atom_types=atom_types)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Sample ``eval_samples`` molecules and score stability and validity."""
        if not self.eval_samples:
            return {}
        if self.model.config.mode == "conformer":
            return {}  # de novo stability needs sampled atom types; conformer metrics need references
        from ..chem.metrics import evaluate_molecules

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
    """``molediff train`` entry: the config's ``model`` section is a ``MoleculeDiffusionConfig``; its
    atom-count histogram is filled from the training data when absent."""
    data = dict(config.data)
    model_cfg = dict(config.model)
    if model_cfg.get("context_features"):
        raise ValueError("training with context (property conditioning) is not wired to the data loaders yet; "
                         "set model.context_features to 0")
    atom_types = tuple(model_cfg.get("atom_types", MoleculeDiffusionConfig.atom_types))
    dataset = load_dataset(data, atom_types)
    if not model_cfg.get("atom_count_histogram"):
        model_cfg["atom_count_histogram"] = atom_count_histogram(dataset)
    model = MoleculeDiffusion(MoleculeDiffusionConfig.from_dict(model_cfg))
    return MoleculeTask(model=model, dataset=dataset, eval_samples=int(data.get("eval_samples", 0)),
                        eval_sampler=data.get("eval_sampler", "ddpm"), eval_steps=data.get("eval_steps"))
