"""The conformer training task for ``molediff train`` (task ``conformers``): coordinates given the graph.

When the model takes graph features (``node_features`` / ``edge_features`` of its config equal to the widths
of ``molediff.conformers.graph``), every training molecule's graph is built once with RDKit, from the bonds it
carries or from bonds perceived from its 3D coordinates, and kept in memory as compact arrays
(:class:`GraphStore`: int8 node features, one uint8 code per atom pair). Molecules whose graph cannot be built
(sanitisation fails, unpaired electrons) are dropped from the training set, each with its reason in the log.

The graphs can also be built beforehand and saved (``GraphStore.save``; ``scripts/gpu/train_conformers.py
prepare``): a config's ``data`` section then names the file as ``graphs: PATH`` beside ``dataset: npz`` and
``path:`` (the molecules, saved with the same order), and training needs no RDKit.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data.batching import DenseMoleculeBatch
from ..data.sources import MoleculeDataConfig, load_molecule_dataset
from .graph import EDGE_FEATURES, EDGE_TABLE, NODE_FEATURES
from .model import ConformerDiffusion, ConformerDiffusionConfig

log = logging.getLogger(__name__)


@dataclass
class GraphStore:
    """The graph features of many molecules as flat arrays.

    ``node`` [total atoms, NODE_FEATURES] int8 with ``atom_offsets`` [M + 1]; ``pairs`` [Σ n²] uint8 pair codes
    (row-major per molecule) with ``pair_offsets`` [M + 1]. Decode pair codes with ``graph.EDGE_TABLE``.
    """

    node: np.ndarray
    atom_offsets: np.ndarray
    pairs: np.ndarray
    pair_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.atom_offsets) - 1

    @classmethod
    def from_graphs(cls, graphs: Sequence) -> GraphStore:
        counts = np.array([g.num_atoms for g in graphs], dtype=np.int64)
        node = (np.concatenate([g.node for g in graphs]) if graphs
                else np.zeros((0, NODE_FEATURES), dtype=np.int8))
        pairs = (np.concatenate([g.pairs.reshape(-1) for g in graphs]) if graphs else np.zeros(0, dtype=np.uint8))
        return cls(node=node.astype(np.int8), atom_offsets=np.concatenate([[0], np.cumsum(counts)]),
                   pairs=pairs.astype(np.uint8), pair_offsets=np.concatenate([[0], np.cumsum(counts ** 2)]))

    @classmethod
    def concatenate(cls, stores: Sequence[GraphStore]) -> GraphStore:
        """One store holding the graphs of ``stores`` in order (e.g. QM9's then the CCD's)."""
        def offsets(key):
            parts, base = [np.zeros(1, dtype=np.int64)], 0
            for s in stores:
                o = getattr(s, key)
                parts.append(o[1:] + base)
                base += int(o[-1])
            return np.concatenate(parts)

        return cls(node=np.concatenate([s.node for s in stores]), atom_offsets=offsets("atom_offsets"),
                   pairs=np.concatenate([s.pairs for s in stores]), pair_offsets=offsets("pair_offsets"))

    _KEYS = ("node", "atom_offsets", "pairs", "pair_offsets")

    @property
    def atom_counts(self) -> np.ndarray:
        """[M] atoms per molecule."""
        return np.diff(self.atom_offsets)

    def save(self, path: str | os.PathLike) -> None:
        """Write the four arrays to one compressed ``.npz`` (numpy only, no pickles), atomically."""
        from ..utils import atomic_write

        with atomic_write(path, "wb") as f:
            np.savez_compressed(f, **{k: getattr(self, k) for k in self._KEYS})

    @classmethod
    def load(cls, path: str | os.PathLike) -> GraphStore:
        """Read a file written by ``save`` (numpy only). FileNotFoundError for a missing file; ValueError for a
        file that is not a graph store or whose arrays do not fit together."""
        from ..utils import read_npz

        arrays = read_npz(path, cls._KEYS, "graph file")
        missing = [k for k in cls._KEYS if k not in arrays]
        if missing:
            raise ValueError(f"{path} is not a conformer graph file: missing {missing}")
        store = cls(node=arrays["node"].astype(np.int8), atom_offsets=arrays["atom_offsets"].astype(np.int64),
                    pairs=arrays["pairs"].astype(np.uint8), pair_offsets=arrays["pair_offsets"].astype(np.int64))
        counts = store.atom_counts
        if (store.node.ndim != 2 or store.node.shape[1] != NODE_FEATURES or store.atom_offsets[-1] != len(store.node)
                or store.pair_offsets[-1] != len(store.pairs) or len(store.pair_offsets) != len(store.atom_offsets)
                or not np.array_equal(np.diff(store.pair_offsets), counts ** 2)
                or int(store.pairs.max(initial=0)) >= len(EDGE_TABLE)):
            raise ValueError(f"{path}: inconsistent graph arrays (offsets, widths or pair codes do not fit)")
        return store

    def check_matches(self, dataset, what: str = "the graphs") -> None:
        """ValueError unless the store holds one graph per molecule of ``dataset``, atom counts equal and in order."""
        counts = np.asarray(dataset.atom_counts)
        if len(self) != len(counts):
            raise ValueError(f"{what} hold {len(self)} molecules but the dataset has {len(counts)}; write both "
                             f"from the same molecules (scripts/gpu/train_conformers.py prepare)")
        bad = np.flatnonzero(self.atom_counts != counts)
        if len(bad):
            raise ValueError(f"{what} do not fit the dataset: molecule {int(bad[0])} has {int(counts[bad[0]])} atoms "
                             f"but its graph {int(self.atom_counts[bad[0]])}")

    def collate(self, indices: Sequence[int], num_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded float32 ``(node_features [B, N, NODE_FEATURES], edge_attr [B, N, N, EDGE_FEATURES])`` of the
        molecules ``indices`` with N = ``num_atoms``; zero at padding (and on the diagonal of ``edge_attr``)."""
        b = len(indices)
        node = np.zeros((b, num_atoms, NODE_FEATURES), dtype=np.float32)
        codes = np.zeros((b, num_atoms, num_atoms), dtype=np.uint8)  # code 0 decodes to all zeros
        for k, i in enumerate(indices):
            lo, hi = self.atom_offsets[i], self.atom_offsets[i + 1]
            n = hi - lo
            if n > num_atoms:
                raise ValueError(f"molecule {i} has {n} atoms, more than the batch's {num_atoms}")
            node[k, :n] = self.node[lo:hi]
            codes[k, :n, :n] = self.pairs[self.pair_offsets[i]:self.pair_offsets[i + 1]].reshape(n, n)
        return torch.from_numpy(node), torch.from_numpy(EDGE_TABLE[codes])


