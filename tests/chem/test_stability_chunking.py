"""The chunking of the stability computation as keyword arguments (``pair_budget``, ``max_chunk_molecules``): passed
down from ``evaluate_molecules`` and ``stability_batch``, the module constants as they are at call time by default,
memory only (the results never change), and the module constants untouched by a call."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DATA

from molediff.chem import stability
from molediff.chem.molecule import MoleculeDataset


@pytest.fixture(scope="module")
def qm9_120():
    ds = MoleculeDataset.load(DATA / "qm9_test_500.npz")
    return [ds[i] for i in range(120)]


@pytest.fixture
def chunkings(monkeypatch):
    """Every (max_pairs, max_molecules) that ``_chunk_bounds`` is called with."""
    seen = []
    original = stability._chunk_bounds

    def recording(sorted_counts, max_pairs, max_molecules):
        seen.append((max_pairs, max_molecules))
        return original(sorted_counts, max_pairs, max_molecules)

    monkeypatch.setattr(stability, "_chunk_bounds", recording)
    return seen


@pytest.mark.parametrize("pair_budget, max_chunk_molecules", [(5_000, None), (None, 2048), (1, None), (None, 7)])
def test_stability_batch_chunking_changes_nothing_but_the_chunks(qm9_120, chunkings, pair_budget,
                                                                 max_chunk_molecules):
    reference_stable, reference_matrices = stability.stability_batch(qm9_120)
    n_stable, matrices = stability.stability_batch(qm9_120, pair_budget=pair_budget,
                                                   max_chunk_molecules=max_chunk_molecules)
    assert chunkings == [(stability.PAIR_BUDGET, stability.MAX_CHUNK_MOLECULES), (pair_budget, max_chunk_molecules)]
    assert np.array_equal(n_stable, reference_stable)
    assert all(np.array_equal(a, b) for a, b in zip(matrices, reference_matrices, strict=True))
    bond_stable, bonds = stability.stability_bonds(qm9_120, pair_budget=pair_budget,
                                                   max_chunk_molecules=max_chunk_molecules)
    assert np.array_equal(bond_stable, reference_stable) and len(bonds) == len(qm9_120)
    assert (stability.PAIR_BUDGET, stability.MAX_CHUNK_MOLECULES) == (1 << 19, None)   # never assigned


def test_one_molecule_per_chunk_with_a_budget_of_one_pair(qm9_120):
    chunks = list(stability._stability_chunks(qm9_120, 1, None))
    assert len(chunks) == len(qm9_120) and all(len(idx) == 1 for idx, *_ in chunks)
    assert len(list(stability._stability_chunks(qm9_120, None, 50))) == 3   # 50 + 50 + 20


def test_evaluate_molecules_passes_the_chunking_down(qm9_120, chunkings):
    reference = stability.evaluate_molecules(qm9_120, properties=False)
    old = stability.evaluate_molecules(qm9_120, properties=False, pair_budget=None, max_chunk_molecules=2048)
    assert chunkings == [(1 << 19, None), (None, 2048)]
    assert {k: v for k, v in old.items() if k != "per_molecule"} == \
        {k: v for k, v in reference.items() if k != "per_molecule"}
    assert [r["smiles"] for r in old["per_molecule"]] == [r["smiles"] for r in reference["per_molecule"]]


def test_defaults_read_the_module_constants_at_call_time(qm9_120, chunkings, monkeypatch):
    monkeypatch.setattr(stability, "PAIR_BUDGET", 777)
    monkeypatch.setattr(stability, "MAX_CHUNK_MOLECULES", 3)
    stability.stability_batch(qm9_120[:10])
    stability.evaluate_molecules(qm9_120[:10], properties=False, max_chunk_molecules=None)
    assert chunkings == [(777, 3), (777, None)]
