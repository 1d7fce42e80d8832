"""Protein chains for training: the typed ``data:`` section, the compact ``ProteinSet``, and ``load_proteins``:
chains read (``proteins.io``), deduplicated and split by homology (``proteins.homology``), with a cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..utils import atomic_path, build_config, cache_dir
from .homology import candidate_pairs, deduplicate, homology_clusters, near_duplicates, split_by_clusters
from .io import ProteinChain, read_chains, structure_files

log = logging.getLogger(__name__)

BALANCES = ("none", "clusters")
"""``ProteinDataConfig.balance``'s values."""

CACHE_VERSION = 2   # 2: the homology cluster of each chain is stored


@dataclass(frozen=True)
class ProteinDataConfig:
    """The ``data`` section of the protein task: where the chains come from and how they are chosen.

    Attributes:
        path: a folder of ``.pdb``/``.ent``/``.cif``/``.mmcif`` files (optionally ``.gz``), or one such file;
            or a prepared ``.npz`` (``ProteinSet.save``: chains already read, deduplicated and split), which is
            read with numpy alone (no biotite): only ``split`` and the length range apply to it.
        split: ``train`` | ``valid`` | ``test`` | ``all``.
        min_length, max_length: residues per chain kept (inclusive).
        max_ca_gap: Å; consecutive Cα farther apart than this are a chain break.
        on_break: ``drop`` the broken chain or ``split`` it into unbroken segments.
        identity: sequence identity (0..1) at which two chains are homologues and share a split.
        duplicate_identity: identity at which the shorter of two chains is a near-duplicate and is dropped.
        valid_fraction, test_fraction: fractions of (deduplicated) chains in the valid and test splits.
        seed: orders the clusters for the split.
        balance: which chains an epoch of training visits. ``none``: every chain once. ``clusters``: one chain
            drawn at random from each homology cluster (at ``identity``), so a family with many members (in
            Docking Benchmark 5.5, 124 antibody chains in one cluster, 37 % of the training chains) weighs as
            much as a family of one, as in the non-redundant CATH 40 % set FoldingDiff trains on and
            AlphaFold's cluster sampling; over the epochs every chain is still used.
        cache: keep the parsed chains as ``.npz`` in ``molediff.utils.cache_dir()``.
    """

    path: str = ""
    split: str = "train"
    min_length: int = 40
    max_length: int = 256
    max_ca_gap: float = 4.2
    on_break: str = "drop"
    identity: float = 0.3
    duplicate_identity: float = 0.95
    valid_fraction: float = 0.05
    test_fraction: float = 0.1
    seed: int = 0
    balance: str = "none"
    cache: bool = True

    def __post_init__(self):
        if self.split not in ("train", "valid", "test", "all"):
            raise ValueError(f"data.split must be train, valid, test or all, got {self.split!r}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= data.min_length <= data.max_length, got {self.min_length}, "
                             f"{self.max_length}")
        if self.balance not in BALANCES:
            raise ValueError(f"data.balance must be one of {', '.join(BALANCES)}, got {self.balance!r}")
        if self.on_break not in ("drop", "split"):
            raise ValueError(f"data.on_break must be 'drop' or 'split', got {self.on_break!r}")
        if not (0 < self.identity <= 1 and 0 < self.duplicate_identity <= 1):
            raise ValueError(f"data.identity and data.duplicate_identity must lie in (0, 1], got {self.identity}, "
                             f"{self.duplicate_identity}")
        if not (0 <= self.valid_fraction < 1 and 0 <= self.test_fraction < 1
                and self.valid_fraction + self.test_fraction < 1):
            raise ValueError("data.valid_fraction and data.test_fraction must be >= 0 and sum to less than 1")



