"""datasets/ccd_conformer_benchmark.txt follows its rule: 500 unique IDs, none reserved, none in the CCD training
split, each with complete experimental ('model') coordinates, one per SMILES, at least 3 heavy atoms. Reads the CCD
shipped inside biotite for those IDs and the reserved ones only (a few seconds); no data folder outside the
package is read."""

from __future__ import annotations

import re

import numpy as np
import pytest

from molediff.conformers.benchmark import CCD_BENCHMARK_FILE, read_ccd_benchmark
from molediff.data.ccd import build_ccd, ccd_split, reserved_ccd_ids


def test_the_file_has_500_unique_ids_none_reserved_and_says_its_rule():
    ids = read_ccd_benchmark()
    assert len(ids) == 500 and len(set(ids)) == 500 and ids == sorted(ids)
    assert all(re.fullmatch(r"[0-9A-Z]{1,5}", i) for i in ids)
    assert not set(ids) & reserved_ccd_ids()
    header = [line.lstrip("# ") for line in CCD_BENCHMARK_FILE.read_text().splitlines() if line.startswith("#")]
    text = " ".join(header)
    for words in ("'model' coordinates", "ccd_split's 'valid' split", "no reserved ID", "at least 3 heavy atoms",
                  "default_rng(", "write_ccd_benchmark"):
        assert words in text, words


@pytest.mark.slow
def test_every_id_is_held_out_from_training_by_the_data_layers_rule():
    ids = read_ccd_benchmark()
    # the benchmark and the reserved components, built as load_ccd builds them (model coordinates): the split
    # of that set puts a component in 'valid' exactly as it does in the whole CCD (reserved SMILES are all there)
    dataset, _ = build_ccd("model", ids=set(ids) | reserved_ccd_ids())
    names = np.char.upper(dataset.names.astype(str))
    where = {name: k for k, name in enumerate(names)}
    missing = [i for i in ids if i not in where]
    assert not missing, f"without complete model coordinates or filtered out: {missing[:5]}"
    split = ccd_split(dataset)
    index = np.array([where[i] for i in ids])
    assert np.isin(index, split["valid"]).all() and not np.isin(index, split["train"]).any()
    smiles = dataset.smiles.astype(str)[index]
    assert len(set(smiles)) == len(ids)                                  # one component per molecule
    heavy = np.add.reduceat((dataset.atomic_numbers > 1).astype(int), dataset.offsets[:-1])[index]
    assert heavy.min() >= 3


def test_reading_a_missing_list_names_how_to_write_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_ccd_benchmark"):
        read_ccd_benchmark(tmp_path / "none.txt")
