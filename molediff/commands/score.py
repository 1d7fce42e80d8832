"""Score 3D molecules from an SDF/XYZ file or folder (or a saved .npz dataset): atom and molecule stability, RDKit
validity, uniqueness, novelty (with --train-smiles), connectivity, QED and SA, under two rules, each figure named
by its rule (``chem.diagnostics.RULES``):

- **the file's bonds** (molecules that carry bonds: an SDF bond block): their own bonds and formal charges, atom
  stability by the valences of ``chem.valence``, RDKit validity of that molecule; the headline for a file whose
  molecules all carry bonds;
- **EDM's rule**: bonds perceived from distances with EDM's table (comparable with EDM's published figures);
  the only rule for XYZ files;
- and, where both apply, how often they agree per molecule (the same bonds; the same bonds and orders), which says
  whether the geometry matches the bonds.

``--bonds auto`` (default) scores both where the file has bonds; ``--bonds file`` requires bonds (a record whose
bonds cannot be used is an error) and makes them the headline; ``--bonds perceive`` scores EDM's rule alone.
With --reference, also conformer metrics (COV-R/P, AMR-R/P, D-MAE) against reference conformers; with
--physics, physical checks (bond lengths, angles, clashes, ring flatness, MMFF94 energy and strain).

Records that cannot be read are reported with a reason and skipped; the exit status is non-zero only
when no molecule could be read. No single molecule ends a run: whatever cannot be computed for it is left
empty and the reason goes into its row. Per-molecule rows (including unreadable records with their reason)
go to --csv / --json, their columns named by rule (``file_*``, ``edm_*``, ``same_*``); their ``notes`` say why
a molecule is unstable or invalid under each rule (radical on C3, valence 5 on N2, RDKit's message), where it
breaks an assumption of EDM's metric (formal charges, implicit hydrogens, metals, several fragments, bonds that
differ from the perceived ones) or has no real 3D geometry (flat, collinear, collapsed, coincident atoms), and
summary warnings on stderr count them. Output paths are checked before any work and written atomically; JSON
has null, never NaN."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_EDM_KEYS = ("stable_atoms", "stable", "valid", "smiles", "connected", "n_fragments", "novel")
"""Row keys of EDM's rule in ``evaluate_molecules``; the command's rows write them as ``edm_<key>``."""
_FILE_KEYS = ("file_stable_atoms", "file_stable", "file_valid", "file_smiles", "file_connected", "file_n_fragments",
              "file_novel", "file_reasons")
_ROW_KEYS = ("name", "n_atoms", "formula", *_FILE_KEYS, *(f"edm_{k}" for k in _EDM_KEYS), "edm_reasons",
             "same_bonds", "same_orders", "qed", "sa", "geometry", "flags", "notes", "error")
_LIST_CELLS = ("notes", "file_reasons", "edm_reasons")  # CSV cells joined by " | " (their items have spaces)
RULE_LABELS = {"file_bonds": "file's bonds", "edm": "EDM's rule"}
"""How the printed table names each rule."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE",
                        help="molecules to score: .sdf/.sd/.mol/.xyz file (optionally .gz), a folder of them, or a "
                             "saved molediff .npz dataset")
    parser.add_argument("--reference", metavar="REF", default=None,
                        help="reference conformers (same formats) for conformer metrics; generated conformers are "
                             "matched to reference molecules by name, or else by heavy-atom connectivity")
    parser.add_argument("--threshold", type=float, default=0.75,
                        help="RMSD threshold in Å for COV-R/COV-P (0.5 is usual for QM9, 0.75 for GEOM-DRUGS)")
    parser.add_argument("--train-smiles", metavar="FILE", default=None,
                        help="training molecules for novelty: 'qm9' (EDM's QM9 training split, SMILES recomputed "
                             "with the same bond perception and cached), a text file with one SMILES per line "
                             "(first column), or an SDF/XYZ file/folder (SMILES perceived from 3D)")
    parser.add_argument("--json", metavar="OUT", default=None, help="write the summary and per-molecule rows as JSON")
    parser.add_argument("--csv", metavar="OUT", default=None, help="write per-molecule rows as CSV")
    parser.add_argument("--bonds", choices=["auto", "file", "perceive"], default="auto",
                        help="which rules score the molecules: 'auto' scores molecules that carry bonds (SDF) by "
                             "their own bonds and charges (valence stability, RDKit validity; the headline when "
                             "every molecule has bonds) and by EDM's rule (bonds perceived from distances, "
                             "comparable with EDM's figures), and says how often the two agree; 'file' requires "
                             "the file's bonds (a record whose bonds cannot be used is an error) and makes them "
                             "the headline; 'perceive' scores EDM's rule alone")
    parser.add_argument("--no-properties", action="store_true", help="skip QED and SA score (faster)")
    parser.add_argument("--physics", action="store_true",
                        help="also run physical checks per molecule (MMFF94 relaxation: slow for many molecules)")


