"""Physical plausibility checks of one 3D molecule (in the spirit of PoseBusters' intramolecular tests).

- bond lengths and bond angles (1-3 distances) must lie within RDKit's distance-geometry bounds,
  widened by ``tolerance`` (25 %);
- no internal clash: atoms more than two bonds apart must not be closer than ``clash_scale`` (0.7)
  times their distance-geometry lower bound;
- aromatic rings must be flat: every ring atom within ``flat_tolerance`` (0.25 Å) of the ring's
  least-squares plane;
- MMFF94 energy (kcal/mol) of the given geometry, the energy after relaxing it with MMFF94, and the
  strain = energy − relaxed energy.

Bonds are the molecule's own when known, else perceived from 3D. Molecules that RDKit cannot sanitise
get only ``error``.
"""

from __future__ import annotations

import numpy as np


def _sanitized_mol(m):
    from rdkit import Chem

    from .bonds import to_rdkit

    mol = to_rdkit(m.atomic_numbers, m.positions, bonds=m.bonds, formal_charges=m.formal_charges)
    Chem.SanitizeMol(mol)
    return mol


def physical_checks(molecule, tolerance: float = 0.25, clash_scale: float = 0.7, flat_tolerance: float = 0.25,
                    mmff: bool = True, max_iters: int = 2000) -> dict:
    """Checks of one ``Molecule``; see the module docstring. Keys: bond_lengths_ok, n_bad_bonds,
    angles_ok, n_bad_angles, no_clash, n_clashes, aromatic_flat, max_ring_deviation, mmff_energy,
    mmff_relaxed_energy, strain, error (None or a one-line reason)."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem, rdDistGeom

    out = {"bond_lengths_ok": None, "n_bad_bonds": None, "angles_ok": None, "n_bad_angles": None,
           "no_clash": None, "n_clashes": None, "aromatic_flat": None, "max_ring_deviation": None,
           "mmff_energy": None, "mmff_relaxed_energy": None, "strain": None, "error": None}
    if not np.all(np.isfinite(molecule.positions)) or len(molecule.atomic_numbers) == 0:
        out["error"] = "no usable coordinates"
        return out
    with rdBase.BlockLogs():
        try:
            mol = _sanitized_mol(molecule)
        except (ValueError, RuntimeError) as e:
            out["error"] = f"RDKit cannot sanitise the molecule: {str(e).splitlines()[0]}"
            return out
        x = np.asarray(molecule.positions, dtype=np.float64)
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
        if mmff:
            props = AllChem.MMFFGetMoleculeProperties(mol)
            if props is None:
                out["error"] = "no MMFF94 parameters for this molecule"
                return out
            ff = AllChem.MMFFGetMoleculeForceField(mol, props)
            e0 = ff.CalcEnergy()
            ff.Minimize(maxIts=max_iters)
            e1 = ff.CalcEnergy()
            out.update(mmff_energy=float(e0), mmff_relaxed_energy=float(e1), strain=float(e0 - e1))
    return out
