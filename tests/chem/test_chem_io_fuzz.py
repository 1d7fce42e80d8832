"""Fuzzing the readers: a few hundred seeded corruptions of small valid SDF, XYZ, SDF.gz and XYZ.gz files.

``read_molecules`` must never raise for a file's contents, never print (RDKit included), and account for every
record: each one is a molecule or an error, numbered without gaps; for SDF the record count is also checked
against an independent split of the text at ``$$$$`` lines.
"""

import gzip
import random
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA

from molediff.chem import read_molecules, write_sdf, write_xyz
from molediff.chem.molecule import Molecule

READERS = DATA / "readers"
SEED = 1234
VARIANTS_PER_FORMAT = 150

MOLECULES = [
    Molecule([8, 1, 1], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]], name="water"),
    Molecule([7, 1, 1, 1], [[0.0, 0.0, 0.1130], [0.0, 0.9377, -0.2637], [0.8121, -0.4689, -0.2637],
                            [-0.8121, -0.4689, -0.2637]], name="ammonia"),
    Molecule([6, 8, 1, 1, 1, 1], [[-0.3711, -0.0022, 0.0094], [0.9129, -0.4394, -0.3964], [-0.4676, -0.1082, 1.0927],
                                  [-1.1280, -0.6170, -0.4834], [-0.5092, 1.0427, -0.2790], [1.5630, 0.1242, 0.0567]],
             name="methanol"),
]
INSERTS = [b"\n", b"\r\n", b"$$$$\n", b" ", b"-", b"9", b"0", b"\t", b"\xef\xbb\xbf", b"\x00", b"\xff", b"M  END\n",
           b"nan", b"*^", b"V3000", b"99999999999999999999999"]


def _bases(tmp_path: Path) -> dict[str, list[bytes]]:
    write_sdf(tmp_path / "base.sdf", MOLECULES)
    write_xyz(tmp_path / "base.xyz", MOLECULES)
    return {
        "sdf": [(tmp_path / "base.sdf").read_bytes(), (READERS / "unusual_bonds.sdf").read_bytes()],
        "xyz": [(tmp_path / "base.xyz").read_bytes(), (READERS / "qm9_raw_two_frames.xyz").read_bytes(),
                (READERS / "frame_count_mismatch.xyz").read_bytes()],
    }


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """1-3 random corruptions: truncation, byte flips, insertions, deletions, shuffled, dropped or repeated lines."""
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["truncate", "flip", "insert", "delete", "shuffle", "drop", "repeat"])
        b = bytearray(data)
        if op == "truncate":
            b = b[:rng.randrange(len(b) + 1)]
        elif op == "flip" and b:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] ^= rng.randrange(1, 256)
        elif op == "insert":
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(b) + 1)
                b[at:at] = rng.choice(INSERTS) if rng.random() < 0.7 else bytes([rng.randrange(256)])
        elif op == "delete":
            for _ in range(rng.randint(1, 3)):
                if b:
                    at = rng.randrange(len(b))
                    del b[at:at + rng.randint(1, 8)]
        else:
            lines = bytes(b).split(b"\n")
            if op == "shuffle":
                start = rng.randrange(len(lines))  # shuffle a window: whole-file shuffles only test the trivial case
                window = lines[start:start + rng.randint(2, 12)]
                rng.shuffle(window)
                lines[start:start + len(window)] = window
            elif op == "drop":
                for _ in range(rng.randint(1, 3)):
                    if lines:
                        del lines[rng.randrange(len(lines))]
            elif lines:
                k = rng.randrange(len(lines))
                lines.insert(k, lines[k])
            b = bytearray(b"\n".join(lines))
        data = bytes(b)
    return data


