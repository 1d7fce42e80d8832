"""Cα traces written as PDB and mmCIF and read back by biotite."""

from __future__ import annotations

import numpy as np
import pytest

from molediff.proteins.io import read_ca_traces, write_ca_trace


@pytest.mark.parametrize("suffix", [".pdb", ".cif"])
def test_written_traces_read_back_identically(tmp_path, suffix):
    import biotite.structure.io as strucio

    rng = np.random.default_rng(0)
    coords = (np.cumsum(rng.normal(size=(57, 3)), 0) * 2.0).astype(np.float32)
    path = write_ca_trace(tmp_path / f"trace{suffix}", coords)
    atoms = strucio.load_structure(path)
    np.testing.assert_allclose(atoms.coord, coords, atol=6e-4)  # both formats keep 3 decimals (Å)
    assert atoms.res_id.tolist() == list(range(1, 58))
    assert set(atoms.chain_id) == {"A"} and set(atoms.res_name) == {"GLY"}
    assert set(atoms.atom_name) == {"CA"} and set(atoms.element) == {"C"}
    chains, names, bad = read_ca_traces(path)
    assert not bad and names == [f"trace{suffix}:A"]
    np.testing.assert_allclose(chains[0], coords, atol=6e-4)


def test_bad_traces_are_refused(tmp_path):
    with pytest.raises(ValueError, match=".pdb or .cif"):
        write_ca_trace(tmp_path / "x.xyz", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        write_ca_trace(tmp_path / "x.pdb", np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="range"):
        write_ca_trace(tmp_path / "x.pdb", np.full((3, 3), -5000.0))
    with pytest.raises(ValueError, match=r"\[L, 3\]"):
        write_ca_trace(tmp_path / "x.pdb", np.zeros((3, 2)))


def test_a_structure_in_two_formats_counts_once(tmp_path):
    """`protein sample` writes NAME.pdb and NAME.cif: scoring the folder reads each chain once (from the PDB),
    while a lone mmCIF file is still read."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 3)) * 5, rng.normal(size=(9, 3)) * 5
    write_ca_trace(tmp_path / "sample_0.pdb", a)
    write_ca_trace(tmp_path / "sample_0.cif", a)
    write_ca_trace(tmp_path / "sample_1.cif", b)
    coords, names, bad = read_ca_traces(tmp_path)
    assert not bad and sorted(len(c) for c in coords) == [9, 12]
