"""scripts/probe_conformer_arms.py: per-molecule rows of pipeline variants, resumable, and their summary."""

from __future__ import annotations

import json

import pytest
from helpers import ROOT, load_script

SCRIPT = ROOT / "scripts" / "probe_conformer_arms.py"


@pytest.fixture(scope="module")
def probe():
    return load_script(SCRIPT, "probe_conformer_arms")


def test_arms_rows_resume_and_summary(probe, tmp_path, monkeypatch, capsys):
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom

    references = []
    for name, smiles in (("ethanol", "CCO"), ("toluene", "Cc1ccccc1")):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = 3
        rdDistGeom.EmbedMolecule(mol, params)
        mol.SetProp("_Name", name)
        references.append(mol)
    monkeypatch.setattr(probe.bench, "reference_molecules", lambda n, seed, which, tuning: (references[:n], 0))
    out = tmp_path / "rows.jsonl"
    arms = ["--arm", "base:baseline", "--arm", "free:{'refiner': None, 'relax_when': 'pool'}"]
    probe.main(["--set", "qm9", "--n-molecules", "1", "--out", str(out), "--strain", *arms])
    probe.main(["--set", "qm9", "--n-molecules", "2", "--out", str(out), "--strain", *arms])  # adds toluene only
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"] for r in rows] == ["ethanol", "toluene"]
    assert rows[1]["heavy"] == 7 and rows[1]["rot"] == 0
    for r in rows:
        rmsd, written, seconds, strain = r["base"]
        assert written == 10 and seconds > 0 and 0 <= rmsd < 1.0
        assert len(strain) == 10 and max(strain) < 0.05   # MMFF94 minima
        assert r["free"][1] >= 1 and r["free"][0] is not None
    probe.main(["--summary", str(out)])
    table = capsys.readouterr().out
    assert "2 molecules, 2 embedded by every arm" in table and "| base |" in table and "| free |" in table


@pytest.mark.parametrize("spec", ["noname", "x:[1, 2]", ":{}"])
def test_bad_arms_are_refused(probe, spec):
    with pytest.raises(SystemExit):
        probe.main(["--arm", spec, "--out", "x.jsonl"])