@dataclass
class GraphBatch:
    """A ``DenseMoleculeBatch`` with its graph features: ``node_features`` [B, N, G], ``edge_attr`` [B, N, N, E]."""

    dense: DenseMoleculeBatch
    node_features: torch.Tensor
    edge_attr: torch.Tensor

    def to(self, device) -> GraphBatch:
        return GraphBatch(self.dense.to(device), self.node_features.to(device), self.edge_attr.to(device))

    def __len__(self) -> int:
        return len(self.dense)


def build_graphs(dataset, allow_radicals: bool = False) -> tuple[GraphStore, np.ndarray, list[tuple[int, str]]]:
    """Graph features of every molecule of ``dataset`` (``molediff.conformers.graph``).

    Returns ``(store, kept, skipped)``: the store holds the graphs of the molecules ``kept`` (dataset indices, in
    order); ``skipped`` lists ``(index, reason)`` for the molecules whose graph could not be built.
    """
    from .graph import GraphError, mol_graph, molecule_to_rdkit

    graphs, kept, skipped = [], [], []
    for i in range(len(dataset)):
        try:
            graphs.append(mol_graph(molecule_to_rdkit(dataset[i], allow_radicals=allow_radicals)))
        except GraphError as e:
            skipped.append((i, str(e)))
        else:
            kept.append(i)
    return GraphStore.from_graphs(graphs), np.asarray(kept, dtype=np.int64), skipped


def _log_skipped(skipped: list[tuple[int, str]], total: int) -> None:
    if not skipped:
        return
    for i, reason in skipped:
        log.info("conformer task: skipped molecule %d: %s", i, reason)
    kinds = Counter("unpaired electrons" if "unpaired" in r else "sanitisation failed" if "sanitisation" in r
                    else "other" for _, r in skipped)
    log.warning("conformer task: skipped %d of %d molecules whose graph could not be built (%s); e.g. %s",
                len(skipped), total, ", ".join(f"{n} {k}" for k, n in kinds.most_common()),
                "; ".join(r for _, r in skipped[:3]))


