"""Geometry metrics of Cα traces, for real chains and for samples, and their distance to a reference set.

Per set of chains (each ``coords`` [L, 3], Å):

* consecutive Cα–Cα distance: mean, std, and the fraction outside 3.8 ± 0.2 Å (trans peptides are 3.80 Å;
  cis 2.9 Å);
* clashes: Cα pairs with |i − j| ≥ 3 closer than 3.0 Å, as a fraction of all such pairs (pooled over the
  set) and as the fraction of chains with at least one;
* secondary structure: helix / strand / coil fractions of all residues from P-SEA (Labesse et al. 1997), which
  needs Cα atoms only (biotite ``annotate_sse``);
* compactness: radius of gyration / N^0.38 (Rg of folded proteins scales as N^0.38, Skolnick et al. 1997), mean
  and std over chains; the one reference figure for real chains is ``RG_SCALED_REAL`` (2.45 Å, the 59 held-out
  chains of ``proteins.reference``), used by the plot and quoted by the model cards;
* Cα virtual bond angles (i−1, i, i+1) and virtual dihedrals (i−1, i, i+1, i+2), degrees, whose 1-D
  Wasserstein distances W1 to a reference set are reported (dihedrals on the line [−180°, 180°], not on the
  circle: a simple bound, exact when no mass moves across ±180°).

``length_profile`` gives clashes and Rg/N^0.38 per chain-length bin: how they grow with L shows the lever-arm
effect of angle-space models (small angle errors compound along the chain; FoldingDiff, Wu et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["RG_SCALED_REAL", "bond_angles", "ca_distances", "clashes", "dihedrals", "length_profile",
           "plot_distributions", "radius_of_gyration", "score_chains", "secondary_structure", "wasserstein_1d"]

CA_CA = 3.8
CA_CA_TOLERANCE = 0.2
CLASH_DISTANCE = 3.0
CLASH_MIN_SEPARATION = 3
RG_EXPONENT = 0.38
RG_SCALED_REAL = 2.45
"""Å: mean Rg / N^0.38 of the 59 held-out real chains (``proteins.reference.heldout_chains("all")``: 2.449 ±
0.362; validation 2.44, test 2.45, training 2.55). The reference curve RG_SCALED_REAL · N^0.38 of every plot
and card."""
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


def _clashes_and_size(chains: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per chain: (clashing pairs, pairs checked) ``[M, 2]`` and Rg / N^0.38 ``[M]`` (Å)."""
    clash = np.array([clashes(c) for c in chains], dtype=np.int64).reshape(-1, 2)
    rg_scaled = np.array([radius_of_gyration(c) / len(c) ** RG_EXPONENT for c in chains], dtype=np.float64)
    return clash, rg_scaled


def _clash_rates(clash: np.ndarray) -> tuple[float | None, float]:
    pairs = clash[:, 1].sum()
    return (float(clash[:, 0].sum() / pairs) if pairs else None), float((clash[:, 0] > 0).mean())


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
    clash, rg_scaled = _clashes_and_size(chains)
    sse = np.concatenate([secondary_structure(c) for c in chains])
    out = {"n_chains": len(chains), "n_residues": int(dist["length"].sum())}
    out["ca_ca_mean"], out["ca_ca_std"] = _mean_std(dist["ca_ca"])
    out["ca_ca_outside"] = (float((np.abs(dist["ca_ca"] - CA_CA) > CA_CA_TOLERANCE).mean())
                            if len(dist["ca_ca"]) else None)
    out["clash_pair_rate"], out["clash_chain_rate"] = _clash_rates(clash)
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


def length_profile(chains: Sequence[np.ndarray], edges: Sequence[int] | None = None) -> list[dict]:
    """Clashes and compactness by chain length: one row per non-empty bin ``edges[k] <= L < edges[k + 1]``
    (``edges`` None: one bin per distinct length), in order.

    Shapes: chains ``[L, 3]`` Å. Row keys: ``lo``, ``hi`` (the bin; hi exclusive), ``n_chains``,
    ``mean_length``, ``clash_pair_rate`` (clashing / checked pairs |i − j| ≥ 3 under 3.0 Å, pooled; None when
    no pair is checked), ``clash_chain_rate`` and ``rg_scaled_mean`` / ``rg_scaled_std`` (Rg / N^0.38, Å): the
    same definitions as ``score_chains``. ValueError for an empty set or edges that do not increase.
    """
    chains = [np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in chains]
    if not chains:
        raise ValueError("no chains to profile")
    lengths = np.array([len(c) for c in chains])
    if edges is None:
        edges = list(np.unique(lengths)) + [int(lengths.max()) + 1]
    edges = np.asarray(edges)
    if len(edges) < 2 or (np.diff(edges) <= 0).any():
        raise ValueError(f"length bin edges must increase, got {edges.tolist()}")
    clash, rg_scaled = _clashes_and_size(chains)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (lengths >= lo) & (lengths < hi)
        if not sel.any():
            continue
        row = {"lo": int(lo), "hi": int(hi), "n_chains": int(sel.sum()), "mean_length": float(lengths[sel].mean())}
        row["clash_pair_rate"], row["clash_chain_rate"] = _clash_rates(clash[sel])
        row["rg_scaled_mean"], row["rg_scaled_std"] = _mean_std(rg_scaled[sel])
        rows.append(row)
    return rows


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


