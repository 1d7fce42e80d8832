"""Read and write molecules as SDF (MDL V2000/V3000 via RDKit) and XYZ (multi-frame), tolerating bad records.

``read_molecules`` never raises because of one bad record: it returns the molecules it could read and
a list of ``(record id, reason)`` pairs for the rest, where the record id is ``file:N`` (N counts
records from 1) followed by the record's title when it has one. Reasons are one line, e.g.
``unknown element 'Xx'``, ``non-finite coordinates``, ``empty molecule (no atoms)``,
``truncated record: 12 atoms declared, 7 found``, ``RDKit could not parse the record: <RDKit's message>``.
Problems of a whole file are reported under the bare file name: ``cannot read file (...)``,
``empty file (no records)``, ``file is truncated after record N: ...`` (a cut-off ``.gz``; the records
before the cut are kept).

Input handling shared by every format: files ending in ``.gz`` are decompressed on the fly; a UTF-8
(or UTF-16) byte-order mark is dropped; CRLF and CR line endings read like LF; RDKit's log messages never
reach stderr (they end up in the reason or note of their record).

SDF: bonds are kekulised (orders 1/2/3); an aromatic bond that cannot be kekulised is kept as 4. A record
whose file bonds molediff cannot represent (dative, hydrogen, query or zero-order bonds), or that RDKit
refuses while its atom block is sound, is still read with ``bonds=None`` (bonds are then perceived from
3D) and a note, unless ``require_bonds`` asks for file bonds.

XYZ: plain multi-frame files, and raw QM9 files (``dsgdb9nsd_*.xyz``: a 5th column of Mulliken charges,
Mathematica exponents such as ``1.2*^-6``, and three trailing lines of frequencies, SMILES and InChI).
Raw QM9 frames are named ``gdb <index>``. A frame whose atom count disagrees with its atom lines is reported
with its line number and reading resumes at the next frame.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import re
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .elements import METALS, SYMBOLS, atomic_number
from .molecule import Molecule

log = logging.getLogger(__name__)

SDF_SUFFIXES = (".sdf", ".sd", ".mol")
XYZ_SUFFIXES = (".xyz",)


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(SDF_SUFFIXES):
        return "sdf"
    if name.endswith(XYZ_SUFFIXES):
        return "xyz"
    return None


def molecule_files(path: str | os.PathLike) -> list[Path]:
    """The SDF/XYZ files named by ``path`` (a file, or a folder searched recursively, sorted by name)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and _kind(f))
        if not files:
            raise ValueError(f"no .sdf/.sd/.mol/.xyz files in folder {p}")
        return files
    if _kind(p) is None:
        raise ValueError(f"{p}: unknown file type; expected .sdf, .sd, .mol or .xyz (optionally .gz)")
    return [p]


class _Record(NamedTuple):
    """One record as a reader saw it: ``result`` is a Molecule or the reason it was skipped; ``note`` says how a
    molecule was read when that differs from the file (e.g. file bonds ignored); ``open_end`` marks a record that
    was still incomplete when the input ended (it may only be the victim of a cut-off file)."""

    id: str
    result: Molecule | str
    note: str | None = None
    open_end: bool = False


