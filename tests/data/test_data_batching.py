"""Size-bucketed, rank-partitioned training order (``size_bucketed_batches``)."""

import numpy as np
import pytest
from helpers import DATA

from molediff.chem.molecule import MoleculeDataset
from molediff.data.batching import size_bucketed_batches


def _reference_order(sizes, batch_size, seed, epoch, rank, world_size):
    """The order ``MoleculeTask.batches`` used before it moved to ``size_bucketed_batches`` (kept verbatim so
    resumed training runs keep their data order)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(sizes))
    window = 32 * batch_size
    batches = []
    for start in range(0, len(order) - batch_size + 1, window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(sizes[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size))
    per_rank = batch_size // world_size
    return [batches[b][rank * per_rank:(rank + 1) * per_rank] for b in rng.permutation(len(batches))]


@pytest.fixture(scope="module")
def qm9_sizes():
    return MoleculeDataset.load(DATA / "qm9_test_500.npz").atom_counts


def _full_batches(n, batch_size):
    """Number of full batches: each window of 32 batches yields its full batches; its remainder is dropped."""
    window = 32 * batch_size
    return sum(min(window, n - start) // batch_size for start in range(0, n - batch_size + 1, window))


@pytest.mark.parametrize("n, batch_size", [(500, 4), (500, 7), (512, 4), (1000, 3), (13, 4), (3, 4)])
def test_each_molecule_at_most_once_and_all_full_batches_used(n, batch_size):
    sizes = np.random.default_rng(0).integers(3, 30, size=n)
    batches = list(size_bucketed_batches(sizes, batch_size, seed=1, epoch=0))
    assert len(batches) == _full_batches(n, batch_size)
    assert all(b.shape == (batch_size,) and b.dtype == np.int64 for b in batches)
    seen = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    assert len(np.unique(seen)) == len(seen)                        # no molecule twice in an epoch
    assert np.all((seen >= 0) & (seen < n))
    if n % (32 * batch_size) == 0:                                  # whole windows: every molecule once
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))


def test_matches_the_original_training_order(qm9_sizes):
    for seed, epoch, batch_size, world_size in [(0, 0, 8, 1), (3, 5, 8, 2), (7, 1, 12, 4), (11, 2, 6, 3)]:
        for rank in range(world_size):
            got = list(size_bucketed_batches(qm9_sizes, batch_size, seed, epoch, rank, world_size))
            want = _reference_order(qm9_sizes, batch_size, seed, epoch, rank, world_size)
            assert len(got) == len(want) > 0
            assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_pinned_order():
    # the exact order of (seed 0, epoch 0): resumed training runs rely on it never changing
    sizes = np.arange(40) % 9 + 3
    batches = [b.tolist() for b in size_bucketed_batches(sizes, 4, seed=0, epoch=0)]
    assert batches == [[37, 19, 11, 2], [23, 32, 5, 14], [30, 21, 12, 39], [34, 25, 16, 7], [26, 17, 35, 8],
                       [24, 6, 33, 15], [20, 38, 29, 3], [36, 1, 10, 28], [4, 22, 13, 31], [27, 18, 0, 9]]


def _padding(sizes, batches):
    """Fraction of dense [B, N] atom slots that are padding."""
    slots = sum(len(b) * sizes[b].max() for b in batches)
    return 1.0 - sum(sizes[b].sum() for b in batches) / slots


def test_batches_are_size_homogeneous(qm9_sizes):
    batch_size = 8
    bucketed = list(size_bucketed_batches(qm9_sizes, batch_size, seed=0, epoch=0))
    rng = np.random.default_rng(0)
    random = np.array_split(rng.permutation(len(qm9_sizes))[:len(bucketed) * batch_size], len(bucketed))
    spread = np.mean([np.ptp(qm9_sizes[b]) for b in bucketed])
    assert spread < 0.25 * np.mean([np.ptp(qm9_sizes[b]) for b in random])
    assert _padding(qm9_sizes, bucketed) < 0.5 * _padding(qm9_sizes, random)


def test_ranks_partition_each_global_batch(qm9_sizes):
    world_size, batch_size = 4, 16
    whole = list(size_bucketed_batches(qm9_sizes, batch_size, seed=2, epoch=3))
    shares = [list(size_bucketed_batches(qm9_sizes, batch_size, seed=2, epoch=3, rank=r, world_size=world_size))
              for r in range(world_size)]
    assert all(len(s) == len(whole) for s in shares)
    for k, batch in enumerate(whole):
        parts = [s[k] for s in shares]
        assert all(len(p) == batch_size // world_size for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), batch)  # disjoint, and together the global batch


def test_order_is_fixed_by_seed_and_epoch(qm9_sizes):
    def run(seed, epoch):
        return np.concatenate(list(size_bucketed_batches(qm9_sizes, 8, seed=seed, epoch=epoch)))

    np.testing.assert_array_equal(run(0, 4), run(0, 4))
    assert not np.array_equal(run(0, 4), run(0, 5))
    assert not np.array_equal(run(0, 4), run(1, 4))


def test_bad_world_size_rank_and_batch_size():
    sizes = np.full(100, 9)
    with pytest.raises(ValueError, match="batch size 10 must divide evenly over 3 processes"):
        size_bucketed_batches(sizes, 10, seed=0, epoch=0, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank 2 is outside 0..1"):
        size_bucketed_batches(sizes, 10, seed=0, epoch=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="must be positive"):
        size_bucketed_batches(sizes, 0, seed=0, epoch=0)


def test_dataset_smaller_than_a_batch_gives_no_batches():
    assert list(size_bucketed_batches(np.full(3, 5), 4, seed=0, epoch=0)) == []
