"""Conformer-ensemble metrics: symmetry-aware heavy-atom RMSD, coverage, matching and distance error.

For one molecule with reference conformers R (n_ref) and generated conformers G (n_gen), with
RMSD(r, g) the best heavy-atom RMSD after alignment over the molecule's symmetries (``best_rmsd``:
``molediff.chem.rmsd``, as RDKit's ``GetBestRMS``) and threshold δ:

- COV-R = fraction of r in R with min_g RMSD(r, g) < δ;   AMR-R = mean over r of min_g RMSD(r, g);
- COV-P = fraction of g in G with min_r RMSD(r, g) < δ;   AMR-P = mean over g of min_r RMSD(r, g);
- D-MAE = mean over r of the mean absolute difference between the heavy-atom distance matrices of r
  and its best-RMSD generated conformer (atoms compared in file order, so both must list atoms in the
  same order; otherwise D-MAE is NaN).

Ensemble metrics over several molecules are the means of the per-molecule values (as in GeoDiff and
Torsional Diffusion).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .bonds import bond_list, perceive_bonds
from .rmsd import METRIC_MAX_MAPS, atom_maps, element_graph, symmetric_rmsd


def _heavy_topology(m) -> tuple[np.ndarray, np.ndarray]:
    """Indices of heavy atoms and the heavy-atom bond list (all bonds as single: connectivity only)."""
    heavy = np.nonzero(np.asarray(m.atomic_numbers) != 1)[0]
    bonds = m.bonds if m.bonds is not None else bond_list(perceive_bonds(m.atomic_numbers, m.positions))
    remap = -np.ones(len(m.atomic_numbers), dtype=np.int64)
    remap[heavy] = np.arange(len(heavy))
    keep = (remap[bonds[:, 0]] >= 0) & (remap[bonds[:, 1]] >= 0) if len(bonds) else np.zeros(0, bool)
    b = bonds[keep]
    rows = np.stack([remap[b[:, 0]], remap[b[:, 1]], np.ones(len(b), dtype=np.int64)], axis=1) if len(b) \
        else np.zeros((0, 3), dtype=np.int64)
    return heavy, rows


def _heavy_mol(m, topology=None):
    from .bonds import to_rdkit

    heavy, rows = _heavy_topology(m)
    if topology is not None:
        rows = topology
    mol = to_rdkit(np.asarray(m.atomic_numbers)[heavy], np.asarray(m.positions)[heavy], bonds=rows)
    mol.UpdatePropertyCache(strict=False)
    return mol


def topology_key(m) -> str:
    """Canonical SMILES of the heavy-atom connectivity (all bonds single, no charges): groups conformers of
    one molecule even when perceived bond orders differ between them."""
    from rdkit import Chem

    return Chem.MolToSmiles(_heavy_mol(m), canonical=True)


def best_rmsd(probe, reference, max_maps: int = METRIC_MAX_MAPS) -> float:
    """Heavy-atom RMSD (Å) after optimal superposition over the symmetries of ``reference``
    (``molediff.chem.rmsd.symmetric_rmsd``; equal to RDKit's GetBestRMS on the connectivity graphs).

    Atoms are matched through the molecular graphs (elements and connectivity), so atom order may differ. The
    probe's own bonds (or its perceived ones) are used; if that graph does not match the reference's and
    both list the same elements in the same order, the probe is given the reference's connectivity (a
    distorted generated conformer can miss a bond). At most ``max_maps`` atom maps are tried (beyond that many
    the result is an upper bound; see ``chem.rmsd.METRIC_MAX_MAPS``). Returns NaN when no matching is possible,
    neither has a heavy atom, or either molecule is malformed (never raises for a bad molecule).
    """
    zp, zr = np.asarray(probe.atomic_numbers), np.asarray(reference.atomic_numbers)
    if (zp != 1).sum() != (zr != 1).sum() or not (zr != 1).any():
        return float("nan")
    # Any failure (bonds to atoms that do not exist, elements RDKit rejects, degenerate coordinates) means
    # "no RMSD" for this pair, never an aborted run.
    try:
        heavy_r, rows_r = _heavy_topology(reference)
        heavy_p, rows_p = _heavy_topology(probe)
        reference_graph = element_graph(zr[heavy_r], rows_r[:, :2].tolist())
    except Exception:
        return float("nan")
    try:
        maps = atom_maps(reference_graph, element_graph(zp[heavy_p], rows_p[:, :2].tolist()), max_maps)
    except Exception:  # e.g. a repeated bond
        maps = np.zeros((0, len(heavy_p)), dtype=np.int64)
    if not len(maps):
        if not np.array_equal(zp[heavy_p], zr[heavy_r]):
            return float("nan")
        maps = atom_maps(reference_graph, reference_graph, max_maps)
    try:
        positions = np.asarray(probe.positions, dtype=np.float64)[heavy_p][None]
        return float(symmetric_rmsd(positions, np.asarray(reference.positions, dtype=np.float64)[heavy_r], maps)[0])
    except Exception:
        return float("nan")


def rmsd_matrix(generated: Sequence, reference: Sequence) -> np.ndarray:
    """[n_ref, n_gen] best heavy-atom RMSDs."""
    return np.array([[best_rmsd(g, r) for g in generated] for r in reference], dtype=np.float64).reshape(
        len(reference), len(generated))


def distance_mae(probe, reference) -> float:
    """Mean |d_ij(probe) - d_ij(reference)| over heavy-atom pairs, atoms in file order (NaN if elements differ)."""
    zp, zr = np.asarray(probe.atomic_numbers), np.asarray(reference.atomic_numbers)
    if not np.array_equal(zp, zr):
        return float("nan")
    heavy = zr != 1
    if heavy.sum() < 2:
        return 0.0
    xp = np.asarray(probe.positions, dtype=np.float64)[heavy]
    xr = np.asarray(reference.positions, dtype=np.float64)[heavy]
    dp = np.linalg.norm(xp[:, None] - xp[None], axis=-1)
    dr = np.linalg.norm(xr[:, None] - xr[None], axis=-1)
    iu = np.triu_indices(len(xp), 1)
    return float(np.abs(dp[iu] - dr[iu]).mean())


def coverage(rmsd: np.ndarray, threshold: float = 0.75) -> dict[str, float]:
    """COV-R, AMR-R, COV-P, AMR-P from an [n_ref, n_gen] RMSD matrix (NaN entries never match)."""
    r = np.where(np.isfinite(rmsd), rmsd, np.inf)
    if r.size == 0:
        return {"cov_r": float("nan"), "amr_r": float("nan"), "cov_p": float("nan"), "amr_p": float("nan")}
    best_r, best_p = r.min(axis=1), r.min(axis=0)
    def mean(v):
        return (float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else float("nan"))
    return {"cov_r": float((best_r < threshold).mean()), "amr_r": mean(best_r),
            "cov_p": float((best_p < threshold).mean()), "amr_p": mean(best_p)}


NO_MATCH_WARNING = "no generated molecule matches a reference molecule"


def conformer_metrics(generated: Sequence, reference: Sequence, threshold: float = 0.75) -> dict:
    """Ensemble metrics for generated vs reference conformers of one or more molecules.

    Conformers are grouped by molecule name when every generated name occurs among the reference names,
    otherwise by heavy-atom connectivity (``topology_key``). Returns the means of cov_r, amr_r, cov_p,
    amr_p, d_mae over molecules (NaN when no group: callers writing JSON must turn NaN into null),
    ``threshold``, ``matched_by`` ('name' or 'connectivity'), ``n_groups``, ``n_matched`` (generated
    conformers in a group), ``unmatched`` (names of generated molecules with no reference group),
    ``failed`` ([{'name', 'reason', 'set'}] for molecules RDKit could not turn into a connectivity key),
    ``warning`` (None, or a one-line message such as ``NO_MATCH_WARNING`` when nothing matched) and
    ``per_group`` rows. Never raises for a bad molecule.
    """
    from rdkit import rdBase

    from .rdkit_log import rdkit_reason as error_reason

    ref_names = {r.name for r in reference}
    by_name = bool(generated) and all(g.name in ref_names and g.name for g in generated)
    failed = []

    def key(m, which: str):
        if by_name:
            return m.name
        try:
            with rdBase.BlockLogs():
                return topology_key(m)
        except Exception as e:  # e.g. file bonds RDKit rejects: that molecule just matches nothing
            failed.append({"name": m.name, "reason": f"no connectivity key: {error_reason(e)}", "set": which})
            return None

    refs, gens = defaultdict(list), defaultdict(list)
    for r in reference:
        k = key(r, "reference")
        if k is not None:
            refs[k].append(r)
    unmatched = []
    for g in generated:
        k = key(g, "generated")
        if k is not None and k in refs:
            gens[k].append(g)
        else:
            unmatched.append(g.name)
    groups = []
    for k, rs in refs.items():
        gs = gens.get(k, [])
        if not gs:
            continue
        rmsd = rmsd_matrix(gs, rs)
        row = {"molecule": k, "n_ref": len(rs), "n_gen": len(gs), **coverage(rmsd, threshold)}
        best = np.where(np.isfinite(rmsd), rmsd, np.inf).argmin(axis=1)
        maes = [distance_mae(gs[b], r) for r, b in zip(rs, best)]
        row["d_mae"] = float(np.nanmean(maes)) if np.isfinite(maes).any() else float("nan")
        groups.append(row)
    def mean(key_):
        return (float(np.nanmean([g[key_] for g in groups])) if groups and
                np.isfinite([g[key_] for g in groups]).any() else float("nan"))
    warning = None
    if not groups:
        how = "by name" if by_name else "by heavy-atom connectivity"
        warning = (f"{NO_MATCH_WARNING} ({len(generated)} generated, {len(reference)} reference, compared {how}): "
                   f"no conformer metrics")
    return {"cov_r": mean("cov_r"), "amr_r": mean("amr_r"), "cov_p": mean("cov_p"), "amr_p": mean("amr_p"),
            "d_mae": mean("d_mae"), "threshold": threshold, "matched_by": "name" if by_name else "connectivity",
            "n_groups": len(groups), "n_matched": sum(g["n_gen"] for g in groups), "unmatched": unmatched,
            "failed": failed, "warning": warning, "per_group": groups}
