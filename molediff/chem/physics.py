"""Physical plausibility checks of one 3D molecule (in the spirit of PoseBusters' intramolecular tests).

- bond lengths and bond angles (1-3 distances) must lie within RDKit's distance-geometry bounds,
  widened by ``tolerance`` (25 %);
- no internal clash: atoms more than two bonds apart must not be closer than ``clash_scale`` (0.7)
  times their distance-geometry lower bound;
- aromatic rings must be flat: every ring atom within ``flat_tolerance`` (0.25 Å) of the ring's
  least-squares plane;
- MMFF94 energy (kcal/mol) of the given geometry, the energy after relaxing it with MMFF94, and the
  strain = energy − relaxed energy.

Bonds are the molecule's own when known, else perceived from 3D. No molecule raises: whatever cannot be
computed is None and ``error`` says why in one line, as ``"what: detail"`` so that reasons can be counted
by what comes before the first colon (``error_category``, e.g. ``'MMFF94 skipped (coincident atoms)'``).
Molecules that RDKit cannot sanitise, collapsed molecules (all atoms at one point) and ones without usable
coordinates get only ``error``; molecules with coincident atoms (a zero-length bond, which makes MMFF94's
line search fail with an 'Invariant Violation') get the geometric checks but no MMFF94 energies.
"""

from __future__ import annotations

import numpy as np

from .diagnostics import COINCIDENT_ATOMS_A, coincident_atoms
from .rdkit_log import rdkit_reason


def _sanitized_mol(m):
    from rdkit import Chem

    from .bonds import to_rdkit

    mol = to_rdkit(m.atomic_numbers, m.positions, bonds=m.bonds, formal_charges=m.formal_charges)
    Chem.SanitizeMol(mol)
    return mol


def error_category(error: str | None) -> str | None:
    """The part of a ``physical_checks`` error before its first colon, to count reasons by kind."""
    return None if error is None else error.split(":", 1)[0]


def physical_checks(molecule, tolerance: float = 0.25, clash_scale: float = 0.7, flat_tolerance: float = 0.25,
                    mmff: bool = True, max_iters: int = 2000) -> dict:
    """Checks of one ``Molecule`` (positions [n, 3] Å); see the module docstring. Keys: bond_lengths_ok,
    n_bad_bonds, angles_ok, n_bad_angles, no_clash, n_clashes, aromatic_flat, max_ring_deviation (Å),
    mmff_energy, mmff_relaxed_energy, strain (kcal/mol), error (None or a one-line reason). Never raises
    for a bad molecule."""
    from rdkit import rdBase

    out = {"bond_lengths_ok": None, "n_bad_bonds": None, "angles_ok": None, "n_bad_angles": None,
           "no_clash": None, "n_clashes": None, "aromatic_flat": None, "max_ring_deviation": None,
           "mmff_energy": None, "mmff_relaxed_energy": None, "strain": None, "error": None}
    if not np.all(np.isfinite(molecule.positions)) or len(molecule.atomic_numbers) == 0:
        out["error"] = "no usable coordinates"
        return out
    x = np.asarray(molecule.positions, dtype=np.float64)
    if len(x) > 1 and np.ptp(x, axis=0).max() < 1e-3:
        out["error"] = f"collapsed: all {len(x)} atoms at one point (no 3D coordinates)"
        return out
    with rdBase.BlockLogs():
        # RDKit raises ValueError, RuntimeError and its own exception types (an 'Invariant Violation' is a
        # RuntimeError); each stage catches everything so that one molecule never ends a run.
        try:
            mol = _sanitized_mol(molecule)
        except Exception as e:
            out["error"] = f"RDKit cannot sanitise the molecule: {rdkit_reason(e)}"
            return out
        try:
            _geometry(out, mol, x, tolerance, clash_scale, flat_tolerance)
        except Exception as e:
            out["error"] = f"geometric checks failed: {rdkit_reason(e)}"
            return out
        if mmff:
            close = coincident_atoms(x)
            if close:
                i, j, d = close[0]
                out["error"] = (f"MMFF94 skipped (coincident atoms): atoms {i + 1} and {j + 1} are {d:.3f} Å apart "
                                f"(under {COINCIDENT_ATOMS_A} Å), a zero-length bond")
                return out
            try:
                _mmff(out, mol, max_iters)
            except Exception as e:
                out["error"] = f"MMFF94 failed: {rdkit_reason(e)}"
    return out