def load_molecules(path: str, require_bonds: bool = False):
    """(molecules, errors) of an input, as ``data.files.read_molecule_source`` reads them; the command's one place
    that reads its inputs (tests replace it to see that every argument is checked first)."""
    from ..data.files import read_molecule_source

    return read_molecule_source(path, require_bonds=require_bonds)


def train_smiles_set(spec: str) -> set[str]:
    """Training SMILES in molediff's form (largest fragment, explicit hydrogens) from 'qm9' or a file."""
    from ..chem.stability import reference_smiles
    from ..data.files import reference_smiles_file
    from ..data.qm9 import qm9_train_smiles

    if spec.lower() == "qm9":
        return qm9_train_smiles()
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"--train-smiles: {spec} does not exist (use 'qm9', a SMILES file or SDF/XYZ)")
    if p.is_file() and p.suffix.lower() in (".txt", ".smi", ".smiles", ".csv"):
        smiles, bad = reference_smiles_file(p)
        if bad:
            log.warning("--train-smiles: %d unparsable SMILES in %s skipped", bad, p)
        if not smiles:
            raise ValueError(f"--train-smiles: no valid SMILES in {p}")
        return smiles
    molecules, errors = load_molecules(spec)
    for record, reason in errors:
        log.warning("--train-smiles: skipped %s: %s", record, reason)
    return reference_smiles(molecules)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


BOND_LENGTH_MIN_COUNT = 20
"""Bond types with fewer bonds than this are left out of the printed table (not of the JSON)."""


def format_table(summary: dict) -> str:
    """The printed summary table: the headline rule's figures first, then the other rule's, then how often the
    rules agree; every figure's label names its rule."""
    def pct(v):
        return ("-" if v is None else f"{100 * v:.2f}%")
    n = summary["n_molecules"]
    headline = summary["headline"]
    lines = [("molecules read", str(n), ""), ("unreadable records", str(summary["n_unreadable"]), "")]
    rules = [r for r in (headline, "edm" if headline == "file_bonds" else "file_bonds") if summary.get(r)]
    for rule in rules:
        block, tag = summary[rule], f" [{RULE_LABELS[rule]}]"
        m = block["n_molecules"]
        what = {"file_bonds": f"the molecules' own bonds and charges ({m}/{n} molecules carry bonds)",
                "edm": "bonds perceived from distances with EDM's table, comparable with EDM's figures"}[rule]
        lines.append((("headline: " if rule == headline else "also: ") + RULE_LABELS[rule], "", what))
        lines += [(f"atom stability{tag}", pct(block["atom_stability"]),
                   f"{block['n_stable_atoms']}/{block['n_atoms']}"),
                  (f"molecule stability{tag}", pct(block["mol_stability"]), f"{block['n_stable_molecules']}/{m}"),
                  (f"validity{tag}", pct(block["validity"]), f"{block['n_valid']}/{m}"),
                  (f"uniqueness{tag}", pct(block["uniqueness"]), f"{block['n_unique']}/{block['n_valid']}"),
                  (f"novelty{tag}", pct(block["novelty"]),
                   f"{block['n_novel']}/{block['n_unique']}" if block["novelty"] is not None else "no --train-smiles"),
                  (f"connectivity{tag}", pct(block["connectivity"]), f"{block['n_connected']}/{m}")]
    agree = summary.get("agreement")
    if agree and summary.get("edm") and summary.get("file_bonds"):
        tag = " [EDM's rule = file's bonds]"
        lines += [(f"same bonds{tag}", pct(agree["same_bonds"]), f"{agree['n_same_bonds']}/{agree['n_molecules']}"),
                  (f"same bonds and orders{tag}", pct(agree["same_orders"]),
                   f"{agree['n_same_orders']}/{agree['n_molecules']}")]
    tag = f" [{RULE_LABELS[headline]}]"
    if summary.get("qed") is not None:
        lines.append((f"QED (mean, valid){tag}", f"{summary['qed']:.3f}", ""))
    if summary.get("sa") is not None:
        lines.append((f"SA score (mean, valid){tag}", f"{summary['sa']:.2f}", ""))
    shown = [r for r in summary.get("bond_lengths") or [] if r["n"] >= BOND_LENGTH_MIN_COUNT]
    if shown:
        lines.append(("bond lengths [file's bonds]", "",
                      "median |length − typical length| (EDM's table) per bond type; all types in --json"))
        for r in shown:
            dev = "-" if r["median_abs_deviation"] is None else f"{r['median_abs_deviation']:.3f} Å"
            typical = "no typical length" if r["typical_length"] is None else f"typical {r['typical_length']:.2f}"
            lines.append((f"  {r['bond']} [file's bonds]", dev,
                          f"n = {r['n']}, median {r['median_length']:.3f} Å, {typical}"))
    if summary.get("n_with_notes"):
        lines.append(("molecules with notes", str(summary["n_with_notes"]), "see the warnings; each note is in the "
                                                                            "--csv/--json rows"))
    for key, label in (("physics", "physical checks"), ("conformers", "conformers")):
        block = summary.get(key)
        if not block:
            continue
        for k, v in block.items():
            if v is None or isinstance(v, bool | int | float):
                lines.append((f"{label}: {_READABLE.get(k, k.replace('_', ' '))}", _fmt(v), ""))
        for reason, count in (block.get("skip_reasons") or {}).items():
            lines.append((f"{label}: incomplete", str(count), reason))
        if block.get("warning"):
            lines.append((label, "none", block["warning"]))
    w = max(len(a) for a, _, _ in lines)
    return "\n".join(f"{a:<{w}}  {b:>10}  {c}".rstrip() for a, b, c in lines)


