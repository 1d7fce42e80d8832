"""Geometry metrics of Cα traces, for real chains and for samples, and their distance to a reference set.

Per set of chains (each ``coords`` [L, 3], Å):

* consecutive Cα–Cα distance: mean, std, and the fraction outside 3.8 ± 0.2 Å (trans peptides are 3.80 Å;
  cis 2.9 Å);
* clashes: Cα pairs with |i − j| ≥ 3 closer than 3.0 Å, as a fraction of all such pairs (pooled over the
  set) and as the fraction of chains with at least one;
* secondary structure: helix / strand / coil fractions of all residues from P-SEA (Labesse et al. 1997), which
  needs Cα atoms only (biotite ``annotate_sse``);
* compactness: radius of gyration / N^0.38 (Rg of folded proteins scales as ≈ 2.2 Å · N^0.38, Skolnick et al.
  1997), mean and std over chains;
* Cα virtual bond angles (i−1, i, i+1) and virtual dihedrals (i−1, i, i+1, i+2), degrees, whose 1-D
  Wasserstein distances W1 to a reference set are reported (dihedrals on the line [−180°, 180°], not on the
  circle: a simple bound, exact when no mass moves across ±180°).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bond_angles", "ca_distances", "dihedrals", "plot_distributions", "radius_of_gyration", "score_chains",
           "secondary_structure", "wasserstein_1d"]

CA_CA = 3.8
CA_CA_TOLERANCE = 0.2
CLASH_DISTANCE = 3.0
CLASH_MIN_SEPARATION = 3
RG_EXPONENT = 0.38
PIECE_BREAK = 10.0  # Å: P-SEA runs on the pieces of a trace between consecutive Cα farther apart than this


def ca_distances(coords: np.ndarray) -> np.ndarray:
    """Consecutive Cα–Cα distances [L − 1] (Å) of one chain [L, 3]."""
    return np.linalg.norm(np.diff(np.asarray(coords, dtype=np.float64), axis=0), axis=1)


def bond_angles(coords: np.ndarray) -> np.ndarray:
    """Virtual bond angles [L − 2] in degrees, the angle at Cα_i between Cα_{i−1} and Cα_{i+1}."""
    x = np.asarray(coords, dtype=np.float64)
    if len(x) < 3:
        return np.zeros(0)
    u, v = x[:-2] - x[1:-1], x[2:] - x[1:-1]
    cos = (u * v).sum(1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def dihedrals(coords: np.ndarray) -> np.ndarray:
    """Virtual dihedrals [L − 3] in degrees (−180..180] of Cα_{i..i+3} (IUPAC sign convention)."""
    x = np.asarray(coords, dtype=np.float64)
    if len(x) < 4:
        return np.zeros(0)
    b0, b1, b2 = x[1:-2] - x[:-3], x[2:-1] - x[1:-2], x[3:] - x[2:-1]
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    # m1 = b̂1 × n1 completes the frame (n1, m1, b̂1); this order gives the IUPAC sign (α-helix ≈ +50°).
    m1 = np.cross(b1 / np.maximum(np.linalg.norm(b1, axis=1, keepdims=True), 1e-12), n1)
    return np.degrees(np.arctan2((m1 * n2).sum(1), (n1 * n2).sum(1)))


def radius_of_gyration(coords: np.ndarray) -> float:
    """Rg (Å) of the Cα atoms, all with equal weight."""
    x = np.asarray(coords, dtype=np.float64)
    return float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean()))


def clashes(coords: np.ndarray) -> tuple[int, int]:
    """(clashing pairs, pairs checked): Cα pairs with |i − j| ≥ 3 closer than 3.0 Å."""
    x = np.asarray(coords, dtype=np.float64)
    n = len(x)
    i, j = np.triu_indices(n, k=CLASH_MIN_SEPARATION)
    if len(i) == 0:
        return 0, 0
    d = np.linalg.norm(x[i] - x[j], axis=1)
    return int((d < CLASH_DISTANCE).sum()), len(i)


def secondary_structure(coords: np.ndarray) -> np.ndarray:
    """P-SEA labels [L] (``a`` helix, ``b`` strand, ``c`` coil) of a Cα trace, from biotite's ``annotate_sse``
    on a Cα-only AtomArray (residue name GLY, numbered 1..L).

    Samples can be far from protein-like: the trace is cut where consecutive Cα lie more than 10 Å apart and
    each piece is annotated alone (P-SEA's contact search grids the bounding box, which a scattered trace
    blows up to terabytes); a piece that would still need over 10⁷ grid cells, or has under 5 residues, is
    coil.
    """
    import biotite.structure as struc

    from .io import ca_atom_array

    x = np.asarray(coords, dtype=np.float64)
    labels = np.full(len(x), "c", dtype="<U1")
    cuts = np.nonzero(ca_distances(x) > PIECE_BREAK)[0] + 1
    for start, end in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(x)]])):
        piece = x[start:end]
        if len(piece) < 5 or np.prod(np.ptp(piece, axis=0) / 5.0 + 1) > 1e7:
            continue
        sse = np.asarray(struc.annotate_sse(ca_atom_array(piece)))
        labels[start:end] = np.where(sse == "", "c", sse)
    return labels


def wasserstein_1d(a: Sequence[float], b: Sequence[float]) -> float:
    """W1 between the empirical distributions of samples ``a`` and ``b``: ∫ |F_a(x) − F_b(x)| dx, exact for
    step CDFs (the area between them, summed over the sorted union of the samples). NaN if either is empty."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    grid = np.concatenate([a, b])
    grid.sort(kind="mergesort")
    widths = np.diff(grid)
    fa = np.searchsorted(a, grid[:-1], side="right") / len(a)
    fb = np.searchsorted(b, grid[:-1], side="right") / len(b)
    return float((np.abs(fa - fb) * widths).sum())