def _geometry(out: dict, mol, x: np.ndarray, tolerance: float, clash_scale: float, flat_tolerance: float) -> None:
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom

    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    bounds = rdDistGeom.GetMoleculeBoundsMatrix(mol)
    upper, lower = np.triu(bounds, 1), np.tril(bounds, -1).T
    topo = Chem.GetDistanceMatrix(mol)
    iu = np.triu_indices(len(x), 1)
    dd, lo, hi, t = d[iu], lower[iu], upper[iu], topo[iu]
    outside = (dd < lo * (1 - tolerance)) | (dd > hi * (1 + tolerance))
    out["n_bad_bonds"] = int((outside & (t == 1)).sum())
    out["bond_lengths_ok"] = out["n_bad_bonds"] == 0
    out["n_bad_angles"] = int((outside & (t == 2)).sum())
    out["angles_ok"] = out["n_bad_angles"] == 0
    out["n_clashes"] = int(((t > 2) & (dd < clash_scale * lo)).sum())
    out["no_clash"] = out["n_clashes"] == 0
    deviation = 0.0
    for ring in mol.GetRingInfo().AtomRings():
        if all(mol.GetAtomWithIdx(i).GetIsAromatic() for i in ring):
            p = x[list(ring)]
            p = p - p.mean(0)
            normal = np.linalg.svd(p)[2][-1]
            deviation = max(deviation, float(np.abs(p @ normal).max()))
    out["max_ring_deviation"] = deviation
    out["aromatic_flat"] = deviation <= flat_tolerance


def mmff_strain(mol, conf_id: int = -1, max_iters: int = 2000):
    """Local strain of conformer ``conf_id`` of an RDKit ``mol`` (with hydrogens) by MMFF94 (Halgren 1996): the
    energy there, the energy of the minimum reached from it by unrestrained minimisation (``max_iters`` steps), both
    in kcal/mol, and how far each bond's length moved on the way, |Δd| per bond in the molecule's bond order (Å).
    The conformer itself is not changed. ValueError (one line) when MMFF94 has no parameters for the molecule or
    an energy is not finite."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    m = Chem.Mol(mol, confId=conf_id) if mol.GetNumConformers() > 1 else Chem.Mol(mol)
    props = AllChem.MMFFGetMoleculeProperties(m)
    ff = AllChem.MMFFGetMoleculeForceField(m, props) if props is not None else None
    if ff is None:
        raise ValueError("no MMFF94 parameters for this molecule")
    pairs = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in m.GetBonds()], dtype=np.int64).reshape(-1, 2)

    def lengths() -> np.ndarray:
        x = m.GetConformer().GetPositions()
        return np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)

    before, e0 = lengths(), ff.CalcEnergy()
    ff.Minimize(maxIts=max_iters)
    e1 = ff.CalcEnergy()
    if not (np.isfinite(e0) and np.isfinite(e1)):
        raise ValueError(f"MMFF94 failed: non-finite energy ({e0} before, {e1} after relaxing)")
    return float(e0), float(e1), np.abs(lengths() - before)


def _mmff(out: dict, mol, max_iters: int) -> None:
    try:
        e0, e1, _ = mmff_strain(mol, max_iters=max_iters)
    except ValueError as e:
        out["error"] = str(e)
        return
    out.update(mmff_energy=e0, mmff_relaxed_energy=e1, strain=e0 - e1)


_CHECK_KEYS = ("bond_lengths_ok", "n_bad_bonds", "angles_ok", "n_bad_angles", "no_clash", "n_clashes", "aromatic_flat",
               "max_ring_deviation", "mmff_energy", "mmff_relaxed_energy", "strain", "error")


def physical_checks_summary(molecules) -> tuple[list[dict], dict, list[str]]:
    """``physical_checks`` on every molecule, none of which can end the run (a progress bar counts them).

    Returns one dict per molecule with the checks' keys prefixed ``phys_`` (``phys_strain``, ``phys_error``, ...),
    the summary block (molecules checked, skipped and with MMFF94 energies; the fractions of checked molecules
    with plausible bond lengths and angles, no clash and flat aromatic rings; the median strain in kcal/mol;
    ``skip_reasons``, molecules counted by ``error_category``) and its warning lines.
    """
    from collections import Counter

    from ..utils import progress

    checks = []
    for m in progress(molecules, desc="physics", unit="mol"):
        try:
            c = physical_checks(m)
        except Exception as e:  # physical_checks catches RDKit's failures; this is the last line of defence
            c = {"error": f"physical checks failed: {rdkit_reason(e)}"}
        checks.append(c)
    rows = [{f"phys_{k}": c.get(k) for k in _CHECK_KEYS} for c in checks]
    ok = [c for c in checks if c.get("bond_lengths_ok") is not None]
    def frac(key):
        return (sum(bool(c[key]) for c in ok) / len(ok) if ok else None)
    strains = [c["strain"] for c in checks if c.get("strain") is not None]
    reasons = Counter(error_category(c["error"]) for c in checks if c.get("error"))
    block = {"n_checked": len(ok), "n_skipped": len(checks) - len(ok), "n_mmff": len(strains),
             "bond_lengths_ok": frac("bond_lengths_ok"), "angles_ok": frac("angles_ok"), "no_clash": frac("no_clash"),
             "aromatic_flat": frac("aromatic_flat"),
             "median_strain_kcal": float(sorted(strains)[len(strains) // 2]) if strains else None,
             "skip_reasons": dict(reasons.most_common())}
    warnings = []
    if reasons:
        warnings.append(f"physical checks: {block['n_skipped']} of {len(checks)} molecules skipped entirely, "
                        f"{len(ok) - len(strains)} checked without MMFF94 energies; reasons: " +
                        ", ".join(f"{r} ({c})" for r, c in reasons.most_common()) + " (see phys_error)")
    return rows, block, warnings
