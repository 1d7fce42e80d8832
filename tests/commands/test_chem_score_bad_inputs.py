"""`molediff score` on a folder of bad inputs: every record is scored or listed with a one-line reason, no
molecule ends the run, and the notes say which of EDM's assumptions a molecule breaks.

The fixtures in tests/data/scoring/ were made for this test (RDKit ETKDG + MMFF94, seed 42, coordinates
rounded to 1e-4 Å; the Zn and all-zero records by hand): bad_inputs.sdf holds propan-1-ol, the same with
one H placed exactly on its carbon (zero-length bond), glycine zwitterion and ethylammonium chloride (with
formal charges), ZnCl2, methane with all coordinates 0 (flagged 3D) and water with all coordinates 0
(flagged 2D); bad_inputs.xyz holds isobutane with every z set to 0, propanol without hydrogens, the glycine
zwitterion without charges and an empty record; garbage.xyz is not a molecule file.
"""

import csv
import json

import pytest
from helpers import DATA, reject_bare_constant

from molediff.cli import main

SCORING = DATA / "scoring"

# name -> flags the row must carry (others may be present too)
EXPECTED_FLAGS = {
    "propanol_ok": set(),
    "propanol_zero_length_bond": {"coincident_atoms"},
    "glycine_zwitterion": {"charges"},
    "ethylammonium_chloride": {"charges", "fragments"},
    "zinc_chloride": {"metal", "fragments"},
    "methane_all_zero": {"collapsed"},
    "water_2d_all_zero": {"collapsed"},
    "isobutane_flat": {"flat"},
    "propanol_heavy_atoms_only": {"no_hydrogens"},
    "glycine_zwitterion_no_charges": {"charged_group"},
}
UNREADABLE = {"bad_inputs.xyz:4 (empty_record)": "empty molecule", "garbage.xyz:1": "malformed XYZ header"}


@pytest.fixture
def scored(tmp_path, capsys):
    """Run the CLI with --physics and both outputs; returns (rc, stdout, stderr, csv rows, parsed JSON)."""
    rc = main(["score", str(SCORING), "--physics", "--csv", str(tmp_path / "rows.csv"),
               "--json", str(tmp_path / "o.json")])
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(open(tmp_path / "rows.csv")))
    data = json.loads((tmp_path / "o.json").read_text(), parse_constant=reject_bare_constant)
    return rc, out, err, rows, data


def test_run_survives_every_bad_record(scored):
    rc, out, err, rows, data = scored
    assert rc == 0
    assert "Traceback" not in err and "Invariant Violation" not in out
    assert "molecule stability" in out and "physical checks: molecules checked" in out
    assert {r["name"] for r in rows} == set(EXPECTED_FLAGS) | set(UNREADABLE)
    assert len(rows) == len(EXPECTED_FLAGS) + len(UNREADABLE) == len(data["molecules"])
    for r in rows:
        if r["error"]:
            assert "\n" not in r["error"] and r["error"].strip()
        else:  # scored: stability and validity filled in
            assert r["edm_stable"] in ("True", "False") and r["edm_valid"] in ("True", "False"), r["name"]
    for name, reason in UNREADABLE.items():
        row = next(r for r in rows if r["name"] == name)
        assert row["error"].startswith("unreadable: ") and reason in row["error"]
        assert f"skipped {name}: " in err


def test_rows_carry_the_expected_flags_and_notes(scored):
    _, _, _, rows, data = scored
    by_name = {r["name"]: r for r in data["molecules"]}
    for name, flags in EXPECTED_FLAGS.items():
        row = by_name[name]
        assert flags <= set(row["flags"]), (name, row["flags"])
        assert len(row["notes"]) >= len(flags - {"collapsed"}), name
    assert by_name["propanol_ok"]["flags"] == [] and by_name["propanol_ok"]["notes"] == []
    assert by_name["propanol_ok"]["edm_stable"] and by_name["propanol_ok"]["edm_valid"]
    assert by_name["propanol_ok"]["file_stable"] and by_name["propanol_ok"]["file_valid"]
    # collapsed molecules (including the 2D-flagged all-zero record) are not scored, with that reason
    for name in ("methane_all_zero", "water_2d_all_zero"):
        assert by_name[name]["error"].startswith("collapsed: ") and "no 3D coordinates" in by_name[name]["error"]
        assert by_name[name]["geometry"] == "collapsed" and not by_name[name]["edm_stable"]
    assert by_name["isobutane_flat"]["geometry"] == "flat"
    assert "flat: all 14 atoms in one plane (every z is 0)" in by_name["isobutane_flat"]["notes"][0]
    notes = {name: " ".join(r["notes"]) for name, r in by_name.items()}
    assert "formal charges in the file are ignored by EDM's metric" in notes["glycine_zwitterion"]
    assert "the file's-bonds rule counts the file's bonds and charges" in notes["glycine_zwitterion"]
    assert "no explicit hydrogens: EDM's stability needs them" in notes["propanol_heavy_atoms_only"]
    assert "metal atom Zn" in notes["zinc_chloride"]
    assert "2 fragments" in notes["ethylammonium_chloride"]
    assert "ammonium N with 4 bonds" in notes["glycine_zwitterion_no_charges"]
    assert "zero-length bond" in notes["propanol_zero_length_bond"]
    # CSV has the same notes, one cell
    csv_notes = {r["name"]: r["notes"] for r in rows}
    assert "metal atom Zn" in csv_notes["zinc_chloride"] and csv_notes["propanol_ok"] == ""


