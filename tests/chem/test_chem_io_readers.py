"""Reader robustness: raw QM9 XYZ, byte-order marks, cut-off .gz files, bonds molediff cannot use, XYZ frames with
a wrong atom count, RDKit messages, and empty / whitespace / CRLF / unterminated files, in every format that shares
the problem."""

import gzip
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA

from molediff.chem import read_molecules, write_sdf, write_xyz
from molediff.chem.molecule import Molecule

READERS = DATA / "readers"

WATER = Molecule([8, 1, 1], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]], name="water")
AMMONIA = Molecule([7, 1, 1, 1], [[0.0, 0.0, 0.1130], [0.0, 0.9377, -0.2637], [0.8121, -0.4689, -0.2637],
                                  [-0.8121, -0.4689, -0.2637]], name="ammonia")
METHANE = Molecule([6, 1, 1, 1, 1], [[0.0, 0.0, 0.0], [0.6291, 0.6291, 0.6291], [-0.6291, -0.6291, 0.6291],
                                     [-0.6291, 0.6291, -0.6291], [0.6291, -0.6291, -0.6291]], name="methane")
THREE = [WATER, AMMONIA, METHANE]


def _text(fmt: str, molecules, tmp_path: Path) -> str:
    """The file text molediff's own writer produces for ``molecules`` in ``fmt`` ('sdf' or 'xyz')."""
    out = tmp_path / f"source.{fmt}"
    (write_sdf if fmt == "sdf" else write_xyz)(out, molecules)
    return out.read_text()