# Table labels for the summary keys of the physics and conformer blocks (the JSON keeps the keys).
_READABLE = {
    "n_checked": "molecules checked", "n_skipped": "molecules skipped", "n_mmff": "with MMFF94 energies",
    "bond_lengths_ok": "bond lengths plausible", "angles_ok": "bond angles plausible", "no_clash": "no clash",
    "aromatic_flat": "aromatic rings flat", "median_strain_kcal": "median MMFF94 strain (kcal/mol)",
    "n_groups": "reference molecules matched", "n_matched": "generated conformers matched",
    "cov_r": "COV-R (recall coverage)", "cov_p": "COV-P (precision coverage)", "amr_r": "AMR-R (Å)",
    "amr_p": "AMR-P (Å)", "d_mae": "D-MAE (Å)", "threshold": "coverage threshold (Å)",
}


def _check_outputs(args: argparse.Namespace) -> None:
    """UsageError (one line) before any work when an option cannot work, an output cannot be written, two
    outputs name the same file, or an output would overwrite an input."""
    from ..utils import UsageError, check_output_path

    if not args.threshold > 0:
        raise UsageError(f"--threshold must be a positive RMSD in Å, got {args.threshold:g}")

    outputs = {}
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        if path is None:
            continue
        target = check_output_path(path, f"{flag} output").resolve()
        if target in outputs:
            raise UsageError(f"{outputs[target]} and {flag} both name {path}; give two different files")
        outputs[target] = flag
    inputs = [Path(p).resolve() for p in (args.file, args.reference, args.train_smiles) if p]
    for target, flag in outputs.items():
        if target in inputs:
            raise UsageError(f"{flag} output {str(target)!r} is an input file; writing it would overwrite the input")


