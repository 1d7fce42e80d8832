"""`molediff score`: table, per-molecule rows, bad records, exit codes."""

import csv
import json
from pathlib import Path

from molediff.cli import main

DATA = Path(__file__).parent / "data"


def test_score_reports_bad_records_and_writes_rows(tmp_path, capsys):
    rc = main(["score", str(DATA / "bad_records.xyz"), "--csv", str(tmp_path / "rows.csv"),
               "--json", str(tmp_path / "out.json")])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "molecule stability" in out and "validity" in out
    assert "skipped bad_records.xyz:2 (unknown): unknown element 'Xx' on atom line 2" in err
    rows = list(csv.DictReader(open(tmp_path / "rows.csv")))
    assert len(rows) == 2 + 6
    good = [r for r in rows if not r["error"]]
    assert {r["name"] for r in good} == {"gdb9_117980", "second_good"}
    assert all(r["stable"] in ("True", "False") for r in good)
    bad = {r["name"]: r["error"] for r in rows if r["error"]}
    assert bad["bad_records.xyz:8 (truncated)"] == "unreadable: truncated record: 5 atoms declared, 2 found"
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["summary"]["n_molecules"] == 2 and data["summary"]["n_unreadable"] == 6
    assert len(data["molecules"]) == 8


def test_score_exit_code_nonzero_only_when_nothing_readable(tmp_path, capsys):
    (tmp_path / "junk.xyz").write_text("3\nbad\nC 0 0 0\nXx 0 0 1\n")
    assert main(["score", str(tmp_path / "junk.xyz")]) == 1
    assert "no molecule could be read" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "missing.sdf")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_score_novelty_with_smiles_file_and_reference(tmp_path, capsys):
    from molediff.chem.io import read_molecules
    from molediff.chem.metrics import evaluate_molecules

    mols, _ = read_molecules(DATA / "qm9_small.xyz")
    rows = evaluate_molecules(mols, properties=False)["per_molecule"]
    from rdkit import Chem

    plain = [Chem.MolToSmiles(Chem.RemoveHs(Chem.MolFromSmiles(r["smiles"]))) for r in rows[:2] if r["valid"]]
    (tmp_path / "train.smi").write_text("smiles\n" + "\n".join(plain) + "\n")
    rc = main(["score", str(DATA / "qm9_small.xyz"), "--train-smiles", str(tmp_path / "train.smi"),
               "--reference", str(DATA / "qm9_small.sdf"), "--no-properties", "--json", str(tmp_path / "o.json")])
    assert rc == 0
    s = json.loads((tmp_path / "o.json").read_text())["summary"]
    assert s["n_novel"] == s["n_unique"] - len(plain)
    assert s["conformers"]["n_groups"] == 5 and s["conformers"]["cov_r"] == 1.0
    assert s["conformers"]["amr_r"] < 1e-3