def _put(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``, gzip-compressed when the name ends in .gz."""
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


ALL_FORMATS = ["sdf", "sdf.gz", "xyz", "xyz.gz"]


# -- (a) raw QM9 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["xyz", "xyz.gz"])
def test_raw_qm9_frames_read_with_mathematica_exponents_and_no_trailer_records(tmp_path, suffix):
    path = _put(tmp_path / f"dsgdb9nsd_000003.{suffix}", (READERS / "qm9_raw_two_frames.xyz").read_bytes())
    mols, errors = read_molecules(path)
    assert errors == []  # frequency / SMILES / InChI lines are part of each frame, not records of their own
    assert [m.name for m in mols] == ["gdb 3", "gdb 5"]
    assert mols[0].atomic_numbers.tolist() == [8, 1, 1] and mols[1].atomic_numbers.tolist() == [6, 7, 1]
    # columns 2-4 are the coordinates (5th, the Mulliken charge, ignored); 2.5*^-6 means 2.5e-6
    np.testing.assert_allclose(mols[0].positions[1], [0.0647664923, 0.0205721989, 2.5e-6], rtol=1e-6)
    np.testing.assert_allclose(mols[0].positions[2], [0.8717903737, 1.3007924092, -1.17e-5], rtol=1e-6)
    np.testing.assert_allclose(mols[1].positions[1], [0.0023107863, -0.0191328279, 4.2e-7], rtol=1e-6)


def test_fortran_exponents_and_extra_columns_in_plain_xyz(tmp_path):
    (tmp_path / "f.xyz").write_text("2\nH2\nH 0.0 0.0 1.0D-03 extra\nH 0.0 0.0 7.414d-01 0.1\n"
                                    "2\nunderscore\nH 0.0 0.0 0.0\nH 0.0 0.0 7_4\n")
    (m,), errors = read_molecules(tmp_path / "f.xyz")
    assert errors == [("f.xyz:2 (underscore)", "malformed coordinates on atom line 2")]  # not 74, as float() would
    np.testing.assert_allclose(m.positions[:, 2], [1e-3, 0.7414], rtol=1e-6)


# -- (b) byte-order marks ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ALL_FORMATS)
def test_byte_order_mark_is_ignored(tmp_path, suffix):
    text = _text(suffix[:3], [WATER, AMMONIA], tmp_path)
    # a BOM at the start, and another where a second BOM-carrying file was appended with `cat`
    data = b"\xef\xbb\xbf" + text.encode() + b"\xef\xbb\xbf" + _text(suffix[:3], [METHANE], tmp_path).encode()
    mols, errors = read_molecules(_put(tmp_path / f"bom.{suffix}", data))
    assert errors == []
    assert [m.name for m in mols] == ["water", "ammonia", "methane"]


@pytest.mark.parametrize("suffix", ["sdf", "xyz"])
def test_utf16_file_with_bom_reads_like_utf8(tmp_path, suffix):
    text = _text(suffix, THREE, tmp_path)
    mols, errors = read_molecules(_put(tmp_path / f"u16.{suffix}", text.encode("utf-16")))
    assert errors == [] and [m.name for m in mols] == ["water", "ammonia", "methane"]


# -- (c) cut-off .gz --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["sdf", "xyz"])
def test_truncated_gzip_keeps_the_records_before_the_cut(tmp_path, fmt):
    text = _text(fmt, THREE, tmp_path).encode()
    # stored (level 0) deflate: 10-byte gzip header and 5-byte block header, then the text itself, so a cut at
    # 15 + k bytes leaves exactly the first k bytes of text; cut in the middle of the third record
    third = text.index(b"methane")
    gz = gzip.compress(text, compresslevel=0)
    assert zlib.decompressobj(31).decompress(gz[:15 + third + 40]) == text[:third + 40]  # the layout assumed
    path = tmp_path / f"cut.{fmt}.gz"
    path.write_bytes(gz[:15 + third + 40])
    mols, errors = read_molecules(path)
    assert [m.name for m in mols] == ["water", "ammonia"]
    assert errors == [(path.name, "file is truncated after record 2: the gzip stream ends before its end marker; "
                                  "the rest is lost")]


@pytest.mark.parametrize("fmt", ["sdf", "xyz"])
def test_truncated_gzip_at_any_length_keeps_exactly_the_complete_records(tmp_path, fmt):
    text = _text(fmt, THREE, tmp_path).encode()
    gz = gzip.compress(text, compresslevel=9)
    path = tmp_path / f"cut.{fmt}.gz"
    # byte offsets where each record's last needed line is complete: after "M  END\n", or (XYZ) at the next count line
    if fmt == "sdf":
        ends = [text.index(b"M  END\n", text.index(name.encode())) + 7 for name in ("water", "ammonia", "methane")]
    else:
        ends = [text.index(b"4\nammonia"), text.index(b"5\nmethane"), len(text)]
    for cut in range(1, len(gz), 5):
        path.write_bytes(gz[:cut])
        prefix = zlib.decompressobj(31).decompress(gz[:cut])  # independent of molediff: what the cut leaves
        mols, errors = read_molecules(path)
        complete = sum(end <= len(prefix) for end in ends)
        assert [m.name for m in mols] == [m.name for m in THREE[:complete]], (cut, len(prefix))
        assert all(np.allclose(a.positions, b.positions, atol=1e-4) for a, b in zip(mols, THREE))
        expected = f"file is truncated after record {complete}: " if prefix else "cannot read file ("
        assert len(errors) == 1 and errors[0][0] == path.name and errors[0][1].startswith(expected), (cut, errors)


def test_not_a_gzip_file_is_one_error(tmp_path):
    (tmp_path / "plain.sdf.gz").write_text("not gzip at all\n")
    assert read_molecules(tmp_path / "plain.sdf.gz") == ([], [("plain.sdf.gz", "cannot read file (bad gzip data "
                                                                                "(Not a gzipped file (b'no')))")])


# -- (d) bonds molediff cannot use -------------------------------------------------------------------
def test_dative_hydrogen_and_refused_bonds_keep_atoms_with_unknown_bonds(tmp_path):
    path = _put(tmp_path / "unusual_bonds.sdf.gz", (READERS / "unusual_bonds.sdf").read_bytes())
    for p in (READERS / "unusual_bonds.sdf", path):
        notes = []
        mols, errors = read_molecules(p, notes=notes)
        assert errors == []
        assert [(m.name, m.num_atoms, None if m.bonds is None else len(m.bonds)) for m in mols] == [
            ("ammonia_borane_v3000_dative", 8, None), ("ammonia_borane_v2000_dative", 8, None),
            ("water_dimer_hydrogen_bond", 6, None), ("water_bad_bond_line", 3, None),
            ("methanol_sgroup_not_counted", 6, 5), ("water_plain", 3, 2)]
        np.testing.assert_allclose(mols[0].positions[1], [0.0, 0.0, 1.66], atol=1e-6)
        assert mols[0].atomic_numbers.tolist() == [5, 7, 1, 1, 1, 1, 1, 1]
        assert mols[0].formal_charges.tolist() == [0] * 8 and mols[3].formal_charges is None  # atoms-only: unknown
        assert [(record.split(" ")[0].split(":")[1], note) for record, note in notes] == [
            ("1", "file bonds not used: unsupported bond type DATIVE (MDL type 9) between atoms 2 and 1; "
                  "bonds will be perceived from 3D"),
            ("2", "file bonds not used: unsupported bond type DATIVE (MDL type 9) between atoms 2 and 1; "
                  "bonds will be perceived from 3D"),
            ("3", "file bonds not used: unsupported bond type HYDROGEN (MDL type 10) between atoms 1 and 5; "
                  "bonds will be perceived from 3D"),
            ("4", "RDKit could not parse the record (Cannot convert '  x' to int on line 9); read atoms and "
                  "coordinates only, bonds will be perceived from 3D"),
            ("5", "read with RDKit's lenient parser; the strict one refused it (BEGIN SGROUP  found but Sgroups "
                  "NOT expected on line 22)"),
        ]


def test_require_bonds_turns_unusable_bonds_into_errors():
    mols, errors = read_molecules(READERS / "unusual_bonds.sdf", require_bonds=True)
    assert [m.name for m in mols] == ["methanol_sgroup_not_counted", "water_plain"]
    assert errors == [
        ("unusual_bonds.sdf:1 (ammonia_borane_v3000_dative)",
         "unsupported bond type DATIVE (MDL type 9) between atoms 2 and 1"),
        ("unusual_bonds.sdf:2 (ammonia_borane_v2000_dative)",
         "unsupported bond type DATIVE (MDL type 9) between atoms 2 and 1"),
        ("unusual_bonds.sdf:3 (water_dimer_hydrogen_bond)",
         "unsupported bond type HYDROGEN (MDL type 10) between atoms 1 and 5"),
        ("unusual_bonds.sdf:4 (water_bad_bond_line)",
         "RDKit could not parse the record: Cannot convert '  x' to int on line 9"),
    ]


def test_atom_count_that_disagrees_with_the_atom_block_is_an_error_not_a_molecule_missing_an_atom(tmp_path):
    v3000 = (READERS / "unusual_bonds.sdf").read_text().split("$$$$\n")[0]
    (tmp_path / "counts.sdf").write_text(
        WATER_V2000.replace("  3  2  0", "  2  2  0", 1) + "$$$$\n"  # too low: an atom would be read as a bond
        + v3000.replace("COUNTS 8 7", "COUNTS 9 7") + "$$$$\n")
    expected = ([], [
        ("counts.sdf:1 (water)", "atom count mismatch: 2 atoms declared, but line 7 of the record is one more atom"),
        ("counts.sdf:2 (ammonia_borane_v3000_dative)", "truncated record: 9 atoms declared, 8 found")])
    assert read_molecules(tmp_path / "counts.sdf") == expected
    assert read_molecules(tmp_path / "counts.sdf", require_bonds=True) == expected


# -- (e) XYZ frames with a wrong atom count -----------------------------------------------------------
@pytest.mark.parametrize("suffix", ["xyz", "xyz.gz"])
def test_xyz_frame_with_wrong_count_is_reported_with_its_line_and_the_next_frame_read(tmp_path, suffix):
    path = _put(tmp_path / f"frames.{suffix}", (READERS / "frame_count_mismatch.xyz").read_bytes())
    mols, errors = read_molecules(path)
    assert [m.name for m in mols] == ["water ok", "hydrogen ok"]
    np.testing.assert_allclose(mols[1].positions[1], [0.0, 0.0, 0.7414], atol=1e-6)
    assert errors == [
        (f"{path.name}:1 (methane, count says 5 but 4 atoms)",
         "truncated record: 5 atoms declared, 4 found before line 7 (frame starts on line 1)"),
        (f"{path.name}:3 (ammonia, count says 2 but 4 atoms)",
         "atom count mismatch: 2 atoms declared, but line 16 is one more atom (frame starts on line 12)"),
    ]


# -- (f) RDKit's messages --------------------------------------------------------------------------------
def test_rdkit_messages_go_into_reasons_not_to_stderr(tmp_path, capfd):
    bad_bond = (READERS / "unusual_bonds.sdf").read_text().split("$$$$\n")[3] + "$$$$\n"
    (tmp_path / "bad.sdf").write_text(bad_bond)
    capfd.readouterr()
    mols, errors = read_molecules(tmp_path / "bad.sdf", require_bonds=True)
    assert mols == [] and errors == [("bad.sdf:1 (water_bad_bond_line)",
                                      "RDKit could not parse the record: Cannot convert '  x' to int on line 9")]
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_rdkit_invariant_violation_becomes_a_one_line_reason(tmp_path, capfd):
    # a bond to atom 9 of 3: RDKit reports a "Range Error" invariant violation with a stack trace
    block = WATER_V2000.replace("  1  3  1  0", "  1  9  1  0")
    (tmp_path / "range.sdf").write_text(block + "$$$$\n")
    capfd.readouterr()
    mols, errors = read_molecules(tmp_path / "range.sdf", require_bonds=True)
    ((record, reason),) = errors
    assert mols == [] and record == "range.sdf:1 (water)"
    assert reason.startswith("RDKit could not parse the record: ") and "Range Error" in reason
    assert "\n" not in reason and "Stacktrace" not in reason and len(reason) < 320
    notes = []
    (m,), errors = read_molecules(tmp_path / "range.sdf", notes=notes)  # bonds not needed: atoms are fine
    assert errors == [] and m.bonds is None and m.num_atoms == 3 and "Range Error" in notes[0][1]
    assert capfd.readouterr().err == ""


def test_an_invariant_violation_stays_one_line_when_rdkit_logs_through_python(tmp_path):
    # after rdBase.LogToPythonLogger() (importing posebusters calls it) the stack trace's frames arrive as log
    # records of their own; none may leak into the reason
    from rdkit import rdBase

    (tmp_path / "range.sdf").write_text(WATER_V2000.replace("  1  3  1  0", "  1  9  1  0") + "$$$$\n")
    rdBase.LogToPythonLogger()
    try:
        ((_, reason),) = read_molecules(tmp_path / "range.sdf", require_bonds=True)[1]
    finally:
        rdBase.LogToCppStreams()
    assert "Range Error" in reason and "#" not in reason and "\n" not in reason and len(reason) < 320


def test_rdkit_messages_are_captured_even_when_the_user_muted_or_rerouted_rdkit_logs(tmp_path, capfd):
    from rdkit import RDLogger, rdBase

    (tmp_path / "bad.sdf").write_text(WATER_V2000.replace("  1  3  1  0", "  1  x  1  0") + "$$$$\n")
    expected = [("bad.sdf:1 (water)", "RDKit could not parse the record: Cannot convert '  x' to int on line 9")]
    RDLogger.DisableLog("rdApp.*")
    try:
        assert read_molecules(tmp_path / "bad.sdf", require_bonds=True)[1] == expected
        assert "rdApp.warning:disabled" in rdBase.LogStatus()  # the user's setting is restored
    finally:
        RDLogger.EnableLog("rdApp.warning")
        RDLogger.EnableLog("rdApp.error")
    for reroute in (rdBase.LogToPythonStderr, rdBase.LogToPythonLogger):
        reroute()
        try:
            assert read_molecules(tmp_path / "bad.sdf", require_bonds=True)[1] == expected
        finally:
            rdBase.LogToCppStreams()  # RDKit's default, which also restores the default enabled levels
    assert capfd.readouterr().err == ""


def test_non_ascii_bytes_in_atom_lines_are_a_clean_error(tmp_path, capfd):
    # RDKit cuts V2000 columns by bytes: a multi-byte character (here a cut one, decoded as U+FFFD) would shift
    # them and RDKit would hand back an undecodable element symbol
    data = WATER_V2000.encode().replace(b" O   0", b"\xef\xbfO   0") + b"$$$$\n"
    (tmp_path / "bytes.sdf").write_bytes(data)
    capfd.readouterr()
    assert read_molecules(tmp_path / "bytes.sdf") == (
        [], [("bytes.sdf:1 (water)", "malformed atom line 1 (non-ASCII characters)")])
    assert capfd.readouterr().err == ""


def test_2d_flagged_records_are_refused_and_all_zero_ones_called_collapsed(tmp_path):
    def methane(title, z_of_h):
        atoms = [(0.0, 0.0, 0.0, "C")] + [(x, y, z_of_h, "H") for x, y in ((0.63, 0.63), (-0.63, -0.63),
                                                                            (-0.63, 0.63), (0.63, -0.63))]
        if title.startswith("zero"):
            atoms = [(0.0, 0.0, 0.0, s) for *_, s in atoms]
        return "\n".join([title, "  handmade        2D", "", "  5  0  0  0  0  0  0  0  0  0999 V2000"]
                         + [f"{x:10.4f}{y:10.4f}{z:10.4f} {s:<3s} 0  0  0  0  0  0  0  0  0  0  0  0"
                            for x, y, z, s in atoms] + ["M  END", "$$$$", ""])
    (tmp_path / "flat.sdf").write_text(methane("zero", 0.0) + methane("planar", 0.0) + methane("tilted", 0.5))
    mols, errors = read_molecules(tmp_path / "flat.sdf")
    assert [m.name for m in mols] == ["tilted"]  # a non-zero z makes a "2D" record 3D (RDKit's rule)
    assert errors == [
        ("flat.sdf:1 (zero)", "collapsed: all atoms at one point, no 3D coordinates (the record is flagged 2D)"),
        ("flat.sdf:2 (planar)", "2D coordinates only (the record is flagged 2D)")]


WATER_V2000 = """water
  handmade        3D

  3  2  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.1173 O   0  0  0  0  0  0  0  0  0  0  0  0
    0.0000    0.7572   -0.4692 H   0  0  0  0  0  0  0  0  0  0  0  0
    0.0000   -0.7572   -0.4692 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
M  END
"""


# -- empty, whitespace, CRLF, no final $$$$ ----------------------------------------------------------
@pytest.mark.parametrize("suffix", ALL_FORMATS)
def test_empty_and_whitespace_files_are_one_error_each(tmp_path, suffix):
    assert read_molecules(_put(tmp_path / f"e.{suffix}", b"")) == ([], [(f"e.{suffix}", "empty file (no records)")])
    assert read_molecules(_put(tmp_path / f"w.{suffix}", b" \n\r\n\t\n")) == (
        [], [(f"w.{suffix}", "no records (only whitespace)")])


@pytest.mark.parametrize("suffix", ALL_FORMATS)
@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_windows_and_old_mac_line_endings_read_like_unix(tmp_path, suffix, newline):
    text = _text(suffix[:3], THREE, tmp_path)
    expected, _ = read_molecules(_put(tmp_path / f"lf.{suffix}", text.encode()))
    mols, errors = read_molecules(_put(tmp_path / f"crlf.{suffix}", text.replace("\n", newline).encode()))
    assert errors == [] and [m.name for m in mols] == ["water", "ammonia", "methane"]
    for a, b in zip(mols, expected):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert (a.bonds is None and b.bonds is None) or np.array_equal(a.bonds, b.bonds)


@pytest.mark.parametrize("suffix", ["sdf", "sdf.gz"])
def test_last_mol_block_without_terminator_is_read(tmp_path, suffix):
    text = _text("sdf", THREE, tmp_path)
    assert text.endswith("$$$$\n")
    for tail in ("", "\n\n  \n"):  # unterminated, and unterminated followed by blank lines
        mols, errors = read_molecules(_put(tmp_path / f"open.{suffix}", (text[:-5] + tail).encode()))
        assert errors == [] and [m.name for m in mols] == ["water", "ammonia", "methane"]
    (tmp_path / "single.mol").write_text(WATER_V2000)  # a .mol file never has $$$$
    (m,), errors = read_molecules(tmp_path / "single.mol")
    assert errors == [] and m.name == "water" and m.bonds.tolist() == [[0, 1, 1], [0, 2, 1]]


def test_folder_reports_empty_and_cut_files_and_reads_the_rest(tmp_path):
    write_xyz(tmp_path / "a.xyz", THREE)
    (tmp_path / "b.sdf").write_bytes(b"")
    gz = gzip.compress(_text("sdf", THREE, tmp_path).encode())
    (tmp_path / "source.sdf").unlink()
    (tmp_path / "c.sdf.gz").write_bytes(gz[:len(gz) // 2])
    mols, errors = read_molecules(tmp_path)
    assert [m.name for m in mols][:3] == ["water", "ammonia", "methane"]
    assert [record for record, _ in errors] == ["b.sdf", "c.sdf.gz"]
    assert errors[1][1].startswith("file is truncated after record ")


def test_dative_bonds_to_a_metal_read_as_single_bonds(tmp_path):
    # what `molediff conformers --allow-unvalidated-elements` writes for a metal complex must be scorable with the
    # file's bonds; a dative bond between non-metals (ammonia borane above) stays unusable
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom

    mol = Chem.AddHs(Chem.MolFromSmiles("[NH3]->[Pt](<-[NH3])(Cl)Cl"))
    assert rdDistGeom.EmbedMolecule(mol, randomSeed=3) == 0
    path = tmp_path / "cisplatin.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(mol)
    notes = []
    mols, errors = read_molecules(path, require_bonds=True, notes=notes)
    assert errors == [] and len(mols) == 1
    pt = mols[0].atomic_numbers.tolist().index(78)
    to_pt = sorted(int(o) for i, j, o in mols[0].bonds.tolist() if pt in (i, j))
    assert to_pt == [1, 1, 1, 1]                                     # two dative N->Pt, two Pt-Cl
    assert [note for _, note in notes] == ["2 dative bonds read as single bonds (valence checks count them)"]
