"""scripts/bench_conformers.py end to end on two small molecules: the RMSD table, and with --validity the table of
PoseBusters checks, MMFF94 strain and bond shifts that issue 24's acceptance is read from. Its RMSD is the library's
``SymmetricRMSD``, which agrees with RDKit's ``GetBestRMS`` on hydrogen-free copies."""

from __future__ import annotations

import pytest
from helpers import DATA as FIXTURES
from helpers import ROOT, load_script

SCRIPT = ROOT / "scripts" / "bench_conformers.py"
DATA = FIXTURES / "qm9_test_500.npz"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT, "bench_conformers")


def _references(bench, n_qm9: int = 20):
    """The first ``n_qm9`` QM9 test molecules the benchmark accepts (as ``--set qm9`` builds them), and a few
    symmetric molecules with an ETKDGv3 conformer as the reference."""
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom

    from molediff.chem.bonds import to_rdkit
    from molediff.chem.molecule import MoleculeDataset

    data = MoleculeDataset.load(DATA)
    out = []
    for i in range(len(data)):
        mol = bench._reference(f"qm9_{i}", to_rdkit, data[i].atomic_numbers, data[i].positions)
        if mol is not None:
            out.append(mol)
        if len(out) == n_qm9:
            break
    for smiles in ("OC(=O)c1ccccc1", "CC(C)(C)c1ccc(cc1)C(C)(C)C", "FC(F)(F)C(F)(F)F", "NC(=N)N"):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = 7
        assert rdDistGeom.EmbedMolecule(mol, params) == 0
        out.append(mol)
    return out


def test_best_rmsd_is_getbestrms_on_hydrogen_free_copies(bench):
    """The benchmark's RMSD (``SymmetricRMSD``) against RDKit's ``GetBestRMS`` of the hydrogen-free molecules, best
    of three ETKDGv3 conformers, on 24 molecules: equal to 1e-6 Å. (``Chem.RemoveHs`` keeps hydrogens that define
    a double bond's stereo, e.g. of an imine N-H, which GetBestRMS then counts: hence ``RemoveAllHs``.)"""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    references = _references(bench)
    assert len(references) == 24
    differences = []
    for reference in references:
        generated = bench.etkdg(reference, 3, 1, relax=False)
        probe, target = Chem.RemoveAllHs(generated), Chem.RemoveAllHs(reference)
        expected = min(rdMolAlign.GetBestRMS(probe, target, prbId=c.GetId()) for c in probe.GetConformers())
        differences.append(abs(bench.best_rmsd(generated, reference) - expected))
    assert max(differences) < 1e-6
    # a conformer of the reference itself, its atoms relabelled by a symmetry, is at 0
    benzoic = references[20]
    assert bench.best_rmsd(bench.etkdg(benzoic, 1, 1, relax=False), benzoic) > 0.01
    twin = Chem.RenumberAtoms(benzoic, [2, 1, 0, *range(3, benzoic.GetNumAtoms())])   # the two O swapped
    assert bench.best_rmsd(twin, benzoic) < 1e-6


def test_best_rmsd_refuses_atoms_in_another_order(bench):
    from rdkit import Chem

    reference = _references(bench, n_qm9=1)[0]
    order = list(range(reference.GetNumAtoms()))[::-1]   # hydrogens first: not the order AddHs writes
    shuffled = Chem.RenumberAtoms(reference, order)
    with pytest.raises(ValueError, match="does not list the reference's atoms first"):
        bench.best_rmsd(shuffled, reference)


@pytest.mark.slow
def test_validity_table_on_a_small_drug_set(bench, tmp_path, capsys, monkeypatch):
    pytest.importorskip("posebusters")
    smi = tmp_path / "drugs.smi"
    smi.write_text("CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O ibuprofen\nCn1cnc2c1c(=O)n(C)c(=O)n2C caffeine\n")
    monkeypatch.setattr(bench, "DRUGS_FILE", str(smi))
    bench.main(["--set", "drugs", "--n-molecules", "2", "--validity"])
    out = capsys.readouterr().out
    assert "drug-like molecules of datasets/drugs20.smi" in out and "(2 drug-like" in out
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    header = next(line for line in out.splitlines() if "PoseBusters 'mol' checks passed" in line)
    assert "strain median / 95th pct" in header and "failed where ETKDGv3 embeds the input's stereo" in header
    baseline = [line for line in out.splitlines() if line.startswith("| ETKDGv3 + MMFF94 |")]
    assert len(baseline) == 2 and "| n/a | n/a | n/a | n/a | n/a |" in baseline[0]   # no reference: no RMSD
    validity = baseline[1:]
    cells = [c.strip() for c in validity[0].strip("|").split("|")]
    assert cells[1] == "100.0% of 20"                       # ETKDGv3 always writes 10 per molecule
    assert cells[3].startswith("0.00 / 0.00")                # MMFF94 minima have no local strain
    assert cells[4] == "100.00%"
    assert "ETKDGv3" in rows


def test_skip_n1_measures_n10_only_and_prints_both_cpu_ratios(bench, capsys, monkeypatch):
    qm9 = _references(bench, n_qm9=2)[:2]
    monkeypatch.setattr(bench, "reference_molecules", lambda *args: (qm9, 0))
    calls = []
    real = bench.run

    def run(*args, **kwargs):
        calls.append(kwargs["n_values"])
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "run", run)
    bench.main(["--set", "qm9", "--n-molecules", "2", "--skip-n1"])
    out = capsys.readouterr().out
    assert calls == [(10,)]
    header = next(line for line in out.splitlines() if line.startswith("| method |"))
    assert "CPU vs ETKDGv3 + MMFF94 N=10: per conformer / per molecule" in header
    row = next(line for line in out.splitlines() if line.startswith("| ETKDGv3 + MMFF94 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "n/a" and float(cells[2]) > 0 and cells[4].startswith("n/a / ")
    assert cells[7] == "1.00× / 1.00×" and cells[-1] == "n/a / 0"


def test_extra_arms_are_the_refined_defaults_with_their_changes(bench, monkeypatch):
    assert bench.parse_arm("k = 30:restraint=30.0,relax_when='pool'") == (
        "k = 30", {"restraint": 30.0, "relax_when": "pool"})
    for bad in ("no colon", "x:restraint"):
        with pytest.raises(ValueError):
            bench.parse_arm(bad)
    calls = []
    monkeypatch.setattr(bench, "molediff_pipeline", lambda mol, n, t, **options: calls.append(options))
    model = object()
    arms = bench.methods(model, only_defaults=True, restraint=10.0, extra_arms={"k = 30": {"restraint": 30.0}})
    arms["molediff + refiner, k = 30"](None, 10, 1)
    next(a for name, a in arms.items() if name.startswith("molediff (pool"))(None, 10, 1)
    extra, default = calls
    assert (extra.pop("restraint"), default.pop("restraint")) == (30.0, 10.0)
    assert extra == default and default["refiner"] is model
