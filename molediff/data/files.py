"""User data: a folder or file of SDF/XYZ molecules (or a saved ``.npz`` dataset) as a ``MoleculeDataset``, and a
text file of SMILES as reference SMILES for novelty."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..chem.io import read_molecules
from ..chem.molecule import Molecule, MoleculeDataset
from ..utils import atomic_write

log = logging.getLogger(__name__)


def _is_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a saved ``MoleculeDataset`` (``.npz``, any case) rather than SDF/XYZ files."""
    return str(path).lower().endswith(".npz")


def read_molecule_source(path: str | os.PathLike, require_bonds: bool = False
                         ) -> tuple[list[Molecule], list[tuple[str, str]]]:
    """(molecules, ``(record, reason)`` for what could not be read) from an SDF/XYZ file or folder
    (``chem.io.read_molecules``) or from a saved ``.npz`` dataset (which has no unreadable records).

    ``require_bonds``: an SDF record whose file bonds cannot be used is an error rather than a molecule with bonds
    to perceive. FileNotFoundError / ValueError when ``path`` itself is unusable.
    """
    if _is_dataset(path):
        ds = MoleculeDataset.load(path)
        return [ds[i] for i in range(len(ds))], []
    molecules, errors = read_molecules(path, require_bonds=require_bonds)
    return molecules, list(errors)


def load_molecule_files(path: str | os.PathLike, vocabulary: Sequence[int] | None = None, max_atoms: int | None = None,
                        cache: bool = True) -> tuple[MoleculeDataset, list[tuple[str, str]]]:
    """Read every molecule under ``path`` (a folder, an SDF/XYZ file, or a saved ``.npz`` dataset).

    Unreadable records are skipped; ``vocabulary`` (the atomic numbers allowed, e.g. ``QM9_VOCABULARY``) and
    ``max_atoms`` drop molecules outside them. Returns the kept molecules and ``(record, reason)`` for every
    record left out, and logs on every run (cached or not) "kept N of M" with the reasons counted, plus the
    first few records by name. With ``cache`` the parsed records of a single file (and its read errors) are
    kept in ``cache_dir()/files``, keyed by the file's path, size and modification time.
    ValueError when nothing usable remains.
    """
    from ..utils import cache_dir

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no molecule file or folder at {p}")
    cached = None
    if cache and p.is_file() and not _is_dataset(p):
        st = p.stat()
        key = hashlib.sha1(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        cached = cache_dir() / "files" / f"{p.stem}_{key}.npz"
    if cached is not None and cached.exists() and cached.with_suffix(".errors.json").exists():
        molecules, _ = read_molecule_source(cached)
        errors = [tuple(e) for e in json.loads(cached.with_suffix(".errors.json").read_text())]
    else:
        molecules, errors = read_molecule_source(p)
        if cached is not None and molecules:
            MoleculeDataset.from_molecules(molecules).save(cached)
            with atomic_write(cached.with_suffix(".errors.json")) as f:
                json.dump([list(e) for e in errors], f)
    # A file-level error (a cut-off .gz, an empty file) is named by the bare file, not "file:N": not a record.
    total = len(molecules) + sum(bool(re.search(r":\d+", str(record))) for record, _ in errors)
    vocab = None if vocabulary is None else tuple(int(z) for z in vocabulary)
    allowed = set(vocab or ())
    kept = []
    for m in molecules:
        if vocab is not None and not set(m.atomic_numbers.tolist()) <= allowed:
            extra = sorted(set(m.atomic_numbers.tolist()) - allowed)
            errors.append((m.name, f"element(s) {extra} outside the vocabulary {vocab}"))
        elif max_atoms is not None and m.num_atoms > max_atoms:
            errors.append((m.name, f"{m.num_atoms} atoms, more than {max_atoms}"))
        else:
            kept.append(m)
    _log_summary(p, len(kept), total, errors)
    if not kept:
        raise ValueError(f"no usable molecules in {p} (0 of {total} kept)")
    return MoleculeDataset.from_molecules(kept), errors


def _log_summary(path: Path, kept: int, total: int, errors: list[tuple[str, str]], shown: int = 5) -> None:
    """One line "kept N of M" with the reasons counted, then the first ``shown`` skipped records by name."""
    if not errors:
        log.info("%s: kept all %d molecules", path, kept)
        return
    kinds = Counter(_reason_kind(reason) for _, reason in errors)
    summary = "; ".join(f"{n} × {kind}" for kind, n in kinds.most_common())
    log.warning("%s: kept %d of %d molecules; skipped %d (%s)", path, kept, total, len(errors), summary)
    for record, reason in errors[:shown]:
        log.warning("  skipped %s: %s", record, reason)
    if len(errors) > shown:
        log.warning("  ... and %d more skipped records", len(errors) - shown)


def _reason_kind(reason: str) -> str:
    """A reason without its particulars (numbers, bracketed lists, detail after a colon), for counting kinds:
    "element(s) [16] outside the vocabulary (1, 6)" → "element outside the vocabulary"."""
    text = re.sub(r"\[[^\]]*\]|\([^)]*\)", "", reason.split(":", 1)[0])
    return " ".join(re.sub(r"\d+", "N", text).split()) or reason


def reference_smiles_file(path: str | os.PathLike) -> tuple[set[str], int]:
    """The SMILES of a text file (first column; ``,`` also separates columns; a ``smiles`` header and blank lines
    are skipped), each rewritten as molediff writes SMILES: largest fragment, hydrogens explicit, no stereo.
    Returns the distinct rewritten SMILES and how many lines RDKit could not parse (skipped, not fatal)."""
    from rdkit import Chem, rdBase

    out, bad = set(), 0
    with rdBase.BlockLogs():
        for line in Path(path).read_text().splitlines():
            token = line.replace(",", " ").split()[0] if line.strip() else ""
            if not token or token.lower() == "smiles":
                continue
            try:  # one SMILES RDKit chokes on is skipped and counted, not fatal
                mol = Chem.MolFromSmiles(token)
                if mol is None:
                    bad += 1
                    continue
                frags = Chem.GetMolFrags(mol, asMols=True)
                largest = Chem.AddHs(max(frags, key=lambda m: m.GetNumAtoms()))
                out.add(Chem.MolToSmiles(largest, isomericSmiles=False))
            except Exception:
                bad += 1
    return out, bad
