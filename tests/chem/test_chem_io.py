"""SDF/XYZ reading and writing, with per-record reasons for bad input."""

import gzip

import numpy as np
import pytest
from helpers import DATA

from molediff.chem import read_molecules, write_sdf, write_xyz
from molediff.chem.molecule import Molecule, MoleculeDataset


@pytest.fixture(scope="module")
def five():
    ds = MoleculeDataset.load(DATA / "qm9_test_500.npz")
    return [ds[i] for i in range(5)]


def test_shipped_files_read_back_like_the_source(five):
    for name, tol in (("qm9_small.sdf", 1e-4), ("qm9_small.xyz", 1e-6)):
        mols, errors = read_molecules(DATA / name)
        assert errors == []
        assert [m.name for m in mols] == [m.name for m in five]
        for a, b in zip(mols, five):
            assert np.array_equal(a.atomic_numbers, b.atomic_numbers)
            np.testing.assert_allclose(a.positions, b.positions, atol=tol)


def test_sdf_roundtrip_keeps_bonds_and_charges(tmp_path):
    m = Molecule([7, 1, 1, 1, 1], [[0, 0, 0], [1.03, 0, 0], [-0.34, 0.97, 0], [-0.34, -0.49, 0.84],
                                   [-0.34, -0.49, -0.84]], name="ammonium",
                 bonds=[[0, 1, 1], [0, 2, 1], [0, 3, 1], [0, 4, 1]], formal_charges=[1, 0, 0, 0, 0])
    write_sdf(tmp_path / "a.sdf", [m])
    (back,), errors = read_molecules(tmp_path / "a.sdf")
    assert errors == [] and back.name == "ammonium"
    assert back.formal_charges.tolist() == [1, 0, 0, 0, 0]
    assert sorted(map(tuple, back.bonds.tolist())) == [(0, k, 1) for k in range(1, 5)]


def test_sdf_without_bonds_gets_perceived_bonds(tmp_path, five):
    write_sdf(tmp_path / "p.sdf", five[:1])
    (back,), _ = read_molecules(tmp_path / "p.sdf")
    from molediff.chem.bonds import bond_list, perceive_bonds

    expected = bond_list(perceive_bonds(five[0].atomic_numbers, five[0].positions))
    assert sorted(map(tuple, back.bonds.tolist())) == sorted(map(tuple, expected.tolist()))


def test_aromatic_sdf_bonds_are_kekulised(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccccc1"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    block = Chem.MolToMolBlock(mol, kekulize=False)  # aromatic bond type 4 in the file
    (tmp_path / "benzene.sdf").write_text(block + "$$$$\n")
    (m,), errors = read_molecules(tmp_path / "benzene.sdf")
    assert errors == []
    ring_orders = sorted(o for i, j, o in m.bonds.tolist() if m.atomic_numbers[i] == 6 and m.atomic_numbers[j] == 6)
    assert ring_orders == [1, 1, 1, 2, 2, 2]


def test_bad_sdf_records_reported_and_skipped():
    mols, errors = read_molecules(DATA / "bad_records.sdf")
    assert len(mols) == 2
    reasons = dict(errors)
    assert reasons == {
        "bad_records.sdf:2 (bad_counts)": "malformed counts line 'abc 26  0  0  0  0  0  0  0  0999 V2000'",
        "bad_records.sdf:3 (unknown)": "unknown element 'Xx'",
        "bad_records.sdf:5 (nan_coords)": "non-finite coordinates (NaN or inf)",
        "bad_records.sdf:6 (empty)": "empty molecule (no atoms)",
        "bad_records.sdf:7 (truncated)": "truncated record: 20 atoms declared, 5 found",
    }


def test_bad_xyz_records_reported_and_skipped():
    mols, errors = read_molecules(DATA / "bad_records.xyz")
    assert [m.name for m in mols] == ["gdb9_117980", "second_good"]
    assert [r for _, r in errors] == [
        "unknown element 'Xx' on atom line 2",
        "non-finite coordinates (NaN or inf)",
        "empty molecule (no atoms)",
        "malformed XYZ header 'two' on line 41 (expected an atom count)",
        "malformed coordinates on atom line 1",
        "truncated record: 5 atoms declared, 2 found",
    ]


def test_folder_gzip_and_path_errors(tmp_path, five):
    write_xyz(tmp_path / "sub" / "a.xyz", five[:2])
    with gzip.open(tmp_path / "b.sdf.gz", "wt") as f:
        f.write((DATA / "qm9_small.sdf").read_text())
    (tmp_path / "notes.txt").write_text("ignored")
    mols, errors = read_molecules(tmp_path)
    assert len(mols) == 7 and errors == []
    with pytest.raises(FileNotFoundError):
        read_molecules(tmp_path / "missing.sdf")
    with pytest.raises(ValueError, match="unknown file type"):
        read_molecules(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .sdf"):
        read_molecules(tmp_path / "empty")


def test_writers_are_atomic_and_refuse_bad_molecules(tmp_path, five):
    target = tmp_path / "out.xyz"
    write_xyz(target, five[:1])
    before = target.read_text()
    bad = Molecule([6, 1], [[0, 0, 0], [np.nan, 0, 0]], name="broken")
    with pytest.raises(ValueError, match="broken: non-finite"):
        write_xyz(target, [five[1], bad])
    with pytest.raises(ValueError, match="broken: non-finite"):
        write_sdf(tmp_path / "out.sdf", [bad])
    assert target.read_text() == before and not (tmp_path / "out.sdf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.xyz"]  # no temporary files left behind
