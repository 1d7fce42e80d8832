"""Reading protein chains (PDB/mmCIF, plain or gzipped), their filters, deduplication and the homology split."""

from __future__ import annotations

import gzip
import logging
import shutil

import numpy as np
import pytest
from helpers import DATA

from molediff.proteins.data import ProteinDataConfig, ProteinSet, load_proteins
from molediff.proteins.homology import (
    candidate_pairs,
    deduplicate,
    homology_clusters,
    near_duplicates,
    sequence_identity,
    split_by_clusters,
)
from molediff.proteins.io import chains_from_atoms, read_ca_atoms, read_chains

FIXTURES = DATA / "proteins" / "real"
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def _random_sequence(rng, n):
    return "".join(rng.choice(list(AMINO), n))


def _mutate(rng, seq, fraction):
    out = list(seq)
    for i in rng.choice(len(seq), int(fraction * len(seq)), replace=False):
        out[i] = rng.choice([a for a in AMINO if a != seq[i]])
    return "".join(out)


def test_reads_the_fixture_chains_pdb_and_cif():
    chains, reasons, bad = read_chains(FIXTURES)
    assert len(chains) == 18 and not bad and not reasons
    assert any(c.source.endswith(".cif.gz") for c in chains)
    for c in chains:
        assert c.coords.dtype == np.float32 and c.coords.shape == (len(c.sequence), 3)
        assert 40 <= len(c) <= 256 and set(c.sequence) <= set(AMINO)
        assert np.linalg.norm(np.diff(c.coords, axis=0), axis=1).max() <= 4.2


def test_bad_files_give_reasons_and_the_rest_is_read(tmp_path, caplog):
    good = sorted(FIXTURES.glob("*.pdb.gz"))[0]
    shutil.copy(good, tmp_path / good.name)
    (tmp_path / "garbage.pdb").write_text("this is not a structure\n\x00\x01 nothing here\n")
    (tmp_path / "corrupt.pdb.gz").write_bytes(b"\x1f\x8b\x08not really gzip")
    (tmp_path / "water.pdb").write_text(
        "HETATM    1  O   HOH A   1      10.000  10.000  10.000  1.00  0.00           O\nEND\n")
    (tmp_path / "empty.cif").write_text("")
    (tmp_path / "ligand.pdb.gz").write_bytes(gzip.compress(
        b"HETATM    1 CA    CA A 501      10.000  10.000  10.000  1.00  0.00          CA\nEND\n"))
    with caplog.at_level(logging.INFO, logger="molediff.proteins.io"):
        chains, reasons, bad = read_chains(tmp_path)
    assert len(chains) == 1
    bad = dict(bad)
    assert set(bad) == {"garbage.pdb", "corrupt.pdb.gz", "water.pdb", "empty.cif"}
    assert "gzip" in bad["corrupt.pdb.gz"] and "Cα" in bad["water.pdb"]
    assert reasons["no standard amino acids"] == 1  # the calcium ion's "CA" atom is not a residue
    assert any("kept 1 of 2 chains" in r.getMessage() for r in caplog.records)


def test_chain_breaks_non_standard_residues_and_altlocs():
    atoms = read_ca_atoms(sorted(FIXTURES.glob("*.pdb.gz"))[0])
    n = atoms.array_length()
    mse = atoms.copy()
    mse.res_name[5] = "MSE"
    mse.res_name[7] = "HOH"  # a non-standard residue inside the chain is removed: it leaves a break
    kept, reasons = chains_from_atoms(mse, "x.pdb")
    assert reasons == ["chain break"] and not kept
    kept, reasons = chains_from_atoms(mse, "x.pdb", min_length=1, on_break="split")
    assert [len(c) for c in kept] == [7, n - 8] and kept[0].sequence[5] == "M"
    assert [c.chain_id for c in kept] == [f"{atoms.chain_id[0]}/0", f"{atoms.chain_id[0]}/1"]
    too_short, reasons = chains_from_atoms(atoms, "x.pdb", min_length=n + 1)
    assert not too_short and reasons == [f"shorter than {n + 1}"]


def test_first_altloc_is_taken(tmp_path):
    lines = []
    for i in range(45):
        x = 3.8 * i
        lines.append(f"ATOM  {i + 1:5d}  CA  GLY A{i + 1:4d}    {x:8.3f}{0:8.3f}{0:8.3f}  1.00  0.00           C")
    alt = lines[10]
    lines[10] = alt[:16] + "A" + alt[17:]
    second = alt[:16] + "B" + alt[17:30] + f"{38.0 + 50:8.3f}" + alt[38:]
    lines.insert(11, second)
    (tmp_path / "alt.pdb").write_text("\n".join(lines) + "\nEND\n")
    chains, reasons, bad = read_chains(tmp_path)
    assert not bad and not reasons and len(chains) == 1 and len(chains[0]) == 45
    assert chains[0].coords[10, 0] == pytest.approx(38.0)


def test_identity_clusters_and_near_duplicates():
    rng = np.random.default_rng(0)
    a = _random_sequence(rng, 150)
    homologue = _mutate(rng, a, 0.55)           # ~45 % identical: same cluster
    near_dup = a[3:]                            # an unbound structure missing three residues: a near-duplicate
    others = [_random_sequence(rng, 120 + 10 * k) for k in range(4)]
    seqs = [a, homologue, near_dup, *others]
    assert sequence_identity(a, near_dup) == pytest.approx(1.0)
    assert 0.3 < sequence_identity(a, homologue) < 0.6
    assert sequence_identity(others[0], others[1]) < 0.3
    assert {(i, j) for i, j, _, _ in candidate_pairs(seqs)} >= {(0, 1), (0, 2)}
    assert near_duplicates(seqs).tolist() == [False, False, True, False, False, False, False]
    clusters = homology_clusters(seqs)
    assert clusters[0] == clusters[1] == clusters[2] and len(set(clusters.tolist())) == 5


