"""Score 3D molecules from an SDF/XYZ file or folder (or a saved .npz dataset) with EDM's metrics: atom and
molecule stability, RDKit validity, uniqueness, novelty (with --train-smiles), connectivity, QED and SA.
With --reference, also conformer metrics (COV-R/P, AMR-R/P, D-MAE) against reference conformers; with
--physics, physical checks (bond lengths, angles, clashes, ring flatness, MMFF94 energy and strain).

Records that cannot be read are reported with a reason and skipped; the exit status is non-zero only
when no molecule could be read. Per-molecule rows (including unreadable records with their reason) go
to --csv / --json."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from pathlib import Path

HELP = "score 3D molecules (stability, validity, uniqueness, novelty, QED, SA, conformer and physics checks)"
log = logging.getLogger(__name__)

_ROW_KEYS = ("name", "n_atoms", "formula", "stable_atoms", "stable", "valid", "smiles", "connected", "n_fragments",
             "qed", "sa", "novel", "error")


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
    parser.add_argument("--bonds", choices=["perceive", "file"], default="perceive",
                        help="bonds for validity/SMILES: 'perceive' from 3D as EDM does (stability always does), or "
                             "'file' to use bonds and charges given in the SDF")
    parser.add_argument("--no-properties", action="store_true", help="skip QED and SA score (faster)")
    parser.add_argument("--physics", action="store_true",
                        help="also run physical checks per molecule (MMFF94 relaxation: slow for many molecules)")


def load_molecules(path: str):
    """(molecules, errors) from an SDF/XYZ file or folder, or a saved .npz dataset."""
    from ..chem.io import read_molecules
    from ..chem.molecule import MoleculeDataset

    if path.lower().endswith(".npz"):
        ds = MoleculeDataset.load(path)
        return [ds[i] for i in range(len(ds))], []
    return read_molecules(path)


def train_smiles_set(spec: str) -> set[str]:
    """Training SMILES in molediff's form (largest fragment, explicit hydrogens) from 'qm9' or a file."""
    from ..chem.metrics import reference_smiles
    from ..data.qm9 import qm9_train_smiles

    if spec.lower() == "qm9":
        return qm9_train_smiles()
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"--train-smiles: {spec} does not exist (use 'qm9', a SMILES file or SDF/XYZ)")
    if p.is_file() and p.suffix.lower() in (".txt", ".smi", ".smiles", ".csv"):
        return _canonical_smiles_file(p)
    molecules, errors = load_molecules(spec)
    for record, reason in errors:
        log.warning("--train-smiles: skipped %s: %s", record, reason)
    return reference_smiles(molecules)


def _canonical_smiles_file(p: Path) -> set[str]:
    """SMILES from a text file, rewritten as molediff writes them (hydrogens explicit, largest fragment)."""
    from rdkit import Chem, rdBase

    out, bad = set(), 0
    with rdBase.BlockLogs():
        for line in p.read_text().splitlines():
            token = line.replace(",", " ").split()[0] if line.strip() else ""
            if not token or token.lower() == "smiles":
                continue
            mol = Chem.MolFromSmiles(token)
            if mol is None:
                bad += 1
                continue
            frags = Chem.GetMolFrags(mol, asMols=True)
            largest = Chem.AddHs(max(frags, key=lambda m: m.GetNumAtoms()))
            out.add(Chem.MolToSmiles(largest, isomericSmiles=False))
    if bad:
        log.warning("--train-smiles: %d unparsable SMILES in %s skipped", bad, p)
    if not out:
        raise ValueError(f"--train-smiles: no valid SMILES in {p}")
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def format_table(summary: dict) -> str:
    """The printed summary table."""
    def pct(v):
        return ("-" if v is None else f"{100 * v:.2f}%")
    n = summary["n_molecules"]
    lines = [("molecules read", str(n), ""), ("unreadable records", str(summary["n_unreadable"]), ""),
             ("atom stability", pct(summary["atom_stability"]), f"{summary['n_stable_atoms']}/{summary['n_atoms']}"),
             ("molecule stability", pct(summary["mol_stability"]), f"{summary['n_stable_molecules']}/{n}"),
             ("validity", pct(summary["validity"]), f"{summary['n_valid']}/{n}"),
             ("uniqueness", pct(summary["uniqueness"]), f"{summary['n_unique']}/{summary['n_valid']}"),
             ("novelty", pct(summary["novelty"]),
              f"{summary['n_novel']}/{summary['n_unique']}" if summary["novelty"] is not None else "no --train-smiles"),
             ("connectivity", pct(summary["connectivity"]), f"{summary['n_connected']}/{n}")]
    if summary.get("qed") is not None:
        lines.append(("QED (mean, valid)", f"{summary['qed']:.3f}", ""))
    if summary.get("sa") is not None:
        lines.append(("SA score (mean, valid)", f"{summary['sa']:.2f}", ""))
    for key, label in (("physics", "physical checks"), ("conformers", "conformers")):
        block = summary.get(key)
        if block:
            for k, v in block.items():
                if not isinstance(v, list | dict):
                    lines.append((f"{label}: {k}", _fmt(v), ""))
    w = max(len(a) for a, _, _ in lines)
    return "\n".join(f"{a:<{w}}  {b:>10}  {c}".rstrip() for a, b, c in lines)