def _sdf_record_count(data: bytes) -> int:
    """Records in SDF bytes by the documented rule, independently of molediff: every ``$$$$`` line closes one, and
    non-blank text after the last one is one more (BOMs dropped, CR/CRLF read as LF)."""
    text = data.decode("utf-16", "replace") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else \
        data.decode("utf-8-sig", "replace")
    lines = [ln.lstrip("\ufeff") for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    count, tail = 0, False
    for ln in lines:
        if ln.strip() == "$$$$":
            count, tail = count + 1, False
        elif ln.strip():
            tail = True
    return count + tail


def _check(path: Path, mols, errors, plain: bytes | None, fmt: str) -> None:
    name = path.name
    numbered, file_level = [], []
    for record, reason in errors:
        assert isinstance(record, str) and isinstance(reason, str) and reason.strip(), (record, reason)
        assert "\n" not in reason and "\r" not in reason, reason
        m = re.fullmatch(re.escape(name) + r":(\d+)( \(.*\))?", record, flags=re.DOTALL)
        if m:
            numbered.append(int(m.group(1)))
        else:
            assert record == name, record
            file_level.append(reason)
    total = len(mols) + len(numbered)
    assert len(set(numbered)) == len(numbered), errors
    assert all(1 <= k <= total for k in numbered), (total, errors)  # numbered without gaps: nothing skipped silently
    assert len(file_level) <= 1, file_level
    for reason in file_level:
        assert reason.startswith(("cannot read file (", "empty file", "no records", "file is truncated after record",
                                  "file is corrupt after record")), reason
        cut = re.match(r"file is \w+ after record (\d+):", reason)
        if cut:
            assert int(cut.group(1)) == total, (reason, total)
    if plain is not None and not file_level:
        if fmt == "sdf":
            assert total == _sdf_record_count(plain), (total, errors)
    if plain is not None and plain.strip(b" \t\r\n\x0b\x0c\xef\xbb\xbf") and not file_level:
        assert total >= 1
    for m in mols:
        assert m.num_atoms >= 1 and np.all(np.isfinite(m.positions))
        assert np.all((m.atomic_numbers >= 1) & (m.atomic_numbers <= 118))
        if m.bonds is not None:
            assert np.all((m.bonds[:, :2] >= 0) & (m.bonds[:, :2] < m.num_atoms))
            assert np.all(m.bonds[:, 0] < m.bonds[:, 1])
            assert set(m.bonds[:, 2].tolist()) <= {1, 2, 3, 4}


@pytest.mark.parametrize("suffix", ["sdf", "xyz", "sdf.gz", "xyz.gz"])
def test_corrupted_inputs_never_raise_and_lose_no_record(tmp_path, suffix, capfd, caplog):
    fmt = suffix[:3]
    rng = random.Random(f"{SEED}-{suffix}")
    bases = _bases(tmp_path)[fmt]
    capfd.readouterr()
    seen_errors = seen_mols = 0
    for k in range(VARIANTS_PER_FORMAT):
        base = rng.choice(bases)
        path = tmp_path / f"v{k}.{suffix}"
        if suffix.endswith(".gz") and rng.random() < 0.4:
            plain = None  # corrupt the compressed stream itself: cut, flipped or deleted bytes
            gz = gzip.compress(base)
            path.write_bytes(_mutate(rng, gz) if rng.random() < 0.5 else gz[:rng.randrange(len(gz))])
        else:
            plain = _mutate(rng, base)
            path.write_bytes(gzip.compress(plain) if suffix.endswith(".gz") else plain)
        mols, errors = read_molecules(path)  # must not raise: problems of a file are errors, not exceptions
        _check(path, mols, errors, plain, fmt)
        seen_errors += bool(errors)
        seen_mols += len(mols)
        path.unlink()
    assert seen_errors > VARIANTS_PER_FORMAT // 4 and seen_mols > VARIANTS_PER_FORMAT // 2  # it bites, not kills
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing printed: RDKit's messages went into reasons


def _refuse_constant(constant: str):
    raise AssertionError(f"bare {constant} in JSON output")


def test_score_command_on_corrupted_files_never_shows_a_traceback(tmp_path, capsys):
    """The same corruptions through ``molediff score --physics --json``: exit 0 with a table (and every record
    scored or listed), or exit 1 with one line when nothing could be read; never a traceback."""
    import json

    from molediff.cli import main

    rng = random.Random(SEED + 1)
    bases = _bases(tmp_path)
    for k in range(60):
        suffix = rng.choice(["sdf", "xyz"])
        data = _mutate(rng, rng.choice(bases[suffix]))
        name = f"case_{k}.{suffix}" + (".gz" if k % 4 == 0 else "")
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        out = tmp_path / f"case_{k}.json"
        rc = main(["score", str(path), "--physics", "--json", str(out)])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and "Traceback" not in captured.out, name
        if rc == 0:
            summary = json.loads(out.read_text(), parse_constant=_refuse_constant)
            assert "molecules read" in captured.out, name
            assert isinstance(summary, dict)
        else:
            assert rc == 1, (name, rc)
            assert len(captured.err.strip().splitlines()) >= 1 and "error" in captured.err.splitlines()[-1], name