def _ca_ca_bins(values: Sequence[np.ndarray]) -> tuple[np.ndarray, bool]:
    """Bins over the whole range of every set's Cα–Cα distances (at least 3.3–4.3 Å): 120 equal bins, or
    log-spaced ones (and a log axis) when the largest distance is over 4× the smallest."""
    pooled = np.concatenate([np.asarray(v, dtype=np.float64) for v in values] + [np.array([CA_CA - 0.5, CA_CA + 0.5])])
    pooled = pooled[np.isfinite(pooled)]
    lo, hi = float(pooled.min()), float(pooled.max())
    if lo > 0 and hi / lo > 4:
        return np.geomspace(lo, hi * (1 + 1e-9), 121), True
    return np.linspace(lo, hi + 1e-9, 121), False


def plot_distributions(path, chains: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None = None,
                       label: str = "chains", reference_label: str = "reference",
                       others: Sequence[tuple[str, Sequence[np.ndarray]]] = ()) -> None:
    """Write a PNG (matplotlib, Agg) of the Cα–Cα distance, bond angle and dihedral histograms and Rg against
    length; written atomically.

    ``chains`` (``label``), then each ``(label, chains)`` of ``others``, then the ``reference`` set (gray),
    each chain ``[L, 3]`` Å. The Cα–Cα panel covers every value (no clipping into end bins; a log axis when the
    range spans over a factor 4) as the fraction of bonds per bin on a log scale, with a 3.80 Å marker; the Rg
    panel draws ``RG_SCALED_REAL`` · N^0.38 (the held-out real chains' mean).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_path

    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    sets = [(name, distributions([np.asarray(c).reshape(-1, 3) for c in group]), colors[k % len(colors)])
            for k, (name, group) in enumerate([(label, chains), *others])]
    if reference is not None:
        sets.append((reference_label, distributions([np.asarray(c).reshape(-1, 3) for c in reference]), "dimgray"))
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    bins, log_x = _ca_ca_bins([d["ca_ca"] for _, d, _ in sets])
    ax = axes[0]
    for name, d, color in sets:
        v = d["ca_ca"][np.isfinite(d["ca_ca"])]
        if len(v):
            ax.hist(v, bins=bins, weights=np.full(len(v), 1.0 / len(v)), histtype="step", lw=1.5, color=color,
                    label=name)
    ax.axvline(CA_CA, color="k", ls=":", lw=1, label=f"{CA_CA:.2f} Å (trans)")
    ax.set_yscale("log")
    if log_x:
        from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

        ax.set_xscale("log")
        ticks = [v * 10.0 ** k for k in range(-2, 6) for v in (1, 2, 5) if bins[0] <= v * 10.0 ** k <= bins[-1]]
        ax.xaxis.set_major_locator(FixedLocator(ticks + [CA_CA]))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    every = np.concatenate([d["ca_ca"] for _, d, _ in sets])
    every = every[np.isfinite(every)]
    span = f"{every.min():.2f}–{every.max():.2f}" if len(every) else "none"
    ax.set_xlabel(f"Cα–Cα distance (Å); every bond drawn, data {span}")
    ax.set_ylabel("fraction of bonds per bin")
    for ax, (key, title, grid) in zip(axes[1:3], [("bond_angle", "virtual bond angle (°)", np.linspace(0, 180, 61)),
                                                 ("dihedral", "virtual dihedral (°)", np.linspace(-180, 180, 73))]):
        for name, d, color in sets:      # angles lie in these ranges by definition: nothing is clipped
            ax.hist(d[key], bins=grid, density=True, histtype="step", lw=1.5, color=color, label=name)
        ax.set_xlabel(title)
    lengths = np.concatenate([d["length"] for _, d, _ in sets])
    n = np.linspace(max(int(lengths.min()), 4), max(int(lengths.max()), 8), 200)
    for k, (name, d, color) in enumerate(sets):   # the reference hollow, so chains on top of it stay visible
        hollow = reference is not None and k == len(sets) - 1
        axes[3].scatter(d["length"], d["rg"], s=14 if hollow else 6, label=name, facecolors="none" if hollow else color,
                        edgecolors=color, linewidths=0.8, zorder=1 if hollow else 2)
    axes[3].plot(n, RG_SCALED_REAL * n ** RG_EXPONENT, "k--", lw=1,
                 label=f"{RG_SCALED_REAL:.2f}·N^{RG_EXPONENT} (held-out real)")
    axes[3].set_xlabel("residues")
    axes[3].set_ylabel("Rg (Å)")
    axes[0].legend(fontsize=7)
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