def read_molecules(path: str | os.PathLike, *, require_bonds: bool = False,
                   notes: list[tuple[str, str]] | None = None) -> tuple[list[Molecule], list[tuple[str, str]]]:
    """All molecules in an SDF/XYZ file (optionally ``.gz``) or a folder of them, plus ``(record id, reason)`` for
    each record that could not be read and for each file that could not be read (completely).

    Every record of a file ends up either in the molecules or in the errors; a cut-off ``.gz`` keeps the records
    before the cut and adds one error ``file is truncated after record N: ...`` under the file name.

    ``require_bonds``: an SDF record whose file bonds cannot be used (dative bond, query bond, a bond block RDKit
    refuses) is an error instead of a molecule with ``bonds=None``. ``notes``, when given, receives
    ``(record id, note)`` for molecules that were read with a caveat (these are also logged as warnings).

    Raises FileNotFoundError / ValueError only when ``path`` itself is unusable (missing, unknown file type,
    folder without molecule files); problems inside files never raise.
    """
    molecules: list[Molecule] = []
    errors: list[tuple[str, str]] = []
    for f in molecule_files(path):
        try:
            text, stream_problem = read_text(f)
        except ValueError as e:
            errors.append((f.name, str(e)))
            continue
        if not text.strip() and stream_problem is None:
            errors.append((f.name, "empty file (no records)" if not text else "no records (only whitespace)"))
            continue
        reader = _sdf_records if _kind(f) == "sdf" else _xyz_records
        records = list(reader(text_lines(text, cut=stream_problem is not None), f.name, require_bonds))
        if stream_problem is not None and records and records[-1].open_end:
            records.pop()  # the record the stream was cut in: covered by the truncation error below
        for rec in records:
            if isinstance(rec.result, Molecule):
                molecules.append(rec.result)
                if rec.note:
                    log.warning("%s: %s", rec.id, rec.note)
                    if notes is not None:
                        notes.append((rec.id, rec.note))
            else:
                errors.append((rec.id, rec.result))
        if stream_problem is not None:
            kind, detail = stream_problem
            errors.append((f.name, f"file is {kind} after record {len(records)}: {detail}; the rest is lost"))
    return molecules, errors


# -- raw input ----------------------------------------------------------------------------------------
def read_text(path: Path) -> tuple[str, tuple[str, str] | None]:
    """(decoded text, stream problem) of a file; the problem is ``(kind, detail)`` when a ``.gz`` stream breaks
    off part-way (its text is then what was decompressed before the break). ValueError (one line) when nothing
    can be read at all."""
    problem = None
    try:
        if path.name.lower().endswith(".gz"):
            data, problem = _gunzip(path)
        else:
            data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read file ({e.strerror or e})") from None
    if problem is not None and not data:
        raise ValueError(f"cannot read file ({problem[1]})")
    return _decode(data), problem


def _gunzip(path: Path) -> tuple[bytes, tuple[str, str] | None]:
    chunks: list[bytes] = []
    problem = None
    with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as f:
        try:
            # read1, not read: a buffered read() drops the partial chunk when the stream breaks off inside it
            while chunk := f.read1(1 << 16):
                chunks.append(chunk)
        except EOFError:
            problem = ("truncated", "the gzip stream ends before its end marker")
        except (gzip.BadGzipFile, zlib.error) as e:
            problem = ("corrupt", f"bad gzip data ({e})")
        except OSError as e:
            if not chunks:
                raise
            problem = ("unreadable", f"read error ({e.strerror or e})")
    return b"".join(chunks), problem


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with BOM ("Unicode" in Windows editors)
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")  # -sig: a UTF-8 BOM must not become part of line 1


def text_lines(text: str, cut: bool = False) -> list[str]:
    """Lines without line terminators (LF, CRLF or CR). ``cut``: the text may end inside a line, which is dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\ufeff" in text:  # files concatenated with `cat` carry a BOM at the start of each part
        text = re.sub("^\ufeff+", "", text, flags=re.MULTILINE)
    lines = text.split("\n")
    if cut or lines[-1] == "":
        lines.pop()
    return lines


def _f32(x: np.ndarray) -> np.ndarray:
    """float32 copy; values beyond float32's range become inf (then reported as non-finite), without a warning."""
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float64).astype(np.float32)


def _check(m: Molecule) -> str | None:
    if m.num_atoms == 0:
        return "empty molecule (no atoms)"
    if not np.all(np.isfinite(m.positions)):
        return "non-finite coordinates (NaN or inf)"
    return None


_ODD_EXPONENT = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:\*\^|[dD])([+-]?\d+)")


def _float(token: str) -> float:
    """A coordinate: plain/scientific notation, Mathematica ``1.2*^-6`` (raw QM9) or Fortran ``1.2D-06``; also
    nan/inf (reported later as non-finite). ValueError otherwise."""
    if "_" not in token:  # Python's float would read "1_0" as 10
        with contextlib.suppress(ValueError):
            return float(token)
    m = _ODD_EXPONENT.fullmatch(token)
    if m:
        return float(f"{m.group(1)}e{m.group(2)}")
    raise ValueError(f"not a number: {token!r}")