def run(args: argparse.Namespace) -> int:
    from ..chem.metrics import evaluate_molecules
    from ..utils import atomic_write

    molecules, errors = load_molecules(args.file)
    for record, reason in errors:
        print(f"skipped {record}: {reason}", file=sys.stderr)
    if not molecules:
        raise ValueError(f"no molecule could be read from {args.file}")
    train = train_smiles_set(args.train_smiles) if args.train_smiles else None
    result = evaluate_molecules(molecules, train_smiles=train, properties=not args.no_properties,
                                use_file_bonds=args.bonds == "file", show_progress=True)
    rows = result.pop("per_molecule")
    summary = {"file": str(args.file), "n_unreadable": len(errors), **result}

    if args.physics:
        from ..chem.physics import physical_checks
        from ..utils import progress

        checks = [physical_checks(m) for m in progress(molecules, desc="physics", unit="mol")]
        for row, c in zip(rows, checks):
            row.update({f"phys_{k}": v for k, v in c.items()})
        ok = [c for c in checks if c["error"] is None or c["bond_lengths_ok"] is not None]
        def frac(key):
            return (sum(bool(c[key]) for c in ok) / len(ok) if ok else None)
        strains = [c["strain"] for c in checks if c["strain"] is not None]
        summary["physics"] = {"n_checked": len(ok), "bond_lengths_ok": frac("bond_lengths_ok"),
                              "angles_ok": frac("angles_ok"), "no_clash": frac("no_clash"),
                              "aromatic_flat": frac("aromatic_flat"),
                              "median_strain_kcal": float(sorted(strains)[len(strains) // 2]) if strains else None}

    if args.reference:
        from ..chem.conformers import conformer_metrics

        refs, ref_errors = load_molecules(args.reference)
        for record, reason in ref_errors:
            print(f"skipped reference {record}: {reason}", file=sys.stderr)
        if not refs:
            raise ValueError(f"no reference molecule could be read from {args.reference}")
        summary["conformers"] = conformer_metrics(molecules, refs, threshold=args.threshold)

    for record, reason in errors:
        rows.append({**{k: None for k in _ROW_KEYS}, "name": record, "error": f"unreadable: {reason}"})
    print(format_table(summary))
    if args.json:
        with atomic_write(args.json) as f:
            json.dump({"summary": summary, "molecules": rows}, f, indent=1, default=_json_default)
            f.write("\n")
    if args.csv:
        keys = list(_ROW_KEYS) + sorted({k for r in rows for k in r} - set(_ROW_KEYS))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in keys})
        with atomic_write(args.csv) as f:
            f.write(buf.getvalue())
    return 0


def _json_default(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")
