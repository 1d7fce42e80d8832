"""`molediff score`: table, per-molecule rows, bad records, exit codes."""

import csv
import json

from helpers import DATA, reject_bare_constant

from molediff.cli import main


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
    assert all(r["edm_stable"] in ("True", "False") for r in good)
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
    from molediff.chem.stability import evaluate_molecules

    mols, _ = read_molecules(DATA / "qm9_small.xyz")
    rows = evaluate_molecules(mols, properties=False)["per_molecule"]
    from rdkit import Chem

    plain = [Chem.MolToSmiles(Chem.RemoveHs(Chem.MolFromSmiles(r["smiles"]))) for r in rows[:2] if r["valid"]]
    (tmp_path / "train.smi").write_text("smiles\n" + "\n".join(plain) + "\n")
    rc = main(["score", str(DATA / "qm9_small.xyz"), "--train-smiles", str(tmp_path / "train.smi"),
               "--reference", str(DATA / "qm9_small.sdf"), "--no-properties", "--json", str(tmp_path / "o.json")])
    assert rc == 0
    s = json.loads((tmp_path / "o.json").read_text())["summary"]
    assert s["edm"]["n_novel"] == s["edm"]["n_unique"] - len(plain) and s["file_bonds"] is None
    assert s["conformers"]["n_groups"] == 5 and s["conformers"]["cov_r"] == 1.0
    assert s["conformers"]["amr_r"] < 1e-3


def test_output_paths_checked_before_any_work(tmp_path, capsys):
    """Bad --json/--csv paths fail at once with one line, before reading or scoring anything."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    source = tmp_path / "in.xyz"  # a copy, so that a failing check cannot overwrite a shared fixture
    source.write_text((DATA / "qm9_small.xyz").read_text())
    cases = [(["--json", str(tmp_path / "dir")], "--json output", "is a directory"),
             (["--csv", str(tmp_path / "file" / "rows.csv")], "--csv output", "is a file, not a directory"),
             (["--json", str(tmp_path / "o.x"), "--csv", str(tmp_path / "o.x")], "--json and --csv both name",
              "two different files"),
             (["--json", str(source)], "--json output", "would overwrite the input")]
    for extra, what, why in cases:
        # a missing input proves the check comes first: reading it would fail with 'does not exist'
        args = ["score", str(source), *extra]
        assert main(args) == 2                                    # a usage error (issue 23)
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, err
        assert err.startswith("molediff score: error: ") and what in err and why in err
        if "overwrite" not in why:
            assert main(["score", str(tmp_path / "missing.xyz"), *extra]) == 2
            assert "does not exist" not in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file", "in.xyz"]  # nothing written
    assert source.read_text() == (DATA / "qm9_small.xyz").read_text()


def test_outputs_replace_existing_files_atomically(tmp_path, capsys):
    target = tmp_path / "out" / "o.json"
    target.parent.mkdir()
    target.write_text("old")
    assert main(["score", str(DATA / "qm9_small.xyz"), "--no-properties", "--json", str(target)]) == 0
    capsys.readouterr()
    assert json.loads(target.read_text())["summary"]["n_molecules"] == 5
    assert [p.name for p in target.parent.iterdir()] == ["o.json"]  # no temporary file left behind


def test_reference_without_any_match_says_so_and_json_has_no_nan(tmp_path, capsys):
    """Generated ethanol vs a propanol reference: nothing matches; the output says so, and the NaN means of
    the empty conformer metrics are written as null (strict JSON)."""
    (tmp_path / "gen.xyz").write_text(
        "9\nethanol\nC -0.93 0.06 0.04\nC 0.46 -0.53 -0.07\nO 1.37 0.52 0.17\nH -1.04 0.87 -0.69\n"
        "H -1.66 -0.72 -0.16\nH -1.11 0.48 1.04\nH 0.63 -0.95 -1.07\nH 0.55 -1.34 0.67\nH 2.27 0.17 0.10\n")
    (tmp_path / "ref.xyz").write_text(
        "12\npropanol\nC -1.88 -0.33 0.13\nC -0.63 0.54 0.05\nC 0.63 -0.30 -0.08\nO 1.77 0.52 -0.16\n"
        "H -2.77 0.30 0.22\nH -1.95 -0.96 -0.76\nH -1.83 -0.99 1.00\nH -0.69 1.19 -0.83\nH -0.57 1.18 0.94\n"
        "H 0.70 -0.95 0.80\nH 0.58 -0.94 -0.97\nH 2.55 -0.04 -0.24\n")
    rc = main(["score", str(tmp_path / "gen.xyz"), "--reference", str(tmp_path / "ref.xyz"), "--no-properties",
               "--json", str(tmp_path / "o.json"), "--csv", str(tmp_path / "o.csv")])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "no generated molecule matches a reference molecule" in out
    assert "warning: conformers: no generated molecule matches a reference molecule" in err
    text = (tmp_path / "o.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    conf = json.loads(text, parse_constant=reject_bare_constant)["summary"]["conformers"]
    assert conf["n_groups"] == 0 and conf["cov_r"] is None and conf["amr_r"] is None and conf["d_mae"] is None
    assert conf["unmatched"] == ["ethanol"]
    assert "no generated molecule matches a reference molecule" in conf["warning"]
    assert "nan" not in (tmp_path / "o.csv").read_text().lower()


def test_json_safe_turns_every_non_finite_number_into_null():
    import numpy as np

    from molediff.commands.score import _json_safe

    data = {"a": float("nan"), "b": [np.float32("inf"), -float("inf"), 1.5], "c": np.array([1.0, np.nan]),
            "d": (np.int64(3), None, "x"), 4: np.bool_(True)}
    safe = _json_safe(data)
    assert safe == {"a": None, "b": [None, None, 1.5], "c": [1.0, None], "d": [3, None, "x"], "4": True}
    assert json.loads(json.dumps(safe, allow_nan=False), parse_constant=reject_bare_constant) == safe
