"""Shared fixtures: random group elements (from :mod:`molediff.testing`) and a small QM9 test split. Plain
helper functions live in ``helpers.py``."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# load_script is re-exported for the test modules that still write `from conftest import load_script`;
# new code imports it, and every other shared helper, from helpers.
from helpers import DATA, load_script  # noqa: F401

from molediff.testing import random_orthogonal


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Derived data that tests make (parsed user files, the QM9 arrays) goes to a temporary cache, not the
    user's ~/.cache/molediff."""
    before = os.environ.get("MOLEDIFF_CACHE")
    os.environ["MOLEDIFF_CACHE"] = str(tmp_path_factory.mktemp("molediff_cache"))
    yield
    if before is None:
        os.environ.pop("MOLEDIFF_CACHE", None)
    else:
        os.environ["MOLEDIFF_CACHE"] = before


@pytest.fixture
def rotation() -> torch.Tensor:
    """A fixed random rotation (det +1), float64 [3, 3]; apply as ``pos @ rotation.T``."""
    return random_orthogonal(1, seed=2)


@pytest.fixture
def reflection() -> torch.Tensor:
    """A fixed random improper rotation (det −1), float64 [3, 3]."""
    return random_orthogonal(-1, seed=2)


@pytest.fixture(scope="session")
def qm9_fixture() -> dict[str, np.ndarray]:
    """The first 500 QM9 test molecules as raw arrays (read with numpy, independent of molediff.data).

    Keys: atomic_numbers [n_atoms] uint8, positions [n_atoms, 3] float32 (Å), offsets [501] int64 (molecule m
    is rows ``offsets[m]:offsets[m + 1]``), names [500] str.
    """
    with np.load(DATA / "qm9_test_500.npz", allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}
