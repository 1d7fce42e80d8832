"""Inputs and outputs of ``molediff conformers``: SMILES strings, ``.smi`` files and SDF files (optionally ``.gz``)
read into named RDKit molecules, with a one-line reason for each record that cannot be used; SD records written with
their energies."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from .forcefield import ENERGY_KIND_PROP, ENERGY_PROPS

SMILES_SUFFIXES = (".smi", ".smiles", ".smi.gz", ".smiles.gz")
SDF_SUFFIXES = (".sdf", ".sd", ".mol", ".sdf.gz", ".sd.gz", ".mol.gz")
SCORE_PROP = "model_score"
_REASON_LIMIT = 200  # characters of RDKit's reason in a skipped input's one-line message


def parse_smiles(smiles: str):
    """A sanitised ``rdkit.Chem.Mol`` from a SMILES string (text after whitespace is ignored).

    Raises ValueError ``could not parse SMILES '...': <RDKit's reason>`` for a string RDKit refuses (syntax,
    valence, kekulisation) and ``empty molecule (no atoms)`` for an empty string.
    """
    from rdkit import Chem

    from ..chem.rdkit_log import rdkit_errors, rdkit_reason

    text = smiles.strip()
    if not text:
        raise ValueError("empty molecule (no atoms): the SMILES is empty")
    with rdkit_errors() as messages:
        mol = Chem.MolFromSmiles(text.split()[0])
    if mol is None:
        reason = rdkit_reason(messages, echo=text.split()[0], limit=_REASON_LIMIT)
        raise ValueError(f"could not parse SMILES {text.split()[0]!r}" + (f": {reason}" if reason else ""))
    return mol


class InputMolecule(NamedTuple):
    """One input record: its name, the parsed molecule (None if unusable) and the reason it is unusable."""

    name: str
    mol: object | None
    error: str | None = None


def input_kind(source: str) -> str:
    """``"smi"``, ``"sdf"`` or ``"smiles"`` (a SMILES string itself) for a command-line INPUT.

    A path that exists is a file and needs a known suffix; a string that ends in a file suffix but names no file
    is a missing file. Raises FileNotFoundError / ValueError for those.
    """
    lower = source.lower()
    is_file = os.path.isfile(source)
    if lower.endswith(SMILES_SUFFIXES):
        kind = "smi"
    elif lower.endswith(SDF_SUFFIXES):
        kind = "sdf"
    elif is_file or os.path.isdir(source):
        raise ValueError(f"{source}: unknown input type; give a SMILES string, a .smi/.smiles file or a "
                         f".sdf/.sd/.mol file (optionally .gz)")
    else:
        return "smiles"
    if not is_file:
        raise FileNotFoundError(f"input file {source} does not exist")
    return kind


class _Lines:
    """The lines of a text file, read lazily as molediff's readers decode them (``.gz``, byte-order marks, LF, CRLF
    and CR line endings; ``molediff.chem.records``). The file is opened when this is built (ValueError naming it when it
    cannot be); iterating yields each line once, without its terminator. A ``.gz`` stream that breaks off part-way
    ends the lines there (the cut line is dropped) and sets ``problem`` to a one-line reason."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.problem: str | None = None
        try:
            binary = gzip.GzipFile(self.path, "rb") if self.path.name.lower().endswith(".gz") \
                else open(self.path, "rb")
        except OSError as e:
            raise ValueError(f"{path}: cannot read file ({e.strerror or e})") from None
        try:
            head = binary.peek(2)[:2]
        except (OSError, EOFError, zlib.error) as e:
            binary.close()
            raise ValueError(f"{path}: cannot read file ({e.strerror if isinstance(e, OSError) and e.strerror else e})"
                             ) from None
        # UTF-16 with a BOM ("Unicode" in Windows editors); else UTF-8, whose BOM must not become part of line 1
        encoding = "utf-16" if head in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
        self._text = io.TextIOWrapper(binary, encoding=encoding, errors="replace", newline=None)

    def __iter__(self) -> Iterator[str]:
        with self._text:
            while True:
                try:
                    line = self._text.readline()
                except EOFError:
                    self.problem = "the gzip stream ends before its end marker"
                    return
                except (gzip.BadGzipFile, zlib.error) as e:
                    self.problem = f"bad gzip data ({e})"
                    return
                except OSError as e:
                    self.problem = f"read error ({e.strerror or e})"
                    return
                if not line:
                    return
                # files concatenated with `cat` carry a BOM at the start of each part
                yield (line[:-1] if line.endswith("\n") else line).lstrip("\ufeff")