def test_split_keeps_clusters_whole_and_is_deterministic():
    clusters = np.repeat(np.arange(40), np.arange(40) % 5 + 1)
    split = split_by_clusters(clusters, 0.1, 0.2, seed=3)
    assert split == split_by_clusters(clusters, 0.1, 0.2, seed=3)
    for c in np.unique(clusters):
        assert len({s for s, k in zip(split, clusters) if k == c}) == 1
    frac = {s: split.count(s) / len(split) for s in ("train", "valid", "test")}
    assert abs(frac["test"] - 0.2) < 0.05 and abs(frac["valid"] - 0.1) < 0.05


def test_deduplicate_keeps_the_first_chain_of_a_sequence():
    chains, _, _ = read_chains(FIXTURES)
    assert [c.name for c in deduplicate(chains + chains[:3])] == [c.name for c in chains]


def test_load_proteins_splits_caches_and_round_trips(tmp_path):
    parts = {s: load_proteins({"path": str(FIXTURES), "split": s, "test_fraction": 0.2}) for s in
             ("train", "valid", "test")}
    names = [n for p in parts.values() for n in p.names]
    assert len(names) == len(set(names)) and parts["test"] and parts["train"]
    everything = load_proteins(ProteinDataConfig(path=str(FIXTURES), split="all", test_fraction=0.2))
    assert sorted(names) == sorted(everything.names)
    for s, p in parts.items():
        assert set(p.split) == {s}
    everything.save(tmp_path / "set.npz")
    again = ProteinSet.load(tmp_path / "set.npz")
    assert again.names == everything.names and again.sequences == everything.sequences
    np.testing.assert_array_equal(again.coords, everything.coords)
    np.testing.assert_array_equal(again.offsets, everything.offsets)
    np.testing.assert_array_equal(again.clusters, everything.clusters)
    assert len(again[0]) == again.lengths[0]
    # every homology cluster lies in one split, and a subset keeps its chains' labels
    assert len(everything.clusters) == len(everything)
    for c in np.unique(everything.clusters):
        assert len({s for s, k in zip(everything.split, everything.clusters) if k == c}) == 1
    np.testing.assert_array_equal(everything.subset([2, 0]).clusters, everything.clusters[[2, 0]])


def _clustered_set(clusters) -> ProteinSet:
    chains, _, _ = read_chains(FIXTURES)
    picked = ProteinSet.from_chains([chains[i % len(chains)] for i in range(len(clusters))])
    picked.clusters = np.asarray(clusters, dtype=np.int64)
    return picked


def test_balanced_epochs_take_one_uniform_member_of_each_cluster(tmp_path):
    clusters = [7, 7, 7, 2, 5, 5, 9, 7, 2]           # four clusters; cluster 7 has four members
    s = _clustered_set(clusters)
    np.testing.assert_array_equal(s.epoch_chains("none", 0, 0), np.arange(9))
    counts = np.zeros(9)
    for epoch in range(2000):
        chosen = s.epoch_chains("clusters", 3, epoch)
        assert sorted(s.clusters[chosen].tolist()) == [2, 5, 7, 9] and (np.diff(chosen) > 0).all()
        counts[chosen] += 1
    np.testing.assert_array_equal(s.epoch_chains("clusters", 3, 11), s.epoch_chains("clusters", 3, 11))
    # each member is drawn with probability 1 / (its cluster's size): binomial 2000 draws, 5 sigma
    expected = 2000 / np.array([4, 4, 4, 2, 2, 2, 1, 4, 2])
    sigma = np.sqrt(expected * (1 - expected / 2000))
    assert (np.abs(counts - expected) <= 5 * sigma + 1e-9).all(), counts
    s.save(tmp_path / "c.npz")
    np.testing.assert_array_equal(ProteinSet.load(tmp_path / "c.npz").clusters, s.clusters)


def test_balance_needs_cluster_labels_and_a_known_value(tmp_path):
    unlabelled = _clustered_set([0, 1])
    unlabelled.clusters = np.zeros(0, dtype=np.int64)
    with pytest.raises(ValueError, match="no homology cluster labels"):
        unlabelled.epoch_chains("clusters", 0, 0)
    with pytest.raises(ValueError, match="balance must be one of none, clusters"):
        unlabelled.epoch_chains("families", 0, 0)
    with pytest.raises(ValueError, match="data.balance"):
        ProteinDataConfig(path="x", balance="families")
    # a set saved before clusters were stored reads with empty labels
    np.savez(tmp_path / "old.npz", coords=unlabelled.coords, offsets=unlabelled.offsets,
             sequences=np.array(unlabelled.sequences), names=np.array(unlabelled.names), split=np.array([]))
    assert len(ProteinSet.load(tmp_path / "old.npz").clusters) == 0
    # ... and training on it with balance: clusters fails when it is read, naming the file
    unlabelled.split = ["train", "train"]
    unlabelled.save(tmp_path / "unlabelled.npz")
    with pytest.raises(ValueError, match="unlabelled.npz: this protein set has no homology cluster labels"):
        load_proteins({"path": str(tmp_path / "unlabelled.npz"), "balance": "clusters", "min_length": 1})
    assert len(load_proteins({"path": str(tmp_path / "unlabelled.npz"), "min_length": 1})) == 2


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="data.on_break"):
        ProteinDataConfig(path="x", on_break="glue")
    with pytest.raises(ValueError, match="data.spilt"):
        load_proteins({"path": str(FIXTURES), "spilt": "train"})
    with pytest.raises(FileNotFoundError):
        load_proteins({"path": str(FIXTURES / "missing")})
