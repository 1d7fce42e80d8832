"""Conformers for whole libraries (``molediff.conformers.batch``, ``io.PartialSDF``, ``molediff conformers``
--workers / --dask-scheduler / --resume): lazy readers, whole molecules in the partial output, resume after a kill,
the same file whatever runs the molecules, and bad records reported once with their input record."""

from __future__ import annotations

import gzip
import itertools
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from rdkit import Chem

from molediff.cli import main
from molediff.conformers import batch
from molediff.conformers.batch import conformers_for_library
from molediff.conformers.io import (
    PartialSDF,
    count_inputs,
    iter_inputs,
    iter_sdf_file,
    iter_smiles_file,
    read_inputs,
    read_sdf_file,
    read_smiles_file,
)
from molediff.conformers.pipeline import ConformerOptions, generate_conformers

LIBRARY = """CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O ibuprofen
CC(=O)Oc1ccccc1C(=O)O aspirin
C1CC( broken
CN1C=NC2=C1C(=O)N(C(=O)N2C)C caffeine
C1#CC1 cyclopropyne
CC(C)NCC(O)COc1cccc2ccccc12 propranolol
CCCCCCCC(=O)OC octanoate
"""
FAST = ["--refiner", "none", "-n", "2"]


def _library(tmp_path, text: str = LIBRARY):
    path = tmp_path / "lib.smi"
    path.write_text(text)
    return path


def _names(path) -> list[str]:
    """The names of an SD file's molecules, in order (each name once per run of records)."""
    opener = gzip.open if ".gz" in path.name else open
    with opener(path, "rb") as f:
        titles = [m.GetProp("_Name") for m in Chem.ForwardSDMolSupplier(f, removeHs=False)]
    return [name for name, _ in itertools.groupby(titles)]


def _run(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "molediff.cli", "conformers", *map(str, argv)], capture_output=True,
                          text=True, timeout=300, env=env)


# ------------------------------------------------------------------------------------------ readers
def _peak_while(take):
    """(``take()``, the peak of Python memory allocated while it ran); the readers' imports are done before."""
    read_inputs("CCO")
    tracemalloc.start()
    try:
        result = take()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("suffix", [".smi", ".smi.gz"])
def test_a_smiles_file_is_read_one_record_at_a_time(tmp_path, suffix):
    text = "".join(f"{'C' * (1 + k % 7)}O mol{k}\n" for k in range(100_000))  # 1.2 MB: read whole, MBs more
    path = tmp_path / f"big{suffix}"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    first, peak = _peak_while(lambda: list(itertools.islice(iter_smiles_file(path), 3)))
    assert [r.name for r in first] == ["mol0", "mol1", "mol2"] and all(r.mol is not None for r in first)
    assert peak < 300_000, peak   # a few buffers, not the file
    assert count_inputs(str(path)) == 100_000