def _from_smiles(smiles: str, name: str) -> InputMolecule:
    try:
        mol = parse_smiles(smiles)
    except ValueError as e:
        return InputMolecule(name, None, str(e))
    mol.SetProp("_Name", name)
    return InputMolecule(name, mol)


def _smiles_entries(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(SMILES, name)`` of each molecule line of a SMILES file (see ``iter_smiles_file``), unparsed."""
    count = 0
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(maxsplit=1)
        if not count and parts[0].lower() in ("smiles", "smi"):
            continue
        count += 1
        yield parts[0], parts[1].strip() if len(parts) > 1 else f"mol_{count}"


def _smiles_molecules(lines: _Lines) -> Iterator[InputMolecule]:
    for smiles, name in _smiles_entries(lines):
        yield _from_smiles(smiles, name)
    if lines.problem is not None:
        yield InputMolecule(lines.path.name, None, f"file is truncated: {lines.problem}")


def iter_smiles_file(path: str | os.PathLike) -> Iterator[InputMolecule]:
    """The molecules of a SMILES file, read lazily (one line at a time: memory does not grow with the file):
    ``SMILES [name]`` per line; blank lines, ``#`` comments and a header line whose first word is ``smiles`` are
    skipped. Unnamed molecules are called ``mol_<k>`` (k counts molecules from 1). A line RDKit cannot parse is an
    ``InputMolecule`` with its reason; a ``.gz`` file that breaks off ends with one for the file. The file is opened
    at once: ValueError naming it when it cannot be read."""
    return _smiles_molecules(_Lines(path))


def _sdf_molecules(lines: _Lines) -> Iterator[InputMolecule]:
    from rdkit import Chem

    from ..chem.rdkit_log import rdkit_errors, rdkit_reason
    from ..chem.sdf import precheck_molblock, split_sdf

    k = 0
    for k, (block, _) in enumerate(split_sdf(lines), start=1):
        name = (block[0].strip() if block else "") or f"mol_{k}"
        reason = precheck_molblock(block)
        if reason is None:
            with rdkit_errors() as messages:
                mol = Chem.MolFromMolBlock("\n".join(block) + "\n", sanitize=True, removeHs=False)
            if mol is None:
                why = rdkit_reason(messages, limit=_REASON_LIMIT) or "no message from RDKit"
                reason = f"RDKit could not read the record: {why}"
        if reason is not None:
            yield InputMolecule(name, None, reason)
            continue
        mol.SetProp("_Name", name)
        yield InputMolecule(name, mol)
    if not k:
        yield InputMolecule(lines.path.name, None, "empty file (no records)")
    if lines.problem is not None:
        yield InputMolecule(lines.path.name, None, f"file is truncated: {lines.problem}")


def iter_sdf_file(path: str | os.PathLike) -> Iterator[InputMolecule]:
    """The molecules of an SDF file (2D, 3D or no coordinates; ``.gz`` allowed), read lazily one record at a time,
    with hydrogens and stereo as RDKit reads them (3D records: stereo from the coordinates; 2D: from wedges). The
    title is the name, ``mol_<k>`` when empty. Records that cannot be read come with molediff's reader's reason
    (``molediff.chem.sdf``); an empty file gives one such record, and a ``.gz`` file that breaks off ends with one.
    The file is opened at once: ValueError naming it when it cannot be read."""
    return _sdf_molecules(_Lines(path))


def read_smiles_file(path: str | os.PathLike) -> list[InputMolecule]:
    """All molecules of a SMILES file as a list (``iter_smiles_file``)."""
    return list(iter_smiles_file(path))


def read_sdf_file(path: str | os.PathLike) -> list[InputMolecule]:
    """All molecules of an SDF file as a list (``iter_sdf_file``)."""
    return list(iter_sdf_file(path))


def iter_inputs(source: str) -> Iterator[InputMolecule]:
    """The molecules named by a command-line INPUT, read lazily: a SMILES string (optionally followed by a name), a
    ``.smi`` file or an SDF file (see ``input_kind``, ``iter_smiles_file``, ``iter_sdf_file``). FileNotFoundError /
    ValueError (one line) at once for an input that cannot be read at all."""
    kind = input_kind(source)
    if kind == "smi":
        return iter_smiles_file(source)
    if kind == "sdf":
        return iter_sdf_file(source)
    parts = source.strip().split(maxsplit=1)
    return iter([_from_smiles(source, parts[1] if len(parts) > 1 else "mol_1")])


def read_inputs(source: str) -> list[InputMolecule]:
    """All molecules named by a command-line INPUT as a list (``iter_inputs``)."""
    return list(iter_inputs(source))


def count_inputs(source: str) -> int:
    """How many molecules ``iter_inputs(source)`` yields, counted in one pass without parsing them (a SMILES file's
    molecule lines, an SDF file's records; for a progress bar's total). Errors as ``iter_inputs``."""
    from ..chem.sdf import split_sdf

    kind = input_kind(source)
    if kind == "smiles":
        return 1
    lines = _Lines(source)
    count = sum(1 for _ in (_smiles_entries(lines) if kind == "smi" else split_sdf(lines)))
    return max(count, 1 if kind == "sdf" else 0) + (lines.problem is not None)


def sd_writer(path):
    """An ``rdkit.Chem.SDWriter`` for ``write_sd_records`` to a file name or a text stream (``io.StringIO``): it
    writes only the fields ``conformer_index`` and the energies (not the ``molediff_*`` bookkeeping properties)."""
    from rdkit import Chem

    writer = Chem.SDWriter(path if isinstance(path, io.TextIOBase) else str(path))
    # missing ones are skipped per record
    writer.SetProps(["conformer_index", *ENERGY_PROPS.values(), ENERGY_KIND_PROP, SCORE_PROP])
    return writer


def write_sd_records(writer, mol, name: str, hydrogens: bool = True) -> int:
    """Write each conformer of ``mol`` (from ``generate_conformers``) as one SD record titled ``name`` with the
    fields ``conformer_index``, its energy in kcal/mol and its ``model_score`` (when it has them);
    ``hydrogens=False`` strips hydrogens first. ``writer``: from ``sd_writer``. Returns the number of records
    written."""
    from rdkit import Chem

    out = Chem.RemoveHs(mol) if not hydrogens else Chem.Mol(mol)
    out.SetProp("_Name", name.replace("\n", " "))
    written = 0
    for conf in out.GetConformers():
        props = conf.GetPropsAsDict()
        out.SetIntProp("conformer_index", int(props.get("conformer_index", written)))
        for key in ENERGY_PROPS.values():
            if key in props:
                out.SetProp(key, f"{props[key]:.4f}")
        if ENERGY_KIND_PROP in props:
            out.SetProp(ENERGY_KIND_PROP, str(props[ENERGY_KIND_PROP]))
        if SCORE_PROP in props:
            out.SetProp(SCORE_PROP, f"{props[SCORE_PROP]:.5f}")
        writer.write(out, confId=conf.GetId())
        written += 1
    return written


def sd_text(mol, name: str, hydrogens: bool = True) -> tuple[str, int]:
    """The SD records of ``mol``'s conformers as ``write_sd_records`` writes them, as text, and their number."""
    buffer = io.StringIO()
    writer = sd_writer(buffer)
    count = write_sd_records(writer, mol, name, hydrogens)
    writer.close()
    return buffer.getvalue(), count


# ------------------------------------------------------------------------------------------ a library's output
OUTPUT_SUFFIXES = (".sdf", ".sdf.gz")
PROGRESS_FORMAT = "molediff conformers progress 1"


class Finished(NamedTuple):
    """One finished input molecule as its progress line records it: input ``index`` (from 0), ``name``, ``status``
    (``"ok"`` or ``"failed"``), ``offset`` (bytes of the partial output once its records are in), ``records`` (SD
    records written) and the ``reason`` of a failure."""

    index: int
    name: str
    status: str
    offset: int
    records: int = 0
    reason: str | None = None


class PartialSDF:
    """The output of a library run while it runs: molecules are appended to ``OUT.partial`` as each is done and
    recorded in ``OUT.partial.progress``; ``finish`` renames the partial file to ``OUT``.

    The progress file holds a header line (JSON: the format and the run's ``settings``) and one JSON line per
    finished input molecule, in input order (``Finished``: index, name, status, byte offset of the partial output
    after it). A molecule counts as written only once its line is complete, so a kill at any moment leaves a
    resumable pair: ``resume=True`` truncates the partial output to the last recorded offset and the molecules
    recorded (failed ones included) are not run again. ``OUT`` ending in ``.sdf.gz`` writes each molecule as its own
    gzip member (the file is valid when cut between molecules; ``gzip -dc`` and RDKit read the members as one).

    Args:
        output: the final file (``.sdf`` or ``.sdf.gz``).
        settings: JSON-able values that must match when a run is resumed (the options that shape the output).
        resume: continue the interrupted run at ``OUT.partial`` (none there: start afresh; ``resumed`` says which).

    Raises ValueError (one line): another output suffix, a partial output there without ``resume``, a progress
    file that is not one or belongs to a run with other ``settings``, a partial output shorter than recorded.
    """

    def __init__(self, output: str | os.PathLike, settings: dict, resume: bool = False):
        self.output = Path(output)
        if not self.output.name.lower().endswith(OUTPUT_SUFFIXES):
            raise ValueError(f"output must end in .sdf or .sdf.gz, got {str(output)!r}")
        self.gzip = self.output.name.lower().endswith(".gz")
        self.partial = self.output.with_name(self.output.name + ".partial")
        self.progress = self.output.with_name(self.partial.name + ".progress")
        self.settings = json.loads(json.dumps(settings))
        self.done = self.ok = self.failed = self.records = 0   # finished molecules so far (the resumed ones too)
        self.resumed = 0                                        # finished molecules taken over from the last run
        self._offset = 0
        exists = self.partial.exists() or self.progress.exists()
        if exists and not resume:
            raise ValueError(f"{self.partial} exists: an interrupted run; continue it with --resume (the same "
                             f"input and options), or delete {self.partial} and {self.progress.name}")
        if resume and exists:
            self._load()
        self._data = self._log = None

    # -------------------------------------------------------------- the progress file
    def _entries(self) -> Iterator[Finished]:
        """The finished molecules recorded in the progress file, in order (a last line cut by a kill is left out);
        ValueError when it is not a progress file of these settings."""
        with open(self.progress, encoding="utf-8") as f:
            header = f.readline()
            try:
                head = json.loads(header)
            except ValueError:
                head = None
            if not header.endswith("\n") or not isinstance(head, dict) or head.get("format") != PROGRESS_FORMAT:
                raise ValueError(f"{self.progress} is not a molediff conformers progress file; delete it and "
                                 f"{self.partial.name} to start again")
            if head.get("settings") != self.settings:
                old, new = head.get("settings") or {}, self.settings
                diff = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                                 if old.get(k) != new.get(k))
                raise ValueError(f"{self.partial} was written with other options ({diff}): resume with the same "
                                 f"options, or delete it and {self.progress.name}")
            for k, line in enumerate(f):
                if not line.endswith("\n"):
                    return  # cut by a kill while it was written: that molecule is not finished
                try:
                    entry = Finished(**json.loads(line))
                except (ValueError, TypeError):
                    raise ValueError(f"{self.progress}: line {k + 2} is not a progress record; delete it and "
                                     f"{self.partial.name} to start again") from None
                if entry.index != k:
                    raise ValueError(f"{self.progress}: line {k + 2} records molecule {entry.index}, expected {k}")
                yield entry

    def _load(self) -> None:
        if not self.progress.exists():
            raise ValueError(f"{self.partial} has no {self.progress.name} beside it: delete {self.partial} to start "
                             f"again")
        for entry in self._entries():
            self.done += 1
            self.ok += entry.status == "ok"
            self.failed += entry.status != "ok"
            self.records += entry.records
            self._offset = entry.offset
        size = self.partial.stat().st_size if self.partial.exists() else 0
        if size < self._offset:
            raise ValueError(f"{self.partial} holds {size} bytes, fewer than the {self._offset} its progress file "
                             f"records: delete it and {self.progress.name} to start again")
        self.resumed = self.done

    def skip_finished(self, inputs: Iterator) -> None:
        """Consume the molecules the resumed run finished from ``inputs`` (an iterator of items with a ``name``, or
        ``(name, ...)`` tuples), checking each name against the progress file: ValueError (one line) when the input
        changed."""
        entries = self._entries() if self.resumed else iter(())
        for entry in itertools.islice(entries, self.resumed):
            item = next(inputs, None)
            name = None if item is None else getattr(item, "name", None) or item[0]
            if name != entry.name:
                got = "the input ends there" if item is None else f"it is now {name!r}"
                raise ValueError(f"the input changed since the interrupted run: molecule {entry.index + 1} was "
                                 f"{entry.name!r}, {got}; resume with the same input, or delete {self.partial}")

    # -------------------------------------------------------------- writing
    def open(self) -> None:
        """Open the partial output for appending (truncated to the last recorded molecule) and the progress file."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        if self.resumed:
            self._data = open(self.partial, "r+b" if self.partial.exists() else "w+b")
            self._data.truncate(self._offset)
            self._data.seek(self._offset)
            self._log = open(self.progress, "r+b")
            self._log.truncate(self._complete_lines())
            self._log.seek(0, os.SEEK_END)
        else:
            self._data = open(self.partial, "wb")
            self._log = open(self.progress, "wb")
            self._log.write((json.dumps({"format": PROGRESS_FORMAT, "settings": self.settings}) + "\n").encode())
            self._log.flush()

    def _complete_lines(self) -> int:
        """Bytes of the header and the first ``done`` records of the progress file (a cut last line dropped)."""
        size = 0
        with open(self.progress, "rb") as f:
            for _ in range(self.done + 1):
                size += len(f.readline())
        return size

    def add(self, index: int, name: str, result, hydrogens: bool = True) -> int:
        """Append the molecule ``index`` of the input: ``result`` is its Mol (every conformer written as one SD
        record titled ``name``; ``write_sd_records``) or the reason it failed (nothing written). Molecules must come
        in input order, each once (ValueError otherwise). Returns the number of records written."""
        if index != self.done:
            raise ValueError(f"molecule {index} given to the output after {self.done} molecules: molecules must come "
                             f"in input order, each once")
        records, reason = 0, None
        if isinstance(result, str):
            reason = result
        else:
            text, records = sd_text(result, name, hydrogens)
            data = text.encode("utf-8")
            self._data.write(gzip.compress(data, compresslevel=6, mtime=0) if self.gzip else data)
            self._data.flush()
            self._offset = self._data.tell()
        entry = Finished(index, name, "failed" if reason is not None else "ok", self._offset, records, reason)
        self._log.write((json.dumps(entry._asdict(), ensure_ascii=False) + "\n").encode("utf-8"))
        self._log.flush()
        self.done += 1
        self.ok += reason is None
        self.failed += reason is not None
        self.records += records
        return records

    def close(self) -> None:
        """Close both files, keeping them (an interrupted run: ``resume`` continues it)."""
        for f in (self._data, self._log):
            if f is not None:
                f.close()
        self._data = self._log = None

    def finish(self) -> Path:
        """Close, rename the partial output to the output (replacing a file there) and delete the progress file."""
        self.close()
        os.replace(self.partial, self.output)
        self.progress.unlink(missing_ok=True)
        return self.output

    def discard(self) -> None:
        """Close and delete both files (nothing worth keeping)."""
        self.close()
        self.partial.unlink(missing_ok=True)
        self.progress.unlink(missing_ok=True)
