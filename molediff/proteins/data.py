"""Protein chains as Cα traces: reading PDB/mmCIF folders, deduplication, a homology-aware split and a cache.

Reading rules (one chain = one author chain id of the first model):

* Structures are parsed with biotite (``PDBFile`` / ``CIFFile``, plain or ``.gz``), first model only, the
  first alternate location of every atom (``altloc="first"``).
* Residues: the 20 standard amino acids, plus selenomethionine (MSE), read as methionine (a crystallisation
  variant, not a different residue). Every other residue (ligands, water, modified amino acids) is removed;
  a residue without a Cα atom is removed too. A removed residue inside the chain leaves a gap that the
  break rule below catches.
* Chain breaks: consecutive kept Cα atoms farther apart than ``max_ca_gap`` (4.2 Å) make a break. With
  ``on_break="drop"`` (default) the chain is dropped; with ``"split"`` every unbroken segment is a chain
  of its own (named ``chain/segment``).
* Length: 40..256 residues (``min_length``, ``max_length``), checked after the break rule.

Every chain that is not kept is counted by its reason and a file that cannot be read at all (corrupt gzip,
not a structure, no protein) gives a one-line reason; the rest of the folder is still read.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..chem.io import read_text
from ..utils import atomic_path, build_config, cache_dir, progress

log = logging.getLogger(__name__)

THREE_TO_ONE = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G", "HIS": "H",
    "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S", "THR": "T", "TRP": "W",
    "TYR": "Y", "VAL": "V", "MSE": "M",
}
"""Residue names read as amino acids (MSE, selenomethionine, as M); everything else is dropped."""

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
CACHE_VERSION = 1


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
    cache: bool = True

    def __post_init__(self):
        if self.split not in ("train", "valid", "test", "all"):
            raise ValueError(f"data.split must be train, valid, test or all, got {self.split!r}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= data.min_length <= data.max_length, got {self.min_length}, "
                             f"{self.max_length}")
        if self.on_break not in ("drop", "split"):
            raise ValueError(f"data.on_break must be 'drop' or 'split', got {self.on_break!r}")
        if not (0 < self.identity <= 1 and 0 < self.duplicate_identity <= 1):
            raise ValueError(f"data.identity and data.duplicate_identity must lie in (0, 1], got {self.identity}, "
                             f"{self.duplicate_identity}")
        if not (0 <= self.valid_fraction < 1 and 0 <= self.test_fraction < 1
                and self.valid_fraction + self.test_fraction < 1):
            raise ValueError("data.valid_fraction and data.test_fraction must be >= 0 and sum to less than 1")


@dataclass
class ProteinChain:
    """One chain's Cα trace. ``coords`` [L, 3] float32 Å, ``sequence`` one-letter (length L)."""

    coords: np.ndarray
    sequence: str
    source: str
    chain_id: str

    @property
    def name(self) -> str:
        return f"{self.source}:{self.chain_id}"

    def __len__(self) -> int:
        return len(self.sequence)