# -- RDKit messages -----------------------------------------------------------------------------------
_CAPTURE_LOCK = threading.RLock()
_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ?", re.MULTILINE)


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


@contextlib.contextmanager
def rdkit_errors():
    """Collect RDKit's log messages (a list of one-line str, filled when the block exits) instead of printing them.

    RDKit logs to C++ ``std::cerr`` (file descriptor 2) by default, to ``sys.stderr`` after ``rdBase.WrapLogs`` /
    ``LogToPythonStderr``, or to the ``rdkit`` Python logger after ``LogToPythonLogger``. All three are redirected
    for the duration of the block without changing RDKit's own log configuration (``rdBase.CaptureErrorLog`` misses
    warnings and fails to decode messages that quote a cut UTF-8 character; ``LogToPythonLogger`` would re-enable
    logs a user disabled). Not safe against other threads writing to stderr at the same moment: their output
    would be captured too.
    """
    from rdkit import rdBase

    messages: list[str] = []
    raw: list[str] = []
    with _CAPTURE_LOCK, contextlib.ExitStack() as stack:
        if sys.stderr is not None:
            sys.stderr.flush()  # what Python already wrote belongs to the real stderr, not to the capture
        status = rdBase.LogStatus()
        for level in ("rdApp.warning", "rdApp.error"):  # reasons need RDKit's words even if the user muted them
            if f"{level}:disabled" in status:
                rdBase.EnableLog(level)
                stack.callback(rdBase.DisableLog, level)
        logger = logging.getLogger("rdkit")
        saved = logger.handlers[:], logger.propagate
        logger.handlers, logger.propagate = [_ListHandler(raw)], False
        stack.callback(_restore_logger, logger, saved)
        py_stderr = io.StringIO()
        stack.enter_context(contextlib.redirect_stderr(py_stderr))
        fd_text = stack.enter_context(_redirect_fd2())
        try:
            yield messages
        finally:
            stack.close()
            raw.append(py_stderr.getvalue())
            raw.extend(fd_text)
            for text in raw:
                for msg in _split_messages(text):
                    if msg not in messages:  # a tee (WrapLogs) delivers the same message twice
                        messages.append(msg)


def _restore_logger(logger: logging.Logger, saved) -> None:
    logger.handlers, logger.propagate = saved


_FD_SINK: dict[str, object] = {"pid": None, "fd": None, "busy": False}


def _new_sink() -> int:
    """A descriptor of a new anonymous temporary file."""
    with tempfile.TemporaryFile() as tmp:
        return os.dup(tmp.fileno())


@contextlib.contextmanager
def _redirect_fd2():
    """File descriptor 2 into a temporary file for the block; yields a list that gets the captured text (empty if
    fd 2 cannot be redirected). One sink file per process is reused: creating one costs more than parsing a record."""
    # a nested capture (busy sink) gets a file of its own; after a fork the inherited sink belongs to the parent
    reuse = not _FD_SINK["busy"]
    try:
        if reuse and _FD_SINK["pid"] != os.getpid():
            if _FD_SINK["fd"] is not None:
                os.close(_FD_SINK["fd"])  # this process's copy of the parent's descriptor
            _FD_SINK.update(pid=None, fd=None)
            _FD_SINK.update(fd=_new_sink(), pid=os.getpid())
        sink = _FD_SINK["fd"] if reuse else _new_sink()
    except OSError:
        yield []
        return
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (a daemon): nothing to capture from it
        if not reuse:
            os.close(sink)
        yield []
        return
    captured: list[str] = []
    if reuse:
        _FD_SINK["busy"] = True
    try:
        os.ftruncate(sink, 0)
        os.lseek(sink, 0, os.SEEK_SET)
        os.dup2(sink, 2)
        yield captured
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        size = os.lseek(sink, 0, os.SEEK_END)
        os.lseek(sink, 0, os.SEEK_SET)
        captured.append(os.read(sink, size).decode("utf-8", errors="replace") if size else "")
        if reuse:
            _FD_SINK["busy"] = False
        else:
            os.close(sink)


_STACK_FRAME = re.compile(r"\d+# ")


