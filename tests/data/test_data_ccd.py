"""Chemical Component Dictionary molecules and the SMILES-disjoint split that holds out reserved IDs."""

import numpy as np
import pytest
from helpers import ROOT

from molediff.data.ccd import build_ccd, ccd_split, reserved_ccd_ids

IDS = ["ATP", "BEN", "NAG", "ALA", "003", "00J", "GLC", "BGC", "FMT", "HEM", "CL", "SO4"]


@pytest.fixture(scope="module")
def small():
    return build_ccd(ids=IDS, max_atoms=64)


def test_reserved_ids_match_the_shipped_dataset_copy():
    shipped = set((ROOT / "datasets" / "ccd" / "reserved_ccd_ids.txt").read_text().split())
    assert reserved_ccd_ids() == shipped and len(shipped) == 5000


@pytest.mark.slow
def test_filters_and_contents(small):
    ds, counts = small
    names = [str(n) for n in ds.names]
    assert "HEM" not in names and "CL" not in names  # iron; single atom below min_atoms
    assert counts["not_organic"] >= 1 and counts["size"] >= 1
    ala = ds[names.index("ALA")]
    assert ala.smiles == "CC(N)C(=O)O"
    assert set(ala.atomic_numbers.tolist()) == {1, 6, 7, 8}
    assert ala.bonds is not None and (ala.bonds[:, 2] == 2).sum() == 1
    so4 = ds[names.index("SO4")]
    assert so4.formal_charges.sum() == -2
    assert np.all(np.isfinite(ds.positions))


@pytest.mark.slow
def test_split_is_smiles_disjoint_and_excludes_reserved(small):
    ds, _ = small
    split = ccd_split(ds)
    reserved = reserved_ccd_ids()
    names = np.array([str(n) for n in ds.names])
    for part in ("train", "valid"):
        assert not set(names[split[part]]) & reserved
    assert set(names[split["test"]]) == set(names) & reserved
    smiles = {k: set(ds.smiles[v]) for k, v in split.items()}
    assert not smiles["train"] & smiles["valid"] and not smiles["train"] & smiles["test"]
    assert not smiles["valid"] & smiles["test"]
    # GLC and BGC are the alpha/beta anomers of glucose: same SMILES without stereo, so same split
    where = {n: k for k, idx in split.items() for n in names[idx]}
    assert where.get("GLC") == where.get("BGC") or "GLC" in reserved or "BGC" in reserved