@dataclass
class ConformerTask:
    """Implements the trainer's task protocol for ``ConformerDiffusion`` (no periodic evaluation yet).

    When the model takes graph features, the graphs are built on construction (``graphs`` may be given to skip
    that) and the dataset is reduced to the molecules whose graph could be built; ``skipped`` lists the others
    as ``(index in the original dataset, reason)``.
    """

    model: ConformerDiffusion
    dataset: object
    graphs: GraphStore | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self):
        cfg = self.model.config
        uses_graph = bool(cfg.node_features or cfg.edge_features)
        if uses_graph and (cfg.node_features, cfg.edge_features) != (NODE_FEATURES, EDGE_FEATURES):
            raise ValueError(f"the conformer task builds graph features of widths node_features={NODE_FEATURES}, "
                             f"edge_features={EDGE_FEATURES} (molediff.conformers.graph); the model has "
                             f"{cfg.node_features}, {cfg.edge_features} (set both, or both to 0)")
        if cfg.context_features:
            raise ValueError("the conformer task has no context data; set model.context_features to 0")
        if uses_graph and self.graphs is None:
            total = len(self.dataset)
            self.graphs, kept, self.skipped = build_graphs(self.dataset)
            _log_skipped(self.skipped, total)
            if not len(kept):
                raise ValueError(f"no molecule of the {total} in the dataset has a usable graph; first reason: "
                                 f"{self.skipped[0][1] if self.skipped else 'empty dataset'}")
            if len(kept) < total:
                self.dataset = self.dataset.subset(kept)
        if self.graphs is not None:
            self.graphs.check_matches(self.dataset)

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        batch = batch.to(device)
        if isinstance(batch, GraphBatch):
            d = batch.dense
            loss = model(d.positions, d.type_index, d.mask, batch.node_features, batch.edge_attr).mean()
        else:
            loss = model(batch.positions, batch.type_index, batch.mask).mean()
        return loss, {"loss": float(loss.detach())}

    def batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> Iterator:
        """Molecules of similar size together (``molediff.data.batching``); with the graph features of the
        model when it takes them."""
        from ..data.batching import collate_dense, molecule_batches, size_bucketed_batches

        vocabulary = self.model.config.vocabulary
        if self.graphs is None:
            yield from molecule_batches(self.dataset, vocabulary, batch_size, seed, epoch, rank, world_size)
            return
        sizes = np.asarray(self.dataset.atom_counts)
        for idx in size_bucketed_batches(sizes, batch_size, seed, epoch, rank, world_size):
            dense = collate_dense([self.dataset[int(i)] for i in idx], vocabulary=vocabulary)
            node, edge = self.graphs.collate(idx, dense.mask.shape[1])
            yield GraphBatch(dense, node, edge)

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        return {}


def build_task(config) -> ConformerTask:
    """``molediff train`` entry: ``model`` is a ``ConformerDiffusionConfig``, ``data`` a ``MoleculeDataConfig``
    plus, for this task, an optional ``graphs: PATH`` (a ``GraphStore.save`` file of the same molecules in the
    same order: no graph is built, so no RDKit is needed).

    ``model.node_features`` and ``model.edge_features`` default to the graph widths (``molediff.conformers.graph``)
    when the section leaves them out; set both to 0 to train on atom types alone. ValueError when the graph file
    does not fit the molecules (count or atom counts) or the model takes no graph features.
    """
    from ..utils import build_config

    section = {"node_features": NODE_FEATURES, "edge_features": EDGE_FEATURES, **dict(config.model)}
    model_cfg = ConformerDiffusionConfig.from_dict(section)
    data_section = dict(config.data or {})
    graphs_path = data_section.pop("graphs", None)
    data = build_config(MoleculeDataConfig, data_section, "data.")
    graphs = None
    if graphs_path is not None:
        if not (model_cfg.node_features or model_cfg.edge_features):
            raise ValueError("data.graphs is given but the model takes no graph features (node_features = "
                             "edge_features = 0)")
        graphs = GraphStore.load(graphs_path)
    dataset = load_molecule_dataset(data, model_cfg.vocabulary, model_cfg.max_atoms)
    if graphs is not None:
        graphs.check_matches(dataset, f"graphs {graphs_path}")
    return ConformerTask(model=ConformerDiffusion(model_cfg), dataset=dataset, graphs=graphs)


@torch.no_grad()
def denoising_error(model: ConformerDiffusion, dataset, graphs: GraphStore | None, sigmas: Sequence[float],
                    batch_size: int = 64, seed: int = 0) -> dict[float, float]:
    """Held-out ε-loss of ``model`` at fixed noise levels: for each σ (Å; the nearest grid time,
    ``refine.time_for_sigma``) the mean over molecules of ‖ε̂ − ε‖² / (3n) (Ho et al. 2020, Eq. 14), with the
    noise seeded by ``seed``. ``dataset``: a ``MoleculeDataset``; ``graphs``: its ``GraphStore`` (None for a
    model without graph features). Returns {σ: error}; an untrained model gives about 1.

    ValueError when the graphs do not fit the dataset or σ lies outside the schedule.
    """
    from ..data.batching import collate_dense
    from .refine import time_for_sigma

    uses_graph = bool(model.config.node_features or model.config.edge_features)
    if uses_graph:
        if graphs is None:
            raise ValueError("this model takes graph features: give the dataset's graphs")
        graphs.check_matches(dataset)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    gen = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for sigma in sigmas:
        t_value = time_for_sigma(model.schedule, float(sigma))
        total = 0.0
        for start in range(0, len(dataset), batch_size):
            idx = list(range(start, min(start + batch_size, len(dataset))))
            dense = collate_dense([dataset[i] for i in idx], vocabulary=model.config.vocabulary).to(device)
            node = edge = None
            if uses_graph:
                node, edge = graphs.collate(idx, dense.mask.shape[1])
                node, edge = node.to(device, dtype), edge.to(device, dtype)
            x = model.space.project(dense.positions.to(dtype) * dense.mask.unsqueeze(-1).to(dtype), dense.mask)
            feats = model.node_features(dense.type_index, dense.mask, dtype, node)
            t = torch.full((len(idx),), t_value, dtype=torch.float64, device=device)
            total += float(model.loss(x, dense.mask, None, feats, edge, generator=gen, t=t).sum())
        out[float(sigma)] = total / max(len(dataset), 1)
    return out