def _split_messages(text: str) -> list[str]:
    """One-line messages from RDKit log text: timestamps dropped, invariant-violation reports condensed to their
    kind, expression and failed condition (no source paths, no stack trace)."""
    out = []
    for chunk in _TIMESTAMP.split(text):
        keep = []
        for line in chunk.splitlines():
            line = line.strip()
            if line.startswith("Stacktrace:"):
                break
            # a frame of that stack trace arriving as its own log record (RDKit logging through Python's logger,
            # as after rdBase.LogToPythonLogger(), which e.g. importing posebusters calls)
            if _STACK_FRAME.match(line):
                continue
            if line and line.strip("*-") and not line.startswith("Violation occurred on line"):
                keep.append(line)
        if keep:
            out.append(": ".join(keep))
    return out


def _summary(messages: list[str], limit: int = 300) -> str:
    text = "; ".join(messages)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- SDF ----------------------------------------------------------------------------------------------
def split_sdf(lines: list[str]) -> Iterator[tuple[list[str], bool]]:
    """(lines of one record, whether a ``$$$$`` line closed it); blank stretches between records are no record."""
    block: list[str] = []
    for line in lines:
        if line.strip() == "$$$$":
            yield block, True
            block = []
        else:
            block.append(line)
    if any(line.strip() for line in block):
        yield block, False  # a last record without $$$$ still counts


_PSEUDO_ATOMS = ("R", "R#", "*", "A", "Q", "L", "LP", "AH", "QH", "X", "XH", "M", "MH")


def _known(sym: str) -> bool:
    try:
        atomic_number(sym)
        return True
    except ValueError:
        return False


def _ctab_atoms(lines: list[str]) -> tuple[list[str], np.ndarray] | str:
    """Element symbols and [n, 3] float64 coordinates of a V2000 or V3000 mol block (lines from the title on),
    or the reason the atom block is unusable (malformed counts line, truncated block, bad coordinates)."""
    if len(lines) < 4:
        return "truncated record: no counts line"
    if "V3000" in lines[3]:
        return _v3000_atoms(lines)
    counts = lines[3]
    if not counts.isascii():
        return f"malformed counts line {counts.strip()[:40]!r} (non-ASCII characters)"
    try:
        n_atoms = int(counts[0:3])
        int(counts[3:6])
    except ValueError:
        return f"malformed counts line {counts.strip()[:40]!r}"
    atom_lines = lines[4:4 + n_atoms]
    if len(atom_lines) < n_atoms:
        return f"truncated record: {n_atoms} atoms declared, {len(atom_lines)} found"
    symbols, xyz = [], np.zeros((n_atoms, 3))
    for k, ln in enumerate(atom_lines):
        if not ln.isascii():  # RDKit cuts fixed columns by bytes: a multi-byte character shifts them
            return f"malformed atom line {k + 1} (non-ASCII characters)"
        try:
            xyz[k] = _v2000_coordinates(ln)
        except ValueError:
            return f"malformed coordinates on atom line {k + 1}"
        symbols.append(ln[31:34].strip())
    if len(lines) > 4 + n_atoms and _is_v2000_atom_line(lines[4 + n_atoms]):
        # a count too low would make RDKit read an atom as a bond; reading the atoms alone would lose one silently
        return f"atom count mismatch: {n_atoms} atoms declared, but line {5 + n_atoms} of the record is one more atom"
    return symbols, xyz


def _v2000_coordinates(line: str) -> list[float]:
    """x, y, z of a V2000 atom line (fixed columns); ValueError if they are not numbers."""
    return [_float(line[0:10].strip()), _float(line[10:20].strip()), _float(line[20:30].strip())]


def _is_v2000_atom_line(line: str) -> bool:
    try:
        _v2000_coordinates(line)
    except ValueError:
        return False
    return bool(line[31:34].strip())


