"""The in-memory molecule form, the compact dataset, PyG interop and dense batching."""

import numpy as np
import pytest
import torch
from helpers import DATA

from molediff.chem.molecule import Molecule, MoleculeDataset
from molediff.data.batching import collate_dense, from_pyg_batch


def _water(name="water"):
    return Molecule(atomic_numbers=[8, 1, 1], positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], name=name,
                    bonds=[[0, 1, 1], [0, 2, 1]], formal_charges=[0, 0, 0], smiles="O")


def test_molecule_coerces_types_and_checks_shapes():
    m = _water()
    assert m.atomic_numbers.dtype == np.int64 and m.positions.dtype == np.float32
    assert m.formula == "H2O"
    assert Molecule([6, 1, 1, 1, 1], np.zeros((5, 3))).formula == "CH4"
    with pytest.raises(ValueError, match="3 atoms but 2 positions"):
        Molecule([8, 1, 1], np.zeros((2, 3)))


def test_to_pyg_has_both_edge_directions():
    data = _water().to_pyg()
    assert data.pos.shape == (3, 3) and data.z.tolist() == [8, 1, 1]
    assert data.edge_index.shape == (2, 4)
    edges = {tuple(e) for e in data.edge_index.T.tolist()}
    assert edges == {(0, 1), (1, 0), (0, 2), (2, 0)}
    assert data.edge_attr.tolist() == [1, 1, 1, 1]
    assert Molecule([6], np.zeros((1, 3))).to_pyg().edge_index is None  # bonds unknown: no edges


def test_dataset_roundtrip_subset_and_negative_index(tmp_path):
    mols = [_water("a"), Molecule([6, 1, 1, 1, 1], np.arange(15).reshape(5, 3), name="b",
                                  bonds=np.array([[0, k, 1] for k in range(1, 5)]), formal_charges=np.zeros(5)),
            _water("c")]
    ds = MoleculeDataset.from_molecules(mols)
    assert len(ds) == 3 and ds.atom_counts.tolist() == [3, 5, 3]
    ds.save(tmp_path / "d.npz")
    back = MoleculeDataset.load(tmp_path / "d.npz")
    for a, b in zip(mols, back):
        assert a.name == b.name and np.array_equal(a.atomic_numbers, b.atomic_numbers)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.bonds, b.bonds)
    sub = back.subset([2, 1])
    assert [m.name for m in sub] == ["c", "b"]
    np.testing.assert_array_equal(sub[1].bonds, mols[1].bonds)
    assert back[-1].name == "c"
    with pytest.raises(IndexError):
        back[3]


def test_dataset_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        MoleculeDataset.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="missing"):
        MoleculeDataset.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="inconsistent"):
        MoleculeDataset(np.zeros(3), np.zeros((3, 3)), [0, 2])


def test_collate_dense_pads_and_maps_types():
    ds = MoleculeDataset.load(DATA / "qm9_test_500.npz")
    mols = [ds[i] for i in range(6)]
    batch = collate_dense(mols)
    n = max(m.num_atoms for m in mols)
    assert batch.positions.shape == (6, n, 3) and batch.mask.dtype == torch.bool
    for b, m in enumerate(mols):
        k = m.num_atoms
        assert batch.mask[b].sum() == k
        assert torch.equal(batch.atomic_numbers[b, :k], torch.from_numpy(m.atomic_numbers))
        types = np.array([(1, 6, 7, 8, 9).index(z) for z in m.atomic_numbers])
        assert torch.equal(batch.type_index[b, :k], torch.from_numpy(types))
        assert float(batch.positions[b, k:].abs().sum()) == 0.0
    assert batch.to("cpu").positions.shape == batch.positions.shape


def test_collate_dense_errors_name_the_molecule():
    with pytest.raises(ValueError, match="'water'.*atomic number 8"):
        collate_dense([_water()], vocabulary=(1, 6))
    with pytest.raises(ValueError, match="'water' has 3 atoms"):
        collate_dense([_water()], max_atoms=2)


def test_from_pyg_batch_matches_collate_dense():
    from torch_geometric.data import Batch

    ds = MoleculeDataset.load(DATA / "qm9_test_500.npz")
    mols = [ds[i] for i in range(5)]
    dense = collate_dense(mols)
    other = from_pyg_batch(Batch.from_data_list([m.to_pyg() for m in mols]))
    for field in ("positions", "type_index", "atomic_numbers", "mask"):
        assert torch.equal(getattr(dense, field), getattr(other, field))


def test_load_molecule_files_filters_by_vocabulary_and_size(tmp_path, monkeypatch):
    from molediff.chem.xyz import write_xyz
    from molediff.data.files import load_molecule_files

    monkeypatch.setenv("MOLEDIFF_CACHE", str(tmp_path / "cache"))
    ds = MoleculeDataset.load(DATA / "qm9_test_500.npz")
    sulfur = Molecule([16, 1, 1], np.eye(3), name="H2S")
    write_xyz(tmp_path / "mine.xyz", [ds[0], sulfur, ds[1]])
    kept, skipped = load_molecule_files(tmp_path / "mine.xyz", vocabulary=(1, 6, 7, 8, 9))
    assert len(kept) == 2
    assert [reason for _, reason in skipped] == ["element(s) [16] outside the vocabulary (1, 6, 7, 8, 9)"]
    kept, skipped = load_molecule_files(tmp_path / "mine.xyz", max_atoms=3)   # from the cache this time
    assert [m.num_atoms for m in kept] == [3] and len(skipped) == 2
    with pytest.raises(ValueError, match="no usable molecules"):
        load_molecule_files(tmp_path / "mine.xyz", vocabulary=(6,))


def test_every_run_reports_what_it_kept_even_from_the_cache(tmp_path, monkeypatch, caplog):
    from molediff.data.files import load_molecule_files

    monkeypatch.setenv("MOLEDIFF_CACHE", str(tmp_path / "cache"))
    ds = MoleculeDataset.load(DATA / "qm9_test_500.npz")
    text = "".join(f"{m.num_atoms}\n{m.name}\n" + "".join(
        f"{'HCNOF'[[1, 6, 7, 8, 9].index(int(z))]} {x:.4f} {y:.4f} {w:.4f}\n" for z, (x, y, w) in
        zip(m.atomic_numbers, m.positions)) for m in (ds[0], ds[1]))
    (tmp_path / "mine.xyz").write_text(text + "2\nbroken\nC 0 0\n" + "3\nS\nS 0 0 0\nH 1 0 0\nH 0 1 0\n")
    for run in ("parsed", "cached"):
        caplog.clear()
        with caplog.at_level("WARNING"):
            kept, skipped = load_molecule_files(tmp_path / "mine.xyz", vocabulary=(1, 6, 7, 8, 9))
        assert len(kept) == 2 and len(skipped) == 2, run
        assert "kept 2 of 4 molecules; skipped 2" in caplog.text, run
    assert list((tmp_path / "cache" / "files").glob("*.errors.json"))