@dataclass
class ProteinSet:
    """Chains stored compactly: ``coords`` [ΣL, 3] float32 Å, ``offsets`` [M + 1] int64, ``sequences`` and
    ``names`` (``file:chain``) [M]; ``split`` [M] of ``train``/``valid``/``test`` and ``clusters`` [M] int64,
    the homology cluster label of each chain (``homology.homology_clusters``; both empty before splitting)."""

    coords: np.ndarray
    offsets: np.ndarray
    sequences: list[str]
    names: list[str]
    split: list[str] = field(default_factory=list)
    clusters: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def from_chains(cls, chains: Sequence[ProteinChain]) -> ProteinSet:
        lengths = np.array([len(c) for c in chains], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        coords = (np.concatenate([c.coords for c in chains]).astype(np.float32) if chains
                  else np.zeros((0, 3), np.float32))
        return cls(coords, offsets, [c.sequence for c in chains], [c.name for c in chains])

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def lengths(self) -> np.ndarray:
        """Residues per chain [M] int64."""
        return np.diff(self.offsets)

    def __getitem__(self, i: int) -> ProteinChain:
        source, _, chain = self.names[i].rpartition(":")
        return ProteinChain(self.coords[self.offsets[i]:self.offsets[i + 1]], self.sequences[i], source, chain)

    def subset(self, indices: Sequence[int]) -> ProteinSet:
        chains = [self[int(i)] for i in indices]
        out = ProteinSet.from_chains(chains)
        if self.split:
            out.split = [self.split[int(i)] for i in indices]
        if len(self.clusters):
            out.clusters = self.clusters[np.asarray(indices, dtype=np.int64)]
        return out

    def select(self, split: str) -> ProteinSet:
        """The chains of one split (``all``: every chain)."""
        if split == "all":
            return self
        if not self.split:
            raise ValueError("this protein set has not been split")
        return self.subset([i for i, s in enumerate(self.split) if s == split])

    def save(self, path: str | os.PathLike) -> None:
        """Write as ``.npz`` atomically (coordinates, offsets, sequences, names, split, clusters); ``load``
        needs numpy alone."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, coords=self.coords, offsets=self.offsets, sequences=np.array(self.sequences),
                                names=np.array(self.names), split=np.array(self.split),
                                clusters=np.asarray(self.clusters, dtype=np.int64))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ProteinSet:
        """A set written by ``save`` (one written before clusters were stored reads with empty ``clusters``)."""
        with np.load(path, allow_pickle=False) as z:
            clusters = z["clusters"].astype(np.int64) if "clusters" in z.files else np.zeros(0, dtype=np.int64)
            return cls(z["coords"].astype(np.float32), z["offsets"].astype(np.int64),
                       [str(s) for s in z["sequences"]], [str(s) for s in z["names"]], [str(s) for s in z["split"]],
                       clusters)

    def epoch_chains(self, balance: str, seed: int, epoch: int) -> np.ndarray:
        """The chains [K] int64 (ascending indices) one training epoch visits, fixed by (seed, epoch):
        every chain for ``balance="none"``; for ``"clusters"`` one chain per homology cluster, drawn uniformly
        among its members (see ``ProteinDataConfig.balance``). ValueError for an unknown ``balance`` or a set
        without cluster labels."""
        if balance == "none":
            return np.arange(len(self), dtype=np.int64)
        if balance != "clusters":
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}")
        if len(self.clusters) != len(self):
            raise ValueError("this protein set has no homology cluster labels (prepared before they were stored); "
                             "prepare it again from the structure files")
        rng = np.random.default_rng([seed, epoch, 21])
        _, members = np.unique(self.clusters, return_inverse=True)
        # A uniform member of each cluster: the member with the smallest random key.
        keys = rng.random(len(self))
        order = np.lexsort((keys, members))
        first = np.concatenate([[True], members[order][1:] != members[order][:-1]])
        return np.sort(order[first]).astype(np.int64)



def load_prepared(cfg: ProteinDataConfig) -> ProteinSet:
    """The chains of ``cfg.split`` from a prepared ``.npz`` (``ProteinSet.save``) within ``cfg.min_length``..
    ``cfg.max_length`` residues; numpy only. FileNotFoundError for a missing file, ValueError for a file
    that is not a prepared set, a set without split labels (unless ``split: all``) or an empty result."""
    path = Path(cfg.path)
    if not path.is_file():
        raise FileNotFoundError(f"prepared protein set {cfg.path!r} does not exist")
    try:
        full = ProteinSet.load(path)
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{cfg.path} is not a prepared protein set (ProteinSet.save): {e}") from None
    if len(full.offsets) != len(full) + 1 or full.offsets[-1] != len(full.coords) or (
            full.split and len(full.split) != len(full)) or (len(full.clusters) and len(full.clusters) != len(full)):
        raise ValueError(f"{cfg.path} is not a consistent protein set: {len(full)} sequences, "
                         f"{len(full.offsets)} offsets, {len(full.coords)} coordinates, {len(full.split)} labels, "
                         f"{len(full.clusters)} clusters")
    if cfg.split != "all" and not full.split:
        raise ValueError(f"{cfg.path} has no split labels; use data.split: all")
    chosen = full.select(cfg.split)
    lengths = chosen.lengths
    keep = np.nonzero((lengths >= cfg.min_length) & (lengths <= cfg.max_length))[0]
    if len(keep) < len(chosen):
        log.info("dropped %d of %d chains outside %d..%d residues", len(chosen) - len(keep), len(chosen),
                 cfg.min_length, cfg.max_length)
        chosen = chosen.subset(keep)
    if len(chosen) == 0:
        raise ValueError(f"no {cfg.split} chain of {cfg.min_length}..{cfg.max_length} residues in {cfg.path}")
    try:   # data.balance needs the cluster labels a file prepared before they were stored lacks: say so now
        chosen.epoch_chains(cfg.balance, cfg.seed, 0)
    except ValueError as e:
        raise ValueError(f"{cfg.path}: {e}") from None
    log.info("read %d %s chains from %s", len(chosen), cfg.split, cfg.path)
    return chosen


def _cache_key(files: Sequence[Path], cfg: ProteinDataConfig) -> str:
    h = hashlib.sha256()
    opts = {k: getattr(cfg, k) for k in ("min_length", "max_length", "max_ca_gap", "on_break", "identity",
                                         "duplicate_identity",
                                         "valid_fraction", "test_fraction", "seed")}
    h.update(json.dumps({"version": CACHE_VERSION, **opts}, sort_keys=True).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def load_proteins(config: ProteinDataConfig | dict, show_progress: bool = False) -> ProteinSet:
    """Read, deduplicate, cluster and split the chains under ``config.path``; returns the chains of
    ``config.split``.

    Deduplication: identical sequences keep their first chain (files in sorted order); then the shorter of two
    chains at ``duplicate_identity`` (95 %) or more is dropped (``near_duplicates``). Split: single-linkage
    clusters at ``identity`` (30 %, ``homology_clusters``) go whole into test, valid or train
    (``split_by_clusters``), so no test chain has a training chain at 30 % identity or more (up to the k-mer
    prefilter of ``candidate_pairs``). The split set is cached as ``.npz`` (keyed by the files' paths, sizes and
    times and the options) unless ``config.cache`` is false; the chains carry their homology cluster labels.

    A ``.npz`` path is a prepared set (``ProteinSet.save``, e.g. from ``scripts/gpu/train_proteins.py prepare``):
    it is read with numpy alone, and only ``split`` and ``min_length``/``max_length`` apply.

    ValueError when no chain is kept, or for ``balance: clusters`` on a prepared set without cluster labels;
    FileNotFoundError for a missing path.
    """
    cfg = build_config(ProteinDataConfig, config, "data.") if isinstance(config, dict) else config
    if not cfg.path:
        raise ValueError("data.path must name a folder of PDB/mmCIF files or a prepared .npz")
    if cfg.path.lower().endswith(".npz"):
        return load_prepared(cfg)
    files = structure_files(cfg.path)
    cache = cache_dir() / "proteins" / f"{_cache_key(files, cfg)}.npz" if cfg.cache else None
    if cache is not None and cache.is_file():
        full = ProteinSet.load(cache)
        log.info("read %d protein chains from the cache %s", len(full), cache)
    else:
        chains, _, _ = read_chains(cfg.path, cfg.min_length, cfg.max_length, cfg.max_ca_gap, cfg.on_break,
                                   show_progress)
        unique = deduplicate(chains)
        pairs = candidate_pairs([c.sequence for c in unique])
        redundant = near_duplicates([c.sequence for c in unique], cfg.duplicate_identity, pairs)
        log.info("%d chains with distinct sequences (of %d kept), %d of them near-duplicates (>= %.0f%% identity)",
                 len(unique), len(chains), int(redundant.sum()), 100 * cfg.duplicate_identity)
        remap = np.cumsum(~redundant) - 1
        pairs = [(int(remap[i]), int(remap[j]), h, d) for i, j, h, d in pairs if not (redundant[i] or redundant[j])]
        unique = [c for c, r in zip(unique, redundant) if not r]
        if not unique:
            raise ValueError(f"no protein chain of {cfg.min_length}..{cfg.max_length} residues could be read "
                             f"from {cfg.path}")
        full = ProteinSet.from_chains(unique)
        clusters = homology_clusters(full.sequences, cfg.identity, pairs)
        full.split = split_by_clusters(clusters, cfg.valid_fraction, cfg.test_fraction, cfg.seed)
        full.clusters = clusters
        counts = Counter(full.split)
        log.info("%d homology clusters at %.0f%% identity; split train %d, valid %d, test %d",
                 len(np.unique(clusters)), 100 * cfg.identity, counts["train"], counts["valid"], counts["test"])
        if cache is not None:
            full.save(cache)
    out = full.select(cfg.split)
    if len(out) == 0:
        raise ValueError(f"the {cfg.split} split of {cfg.path} is empty")
    return out