def _v3000_atoms(lines: list[str]) -> tuple[list[str], np.ndarray] | str:
    """``_ctab_atoms`` for a V3000 block: the atom lines between BEGIN ATOM and END ATOM, checked against COUNTS."""
    body: list[str] = []
    pending = ""
    for ln in lines[4:]:
        if ln.startswith("M  END"):
            break
        if not ln.startswith("M  V30 "):
            continue
        text = pending + ln[7:].rstrip()
        if text.endswith("-"):  # V3000 continues a long line on the next one
            pending = text[:-1]
            continue
        pending = ""
        body.append(text.strip())
    upper = [b.upper() for b in body]
    counts = next((b for b, u in zip(body, upper) if u.startswith("COUNTS")), None)
    if counts is None:
        return "truncated record: no V3000 COUNTS line"
    try:
        n_atoms = int(counts.split()[1])
    except (IndexError, ValueError):
        return f"malformed counts line {counts[:40]!r}"
    if "BEGIN ATOM" not in upper:
        return f"truncated record: {n_atoms} atoms declared, 0 found"
    start = upper.index("BEGIN ATOM") + 1
    end = upper.index("END ATOM", start) if "END ATOM" in upper[start:] else len(body)
    atom_lines = body[start:end]
    if len(atom_lines) != n_atoms:
        problem = "truncated record" if len(atom_lines) < n_atoms else "atom count mismatch"
        return f"{problem}: {n_atoms} atoms declared, {len(atom_lines)} found"
    symbols, xyz = [], np.zeros((n_atoms, 3))
    for k, ln in enumerate(atom_lines):
        parts = ln.split()  # index, type, x, y, z, atom-atom map, KEY=VALUE...
        if not ln.isascii():
            return f"malformed atom line {k + 1} (non-ASCII characters)"
        if len(parts) < 5:
            return f"malformed atom line {k + 1}: {ln[:40]!r}"
        try:
            xyz[k] = [_float(v) for v in parts[2:5]]
        except ValueError:
            return f"malformed coordinates on atom line {k + 1}"
        symbols.append(parts[1])
    return symbols, xyz


def precheck_molblock(lines: list[str]) -> str | None:
    """Reasons RDKit would only report vaguely: truncated blocks, non-numeric coordinates, unknown elements."""
    atoms = _ctab_atoms(lines)
    if isinstance(atoms, str):
        return atoms
    symbols, xyz = atoms
    if not np.all(np.isfinite(xyz)):
        return "non-finite coordinates (NaN or inf)"
    for sym in symbols:
        # V3000 atom lists ([C,N]) and quoted types are RDKit's to judge
        if sym and sym.upper() not in _PSEUDO_ATOMS and not sym.startswith(("[", '"', "NOT")) and not _known(sym):
            return f"unknown element {sym!r}"
    if "V3000" not in lines[3]:
        n_atoms, n_bonds = len(symbols), int(lines[3][3:6])
        if len(lines) < 4 + n_atoms + n_bonds:
            return f"truncated record: {n_bonds} bonds declared, {max(0, len(lines) - 4 - n_atoms)} found"
        lines = lines[4 + n_atoms:]
    if not any(ln.startswith("M  END") for ln in lines):
        return "truncated record: no 'M  END' line"
    return None


def _sdf_records(lines: list[str], filename: str, require_bonds: bool = False) -> Iterator[_Record]:
    for k, (block, terminated) in enumerate(split_sdf(lines), start=1):
        title = block[0].strip() if block else ""
        record = f"{filename}:{k}" + (f" ({title})" if title else "")
        reason = precheck_molblock(block)
        if reason:
            yield _Record(record, reason, open_end=not terminated)
            continue
        result, note = _read_molblock(block, title, require_bonds)
        yield _Record(record, result, note, open_end=not terminated and isinstance(result, str))


def _mol_from_block(text: str, strict: bool):
    """RDKit molecule (unsanitised, hydrogens kept) or None, and RDKit's messages (list of str)."""
    from rdkit import Chem

    failure = []
    with rdkit_errors() as messages:
        try:
            mol = Chem.MolFromMolBlock(text, sanitize=False, removeHs=False, strictParsing=strict)
        except Exception as e:  # the wrapper returns None on parse errors; this guards against anything else
            mol = None
            failure.append(f"{type(e).__name__}: {str(e).strip()}".splitlines()[0])
    return mol, messages + failure


