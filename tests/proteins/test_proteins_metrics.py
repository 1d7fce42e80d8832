"""Cα-trace metrics: the reference figures on real chains, W1, angles, clashes, and `molediff protein score`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import DATA

from molediff.cli import main
from molediff.proteins.io import read_ca_traces
from molediff.proteins.metrics import (
    RG_SCALED_REAL,
    bond_angles,
    ca_distances,
    clashes,
    dihedrals,
    length_profile,
    radius_of_gyration,
    score_chains,
    secondary_structure,
    wasserstein_1d,
)

FIXTURES = DATA / "proteins" / "real"


def ideal_helix(n: int) -> np.ndarray:
    """An α-helix Cα trace: radius 2.3 Å, 1.5 Å rise and 100° turn per residue (Cα–Cα ≈ 3.8 Å)."""
    k = np.arange(n)
    phi = np.radians(100.0) * k
    return np.stack([2.3 * np.cos(phi), 2.3 * np.sin(phi), 1.5 * k], 1)


def test_real_chains_match_the_reference_figures():
    """18 small real chains (PDB, CA atoms only) against the figures measured on 51 PDB chains (Cα–Cα
    3.80 ± 0.05 Å, helix 31 % / strand 17 % / coil 52 %, Rg/N^0.38 2.23 ± 0.17, bond angle 106.6° ± 17.2°).
    Tolerances: Cα–Cα mean ± 0.02 Å, std ≤ 0.1 Å; SSE fractions ± 0.15 (helix), ± 0.10 (strand, coil) — 18 short
    chains are a small sample; Rg/N^0.38 mean ± 0.25; bond angle mean ± 5°, std ± 3°; no clashes."""
    chains, _, bad = read_ca_traces(FIXTURES)
    assert len(chains) == 18 and not bad
    s = score_chains(chains)
    assert s["ca_ca_mean"] == pytest.approx(3.80, abs=0.02) and s["ca_ca_std"] <= 0.1
    assert s["ca_ca_outside"] < 0.02
    assert s["helix"] == pytest.approx(0.31, abs=0.15)
    assert s["strand"] == pytest.approx(0.17, abs=0.10)
    assert s["coil"] == pytest.approx(0.52, abs=0.10)
    assert s["rg_scaled_mean"] == pytest.approx(2.23, abs=0.25)
    assert s["bond_angle_mean"] == pytest.approx(106.6, abs=5.0)
    assert s["bond_angle_std"] == pytest.approx(17.2, abs=3.0)
    assert s["clash_pair_rate"] == 0.0 and s["clash_chain_rate"] == 0.0


def test_helix_geometry_and_p_sea():
    x = ideal_helix(30)
    assert ca_distances(x) == pytest.approx(np.full(29, math.sqrt(2 * 2.3**2 * (1 - math.cos(math.radians(100)))
                                                                  + 1.5**2)))
    assert 85 < bond_angles(x).mean() < 95
    assert 45 < dihedrals(x).mean() < 55                    # right-handed: positive virtual dihedral
    assert dihedrals(x * np.array([1, 1, -1])).mean() < -45  # the mirror image
    assert (secondary_structure(x) == "a").mean() > 0.8
    assert radius_of_gyration(np.array([[0, 0, 0], [2, 0, 0.0]])) == pytest.approx(1.0)


def test_clashes_count_pairs_three_apart():
    x = np.array([[0, 0, 0], [3.8, 0, 0], [3.8, 3.8, 0], [1.0, 2.5, 0], [0.0, 7.0, 0]])
    clashing, checked = clashes(x)
    assert checked == 3 and clashing == 1                  # pair (0, 3) at 2.7 Å; (0, 4), (1, 4) are far


def test_wasserstein_1d():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    assert wasserstein_1d(a, a) == 0.0
    assert wasserstein_1d(a, a + 2.5) == pytest.approx(2.5)
    b = rng.normal(1.0, 2.0, size=500)                     # equal sizes: the mean gap of the sorted samples
    assert wasserstein_1d(a, b) == pytest.approx(np.abs(np.sort(a) - np.sort(b)).mean())
    assert wasserstein_1d([0.0], [0.0, 1.0]) == pytest.approx(0.5)
    assert math.isnan(wasserstein_1d([], [1.0]))


def test_score_command_writes_table_json_and_png(tmp_path, capsys):
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    (tmp_path / "in").mkdir()
    for f in sorted(FIXTURES.iterdir())[:4]:
        (tmp_path / "in" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "in" / "broken.pdb").write_text("garbage\n")
    rc = main(["protein", "score", str(tmp_path / "in"), "--reference", str(FIXTURES), "--json", str(out_json),
               "--png", str(out_png)])
    captured = capsys.readouterr()
    assert rc == 0 and "Cα–Cα distance" in captured.out and "skipped broken.pdb" in captured.err
    data = json.loads(out_json.read_text())
    assert data["n_chains"] == 4 and data["n_unreadable"] == 1 and data["w1_bond_angle"] > 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["protein", "score", str(FIXTURES), "--json", str(tmp_path / "x.txt")]) == 2   # a usage error


def test_scattered_traces_are_scored_without_blowing_up():
    """A diverged sample (Cα thousands of Å apart) is coil for P-SEA instead of a huge contact grid."""
    x = np.random.default_rng(0).normal(size=(60, 3)) * 5000.0
    assert (secondary_structure(x) == "c").all()
    s = score_chains([x, ideal_helix(40)])
    assert s["ca_ca_outside"] > 0.5 and 0 < s["helix"] < 1


def test_length_profile_bins_clashes_and_compactness_like_score_chains():
    helix, clash = ideal_helix(40), ideal_helix(40)
    clash[30] = clash[10] + [0.5, 0.0, 0.0]                 # one residue on top of another
    chains = [helix, clash, ideal_helix(90)]
    rows = length_profile(chains, edges=[0, 64, 128])
    assert [(r["lo"], r["hi"], r["n_chains"]) for r in rows] == [(0, 64, 2), (64, 128, 1)]
    both = score_chains(chains[:2])
    assert rows[0]["clash_pair_rate"] == pytest.approx(both["clash_pair_rate"]) and rows[0]["clash_chain_rate"] == 0.5
    assert rows[0]["rg_scaled_mean"] == pytest.approx(both["rg_scaled_mean"])
    assert rows[1]["clash_chain_rate"] == 0.0 and rows[1]["mean_length"] == 90
    assert [r["lo"] for r in length_profile(chains)] == [40, 90]   # default: one bin per length
    with pytest.raises(ValueError, match="increase"):
        length_profile(chains, edges=[10, 10])


def test_the_real_chains_rg_constant_is_the_shipped_heldout_mean():
    from molediff.proteins.reference import heldout_chains

    chains = heldout_chains("all")
    assert len(chains) == 59 and len(heldout_chains("test")) == 39 and len(heldout_chains("valid")) == 20
    assert score_chains(chains)["rg_scaled_mean"] == pytest.approx(RG_SCALED_REAL, abs=0.01)
    with pytest.raises(ValueError, match="test"):
        heldout_chains("train")


def test_the_ca_ca_axis_shows_every_value():
    """No clipping into end bins: the bins reach from the shortest to the longest bond of every set, and 3.8 Å
    lies inside; a range over a factor 4 switches to a log axis."""
    from molediff.proteins.metrics import _ca_ca_bins

    bins, log_x = _ca_ca_bins([np.array([3.79, 3.81]), np.array([2.9, 7.5])])
    assert bins[0] <= 2.9 and bins[-1] >= 7.5 and not log_x
    assert np.histogram([2.9, 7.5, 3.8], bins)[0].sum() == 3
    bins, log_x = _ca_ca_bins([np.array([3.8]), np.array([0.2, 4000.0])])
    assert log_x and bins[0] <= 0.2 and bins[-1] >= 4000.0
    bins, _ = _ca_ca_bins([np.array([3.8, 3.8])])
    assert bins[0] <= 3.3 and bins[-1] >= 4.3


def test_score_png_draws_the_heldout_chains_by_default(tmp_path, capsys):
    out_png = tmp_path / "s.png"
    assert main(["protein", "score", str(FIXTURES), "--png", str(out_png)]) == 0
    assert "held-out real chains" in capsys.readouterr().out
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_png_without_shipped_heldout_chains_warns_and_still_draws(tmp_path, monkeypatch, capsys):
    import molediff.proteins.reference as reference

    monkeypatch.setattr(reference, "HELDOUT_PATH", tmp_path / "missing.npz")
    assert main(["protein", "score", str(FIXTURES), "--png", str(tmp_path / "s.png")]) == 0
    assert "no held-out real chains" in capsys.readouterr().err and (tmp_path / "s.png").is_file()
