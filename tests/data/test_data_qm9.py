"""QM9 loading and EDM's split."""

import importlib.util

import numpy as np
import pytest
from helpers import DATA, ROOT

from molediff.chem.molecule import MoleculeDataset
from molediff.data.qm9 import QM9_NUM_GDB, build_qm9_cache, load_qm9, qm9_split_indices

HAS_QM9 = importlib.util.find_spec("qm9pack") is not None


def test_split_sizes_disjoint_and_equal_to_shipped_file():
    s = qm9_split_indices()
    assert {k: len(v) for k, v in s.items()} == {"train": 100_000, "valid": 17_748, "test": 13_083}
    all_idx = np.concatenate(list(s.values()))
    assert len(np.unique(all_idx)) == 130_831 and all_idx.max() < QM9_NUM_GDB
    with np.load(ROOT / "datasets" / "qm9" / "qm9_split.npz") as f:
        labels, codes = f["split_of_gdb_index"], f["codes"].tolist()
    for name, idx in s.items():
        assert np.array_equal(np.sort(idx), np.flatnonzero(labels == codes.index(name)))
    assert (labels == 255).sum() == 3054
    # EDM's order is the seed-0 permutation order (not sorted)
    assert not np.all(np.diff(s["test"]) > 0)


def _write_csv(path, rows):
    header = "XYZ_file,Index,SMILES,N_atoms,Elements,XYZ_Ang,Mulliken_pop,Harmonic_Freq_cmi\n"
    lines = [f'"x.xyz",{i},"{smi}",{el.count(",") + 1},"{el}","{xyz}","[]","[]"' for i, smi, el, xyz in rows]
    path.write_text(header + "\n".join(lines) + "\n")


def test_cache_parses_qm9pack_csv_format(tmp_path):
    rows = [(2, "N", ["N", "H", "H", "H"], "[[0.,0.,0.],[1.,0.,0.],[0.,1.,0.],[0.,0.,1.0123]]"),
            (1, "C", ["C", "H"], "[[-0.0126981359,1.0858041578,0.0080009958],[0.,0.,0.]]")]
    _write_csv(tmp_path / "qm9_part1.csv", [(i, s, str(e).replace(" ", ""), x) for i, s, e, x in rows])
    build_qm9_cache(tmp_path, tmp_path / "cache.npz")
    ds = MoleculeDataset.load(tmp_path / "cache.npz")
    assert [m.name for m in ds] == ["gdb9_000001", "gdb9_000002"]  # sorted by Index
    assert ds[1].atomic_numbers.tolist() == [7, 1, 1, 1] and ds[1].smiles == "N"
    np.testing.assert_allclose(ds[0].positions[0], [-0.0126981359, 1.0858041578, 0.0080009958], rtol=1e-6)
    np.testing.assert_allclose(ds[1].positions[3], [0, 0, 1.0123], rtol=1e-6)


def test_load_qm9_rejects_bad_split_and_incomplete_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLEDIFF_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="unknown QM9 split"):
        load_qm9("training", root=tmp_path)
    with pytest.raises(FileNotFoundError):
        load_qm9("test", root=tmp_path / "missing")
    _write_csv(tmp_path / "qm9_part1.csv", [(1, "C", "['C','H']", "[[0.,0.,0.],[1.,0.,0.]]")])
    with pytest.raises(ValueError, match="do not hold all molecules"):
        load_qm9("test", root=tmp_path)
    assert len(load_qm9("all", root=tmp_path)) == 1


@pytest.mark.slow
@pytest.mark.skipif(not HAS_QM9, reason="qm9pack not installed")
def test_training_split_atom_count_histogram():
    train = load_qm9("train")
    counts = np.bincount(train.atom_counts)
    assert len(train) == 100_000
    assert (counts[17], counts[18], counts[19]) == (13_025, 13_364, 13_832)
    assert set(np.unique(train.atomic_numbers).tolist()) == {1, 6, 7, 8, 9}


def test_qm9_train_smiles_computed_once_then_cached(tmp_path, monkeypatch):
    import molediff.data.qm9 as qm9
    from molediff.chem.stability import reference_smiles

    monkeypatch.setenv("MOLEDIFF_CACHE", str(tmp_path / "cache"))
    _write_csv(tmp_path / "qm9_part1.csv", [(1, "C", "['C','H']", "[[0.,0.,0.],[1.,0.,0.]]")])
    train = MoleculeDataset.load(DATA / "qm9_train_first4.npz")
    calls = []
    monkeypatch.setattr(qm9, "load_qm9", lambda split, root=None: calls.append((split, root)) or train)
    smiles = qm9.qm9_train_smiles(root=tmp_path)
    assert calls == [("train", tmp_path)]
    assert smiles == reference_smiles(train, show_progress=False) and smiles
    assert qm9.qm9_train_smiles(root=tmp_path) == smiles and len(calls) == 1   # second call reads the cache
    assert list((tmp_path / "cache" / "qm9").glob("*_train_smiles_v1.txt"))