def _read_molblock(block: list[str], title: str, require_bonds: bool) -> tuple[Molecule | str, str | None]:
    """A Molecule and a note (or None), or the reason the record is unusable."""
    text = "\n".join(block) + "\n"
    mol, messages = _mol_from_block(text, strict=True)
    note = None
    if mol is None:
        why = _summary(messages) or "no message from RDKit"
        mol, _ = _mol_from_block(text, strict=False)
        if mol is not None:
            note = f"read with RDKit's lenient parser; the strict one refused it ({why})"
        elif require_bonds:
            return f"RDKit could not parse the record: {why}", None
        else:
            m = _atoms_only(block, title)
            if isinstance(m, str):
                return f"RDKit could not parse the record: {why}", None
            return m, f"RDKit could not parse the record ({why}); read atoms and coordinates only, " \
                      f"bonds will be perceived from 3D"
    notes: list[str] = [note] if note else []
    result = _from_rdkit(mol, title, require_bonds=require_bonds, notes=notes)
    return result, ("; ".join(notes) or None) if isinstance(result, Molecule) else None


def _atoms_only(block: list[str], title: str) -> Molecule | str:
    """A Molecule (bonds unknown, charges unknown) from the atom block alone, or the reason that fails too."""
    atoms = _ctab_atoms(block)
    if isinstance(atoms, str):
        return atoms
    symbols, xyz = atoms
    z = np.zeros(len(symbols), dtype=np.int64)
    for k, sym in enumerate(symbols):
        try:
            z[k] = atomic_number(sym)
        except ValueError:
            return f"unknown element {sym!r}"
    reason = _not_3d(xyz, flagged_3d=block[1][20:22].upper() == "3D")  # RDKit's rule for the 3D flag
    if reason:
        return reason
    m = Molecule(atomic_numbers=z, positions=_f32(xyz), name=title)
    return _check(m) or m


def _not_3d(pos: np.ndarray, flagged_3d: bool) -> str | None:
    """Why coordinates [n, 3] of a record flagged 2D (header not "3D", every z zero) are no 3D structure, or None.
    Up to 3 atoms always lie in a plane, so those pass."""
    if flagged_3d or len(pos) <= 3 or np.any(pos[:, 2] != 0):
        return None
    if np.all(pos == pos[0]):  # said first: "2D" would hide that there are no coordinates at all
        return "collapsed: all atoms at one point, no 3D coordinates (the record is flagged 2D)"
    return "2D coordinates only (the record is flagged 2D)"


def _from_rdkit(mol, name: str, require_bonds: bool = False, notes: list[str] | None = None) -> Molecule | str:
    """A Molecule from an RDKit molecule with a conformer, or a reason string.

    Bonds other than single/double/triple/aromatic (dative, hydrogen, query, zero-order) make the record an error
    when ``require_bonds``; otherwise its bonds become unknown (None) and ``notes`` (if given) gets a line why.
    """
    from rdkit import Chem

    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    if len(z) == 0:
        return "empty molecule (no atoms)"
    if np.any(z == 0):
        try:
            symbol = mol.GetAtomWithIdx(int(np.argmax(z == 0))).GetSymbol()
        except UnicodeDecodeError:  # RDKit hands out bytes of the file as they are
            symbol = "?"
        return f"unknown element {symbol!r}"
    if mol.GetNumConformers() == 0:
        return "no coordinates"
    conf = mol.GetConformer()
    pos = np.asarray(conf.GetPositions(), dtype=np.float64)
    reason = _not_3d(pos, flagged_3d=conf.Is3D())
    if reason:
        return reason
    kek = mol
    if any(b.GetBondType() == Chem.BondType.AROMATIC for b in mol.GetBonds()):  # the common case has none: skip
        kek = Chem.Mol(mol)
        with contextlib.suppress(Exception), rdkit_errors():
            Chem.Kekulize(kek, clearAromaticFlags=True)
    orders = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3, Chem.BondType.AROMATIC: 4}
    bonds: list[tuple[int, int, int]] | None = []
    dative = 0
    for b in kek.GetBonds():
        o = orders.get(b.GetBondType())
        if b.GetBondType() == Chem.BondType.DATIVE and not b.HasQuery() and \
                (b.GetBeginAtom().GetAtomicNum() in METALS or b.GetEndAtom().GetAtomicNum() in METALS):
            # a ligand's bond to a metal (molediff conformers --allow-unvalidated-elements writes them): kept as a
            # single bond, so the file reads, and valence-based checks say what they make of the complex
            o, dative = 1, dative + 1
        if o is None or b.HasQuery():
            mdl = f" (MDL type {b.GetIntProp('_MolFileBondType')})" if b.HasProp("_MolFileBondType") else ""
            why = f"unsupported bond type {b.GetBondType()!s}{mdl} between atoms {b.GetBeginAtomIdx() + 1} and " \
                  f"{b.GetEndAtomIdx() + 1}"
            if require_bonds:
                return why
            if notes is not None:
                notes.append(f"file bonds not used: {why}; bonds will be perceived from 3D")
            bonds = None
            break
        i, j = sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
        bonds.append((i, j, o))
    if dative and bonds is not None and notes is not None:
        notes.append(f"{dative} dative bond{'s' if dative > 1 else ''} read as single bond{'s' if dative > 1 else ''} "
                     f"(valence checks count {'them' if dative > 1 else 'it'})")
    charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.int64)
    m = Molecule(atomic_numbers=z, positions=_f32(pos), name=name,
                 bonds=None if bonds is None else np.array(bonds, dtype=np.int64).reshape(-1, 3),
                 formal_charges=charges)
    return _check(m) or m