def test_physics_skips_are_counted_with_reasons(scored):
    _, out, err, _, data = scored
    phys = data["summary"]["physics"]
    by_name = {r["name"]: r for r in data["molecules"]}
    zero = by_name["propanol_zero_length_bond"]
    assert zero["phys_error"].startswith("MMFF94 skipped (coincident atoms): atoms 1 and ")
    assert zero["phys_bond_lengths_ok"] is False and zero["phys_strain"] is None  # geometry checked, MMFF not
    assert by_name["propanol_ok"]["phys_error"] is None and by_name["propanol_ok"]["phys_strain"] is not None
    assert by_name["methane_all_zero"]["phys_error"].startswith("collapsed")
    assert phys["n_checked"] + phys["n_skipped"] == len(EXPECTED_FLAGS)
    assert phys["skip_reasons"]["MMFF94 skipped (coincident atoms)"] == 1
    assert phys["skip_reasons"]["collapsed"] == 2
    assert sum(phys["skip_reasons"].values()) == sum(r.get("phys_error") is not None for r in data["molecules"])
    assert "MMFF94 skipped (coincident atoms)" in out
    assert "warning: physical checks: " in err


def test_summary_warnings_name_the_violated_assumptions(scored):
    _, _, err, _, data = scored
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert warnings and all(w[len("warning: "):] in data["summary"]["warnings"] for w in warnings)
    text = " ".join(warnings)
    assert "2 collapsed" in text and "1 flat" in text and "1 with coincident atoms" in text
    for phrase in ("formal charges ignored (2)", "no explicit hydrogens (1)", "metal atoms (1)",
                   "several fragments (largest kept)", "charged groups without charges (1)"):
        assert phrase in text
    assert data["summary"]["flag_counts"]["collapsed"] == 2


def test_score_with_file_bonds_also_survives(tmp_path, capsys):
    rc = main(["score", str(SCORING / "bad_inputs.sdf"), "--bonds", "file", "--no-properties",
               "--json", str(tmp_path / "o.json")])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err and "validity" in out
    rows = {r["name"]: r for r in json.loads((tmp_path / "o.json").read_text())["molecules"]}
    # with the file's charges the zwitterion is stable and valid; EDM's rule still ignores them and says so
    zwitterion = rows["glycine_zwitterion"]
    assert zwitterion["file_valid"] and zwitterion["file_stable"] and not zwitterion["edm_stable"]
    assert any("ignored by EDM's metric" in n for n in zwitterion["notes"])
    assert "headline: file's bonds" in out


def test_2d_flagged_all_zero_record_is_called_collapsed(tmp_path, capsys):
    from rdkit import Chem

    mol = Chem.AddHs(Chem.MolFromSmiles("C"))
    conf = Chem.Conformer(mol.GetNumAtoms())
    conf.Set3D(False)  # all coordinates 0, header says 2D
    mol.AddConformer(conf)
    mol.SetProp("_Name", "methane_2d_zero")
    (tmp_path / "in.sdf").write_text(Chem.MolToMolBlock(mol) + "$$$$\n" + (SCORING / "bad_inputs.sdf").read_text())
    assert main(["score", str(tmp_path / "in.sdf"), "--no-properties", "--csv", str(tmp_path / "o.csv")]) == 0
    capsys.readouterr()
    row = next(r for r in csv.DictReader(open(tmp_path / "o.csv")) if "methane_2d_zero" in r["name"])
    assert "collapsed" in row["error"] or "no 3D coordinates" in row["error"]