@dataclass
class ProteinSet:
    """Chains stored compactly: ``coords`` [ΣL, 3] float32 Å, ``offsets`` [M + 1] int64, ``sequences`` and
    ``names`` (``file:chain``) [M]; ``split`` [M] of ``train``/``valid``/``test`` (empty before splitting)."""

    coords: np.ndarray
    offsets: np.ndarray
    sequences: list[str]
    names: list[str]
    split: list[str] = field(default_factory=list)

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
        return out

    def select(self, split: str) -> ProteinSet:
        """The chains of one split (``all``: every chain)."""
        if split == "all":
            return self
        if not self.split:
            raise ValueError("this protein set has not been split")
        return self.subset([i for i, s in enumerate(self.split) if s == split])

    def save(self, path: str | os.PathLike) -> None:
        """Write as ``.npz`` atomically (coordinates, offsets, sequences, names, split); ``load`` needs numpy
        alone."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, coords=self.coords, offsets=self.offsets, sequences=np.array(self.sequences),
                                names=np.array(self.names), split=np.array(self.split))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ProteinSet:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["coords"].astype(np.float32), z["offsets"].astype(np.int64),
                       [str(s) for s in z["sequences"]], [str(s) for s in z["names"]], [str(s) for s in z["split"]])


# ------------------------------------------------------------------------------------------------ reading
def structure_files(path: str | os.PathLike) -> list[Path]:
    """The structure files of a folder (sorted; recursive) or the one file given; FileNotFoundError if none."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"protein data path {str(path)!r} does not exist")
    files = sorted(f for f in p.rglob("*") if f.is_file() and _suffix(f) in STRUCTURE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no .pdb/.ent/.cif/.mmcif files (optionally .gz) in {str(path)!r}")
    return files


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[1]


def _read_text(path: Path) -> str:
    """The file's text as molediff's molecule readers decode it (``.gz``, byte-order marks); a structure cut off
    inside its ``.gz`` stream is refused whole (a partial chain would pass for a short one)."""
    text, problem = read_text(path)
    if problem is not None:
        raise ValueError(f"not a readable gzip file ({problem[1]})")
    return text


def read_ca_atoms(path: str | os.PathLike):
    """The Cα atoms (atom name CA) of the first model of a PDB/mmCIF file as a biotite ``AtomArray``.

    PDB text is cut to its ATOM/HETATM records named CA before biotite parses it, which makes reading about
    ten times faster and changes nothing else. ValueError with a one-line reason for a file that cannot be
    read or holds no atoms.
    """
    path = Path(path)
    text = _read_text(path)
    with warnings.catch_warnings():
        # biotite warns when it guesses elements from atom names; only Cα atoms are kept, so that is moot.
        warnings.filterwarnings("ignore", message=".*elements were guessed", category=UserWarning)
        return _parse_ca_atoms(text, _suffix(path))


def _parse_ca_atoms(text: str, suffix: str):
    import biotite.structure as struc

    pdb_text = None
    if suffix not in (".cif", ".mmcif"):
        lines = [ln for ln in text.splitlines()
                 if (ln.startswith(("ATOM  ", "HETATM")) and ln[12:16].strip() == "CA")
                 or ln.startswith(("MODEL", "ENDMDL"))]
        if not any(ln.startswith(("ATOM", "HETATM")) for ln in lines):
            raise ValueError("no Cα atoms (no protein, or not a PDB file)")
        pdb_text = "\n".join(lines) + "\nEND\n"
    try:
        if pdb_text is None:
            from biotite.structure.io import pdbx

            atoms = pdbx.get_structure(pdbx.CIFFile.read(io.StringIO(text)), model=1, altloc="first")
        else:
            from biotite.structure.io import pdb

            atoms = pdb.PDBFile.read(io.StringIO(pdb_text)).get_structure(model=1, altloc="first")
    except ValueError as e:
        raise ValueError(f"not a readable structure: {' '.join(str(e).split())}") from None
    except Exception as e:  # biotite raises various types on garbage; the reason is what matters
        raise ValueError(f"not a readable structure: {type(e).__name__}: {' '.join(str(e).split())}") from None
    if isinstance(atoms, struc.AtomArrayStack):
        atoms = atoms[0]
    atoms = atoms[atoms.atom_name == "CA"]
    if atoms.array_length() == 0:
        raise ValueError("no Cα atoms")
    return atoms


def chains_from_atoms(atoms, source: str, min_length: int = 40, max_length: int = 256, max_ca_gap: float = 4.2,
                      on_break: str = "drop") -> tuple[list[ProteinChain], list[str]]:
    """Split Cα atoms into chains by the module's rules; returns ``(kept chains, reasons for the others)``.

    A residue is one (chain id, residue number, insertion code); its first Cα is used.
    """
    kept, reasons = [], []
    for chain_id in dict.fromkeys(atoms.chain_id.tolist()):
        a = atoms[atoms.chain_id == chain_id]
        aa = np.array([n in THREE_TO_ONE for n in a.res_name])
        if not aa.any():
            reasons.append("no standard amino acids")
            continue
        a = a[aa]
        key = np.array([f"{r}|{i}" for r, i in zip(a.res_id, a.ins_code)])
        _, first = np.unique(key, return_index=True)
        a = a[np.sort(first)]
        xyz = a.coord.astype(np.float32)
        seq = "".join(THREE_TO_ONE[n] for n in a.res_name)
        gaps = np.linalg.norm(np.diff(xyz, axis=0), axis=1) > max_ca_gap
        if gaps.any() and on_break == "drop":
            reasons.append("chain break")
            continue
        bounds = np.concatenate([[0], np.nonzero(gaps)[0] + 1, [len(seq)]])
        for k, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            name = chain_id if len(bounds) == 2 else f"{chain_id}/{k}"
            if e - s < min_length:
                reasons.append(f"shorter than {min_length}")
            elif e - s > max_length:
                reasons.append(f"longer than {max_length}")
            else:
                kept.append(ProteinChain(xyz[s:e].copy(), seq[s:e], source, name))
    return kept, reasons


def read_chains(path: str | os.PathLike, min_length: int = 40, max_length: int = 256, max_ca_gap: float = 4.2,
                on_break: str = "drop", show_progress: bool = False
                ) -> tuple[list[ProteinChain], Counter, list[tuple[str, str]]]:
    """Read every structure file under ``path``: ``(chains, chain reasons counted, [(file, reason)])``.

    A file that cannot be read is reported with its reason and skipped; logs "kept N of M chains".
    """
    chains, reasons, bad = [], Counter(), []
    for f in progress(structure_files(path), desc="reading structures", unit="file",
                      disable=None if show_progress else True):
        try:
            atoms = read_ca_atoms(f)
        except (ValueError, OSError) as e:
            bad.append((f.name, str(e)))
            continue
        kept, why = chains_from_atoms(atoms, f.name, min_length, max_length, max_ca_gap, on_break)
        chains.extend(kept)
        reasons.update(why)
    total = len(chains) + sum(reasons.values())
    log.info("kept %d of %d chains%s; %d unreadable files", len(chains), total,
             "".join(f", {n} {r}" for r, n in reasons.most_common()), len(bad))
    for name, reason in bad:
        log.warning("skipped %s: %s", name, reason)
    return chains, reasons, bad


def deduplicate(chains: Sequence[ProteinChain]) -> list[ProteinChain]:
    """Keep the first chain (in the given order) of every distinct sequence."""
    seen, out = set(), []
    for c in chains:
        if c.sequence not in seen:
            seen.add(c.sequence)
            out.append(c)
    return out


# ------------------------------------------------------------------------------------- homology split
def sequence_identity(a: str, b: str, diagonal: int | None = None, band: int = 48) -> float:
    """Identical aligned positions / length of the shorter sequence (BLOSUM62, affine gaps −11/−1).

    Without ``diagonal``: a global alignment with free end gaps (Needleman–Wunsch with Gotoh's affine gaps,
    biotite ``align_optimal``). With ``diagonal`` (position in a − position in b, e.g. from shared k-mers):
    a local alignment restricted to the diagonals ``diagonal ± band`` (biotite ``align_banded``), about
    L / (2·band) times cheaper; indels that move the path out of the band are not seen.
    """
    from biotite.sequence.align import align_banded, align_optimal, get_sequence_identity

    sa, sb, matrix = _protein_sequence(a), _protein_sequence(b), _blosum62()
    if diagonal is None:
        ali = align_optimal(sa, sb, matrix, gap_penalty=(-11, -1), terminal_penalty=False, max_number=1)[0]
    else:
        # biotite's band is in diagonals of (position in seq2 − position in seq1).
        lo = max(-diagonal - band, -(len(a) - 1))
        hi = min(-diagonal + band, len(b) - 1)
        if lo > hi:
            return 0.0
        alis = align_banded(sa, sb, matrix, band=(lo, hi), gap_penalty=(-11, -1), local=True, max_number=1)
        if not alis:
            return 0.0
        ali = alis[0]
    identities = get_sequence_identity(ali, mode="all") * len(ali)
    return float(identities / min(len(a), len(b)))


_SEQ_CACHE: dict[str, object] = {}


def _protein_sequence(s: str):
    from biotite.sequence import ProteinSequence

    if len(_SEQ_CACHE) > 100_000:
        _SEQ_CACHE.clear()
    if s not in _SEQ_CACHE:
        _SEQ_CACHE[s] = ProteinSequence(s)
    return _SEQ_CACHE[s]


def _blosum62():
    from biotite.sequence.align import SubstitutionMatrix

    global _MATRIX
    if _MATRIX is None:
        _MATRIX = SubstitutionMatrix.std_protein_matrix()
    return _MATRIX


_MATRIX = None


def candidate_pairs(sequences: Sequence[str], k: int = 3, band: int = 32,
                    min_hits: int = 4) -> list[tuple[int, int, int, int]]:
    """Pairs ``(i, j, hits, diagonal)``, i < j, that may be homologous: at least ``min_hits`` shared k-mers
    whose offsets (position in i − position in j) fall into one diagonal band of width ``band``; ``hits`` is
    the largest such count and ``diagonal`` the centre of that band. Sorted by hits (most first), then i, j.

    Why: aligning every pair costs O(M²) alignments; homologues share short words on nearly the same
    diagonal (the idea behind FASTA/BLAST seeding), random pairs spread their chance matches over all
    diagonals. At 30 % identity about 2.7 % of positions start an identical 3-mer, a handful per homologue
    of 150 residues. Measured on the 639 distinct chains of Docking Benchmark 5.5: of pairs with exactly 3
    hits 0.7 % reach 30 % identity, of pairs with 4 or 5 hits 2.7 %; of random pairs failing the filter
    0.3 %, mostly short chains at the chance level of identity. A pair failing the filter counts as below
    the threshold.
    """
    from biotite.sequence import ProteinSequence
    from biotite.sequence.align import KmerTable

    seqs = [ProteinSequence(s) for s in sequences]
    table = KmerTable.from_sequences(k, seqs)
    pairs: dict[tuple[int, int], tuple[int, int]] = {}
    for i, s in enumerate(seqs):
        m = table.match(s)  # [n, 3]: position in s, reference index, position in reference
        m = m[m[:, 1] > i]
        if len(m) == 0:
            continue
        # Two overlapping bands (offset by half a band) so a diagonal near a band edge is not split.
        for shift in (0, band // 2):
            diag = (m[:, 0] - m[:, 2] + shift + 100_000) // band
            keys, counts = np.unique(m[:, 1] * 1_000_000 + diag, return_counts=True)
            for key, c in zip(keys[counts >= min_hits], counts[counts >= min_hits]):
                pair = (i, int(key // 1_000_000))
                centre = int(key % 1_000_000) * band + band // 2 - shift - 100_000
                if int(c) > pairs.get(pair, (0, 0))[0]:
                    pairs[pair] = (int(c), centre)
    return sorted(((i, j, c, d) for (i, j), (c, d) in pairs.items()), key=lambda p: (-p[2], p[0], p[1]))


def near_duplicates(sequences: Sequence[str], identity: float = 0.95, pairs=None) -> np.ndarray:
    """Which chains [M] bool are redundant: at least ``identity`` identical (``sequence_identity``) to a longer
    kept chain (ties: the earlier index is kept). Near-duplicates (the bound and unbound structures of one
    protein, differing by a few unresolved residues) share k-mers along almost their whole length, so only
    candidate pairs with at least half the shorter length in hits are aligned."""
    pairs = candidate_pairs(sequences) if pairs is None else pairs
    lengths = [len(s) for s in sequences]
    partners: dict[int, list[int]] = {}
    for i, j, hits, diagonal in pairs:
        if hits >= 0.5 * min(lengths[i], lengths[j]) and sequence_identity(sequences[i], sequences[j],
                                                                          diagonal) >= identity:
            partners.setdefault(i, []).append(j)
            partners.setdefault(j, []).append(i)
    redundant = np.zeros(len(sequences), dtype=bool)
    kept: set[int] = set()
    for i in sorted(range(len(sequences)), key=lambda k: (-lengths[k], k)):
        if any(p in kept for p in partners.get(i, ())):
            redundant[i] = True
        else:
            kept.add(i)
    return redundant


def homology_clusters(sequences: Sequence[str], identity: float = 0.3, pairs=None) -> np.ndarray:
    """Single-linkage clusters [M] int64 (cluster label = smallest member index): chains i and j share a
    cluster when a chain of pairs links them, each pair at ``identity`` or more (``sequence_identity``)
    among the ``candidate_pairs``. Deterministic. Single linkage guarantees that no two chains in different
    clusters reach the threshold (up to the prefilter)."""
    parent = list(range(len(sequences)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Most-similar pairs first: they merge the big families early, so most later pairs are skipped unaligned.
    for i, j, _, diagonal in candidate_pairs(sequences) if pairs is None else pairs:
        ri, rj = root(i), root(j)
        if ri != rj and sequence_identity(sequences[i], sequences[j], diagonal) >= identity:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([root(i) for i in range(len(sequences))], dtype=np.int64)


def split_by_clusters(clusters: np.ndarray, valid_fraction: float, test_fraction: float, seed: int = 0) -> list[str]:
    """``train``/``valid``/``test`` per chain, whole clusters at a time: clusters in a seeded random order fill
    test up to ``test_fraction`` of the chains, then valid, then the rest is train. A cluster that would
    overshoot the test or valid quota by more than half its size goes to train instead."""
    labels, sizes = np.unique(clusters, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(labels))
    n = len(clusters)
    quota = {"test": test_fraction * n, "valid": valid_fraction * n}
    filled = {"test": 0, "valid": 0}
    assign = {}
    for k in order:
        target = "train"
        for name in ("test", "valid"):
            if filled[name] + sizes[k] / 2 <= quota[name]:
                target = name
                filled[name] += sizes[k]
                break
        assign[labels[k]] = target
    return [assign[c] for c in clusters]


# --------------------------------------------------------------------------------------------- loading
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
            full.split and len(full.split) != len(full)):
        raise ValueError(f"{cfg.path} is not a consistent protein set: {len(full)} sequences, "
                         f"{len(full.offsets)} offsets, {len(full.coords)} coordinates, {len(full.split)} labels")
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
    times and the options) unless ``config.cache`` is false.

    A ``.npz`` path is a prepared set (``ProteinSet.save``, e.g. from ``scripts/gpu/train_proteins.py prepare``):
    it is read with numpy alone, and only ``split`` and ``min_length``/``max_length`` apply.

    ValueError when no chain is kept; FileNotFoundError for a missing path.
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
        counts = Counter(full.split)
        log.info("%d homology clusters at %.0f%% identity; split train %d, valid %d, test %d",
                 len(np.unique(clusters)), 100 * cfg.identity, counts["train"], counts["valid"], counts["test"])
        if cache is not None:
            full.save(cache)
    out = full.select(cfg.split)
    if len(out) == 0:
        raise ValueError(f"the {cfg.split} split of {cfg.path} is empty")
    return out
