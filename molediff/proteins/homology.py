"""Sequence redundancy and homology among protein chains: identical and near-identical sequences, pairwise identity
(biotite alignments behind a k-mer prefilter), single-linkage clusters at an identity threshold, and the split of
whole clusters into train, valid and test."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .io import ProteinChain


def deduplicate(chains: Sequence[ProteinChain]) -> list[ProteinChain]:
    """Keep the first chain (in the given order) of every distinct sequence."""
    seen, out = set(), []
    for c in chains:
        if c.sequence not in seen:
            seen.add(c.sequence)
            out.append(c)
    return out


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