# -- XYZ ----------------------------------------------------------------------------------------------
_QM9_TITLE = re.compile(r"gdb\s+\d+(\s|$)")  # raw QM9: "gdb <index>\t<15 properties>"


def _atom_count(line: str) -> int | None:
    """The atom count if ``line`` is an XYZ count line (a single non-negative integer), else None."""
    parts = line.split()
    if len(parts) == 1 and parts[0].isascii() and parts[0].isdigit():
        return int(parts[0])
    return None


def _looks_like_atom(line: str) -> bool:
    """Whether ``line`` reads as an XYZ atom line (element symbol or number, then three numbers)."""
    parts = line.split()
    if len(parts) < 4:
        return False
    sym = parts[0]
    if not (_known(sym) or (sym.isascii() and sym.isdigit() and 1 <= int(sym) < len(SYMBOLS))):
        return False
    try:
        [_float(v) for v in parts[1:4]]
    except ValueError:
        return False
    return True


def _xyz_records(lines: list[str], filename: str, require_bonds: bool = False) -> Iterator[_Record]:
    """Frames of a multi-frame XYZ file (``require_bonds`` is unused: XYZ has no bonds)."""
    pos = 0
    k = 0
    while pos < len(lines):
        if not lines[pos].strip():
            pos += 1
            continue
        k += 1
        record = f"{filename}:{k}"
        start = pos
        n = _atom_count(lines[pos])
        if n is None:
            yield _Record(record, f"malformed XYZ header {lines[pos].strip()[:40]!r} on line {pos + 1} "
                                  f"(expected an atom count)")
            pos = _next_header(lines, pos + 1)
            continue
        if pos + 1 >= len(lines):
            yield _Record(record, "empty molecule (no atoms)" if n == 0 else
                          f"truncated record: {n} atoms declared, 0 found", open_end=n > 0)
            break
        title = lines[pos + 1].strip()
        qm9 = _QM9_TITLE.match(title) is not None
        if qm9:  # the "title" of raw QM9 is its 15 properties: the name is "gdb <index>"
            title = " ".join(title.split()[:2])
        if title:
            record += f" ({title[:60]})"
        body_start = pos + 2
        end = body_start
        # a count line or blank line inside the atom block means the count is too high and another frame starts
        while end < min(body_start + n, len(lines)) and lines[end].strip() and _atom_count(lines[end]) is None:
            end += 1
        body = lines[body_start:end]
        if len(body) < n:
            if end >= len(lines):
                yield _Record(record, f"truncated record: {n} atoms declared, {len(body)} found", open_end=True)
                break
            yield _Record(record, f"truncated record: {n} atoms declared, {len(body)} found before line {end + 1} "
                                  f"(frame starts on line {start + 1})")
            pos = end
            continue
        pos = end
        if pos < len(lines) and _looks_like_atom(lines[pos]):
            yield _Record(record, f"atom count mismatch: {n} atoms declared, but line {pos + 1} is one more atom "
                                  f"(frame starts on line {start + 1})")
            pos = _next_header(lines, pos)
            continue
        if qm9:  # raw QM9: frequencies, SMILES and InChI lines follow the atoms
            for _ in range(3):
                if pos < len(lines) and lines[pos].strip() and _atom_count(lines[pos]) is None:
                    pos += 1
        if n == 0:
            yield _Record(record, "empty molecule (no atoms)")
            continue
        yield _Record(record, _parse_xyz_atoms(body, title))