def run(args: argparse.Namespace) -> int:
    from ..chem.stability import evaluate_molecules

    _check_outputs(args)  # before any (possibly long) work
    molecules, errors = load_molecules(args.file, require_bonds=args.bonds == "file")
    for record, reason in errors:
        print(f"skipped {record}: {reason}", file=sys.stderr)
    if not molecules:
        raise ValueError(f"no molecule could be read from {args.file}")
    if args.bonds == "file" and all(m.bonds is None for m in molecules):
        raise ValueError(f"--bonds file: no molecule in {args.file} carries bonds (XYZ files have none); use "
                         f"--bonds auto or perceive")
    train = train_smiles_set(args.train_smiles) if args.train_smiles else None
    result = evaluate_molecules(molecules, train_smiles=train, properties=not args.no_properties,
                                file_bonds=args.bonds != "perceive", show_progress=True)
    rows = [_named_row(r) for r in result.pop("per_molecule")]
    warnings = result.pop("warnings")
    summary = _named_summary(result, args.bonds)
    summary.update(file=str(args.file), n_unreadable=len(errors), n_with_notes=sum(bool(r["notes"]) for r in rows))
    if args.bonds != "perceive" and summary.get("file_bonds"):
        from ..chem.bonds import bond_length_report

        summary["bond_lengths"] = bond_length_report(molecules)

    if args.physics:
        from ..chem.physics import physical_checks_summary

        physics_rows, summary["physics"], physics_warnings = physical_checks_summary(molecules)
        for row, physics in zip(rows, physics_rows):
            row.update(physics)
        warnings += physics_warnings

    if args.reference:
        from ..chem.conformers import conformer_metrics

        refs, ref_errors = load_molecules(args.reference)
        for record, reason in ref_errors:
            print(f"skipped reference {record}: {reason}", file=sys.stderr)
        if not refs:
            raise ValueError(f"no reference molecule could be read from {args.reference}")
        conf = conformer_metrics(molecules, refs, threshold=args.threshold)
        summary["conformers"] = conf
        if conf["warning"]:
            warnings.append(f"conformers: {conf['warning']}")
        for f in conf["failed"]:
            warnings.append(f"conformers: {f['set']} molecule {f['name'] or '(unnamed)'} not matched: {f['reason']}")

    for record, reason in errors:
        rows.append({**{k: None for k in _ROW_KEYS}, "name": record, "flags": ["unreadable"], "notes": [],
                     "error": f"unreadable: {reason}"})
    summary["warnings"] = warnings
    print(format_table(summary))
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if args.json:
        _write_json(args.json, {"summary": summary, "molecules": rows})
    if args.csv:
        _write_csv(args.csv, rows)
    return 0


def _named_row(row: dict) -> dict:
    """A row of ``evaluate_molecules`` with EDM's-rule keys named ``edm_<key>``, in ``_ROW_KEYS`` order (then any
    other keys)."""
    named = {(f"edm_{k}" if k in _EDM_KEYS else k): v for k, v in row.items()}
    return {**{k: named.get(k) for k in _ROW_KEYS}, **named}


def _named_summary(result: dict, bonds: str) -> dict:
    """The summary with each rule's figures in a block of its own (``edm``, ``file_bonds``), ``agreement`` and the
    ``headline`` rule (``--bonds file`` makes it the file's bonds)."""
    from ..chem.stability import RULE_FIGURES

    summary = {k: v for k, v in result.items() if k not in RULE_FIGURES}
    summary["n_molecules"] = result["n_molecules"]
    summary["edm"] = {k: result[k] for k in RULE_FIGURES}
    if bonds == "file" and summary.get("file_bonds"):
        summary["headline"] = "file_bonds"
    return summary


def _write_json(path: str, data: dict) -> None:
    """JSON with null for NaN/inf (strict parsers reject bare NaN), written atomically."""
    from ..utils import atomic_write

    text = json.dumps(_json_safe(data), indent=1, allow_nan=False)
    with atomic_write(path) as f:
        f.write(text + "\n")


def _write_csv(path: str, rows: list[dict]) -> None:
    """Per-molecule rows as CSV, written atomically: empty cells for None/NaN, flags space-separated, notes
    separated by ' | '."""
    from ..utils import atomic_write

    keys = list(_ROW_KEYS) + sorted({k for r in rows for k in r} - set(_ROW_KEYS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_cell(k, r.get(k)) for k in keys})
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def _csv_cell(key: str, v):
    v = _json_safe(v)
    if v is None:
        return ""
    if isinstance(v, list):
        return (" | " if key in _LIST_CELLS else " ").join(map(str, v))
    return v


def _json_safe(v):
    """``v`` with numpy scalars/arrays turned into Python values and non-finite floats into None."""
    import numpy as np

    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.ndarray):
        return _json_safe(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
