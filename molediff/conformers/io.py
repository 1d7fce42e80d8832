"""Inputs and outputs of ``molediff conformers``: SMILES strings, ``.smi`` files and SDF files (optionally ``.gz``)
read into named RDKit molecules, with a one-line reason for each record that cannot be used; SD records written with
their energies."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .forcefield import ENERGY_KIND_PROP, ENERGY_PROPS

SMILES_SUFFIXES = (".smi", ".smiles")
SDF_SUFFIXES = (".sdf", ".sd", ".mol", ".sdf.gz", ".sd.gz", ".mol.gz")
SCORE_PROP = "model_score"


def _rdkit_reason(messages: Sequence[str], text: str = "") -> str:
    """One line from RDKit's log messages: prefixes, echoes of the input and caret lines dropped."""
    keep = []
    for msg in messages:
        msg = msg.removeprefix("SMILES Parse Error: ").strip().rstrip(":")
        if not msg or msg == text or not msg.strip("~^ ") or msg.startswith("Failed parsing SMILES"):
            continue
        if msg not in keep:
            keep.append(msg)
    reason = "; ".join(keep)
    return reason if len(reason) <= 200 else reason[:197] + "..."


def parse_smiles(smiles: str):
    """A sanitised ``rdkit.Chem.Mol`` from a SMILES string (text after whitespace is ignored).

    Raises ValueError ``could not parse SMILES '...': <RDKit's reason>`` for a string RDKit refuses (syntax,
    valence, kekulisation) and ``empty molecule (no atoms)`` for an empty string.
    """
    from rdkit import Chem

    from ..chem.io import rdkit_errors

    text = smiles.strip()
    if not text:
        raise ValueError("empty molecule (no atoms): the SMILES is empty")
    with rdkit_errors() as messages:
        mol = Chem.MolFromSmiles(text.split()[0])
    if mol is None:
        reason = _rdkit_reason(messages, text.split()[0])
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


def _read_file(path: str | os.PathLike) -> tuple[str, tuple[str, str] | None]:
    """Text of a file as molediff's readers decode it (``.gz``, byte-order marks, line endings), and the problem of a
    cut-off ``.gz`` (or None). ValueError naming the file when it cannot be read at all."""
    from ..chem.io import read_text

    try:
        return read_text(Path(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _from_smiles(smiles: str, name: str) -> InputMolecule:
    try:
        mol = parse_smiles(smiles)
    except ValueError as e:
        return InputMolecule(name, None, str(e))
    mol.SetProp("_Name", name)
    return InputMolecule(name, mol)


def read_smiles_file(path: str | os.PathLike) -> list[InputMolecule]:
    """Molecules of a SMILES file: ``SMILES [name]`` per line; blank lines, ``#`` comments and a header line whose
    first word is ``smiles`` are skipped. Unnamed molecules are called ``mol_<k>`` (k counts molecules from 1)."""
    from ..chem.io import text_lines

    text, problem = _read_file(path)
    out = []
    for line in text_lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(maxsplit=1)
        if not out and parts[0].lower() in ("smiles", "smi"):
            continue
        name = parts[1].strip() if len(parts) > 1 else f"mol_{len(out) + 1}"
        out.append(_from_smiles(parts[0], name))
    if problem is not None:
        out.append(InputMolecule(Path(path).name, None, f"file is truncated: {problem[1]}"))
    return out


def read_sdf_file(path: str | os.PathLike) -> list[InputMolecule]:
    """Molecules of an SDF file (2D, 3D or no coordinates; ``.gz`` allowed), with hydrogens and stereo as RDKit
    reads them (3D records: stereo from the coordinates; 2D: from wedges). The title is the name, ``mol_<k>`` when
    empty. Records that cannot be read are returned with molediff's reader's reason (``molediff.chem.io``); a file
    that cannot be read at all raises ValueError."""
    from rdkit import Chem

    from ..chem.io import precheck_molblock, rdkit_errors, split_sdf, text_lines

    text, problem = _read_file(path)
    out = []
    for k, (block, _) in enumerate(split_sdf(text_lines(text, cut=problem is not None)), start=1):
        name = (block[0].strip() if block else "") or f"mol_{k}"
        reason = precheck_molblock(block)
        if reason is None:
            with rdkit_errors() as messages:
                mol = Chem.MolFromMolBlock("\n".join(block) + "\n", sanitize=True, removeHs=False)
            if mol is None:
                reason = f"RDKit could not read the record: {_rdkit_reason(messages) or 'no message from RDKit'}"
        if reason is not None:
            out.append(InputMolecule(name, None, reason))
            continue
        mol.SetProp("_Name", name)
        out.append(InputMolecule(name, mol))
    if not out:
        out.append(InputMolecule(Path(path).name, None, "empty file (no records)"))
    if problem is not None:
        out.append(InputMolecule(Path(path).name, None, f"file is truncated: {problem[1]}"))
    return out


def read_inputs(source: str) -> list[InputMolecule]:
    """The molecules named by a command-line INPUT: a SMILES string (optionally followed by a name), a ``.smi``
    file or an SDF file (see ``input_kind``, ``read_smiles_file``, ``read_sdf_file``)."""
    kind = input_kind(source)
    if kind == "smi":
        return read_smiles_file(source)
    if kind == "sdf":
        return read_sdf_file(source)
    parts = source.strip().split(maxsplit=1)
    return [_from_smiles(source, parts[1] if len(parts) > 1 else "mol_1")]


def sd_writer(path: str | os.PathLike):
    """An ``rdkit.Chem.SDWriter`` for ``write_sd_records``: it writes only the fields ``conformer_index`` and the
    energies (not the ``molediff_*`` bookkeeping properties)."""
    from rdkit import Chem

    writer = Chem.SDWriter(str(path))
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