def _mean_std(values) -> tuple[float | None, float | None]:
    v = np.asarray(values, dtype=np.float64)
    return (float(v.mean()), float(v.std())) if len(v) else (None, None)


def distributions(chains: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Pooled per-residue values of a set of chains: ``ca_ca``, ``bond_angle``, ``dihedral``, and per chain
    ``length`` and ``rg``."""
    return {"ca_ca": np.concatenate([ca_distances(c) for c in chains] + [np.zeros(0)]),
            "bond_angle": np.concatenate([bond_angles(c) for c in chains] + [np.zeros(0)]),
            "dihedral": np.concatenate([dihedrals(c) for c in chains] + [np.zeros(0)]),
            "length": np.array([len(c) for c in chains], dtype=np.int64),
            "rg": np.array([radius_of_gyration(c) for c in chains], dtype=np.float64)}


def score_chains(chains: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None = None) -> dict:
    """The summary of a set of Cα traces (each [L, 3] Å, L ≥ 1), and with ``reference`` the W1 distances of
    the bond-angle and dihedral distributions (degrees) to it.

    Keys: n_chains, n_residues, ca_ca_mean/std (Å), ca_ca_outside (fraction of bonds outside 3.8 ± 0.2 Å),
    clash_pair_rate (clashing / checked pairs, pooled), clash_chain_rate (chains with a clash), helix /
    strand / coil (fractions of residues), rg_scaled_mean/std (Rg / N^0.38, Å), bond_angle_mean/std,
    and w1_bond_angle / w1_dihedral (None without a reference). ValueError for an empty set.
    """
    chains = [np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in chains]
    if not chains:
        raise ValueError("no chains to score")
    dist = distributions(chains)
    clash = np.array([clashes(c) for c in chains])
    sse = np.concatenate([secondary_structure(c) for c in chains])
    rg_scaled = dist["rg"] / dist["length"].astype(np.float64) ** RG_EXPONENT
    out = {"n_chains": len(chains), "n_residues": int(dist["length"].sum())}
    out["ca_ca_mean"], out["ca_ca_std"] = _mean_std(dist["ca_ca"])
    out["ca_ca_outside"] = (float((np.abs(dist["ca_ca"] - CA_CA) > CA_CA_TOLERANCE).mean())
                            if len(dist["ca_ca"]) else None)
    out["clash_pair_rate"] = float(clash[:, 0].sum() / clash[:, 1].sum()) if clash[:, 1].sum() else None
    out["clash_chain_rate"] = float((clash[:, 0] > 0).mean())
    for key, label in (("helix", "a"), ("strand", "b"), ("coil", "c")):
        out[key] = float((sse == label).mean()) if len(sse) else None
    out["rg_scaled_mean"], out["rg_scaled_std"] = _mean_std(rg_scaled)
    out["bond_angle_mean"], out["bond_angle_std"] = _mean_std(dist["bond_angle"])
    out["w1_bond_angle"] = out["w1_dihedral"] = None
    if reference is not None:
        ref = distributions([np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in reference])
        w = wasserstein_1d(dist["bond_angle"], ref["bond_angle"])
        out["w1_bond_angle"] = None if math.isnan(w) else w
        w = wasserstein_1d(dist["dihedral"], ref["dihedral"])
        out["w1_dihedral"] = None if math.isnan(w) else w
    return out


def format_table(summary: dict) -> str:
    """A plain-text table of ``score_chains``'s summary."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    s = summary
    rows = [("chains / residues", f"{s['n_chains']} / {s['n_residues']}"),
            ("Cα–Cα distance (Å)", f"{f(s['ca_ca_mean'], '.3f')} ± {f(s['ca_ca_std'], '.3f')}"),
            ("Cα–Cα outside 3.8 ± 0.2 Å", f(s["ca_ca_outside"], ".1%")),
            ("clashing pairs (|i−j|≥3, <3 Å)", f(s["clash_pair_rate"], ".3%")),
            ("chains with a clash", f(s["clash_chain_rate"], ".1%")),
            ("helix / strand / coil (P-SEA)", f"{f(s['helix'], '.1%')} / {f(s['strand'], '.1%')} / "
                                              f"{f(s['coil'], '.1%')}"),
            ("Rg / N^0.38 (Å)", f"{f(s['rg_scaled_mean'], '.3f')} ± {f(s['rg_scaled_std'], '.3f')}"),
            ("virtual bond angle (°)", f"{f(s['bond_angle_mean'], '.1f')} ± {f(s['bond_angle_std'], '.1f')}"),
            ("W1 bond angle to reference (°)", f(s["w1_bond_angle"], ".2f")),
            ("W1 dihedral to reference (°)", f(s["w1_dihedral"], ".2f"))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def plot_distributions(path, chains: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None = None,
                       label: str = "chains", reference_label: str = "reference") -> None:
    """Write a PNG (matplotlib, Agg) of the Cα–Cα distance, bond angle and dihedral histograms and Rg against
    length, with the reference set overlaid; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_path

    sets = [(label, distributions([np.asarray(c).reshape(-1, 3) for c in chains]), "tab:blue")]
    if reference is not None:
        sets.append((reference_label, distributions([np.asarray(c).reshape(-1, 3) for c in reference]), "tab:gray"))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    specs = [("ca_ca", "Cα–Cα distance (Å)", np.linspace(2.5, 5.0, 51)),
             ("bond_angle", "virtual bond angle (°)", np.linspace(0, 180, 61)),
             ("dihedral", "virtual dihedral (°)", np.linspace(-180, 180, 73))]
    for ax, (key, title, bins) in zip(axes, specs):
        for name, d, color in sets:
            ax.hist(np.clip(d[key], bins[0], bins[-1]), bins=bins, density=True, histtype="step", lw=1.5,
                    color=color, label=name)
        ax.set_xlabel(title)
    n = np.arange(20, 300)
    for name, d, color in sets:
        axes[3].scatter(d["length"], d["rg"], s=6, color=color, label=name)
    axes[3].plot(n, 2.2 * n ** RG_EXPONENT, "k--", lw=1, label="2.2·N^0.38")
    axes[3].set_xlabel("residues")
    axes[3].set_ylabel("Rg (Å)")
    axes[0].legend(fontsize=8)
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
