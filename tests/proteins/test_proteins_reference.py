"""The calibration chains of issue 20 (real windows rebuilt at 3.80 Å; independent real (θ, τ) pairs) and the
shipped held-out chains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DATA

from molediff.proteins.angles import chain_to_angles
from molediff.proteins.io import read_ca_traces
from molediff.proteins.metrics import ca_distances, score_chains
from molediff.proteins.reference import angle_pairs, independent_angle_chains, rebuilt_windows

FIXTURES = DATA / "proteins" / "real"


@pytest.fixture(scope="module")
def real():
    chains, _, _ = read_ca_traces(FIXTURES)
    return chains


def test_rebuilt_windows_keep_their_angles_at_exact_bonds(real):
    windows = rebuilt_windows(real, window=60, rng=np.random.default_rng(1))
    assert len(windows) == sum(len(c) >= 60 for c in real) and all(w.shape == (60, 3) for w in windows)
    for w in windows:
        assert np.allclose(ca_distances(w), 3.8, atol=1e-4)
    # each window's angles are those of some 60-residue piece of its chain
    long = [c for c in real if len(c) >= 60]
    got, _, _ = chain_to_angles(torch.as_tensor(np.stack(windows), dtype=torch.float64))
    for k, c in enumerate(long):
        pieces = np.stack([c[s:s + 60] for s in range(len(c) - 59)]).astype(np.float64)
        want, _, _ = chain_to_angles(torch.as_tensor(pieces))
        diff = torch.remainder(want - got[k] + np.pi, 2 * np.pi) - np.pi
        assert diff.abs().amax(dim=(1, 2)).min() < 1e-3
    # real chains are compact and clash-free, and stay so when rebuilt at 3.80 Å
    s = score_chains(windows)
    assert s["clash_chain_rate"] == 0.0 and 2.0 < s["rg_scaled_mean"] < 3.2
    with pytest.raises(ValueError, match="4 residues"):
        rebuilt_windows(real, window=3)
    assert rebuilt_windows(real, window=10_000) == []


def test_independent_pairs_lose_the_correlations_along_the_chain(real):
    pairs = angle_pairs(real)
    assert pairs.shape == (sum(len(c) - 3 for c in real), 2)
    chains = independent_angle_chains(real, 80, 40, rng=np.random.default_rng(0))
    assert len(chains) == 40 and all(c.shape == (80, 3) for c in chains)
    got, _, _ = chain_to_angles(torch.as_tensor(np.stack(chains), dtype=torch.float64))
    drawn = got[:, :-1].reshape(-1, 2).numpy()
    # every drawn pair is one of the real pairs (θ, τ together)
    nearest = np.abs(np.remainder(drawn[:, None] - pairs[None] + np.pi, 2 * np.pi) - np.pi).max(-1).min(1)
    assert nearest.max() < 1e-3
    # the marginal alone makes chains that are less compact and clash more than real windows of the same length
    indep, windows = score_chains(chains), score_chains(rebuilt_windows(real, 80))
    assert indep["rg_scaled_mean"] > windows["rg_scaled_mean"] and indep["clash_chain_rate"] > 0.3
    assert indep["helix"] + indep["strand"] < windows["helix"] + windows["strand"]
    with pytest.raises(ValueError, match="length >= 4"):
        independent_angle_chains(real, 3, 2)