def _next_header(lines: list[str], start: int) -> int:
    for i in range(start, len(lines)):
        if _atom_count(lines[i]) is not None:
            return i
    return len(lines)


def _parse_xyz_atoms(body: list[str], title: str) -> Molecule | str:
    z = np.zeros(len(body), dtype=np.int64)
    x = np.zeros((len(body), 3), dtype=np.float64)
    for i, line in enumerate(body):
        parts = line.split()  # symbol, x, y, z and possibly more columns (raw QM9: Mulliken charge), ignored
        if len(parts) < 4:
            return f"malformed atom line {i + 1}: {line.strip()[:40]!r}"
        sym = parts[0]
        try:
            zi = int(sym) if sym.isascii() and sym.isdigit() else atomic_number(sym)
        except ValueError:
            zi = 0
        if not 1 <= zi < len(SYMBOLS):  # checked before storing: a long digit string would overflow int64
            return f"unknown element {sym!r} on atom line {i + 1}"
        z[i] = zi
        try:
            x[i] = [_float(v) for v in parts[1:4]]
        except ValueError:
            return f"malformed coordinates on atom line {i + 1}"
    m = Molecule(atomic_numbers=z, positions=_f32(x), name=title)
    return _check(m) or m


# -- writers ------------------------------------------------------------------------------------------
def _writable(m: Molecule, k: int) -> None:
    label = m.name or f"molecule {k}"
    if m.num_atoms == 0:
        raise ValueError(f"cannot write {label}: no atoms")
    if not np.all(np.isfinite(m.positions)):
        raise ValueError(f"cannot write {label}: non-finite coordinates")
    z = m.atomic_numbers
    if np.any((z < 1) | (z >= len(SYMBOLS))):
        raise ValueError(f"cannot write {label}: invalid atomic number {int(z[(z < 1) | (z >= len(SYMBOLS))][0])}")


def molblock(m: Molecule) -> str:
    """The MDL V2000 block of a molecule; bonds are perceived from 3D (EDM's table) when absent."""
    from rdkit import Chem

    from .bonds import to_rdkit

    mol = to_rdkit(m.atomic_numbers, m.positions, bonds=m.bonds, formal_charges=m.formal_charges)
    mol.UpdatePropertyCache(strict=False)
    mol.SetProp("_Name", (m.name or "").replace("\n", " "))
    with rdkit_errors():
        return Chem.MolToMolBlock(mol, kekulize=False, includeStereo=False)


def write_sdf(path: str | os.PathLike, molecules: Sequence[Molecule]) -> None:
    """Write molecules to one SDF file atomically (bonds perceived from 3D where a molecule has none)."""
    from ..utils import atomic_write

    blocks = []
    for k, m in enumerate(molecules):
        _writable(m, k)
        block = molblock(m)
        if m.smiles:
            block += f">  <SMILES>\n{m.smiles}\n\n"
        blocks.append(block + "$$$$\n")
    with atomic_write(path) as f:
        f.write("".join(blocks))


def write_xyz(path: str | os.PathLike, molecules: Sequence[Molecule]) -> None:
    """Write molecules to one multi-frame XYZ file atomically (title line = molecule name)."""
    from ..utils import atomic_write

    out = []
    for k, m in enumerate(molecules):
        _writable(m, k)
        out.append(f"{m.num_atoms}\n{(m.name or '').replace(chr(10), ' ')}\n")
        out.extend(f"{SYMBOLS[int(z)]:<2s} {p[0]:14.8f} {p[1]:14.8f} {p[2]:14.8f}\n"
                   for z, p in zip(m.atomic_numbers, m.positions.astype(np.float64)))
    with atomic_write(path) as f:
        f.write("".join(out))