def test_an_sdf_file_is_read_one_record_at_a_time(tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O"))
    block = Chem.MolToMolBlock(mol) + "$$$$\n"
    path = tmp_path / "big.sdf.gz"
    path.write_bytes(gzip.compress(block.encode() * 2000))  # 4 MB of text
    first, peak = _peak_while(lambda: next(iter_sdf_file(path)))
    assert first.mol is not None and first.mol.GetNumAtoms() == 21
    assert peak < 300_000, peak
    assert count_inputs(str(path)) == 2000


def test_the_list_readers_are_the_generators(tmp_path):
    smi = _library(tmp_path, "smiles name\n# comment\r\nCCO\r\n\ufeffC1CC( bad\nc1ccccc1 benzene")
    assert [(r.name, r.mol is None) for r in read_smiles_file(smi)] == \
        [("mol_1", False), ("bad", True), ("benzene", False)]
    assert [r.name for r in iter_smiles_file(smi)] == [r.name for r in read_smiles_file(smi)]
    sdf = tmp_path / "in.sdf"
    good = Chem.MolToMolBlock(Chem.MolFromSmiles("CCO"))
    sdf.write_text(good + "$$$$\nbroken\n  no counts line\n\n$$$$\n" + good + "$$$$\n")
    records = read_sdf_file(sdf)
    assert [r.error is None for r in records] == [True, False, True] and records[1].name == "broken"
    assert [r.name for r in iter_sdf_file(sdf)] == [r.name for r in records]
    cut = tmp_path / "cut.smi.gz"
    cut.write_bytes(gzip.compress("".join(f"{'C' * (k % 5)}O m{k}\n" for k in range(3000)).encode())[:-100])
    records = list(iter_inputs(str(cut)))
    assert 2000 < len(records) < 3000 and all(r.mol is not None for r in records[:-1])
    assert records[-1].mol is None and records[-1].error.startswith("file is truncated")


# ------------------------------------------------------------------------------------------ the partial output
def test_the_partial_output_holds_whole_molecules_and_resumes_after_a_cut(tmp_path):
    mols = [generate_conformers(s, n=2, refiner=None, dedupe_rmsd=0) for s in ("CCO", "CCN", "CCC")]
    out = PartialSDF(tmp_path / "out.sdf.gz", {"n": 2})
    out.open()
    out.add(0, "a", mols[0])
    out.add(1, "b", "could not parse SMILES")
    out.add(2, "c", mols[1])
    assert _names(out.partial) == ["a", "c"]   # readable after each molecule
    with pytest.raises(ValueError, match="input order"):
        out.add(7, "x", mols[2])
    out.close()
    # a kill between the records and the progress line, and one inside the progress line
    with open(out.partial, "ab") as f:
        f.write(gzip.compress(b"half a molecule")[:10])
    with open(out.progress, "a") as f:
        f.write('{"index": 3, "na')
    with pytest.raises(ValueError, match="an interrupted run; continue it with --resume"):
        PartialSDF(tmp_path / "out.sdf.gz", {"n": 2})
    with pytest.raises(ValueError, match=r"other options \(n 2 -> 3\)"):
        PartialSDF(tmp_path / "out.sdf.gz", {"n": 3}, resume=True)
    again = PartialSDF(tmp_path / "out.sdf.gz", {"n": 2}, resume=True)
    assert (again.resumed, again.ok, again.failed, again.records) == (3, 2, 1, 4)
    with pytest.raises(ValueError, match="the input changed since the interrupted run: molecule 2 was 'b'"):
        again.skip_finished(iter([("a",), ("B",), ("c",)]))
    inputs = iter([("a",), ("b",), ("c",), ("d",)])
    again.skip_finished(inputs)
    assert next(inputs) == ("d",)
    again.open()
    again.add(3, "d", mols[2])
    assert again.finish().name == "out.sdf.gz" and not again.partial.exists() and not again.progress.exists()
    assert _names(tmp_path / "out.sdf.gz") == ["a", "c", "d"]


def test_molecule_i_uses_seed_plus_i_and_bad_records_keep_their_place(tmp_path):
    options = ConformerOptions(n=2, seed=5, dedupe_rmsd=0)
    results = list(conformers_for_library(["CCO first", "C1CC( bad", "CCCO", Chem.MolFromSmiles("CCN")], options))
    assert [(i, name) for i, name, _ in results] == [(0, "first"), (1, "bad"), (2, "mol_3"), (3, "mol_4")]
    assert isinstance(results[1][2], str) and "could not parse SMILES" in results[1][2]
    alone = generate_conformers("CCCO", options, None, seed=7).GetConformer(1).GetPositions()
    np.testing.assert_array_equal(results[2][2].GetConformer(1).GetPositions(), alone)
    later = list(conformers_for_library(["CCCO"], options, start=2))   # a resumed run: the same seed
    np.testing.assert_array_equal(later[0][2].GetConformer(1).GetPositions(), alone)
    with pytest.raises(ValueError, match="RefinerSpec"):
        next(conformers_for_library(["CCO"], options, batch.RefinerSpec.of().build(), workers=2))


def _seed_stage(mol, options, refiner):
    """A stage that records what it was given: the molecule's seed as a property, and no conformer work."""
    mol = Chem.Mol(mol)
    mol.SetIntProp("stage_seed", options.seed)
    if mol.GetNumAtoms() > 3:
        raise ValueError("too big for this stage")
    return mol


def test_a_stage_of_ones_own_gets_each_molecules_seed_and_its_errors_become_reasons():
    options = ConformerOptions(n=2, seed=10)
    results = list(conformers_for_library(["CCO a", "C1CC( bad", "CCCCC big", "CN c"], options, stage=_seed_stage,
                                          start=3))
    assert [(i, name) for i, name, _ in results] == [(3, "a"), (4, "bad"), (5, "big"), (6, "c")]
    assert results[0][2].GetIntProp("stage_seed") == 13 and results[3][2].GetIntProp("stage_seed") == 16
    assert "could not parse SMILES" in results[1][2] and results[2][2] == "too big for this stage"


# ------------------------------------------------------------------------------------------ the command
def test_bad_records_are_reported_once_with_their_input_record_and_counted(tmp_path, capsys):
    out = tmp_path / "out.sdf"
    assert main(["conformers", str(_library(tmp_path)), *FAST, "--workers", "1", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if "skipped" in line]
    assert len(skipped) == 2
    assert skipped[0].startswith("molediff conformers: skipped broken: could not parse SMILES 'C1CC('")
    assert skipped[0].endswith("(input record 3)")
    assert "skipped cyclopropyne: embedding failed" in skipped[1] and skipped[1].endswith("(input record 5)")
    assert "of 5 molecules" in captured.out and "; 2 failed" in captured.out
    assert _names(out) == ["ibuprofen", "aspirin", "caffeine", "propranolol", "octanoate"]
    sdf = tmp_path / "in.sdf"
    good = Chem.MolToMolBlock(Chem.MolFromSmiles("CCO"))
    sdf.write_text(good + "$$$$\nunreadable\n  x\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
                   "    0.0    0.0    0.0 Xx  0  0\nM  END\n$$$$\n" + good + "$$$$\n")
    assert main(["conformers", str(sdf), *FAST, "--workers", "1", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped") == 1 and "skipped unreadable:" in err and "(input record 2)" in err


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_molecules_and_resume_completes_the_same_file(tmp_path, capsys, monkeypatch):
    lib = _library(tmp_path)
    whole = tmp_path / "whole.sdf.gz"
    assert main(["conformers", str(lib), *FAST, "--workers", "1", "-o", str(whole)]) == 0
    out = tmp_path / "out.sdf.gz"
    real = batch.conformers_for_library

    def interrupted(*args, **kwargs):
        for k, item in enumerate(real(*args, **kwargs)):
            if k == 4:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(batch, "conformers_for_library", interrupted)
    capsys.readouterr()
    assert main(["conformers", str(lib), *FAST, "--workers", "1", "-o", str(out)]) == 130
    assert "interrupted after 4 molecules" in capsys.readouterr().err and not out.exists()
    partial = tmp_path / "out.sdf.gz.partial"
    assert _names(partial) == ["ibuprofen", "aspirin", "caffeine"]
    monkeypatch.setattr(batch, "conformers_for_library", real)
    assert main(["conformers", str(lib), *FAST, "--workers", "1", "-o", str(out)]) == 2   # no --resume
    assert "continue it with --resume" in capsys.readouterr().err
    changed = tmp_path / "changed.smi"
    changed.write_text(LIBRARY.replace("caffeine", "theine"))
    assert main(["conformers", str(changed), *FAST, "--resume", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the input changed since the interrupted run: molecule 4 was 'caffeine'" in err
    assert main(["conformers", str(lib), *FAST, "--resume", "-o", str(out)]) == 0
    assert "resuming after 4 of 7 molecules (3 written, 1 failed)" in capsys.readouterr().out
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(whole.read_bytes())
    assert out.read_bytes() == whole.read_bytes() and not partial.exists()


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_every_molecule_once_and_the_same_file(tmp_path):
    text = "".join(f"{s} m{k}\n" for k, s in enumerate(["CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O",
                                                        "CC(C)NCC(O)COc1cccc2ccccc12",
                                                        "OCCN1CCN(CC1)CCCN1c2ccccc2Sc2ccc(cc12)Cl",
                                                        "CCCCCCCC(=O)OC", "CC(=O)Oc1ccccc1C(=O)O"] * 2))
    lib = _library(tmp_path, text)
    argv = [lib, "--refiner", "none", "-n", "6", "--workers", "1"]
    whole = tmp_path / "whole.sdf"
    assert _run(*argv, "-o", whole).returncode == 0
    out = tmp_path / "out.sdf"
    progress = tmp_path / "out.sdf.partial.progress"
    proc = subprocess.Popen([sys.executable, "-m", "molediff.cli", "conformers", *map(str, argv), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and progress.read_text().count("\n") >= 3:   # the header and two molecules
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = progress.read_text().count("\n") - 1
    assert 2 <= done < 10
    result = _run(*argv, "--resume", "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"resuming after {done} of 10 molecules" in result.stdout
    assert _names(out) == [f"m{k}" for k in range(10)]  # each once, in order
    assert out.read_bytes() == whole.read_bytes()


@pytest.mark.slow
def test_two_workers_give_the_same_file_as_one(tmp_path):
    lib = _library(tmp_path)
    one, two = tmp_path / "one.sdf", tmp_path / "two.sdf"
    assert main(["conformers", str(lib), "-n", "2", "--workers", "1", "-o", str(one)]) == 0   # shipped refiner
    result = _run(lib, "-n", "2", "--workers", "2", "-o", two)
    assert result.returncode == 0, result.stderr
    assert "running on 2 worker processes" in result.stdout
    assert result.stderr.count("skipped") == 2
    assert two.read_bytes() == one.read_bytes()


@pytest.mark.slow
def test_ctrl_c_with_workers_stops_them_in_one_line_and_resume_finishes(tmp_path):
    # twelve more molecules after the library's seven, so that the run cannot finish between the second progress
    # line and the interrupt (a CI run once did, with the seven alone, and exited 0)
    extra = [f"ibuprofen_{k}" for k in range(12)]
    lib = _library(tmp_path, LIBRARY.rstrip("\n") + "\n" + "".join(f"CC(C)Cc1ccc(cc1)C(C)C(=O)O {name}\n"
                                                                   for name in extra))
    out = tmp_path / "out.sdf"
    progress = tmp_path / "out.sdf.partial.progress"
    proc = subprocess.Popen([sys.executable, "-m", "molediff.cli", "conformers", str(lib), "-n", "2", "--workers", "2",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and progress.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)   # a terminal's Ctrl-C reaches the whole process group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    # records finished before the Ctrl-C may have reported their own one-line skips (how many depends on timing)
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("molediff conformers: skipped ")]
    assert len(lines) == 1 and "interrupted after" in lines[0] and "--resume" in lines[0], stderr  # no traceback
    assert "Traceback" not in stderr
    result = _run(lib, "-n", "2", "--workers", "2", "--resume", "-o", out)
    assert result.returncode == 0, result.stderr
    assert _names(out) == ["ibuprofen", "aspirin", "caffeine", "propranolol", "octanoate", *extra]


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                       env={"OMP_NUM_THREADS": "1"})
    yield cluster
    cluster.close()


@pytest.mark.slow
def test_a_dask_cluster_gives_the_same_file(tmp_path, dask_cluster, capsys):
    lib = _library(tmp_path)
    one, dask = tmp_path / "one.sdf", tmp_path / "dask.sdf"
    assert main(["conformers", str(lib), "-n", "2", "--workers", "1", "-o", str(one)]) == 0   # shipped refiner
    assert main(["conformers", str(lib), "-n", "2", "--dask-scheduler", dask_cluster.scheduler_address,
                 "-o", str(dask)]) == 0
    assert "running on the Dask cluster" in capsys.readouterr().out
    assert dask.read_bytes() == one.read_bytes()
    assert main(["conformers", str(lib), "--dask-scheduler", "tcp://127.0.0.1:9", "--workers", "2",
                 "-o", str(dask)]) == 2


@pytest.mark.slow
def test_killing_a_dask_worker_mid_run_still_gives_the_whole_file(tmp_path, dask_cluster):
    from distributed import Client

    text = "".join(f"{s} m{k}\n" for k, s in enumerate(["CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O",
                                                        "CC(C)NCC(O)COc1cccc2ccccc12", "C1CC( bad",
                                                        "CCCCCCCC(=O)OC", "CC(=O)Oc1ccccc1C(=O)O"] * 2))
    lib = _library(tmp_path, text)
    options = ConformerOptions(n=4)

    def write(path, results, kill=None):
        out = PartialSDF(path, {})
        out.open()
        for index, name, result in results:
            out.add(index, name, result)
            if index == 0 and kill:
                kill()
        return out.finish().read_bytes()

    expected = write(tmp_path / "one.sdf", conformers_for_library(iter_inputs(str(lib)), options))
    with Client(dask_cluster) as client:
        pids = client.run(os.getpid)

        def kill():
            os.kill(next(iter(pids.values())), signal.SIGKILL)

        got = write(tmp_path / "dask.sdf", conformers_for_library(iter_inputs(str(lib)), options, dask_client=client,
                                                                  chunk_size=1), kill)
        assert set(client.run(os.getpid).values()) != set(pids.values())   # the killed worker was replaced
    assert got == expected
