"""scripts/bench_conformers.py end to end on two small molecules: the RMSD table, and with --validity the table of
PoseBusters checks, MMFF94 strain and bond shifts that issue 24's acceptance is read from."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_conformers.py"


@pytest.mark.slow
def test_validity_table_on_a_small_drug_set(tmp_path, capsys, monkeypatch):
    pytest.importorskip("posebusters")
    bench = load_script(SCRIPT, "bench_conformers")
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
