"""Protein benchmarks: the Cα denoiser's graph (full vs radius) by chain length, and sampler wall time.

``graph``: forward + backward time and peak memory of the protein denoiser (the EGNN of a protein config, with
its node and sequence-offset edge features) at L = 64, 128, 256 for

* ``full``: the dense full graph, as ``molediff.nn.EGNNDenoiser`` runs it (what training uses);
* ``masked``: the same dense tensors with a distance-cutoff edge mask (radius ``--cutoff`` Å on the input
  coordinates, plus sequence neighbours |i − j| ≤ 2): a radius graph without a sparse kernel costs what the
  full graph costs;
* ``sparse``: the EGNN's own radius-graph mode (``model.graph: radius``, i.e. ``EGNNConfig(graph="radius")``:
  gather/scatter over the edge list only) with the same weights, cutoff and sequence neighbours; with an
  cutoff above every distance it reproduces the dense output (checked before timing).

Inputs are a noised state at t = 0.5 of compact Gaussian "chains" with Rg = 2.2·L^0.38 Å (real chains' size).
On CPU peak memory is the growth of the resident set of a fresh process per case (its own peak, ``VmHWM``:
``_bench.peak_rss_kb``, less its resident set before the warm-up step); on CUDA ``torch.cuda.max_memory_allocated``.

``sampling``: wall time of ``molediff protein sample --length 128 -n 4`` with an untrained model (T = 1000)
for DDPM-1000, DDPM-200 and DPM-Solver++(2M)-50, run as the CLI in a fresh process each.

``quality``: the acceptance benchmark of a trained Cartesian EGNN (``--checkpoint``; its shipped weights were
retired).
``-n`` chains at each ``--lengths`` are sampled, written as PDB files and re-read with biotite (what ``molediff
protein score`` sees), then scored against the held-out test split of ``--source`` (``molediff.proteins.data``:
deduplicated, split by 30 % sequence identity clusters). The held-out validation chains, scored against the same
test chains, are the real-data row: the W1 distances a model cannot beat. Prints one Markdown table (every metric
side by side) and draws the distributions of all samples over the test chains as a PNG.

``acceptance``: issue 20's table for the angle model (``--checkpoint``, default the shipped
``protein_ca_angles``): ``-n`` chains at L = 80 and 128 with ``molediff protein sample``'s default sampler (the
L = 128 sampling timed), a Cartesian EGNN (``--baseline`` weights, DPM-50; the retired ``protein_ca_egnn`` is in
git history, see BENCHMARKS.md), the training chains (every chain, and one per homology cluster), the
held-out validation chains, and the two calibration rows of ``molediff.proteins.reference`` (80-residue windows of
real chains rebuilt from their own angles at 3.80 Å; chains from independent real (θ, τ) pairs): Cα–Cα, helix +
strand by P-SEA, W1 of bond angles and dihedrals to the held-out test chains, clashes and Rg/N^0.38, in one
Markdown table with the targets; ``--png`` draws both models over the test chains.

``lever``: the lever-arm effect, clashes and Rg/N^0.38 against chain length for the angle model's samples, real
windows of the same length and chains of independent real (θ, τ) pairs.

``samplers``: the angle model's samplers and step counts side by side on the same seeds (time and the acceptance
metrics), to choose ``molediff.proteins.sampling.MODEL_KINDS["angles"]``'s default.

``heldout``: rewrites the held-out chains shipped in ``molediff/proteins/resources`` from the data folder.

``denoising``: what a trained model gets right at each noise level, on held-out validation chains: the ε-MSE
(the training loss per coordinate; 1 = predicting nothing) and the consecutive Cα–Cα distances of its one-step
clean estimate x̂(z_t) at t = 0.02 … 0.8, with fixed noise draws. A model that samples good local geometry
has x̂ near 3.8 Å with a small spread from mid noise down.

    python scripts/bench_proteins.py graph --repeats 3
    python scripts/bench_proteins.py sampling --hidden 16 --layers 2
    python scripts/bench_proteins.py quality --source ../shared/data/proteins-db55 -n 100 --png quality.png
    python scripts/bench_proteins.py denoising --source ../shared/data/proteins-db55
    python scripts/bench_proteins.py acceptance --source ../shared/data/proteins-db55 --png acceptance.png
    python scripts/bench_proteins.py lever --source ../shared/data/proteins-db55
    python scripts/bench_proteins.py samplers --source ../shared/data/proteins-db55 --runs ddpm:100 ddpm:1000
    python scripts/bench_proteins.py heldout --source ../shared/data/proteins-db55
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))   # _bench, also when this file is loaded by path
from _bench import Stopwatch, machine, peak_rss_kb, table_header  # noqa: E402

CLI = "import sys; from molediff.cli import main; sys.exit(main())"   # `molediff ...` in this interpreter


def _header(args) -> str:
    return (f"Command: `{' '.join(['python', 'scripts/bench_proteins.py'] + sys.argv[1:])}`  \n"
            f"Machine: {machine(getattr(args, 'device', None))}  \nDate: {datetime.date.today().isoformat()}\n")


# ------------------------------------------------------------------------------------------------ graph
def build_model(hidden: int, layers: int, T: int = 1000, graph: str = "full", cutoff: float = 10.0):
    """The protein model; ``graph="radius"`` uses the EGNN's sparse mode (cutoff in Å, |i − j| ≤ 2 kept). The
    weights do not depend on the graph."""
    from molediff.proteins.model import ProteinBackboneConfig, ProteinBackboneDiffusion

    torch.manual_seed(0)
    return ProteinBackboneDiffusion(ProteinBackboneConfig.from_dict({
        "T": T, "graph": graph, "graph_radius": cutoff, "graph_sequence_neighbours": 2,
        "denoiser": {"name": "egnn", "hidden": hidden, "layers": layers, "aggregation_normalisation": 32.0}}))


def make_inputs(model, L: int, batch: int, device, dtype=torch.float32):
    """A noised state (t = 0.5) of compact chains of L residues, in model units, with the model's features."""
    g = torch.Generator().manual_seed(L)
    rg = 2.2 * L ** 0.38
    x0 = torch.randn(batch, L, 3, generator=g) * rg / 3 ** 0.5 / model.config.coord_scale
    t = torch.full((batch,), 0.5)
    alpha, sigma = model.schedule.alpha(t).view(-1, 1, 1), model.schedule.sigma(t).view(-1, 1, 1)
    pos = alpha * x0 + sigma * torch.randn(batch, L, 3, generator=g)
    pos = pos - pos.mean(1, keepdim=True)
    mask = torch.ones(batch, L, dtype=torch.bool)
    h = model.node_features(mask, dtype)
    e = model.edge_features(mask, dtype)
    return [v.to(device) for v in (pos.to(dtype), h, t.to(dtype), mask, e)]


def radius_edges(pos, mask, cutoff: float, seq_neighbours: int = 2):
    """[B, N, N] bool: pairs within ``cutoff`` (model units) or within ``seq_neighbours`` along the chain, no
    self-pairs, both ends real."""
    n = pos.shape[1]
    idx = torch.arange(n, device=pos.device)
    near_seq = (idx[:, None] - idx[None, :]).abs() <= seq_neighbours
    adj = (torch.cdist(pos, pos) < cutoff) | near_seq
    adj &= mask[:, :, None] & mask[:, None, :]
    adj &= ~torch.eye(n, dtype=torch.bool, device=pos.device)
    return adj


def dense_masked_forward(net, pos, h, t, mask, edge_attr, adj):
    """The EGNN's dense body with its full-graph edge weight replaced by ``adj`` (same tensors, same cost)."""
    return net(pos, h, t, mask, edge_attr=edge_attr, pair_weights=adj)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(args) -> dict:
    """One (graph, L) case in this process; returns timings, memory and the mean degree."""
    device = torch.device(args.device)
    model = build_model(args.hidden, args.layers, graph="radius" if args.graph == "sparse" else "full",
                        cutoff=args.cutoff).to(device)
    net = model.denoiser.train()
    pos, h, t, mask, e = make_inputs(model, args.length, args.batch, device)
    cutoff = args.cutoff / model.config.coord_scale
    target = torch.randn_like(pos)

    def step():
        if args.graph == "full":
            eps, _ = net(pos, h, t, mask, edge_attr=e)
            degree = args.length - 1
        elif args.graph == "sparse":
            eps, _ = net(pos, h, t, mask, edge_attr=e)   # the net selects its edges itself
            degree = len(net.edge_index(pos, mask)[0]) / int(mask.sum())
        else:
            adj = radius_edges(pos, mask, cutoff)
            degree = float(adj.sum(-1).float().mean())
            eps, _ = dense_masked_forward(net, pos, h, t, mask, e, adj)
        (eps - target).square().mean().backward()
        net.zero_grad(set_to_none=True)
        return degree

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _rss_bytes()
    step()  # warm-up
    times = []
    for _ in range(args.repeats):
        with Stopwatch(device) as watch:
            degree = step()
        times.append(watch.seconds)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = peak_rss_kb() * 1024 - base   # this process's own peak (the case runs in a fresh one)
    return {"graph": args.graph, "L": args.length, "ms": 1000 * sorted(times)[len(times) // 2],
            "peak_mib": max(peak, 0) / 2**20, "degree": degree}


def check_sparse_matches_dense(hidden: int, layers: int) -> float:
    """Max |sparse − dense| of ε with a cutoff above every distance (float64): the timings are of one net."""
    model = build_model(hidden, layers).double()
    sparse_model = build_model(hidden, layers, graph="radius", cutoff=1e9).double()   # covers every pair
    sparse_model.load_state_dict(model.state_dict())
    pos, h, t, mask, e = make_inputs(model, 20, 2, torch.device("cpu"), torch.float64)
    mask[1, 15:] = False
    pos = pos * mask.unsqueeze(-1)
    dense, _ = model.denoiser(pos, h, t, mask, edge_attr=e)
    sparse, _ = sparse_model.denoiser(pos, h, t, mask, edge_attr=e)
    return float((dense - sparse).abs().max().detach())


def graph(args) -> None:
    err = check_sparse_matches_dense(args.hidden, args.layers)
    if err > 1e-9:
        raise SystemExit(f"the sparse EGNN mode differs from the dense EGNN by {err:.2e}")
    rows = []
    for L in args.lengths:
        for g in args.graphs:
            cmd = [sys.executable, __file__, "case", "--graph", g, "--length", str(L), "--batch", str(args.batch),
                   "--hidden", str(args.hidden), "--layers", str(args.layers), "--cutoff", str(args.cutoff),
                   "--repeats", str(args.repeats), "--device", args.device]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {rows[-1]}", file=sys.stderr)
    print(_header(args))
    print(f"EGNN {args.layers} x {args.hidden} with sequence-offset edge features, batch {args.batch}, "
          f"forward + backward, median of {args.repeats}; radius {args.cutoff:g} Å on the input coordinates "
          f"plus |i − j| ≤ 2; sparse mode = dense output to {err:.0e} (float64, cutoff above every distance).\n")
    print(table_header(["L", "graph", "edges per residue", "fwd+bwd ms", "peak memory MiB"]))
    for r in rows:
        print(f"| {r['L']} | {r['graph']} | {r['degree']:.1f} | {r['ms']:.1f} | {r['peak_mib']:.0f} |")


# --------------------------------------------------------------------------------------------- sampling
def sampling(args) -> None:
    from molediff.training.weights import write_weights

    model = build_model(args.hidden, args.layers, T=1000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "untrained.safetensors"
        write_weights(model.state_dict(), weights, {"format": "molediff-weights", "format_version": "1",
                                                    "model_class": type(model).__name__,
                                                    "model_config": json.dumps(model.config.to_dict())}, None)
        for sampler, steps in args.runs:
            cmd = [sys.executable, "-c", CLI, "protein", "sample", "--checkpoint", str(weights),
                   "--length", str(args.length), "-n", str(args.n), "-o", str(Path(tmp) / f"{sampler}{steps}"),
                   "--sampler", sampler, "--steps", str(steps), "--device", args.device]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
            wall = time.perf_counter() - t0
            rows.append((sampler, steps, wall))
            print(f"  {sampler}-{steps}: {wall:.1f} s", file=sys.stderr)
    print(_header(args))
    print(f"`molediff protein sample --length {args.length} -n {args.n}` with an untrained EGNN {args.layers} x "
          f"{args.hidden} (T = 1000), whole CLI process (start-up and file writing included).\n")
    print(table_header(["sampler", "steps", "network evaluations", "wall s", "vs DDPM-1000"]))
    ref = next((w for s, n, w in rows if s == "ddpm" and n == 1000), None)
    for s, n, w in rows:
        evals = n + 1 if s == "dpm2m" else n
        print(f"| {s} | {n} | {evals} | {w:.1f} | {f'{ref / w:.1f}x' if ref else '-'} |")


# ---------------------------------------------------------------------------------------------- quality
def quality(args) -> None:
    from molediff.proteins.data import load_proteins
    from molediff.proteins.io import read_ca_traces, write_ca_trace
    from molediff.proteins.metrics import plot_distributions, score_chains
    from molediff.proteins.model import ProteinBackboneDiffusion
    from molediff.training.weights import load_model

    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint
    model = load_model(ProteinBackboneDiffusion, checkpoint, device=args.device)
    test = load_proteins({"path": args.source, "split": "test"})
    valid = load_proteins({"path": args.source, "split": "valid"})
    reference = [test[i].coords for i in range(len(test))]
    rows, samples_all = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for L in args.lengths:
            seeds = range(args.seed, args.seed + args.n)
            t0 = time.perf_counter()
            chains = model.sample_chains(torch.full((args.n,), L), seeds=seeds, batch_size=args.batch_size,
                                         sampler=args.sampler, steps=args.steps, show_progress=True,
                                         **({"noise_scale": args.noise_scale} if args.sampler == "ddpm" else {}))
            wall = time.perf_counter() - t0
            folder = Path(tmp) / f"L{L}"
            folder.mkdir()
            for seed, c in zip(seeds, chains):
                write_ca_trace(folder / f"sample_{seed}.pdb", c)
            written, _, bad = read_ca_traces(folder)
            if bad:
                print(f"  L={L}: {len(bad)} unreadable sample files: {bad[:3]}", file=sys.stderr)
            samples_all += written
            rows.append((f"samples, L = {L}", score_chains(written, reference), wall / args.n))
            print(f"  L={L}: {wall:.0f} s", file=sys.stderr)
    rows.append(("held-out valid chains (real)", score_chains([valid[i].coords for i in range(len(valid))],
                                                             reference), None))
    steps = args.steps or model.schedule.T
    print(_header(args))
    gamma = f" (noise scale {args.noise_scale:g})" if args.sampler == "ddpm" and args.noise_scale != 1 else ""
    print(f"Weights: {checkpoint}; {args.sampler}-{steps}{gamma}, seeds {args.seed}..{args.seed + args.n - 1} at each "
          f"length. Reference for W1: the {len(test)} held-out test chains of {args.source} (30 % identity split); "
          f"criteria: Cα–Cα mean 3.8 ± 0.1 Å, clash rate < 2 %, helix + strand ≥ 30 %, Rg/N^0.38 in 2.0–2.6.\n")
    print(table_header(["set", "chains", "Cα–Cα Å (mean ± sd)", "outside 3.8 ± 0.2", "clashing pairs",
                        "chains with a clash", "helix", "strand", "coil", "Rg/N^0.38", "bond angle °", "W1 angle °",
                        "W1 dihedral °", "s per chain"]))
    for name, r, per in rows:
        print(f"| {name} | {r['n_chains']} | {r['ca_ca_mean']:.3f} ± {r['ca_ca_std']:.3f} | {r['ca_ca_outside']:.1%} "
              f"| {r['clash_pair_rate']:.2%} | {r['clash_chain_rate']:.0%} | {r['helix']:.1%} | {r['strand']:.1%} "
              f"| {r['coil']:.1%} | {r['rg_scaled_mean']:.2f} ± {r['rg_scaled_std']:.2f} "
              f"| {r['bond_angle_mean']:.1f} ± {r['bond_angle_std']:.1f} | {r['w1_bond_angle']:.2f} "
              f"| {r['w1_dihedral']:.2f} | {'-' if per is None else f'{per:.2f}'} |")
    if args.json:
        Path(args.json).write_text(json.dumps({name: r for name, r, _ in rows}, indent=1) + "\n")
    if args.png:
        plot_distributions(args.png, samples_all, reference, label=f"samples (L = {', '.join(map(str, args.lengths))})",
                           reference_label="held-out test chains")
        print(f"\nDistributions: {args.png}")


def denoising(args) -> None:
    from molediff.diffusion import predict_x0
    from molediff.proteins.data import load_proteins
    from molediff.proteins.model import ProteinBackboneDiffusion
    from molediff.training.weights import load_model

    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint
    model = load_model(ProteinBackboneDiffusion, checkpoint).eval().double()
    valid = load_proteins({"path": args.source, "split": "valid"})
    chains = [valid[i].coords for i in range(len(valid))][:args.n]
    L = max(len(c) for c in chains)
    coords = torch.zeros(len(chains), L, 3, dtype=torch.float64)
    mask = torch.zeros(len(chains), L, dtype=torch.bool)
    for b, c in enumerate(chains):
        coords[b, :len(c)], mask[b, :len(c)] = torch.as_tensor(c, dtype=torch.float64), True
    scale = model.config.coord_scale
    x = model.space.project(torch.where(mask[..., None], coords / scale, torch.zeros((), dtype=torch.float64)), mask)
    eps_fn = model.eps_fn(mask, given_features=model.node_features(mask, torch.float64),
                          edge_attr=model.edge_features(mask, torch.float64))
    generator = torch.Generator().manual_seed(0)
    print(_header(args))
    print(f"Weights: {checkpoint} (coordinates in units of {scale:g} Å); {len(chains)} held-out validation chains "
          f"of {args.source}; one fixed noise draw per time.\n")
    print(table_header(["t", "σ_t/α_t (Å)", "ε-MSE", "x̂ Cα–Cα Å (mean ± sd)", "x̂ outside 3.8 ± 0.2"]))
    for t in (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8):
        tt = torch.full((len(chains),), t, dtype=torch.float64)
        alpha, sigma = model.schedule.alpha(tt).view(-1, 1, 1), model.schedule.sigma(tt).view(-1, 1, 1)
        eps = model.space.randn(x.shape, mask, generator, x.dtype)
        z = alpha * x + sigma * eps
        with torch.no_grad():
            eps_hat = eps_fn(z, tt)
        x0 = predict_x0(z, tt, model.schedule, eps_hat) * scale
        d = torch.cat([(x0[b, 1:len(c)] - x0[b, :len(c) - 1]).norm(dim=-1) for b, c in enumerate(chains)])
        mse = float(((eps_hat - eps)[mask] ** 2).mean())
        print(f"| {t:g} | {float(sigma[0] / alpha[0]) * scale:.2f} | {mse:.3f} | {float(d.mean()):.2f} ± "
              f"{float(d.std()):.2f} | {float(((d - 3.8).abs() > 0.2).double().mean()):.0%} |")


# ------------------------------------------------------------------------------------------- acceptance
TARGETS = {"ca_ca": "3.80 ± 0.02", "sse": "≥ 25 %", "w1_angle": "≤ 6", "w1_dihedral": "≤ 20", "pairs": "< 1 %",
           "chains": "≤ 20 %", "rg": "2.0–2.8", "time": "≤ 60 (L = 128, 100 chains, 2 cores)"}
"""Issue 20's acceptance criteria, one per column of the acceptance table."""


def _heldout(source: str) -> tuple[list, list]:
    """(test chains: the W1 reference, valid chains: the real-data row) of a structure folder or prepared .npz."""
    from molediff.proteins.data import load_proteins

    test = load_proteins({"path": source, "split": "test"})
    valid = load_proteins({"path": source, "split": "valid"})
    return [test[i].coords for i in range(len(test))], [valid[i].coords for i in range(len(valid))]


def _calibration_source(source: str, which: str, n: int) -> list:
    """The real chains the calibration rows are built from: ``heldout`` (validation + test) or the first ``n``
    training chains (``train``, the issue author's setting)."""
    from molediff.proteins.data import load_proteins

    if which == "train":
        train = load_proteins({"path": source, "split": "train"})
        return [train[i].coords for i in range(min(n, len(train)))]
    test, valid = _heldout(source)
    return valid + test


def _training_rows(source: str, seed: int, epochs: int = 10) -> list[tuple[str, list]]:
    """The training chains as reference rows: every chain once, and what ``data.balance: clusters`` trains on
    (``ProteinSet.epoch_chains``: one chain per homology cluster, ``epochs`` epochs' draws pooled, so a chain
    counts as often as it is visited). Empty when ``source`` holds no training chains (a held-out .npz)."""
    from molediff.proteins.data import load_proteins

    try:
        train = load_proteins({"path": source, "split": "train"})
    except ValueError:
        return []
    every = [train[i].coords for i in range(len(train))]
    visits = np.concatenate([train.epoch_chains("clusters", seed, e) for e in range(epochs)])
    clusters = len(np.unique(train.clusters))
    return [(f"training chains ({len(train)}, each once)", every),
            (f"training chains, one per homology cluster ({clusters} clusters, {epochs} epochs' draws)",
             [every[int(i)] for i in visits])]


def _sample_and_reread(model, L: int, n: int, seed: int, batch_size: int, sampling, folder: Path) -> tuple[list, float]:
    """n chains of L residues (seeds seed..seed+n−1) sampled as ``sampling`` (a ``ProteinSampling``), written as
    mmCIF (any coordinate range; 0.001 Å as PDB) and re-read as `protein score` reads them; returns (chains, wall
    seconds of the sampling alone)."""
    from molediff.proteins.io import read_ca_traces, write_ca_trace

    seeds = range(seed, seed + n)
    t0 = time.perf_counter()
    chains = model.sample_chains(torch.full((n,), L), seeds=seeds, batch_size=batch_size, show_progress=True,
                                 **sampling.options())
    wall = time.perf_counter() - t0
    folder.mkdir(parents=True)
    for s, c in zip(seeds, chains):
        write_ca_trace(folder / f"sample_{s}.cif", c)
    written, _, bad = read_ca_traces(folder)
    if bad:
        print(f"  {folder.name}: {len(bad)} unreadable sample files: {bad[:3]}", file=sys.stderr)
    return written, wall


def _resolve(kind: str, checkpoint: str | None, sampler: str | None = None, steps: int | None = None,
             noise_scale: float | None = None, guided: bool | None = None):
    """(model, sampling, label) of a protein model kind; what is None takes `protein sample`'s default
    (``molediff.proteins.sampling.sampling_for``)."""
    from molediff.proteins.sampling import load_protein_model, sampling_for

    model = load_protein_model(kind, checkpoint)
    sampling = sampling_for(kind, model.schedule.T, sampler, steps, noise_scale, guided)
    return model, sampling, sampling.label(model.schedule.T)


def acceptance_row(name: str, summary: dict, seconds: float | None = None) -> str:
    """One Markdown row of the acceptance table from ``score_chains``'s summary."""
    r = summary

    def pct(v, digits=1):
        return "-" if v is None else f"{100 * v:.{digits}f} %"

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    return (f"| {name} | {r['n_chains']} | {num(r['ca_ca_mean'], '.3f')} ± {num(r['ca_ca_std'], '.3f')} "
            f"| {pct(r['helix'] + r['strand'])} ({pct(r['helix'], 0)} / {pct(r['strand'], 0)}) "
            f"| {num(r['w1_bond_angle'], '.2f')} | {num(r['w1_dihedral'], '.2f')} | {pct(r['clash_pair_rate'], 2)} "
            f"| {pct(r['clash_chain_rate'], 0)} | {num(r['rg_scaled_mean'], '.2f')} ± {num(r['rg_scaled_std'], '.2f')} "
            f"| {'-' if seconds is None else f'{seconds:.1f}'} |")


def acceptance(args) -> None:
    """Issue 20's acceptance table: the angle model and the Cartesian EGNN at each length, the held-out real
    chains and the two calibration rows, every metric in one Markdown table."""
    from molediff.proteins.metrics import plot_distributions, score_chains
    from molediff.proteins.reference import independent_angle_chains, rebuilt_windows

    torch.set_num_threads(args.threads)
    reference, valid = _heldout(args.source)
    real = _calibration_source(args.source, args.calibration, args.calibration_chains)
    models = [("angle model", "angles", args.checkpoint, (args.sampler, args.steps, args.noise_scale, args.guide))]
    for gamma in args.unguided:
        models.append((f"angle model without guide, γ {gamma:g}", "angles", args.checkpoint,
                       (args.sampler, args.steps, gamma, False)))
    if args.baseline != "none":
        models.append(("Cartesian EGNN", "egnn", args.baseline, (args.baseline_sampler, args.baseline_steps, None,
                                                                  None)))
    lines, samples, results = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (title, kind, checkpoint, settings) in enumerate(models):
            model, sampling, label = _resolve(kind, checkpoint, *settings)
            samples[title] = []
            for L in args.lengths:
                chains, wall = _sample_and_reread(model, L, args.n, args.seed, args.batch_size, sampling,
                                                  Path(tmp) / f"{k}_{kind}{L}")
                name = f"{title} ({Path(checkpoint).name if checkpoint else 'shipped'}, {label}), L = {L}"
                results[name] = score_chains(chains, reference)
                lines.append(acceptance_row(name, results[name], wall))
                samples[title] += chains
                print(f"  {name}: {wall:.1f} s", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    rows = [(f"held-out real chains (validation split, {len(valid)})", valid),
            (f"calibration: {args.window}-residue windows of {args.calibration} chains rebuilt at 3.80 Å",
             rebuilt_windows(real, args.window, rng=rng)),
            (f"calibration: independent real (θ, τ) pairs, L = {args.window}",
             independent_angle_chains(real, args.window, args.calibration_chains, rng=rng))]
    rows += _training_rows(args.source, args.seed)
    for name, chains in rows:
        results[name] = score_chains(chains, reference)
        lines.append(acceptance_row(name, results[name]))
    print(_header(args))
    print(f"{args.n} chains per length, seeds {args.seed}..{args.seed + args.n - 1}, batches of {args.batch_size}, "
          f"{args.threads} torch threads; samples written as mmCIF and re-read. W1 (degrees) against the "
          f"{len(reference)} held-out test chains of {args.source}. Calibration rows from {len(real)} "
          f"{args.calibration} chains (windows: one per chain of at least {args.window} residues). Sampling s: "
          "wall time of sampling all chains of that row (network and NeRF, not file writing).\n")
    print(table_header(["set", "chains", "Cα–Cα Å", "helix + strand (helix / strand)", "W1 bond angle °",
                        "W1 dihedral °", "clashing pairs", "chains with a clash", "Rg/N^0.38", "sampling s"]))
    t = TARGETS
    print(f"| **target** (issue 20) | 100 | {t['ca_ca']} | {t['sse']} | {t['w1_angle']} | {t['w1_dihedral']} "
          f"| {t['pairs']} | {t['chains']} | {t['rg']} | {t['time']} |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.png:
        first, *others = list(samples.items())
        plot_distributions(args.png, first[1], reference, label=first[0],
                           reference_label="held-out test chains", others=others)
        print(f"\nDistributions: {args.png}")


def lever(args) -> None:
    """The lever-arm effect: clashes and Rg/N^0.38 against chain length, for the model's samples, for windows
    of real held-out chains of the same length (as they are) and for independent real (θ, τ) pairs."""
    from molediff.proteins.metrics import length_profile
    from molediff.proteins.reference import independent_angle_chains

    torch.set_num_threads(args.threads)
    reference, valid = _heldout(args.source)
    real = valid + reference
    model, sampling, label = _resolve("angles", args.checkpoint, args.sampler, args.steps)
    rng = np.random.default_rng(args.seed)
    sets = {"angle model": [], "real windows": [], "independent pairs": []}
    for L in args.lengths:
        sets["angle model"] += model.sample_chains(torch.full((args.n,), L), seeds=range(args.seed, args.seed + args.n),
                                                   batch_size=args.batch_size, **sampling.options())
        long = [c for c in real if len(c) >= L]
        sets["real windows"] += [c[s:s + L] for c in long for s in [int(rng.integers(0, len(c) - L + 1))]]
        sets["independent pairs"] += independent_angle_chains(real, L, args.n, rng=rng)
    print(_header(args))
    print(f"Angle model {args.checkpoint or 'shipped'} ({label}), {args.n} chains per length; real windows: one "
          f"window of each held-out chain ({len(real)}) long enough, at its own bond lengths; independent pairs: "
          f"{args.n} chains per length from the pooled (θ, τ) of the held-out chains. Clashes: Cα pairs "
          "|i − j| ≥ 3 under 3.0 Å.\n")
    print(table_header(["L", "set", "chains", "clashing pairs", "chains with a clash", "Rg/N^0.38"]))
    edges = sorted(args.lengths) + [max(args.lengths) + 1]
    profiles = {name: {r["lo"]: r for r in length_profile(chains, edges)} for name, chains in sets.items() if chains}
    for L in sorted(args.lengths):
        for name, prof in profiles.items():
            r = prof.get(L)
            if r is None:
                continue
            pairs = "-" if r["clash_pair_rate"] is None else f"{100 * r['clash_pair_rate']:.2f} %"
            print(f"| {L} | {name} | {r['n_chains']} | {pairs} | {100 * r['clash_chain_rate']:.0f} % "
                  f"| {r['rg_scaled_mean']:.2f} ± {r['rg_scaled_std']:.2f} |")


def samplers(args) -> None:
    """Choose the angle model's default sampler: each ``sampler:steps[:spacing]`` on the same seeds at one
    length, timed, with the acceptance metrics."""
    from molediff.proteins.metrics import score_chains
    from molediff.proteins.sampling import load_protein_model

    torch.set_num_threads(args.threads)
    reference, _ = _heldout(args.source)
    model = load_protein_model("angles", args.checkpoint)
    print(_header(args))
    print(f"Angle model {args.checkpoint or 'shipped'}; {args.n} chains of L = {args.length} (seeds {args.seed}.."
          f"{args.seed + args.n - 1}) per sampler, batches of {args.batch_size}, {args.threads} torch threads; W1 "
          f"against the {len(reference)} held-out test chains. Seconds: sampling these chains (×100/n for 100).\n")
    print(table_header(["sampler", "steps", "spacing", "s", "helix + strand", "W1 bond angle °", "W1 dihedral °",
                        "clashing pairs", "chains with a clash", "Rg/N^0.38"]))
    for run in args.runs:
        name, steps, *rest = run.split(":")
        spacing = rest[0] if rest else "uniform"
        options = {} if name == "dpm2m" else {"spacing": spacing}
        t0 = time.perf_counter()
        chains = model.sample_chains(torch.full((args.n,), args.length), seeds=range(args.seed, args.seed + args.n),
                                     batch_size=args.batch_size, sampler=name, steps=int(steps), **options)
        wall = time.perf_counter() - t0
        r = score_chains(chains, reference)
        pairs = "-" if r["clash_pair_rate"] is None else f"{100 * r['clash_pair_rate']:.2f} %"
        sse = 100 * (r["helix"] + r["strand"])
        print(f"| {name} | {steps} | {spacing if options else '-'} | {wall:.1f} | {sse:.1f} % "
              f"| {r['w1_bond_angle']:.2f} | {r['w1_dihedral']:.2f} | {pairs} | {100 * r['clash_chain_rate']:.0f} % "
              f"| {r['rg_scaled_mean']:.2f} ± {r['rg_scaled_std']:.2f} |", flush=True)


def heldout(args) -> None:
    """Rewrite the shipped held-out chains (``molediff.proteins.reference.HELDOUT_PATH``) from ``--source``."""
    from molediff.proteins.data import load_proteins
    from molediff.proteins.reference import HELDOUT_PATH

    full = load_proteins({"path": args.source, "split": "all"})
    held = full.subset([i for i, s in enumerate(full.split) if s in ("valid", "test")])
    out = Path(args.output or HELDOUT_PATH)
    out.parent.mkdir(parents=True, exist_ok=True)
    held.save(out)
    print(f"wrote {len(held)} held-out chains ({held.split.count('test')} test, {held.split.count('valid')} valid, "
          f"{int(held.lengths.sum())} residues) to {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("graph", "case"):
        a = sub.add_parser(name)
        a.add_argument("--hidden", type=int, default=64, help="EGNN width (the retired protein_ca_egnn: 64)")
        a.add_argument("--layers", type=int, default=4, help="EGNN blocks (the retired protein_ca_egnn: 4)")
        a.add_argument("--batch", type=int, default=2, help="chains per batch")
        a.add_argument("--cutoff", type=float, default=10.0, help="radius graph cutoff (Å)")
        a.add_argument("--repeats", type=int, default=3, help="timed steps (after one warm-up)")
        a.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        if name == "graph":
            a.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
            a.add_argument("--graphs", nargs="+", default=["full", "masked", "sparse"],
                           choices=["full", "masked", "sparse"])
        else:
            a.add_argument("--graph", required=True)
            a.add_argument("--length", type=int, required=True)
    s = sub.add_parser("sampling")
    s.add_argument("--hidden", type=int, default=16, help="EGNN width of the untrained model")
    s.add_argument("--layers", type=int, default=2, help="EGNN blocks of the untrained model")
    s.add_argument("--length", type=int, default=128)
    s.add_argument("-n", type=int, default=4)
    s.add_argument("--device", default="cpu")
    s.add_argument("--runs", nargs="+", default=[("ddpm", 1000), ("ddpm", 200), ("dpm2m", 50)],
                   type=lambda v: (v.split(":")[0], int(v.split(":")[1])), help="sampler:steps pairs")
    q = sub.add_parser("quality", help="sample a trained model and score it against held-out real chains")
    q.add_argument("--checkpoint", required=True, help="Cartesian EGNN weights or run directory")
    q.add_argument("--source", required=True, help="structure folder whose held-out splits are the real chains")
    q.add_argument("--lengths", type=int, nargs="+", default=[80, 128], help="chain lengths to sample")
    q.add_argument("-n", type=int, default=100, help="chains per length")
    q.add_argument("--seed", type=int, default=0, help="chain i uses seed + i")
    q.add_argument("--sampler", default="ddpm", help="core sampler (ddpm, ddim, heun, dpm2m)")
    q.add_argument("--steps", type=int, default=None, help="sampler steps (default: all T)")
    q.add_argument("--noise-scale", type=float, default=1.0, help="ddpm's noise scale γ (low temperature below 1)")
    q.add_argument("--batch-size", type=int, default=50, help="chains sampled together")
    q.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    q.add_argument("--device", default="cpu")
    q.add_argument("--json", default=None, help="also write the summaries as JSON")
    q.add_argument("--png", default=None, help="draw the distributions as a PNG")
    d = sub.add_parser("denoising", help="ε-MSE and the one-step x̂'s Cα–Cα by noise level on held-out chains")
    d.add_argument("--checkpoint", required=True, help="Cartesian EGNN weights or run directory")
    d.add_argument("--source", required=True, help="structure folder whose held-out validation chains are used")
    d.add_argument("-n", type=int, default=20, help="validation chains (at most all)")
    d.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = sub.add_parser("acceptance", help="issue 20's table: angle model, Cartesian EGNN, real and calibration rows")
    a.add_argument("--checkpoint", default=None, help="angle-model weights or run directory (default: shipped)")
    a.add_argument("--baseline", default="none",
                   help="Cartesian EGNN weights or run directory to compare with (default: none)")
    a.add_argument("--source", required=True,
                   help="structure folder (or prepared .npz) whose held-out splits are the real chains")
    a.add_argument("--lengths", type=int, nargs="+", default=[80, 128], help="chain lengths to sample")
    a.add_argument("-n", type=int, default=100, help="chains per length")
    a.add_argument("--seed", type=int, default=0, help="chain i uses seed + i")
    a.add_argument("--sampler", default=None, help="angle model's sampler (default: protein sample's)")
    a.add_argument("--steps", type=int, default=None, help="angle model's steps (default: protein sample's)")
    a.add_argument("--noise-scale", type=float, default=None, help="angle model's DDPM γ (default: protein sample's)")
    a.add_argument("--guide", action=argparse.BooleanOptionalAction, default=None,
                   help="angle model's clash and compactness guide (default: protein sample's)")
    a.add_argument("--unguided", type=float, nargs="*", default=[],
                   help="also rows of the angle model without the guide, at each of these DDPM γ (e.g. 1 0.85)")
    a.add_argument("--baseline-sampler", default="dpm2m",
                   help="EGNN sampler (default dpm2m: its DDPM-1000 takes about 20 s per chain at L = 128)")
    a.add_argument("--baseline-steps", type=int, default=50, help="EGNN sampler steps")
    a.add_argument("--window", type=int, default=80, help="calibration chain length (residues)")
    a.add_argument("--calibration", choices=["heldout", "train"], default="heldout",
                   help="real chains of the calibration rows: held-out (valid + test) or training chains")
    a.add_argument("--calibration-chains", type=int, default=150,
                   help="training chains read with --calibration train; chains built from independent pairs")
    a.add_argument("--batch-size", type=int, default=100, help="chains sampled together")
    a.add_argument("--threads", type=int, default=2, help="torch CPU threads (the 60 s target is for 2 cores)")
    a.add_argument("--json", default=None, help="also write the summaries as JSON")
    a.add_argument("--png", default=None, help="draw the distributions of both models over the test chains")
    v = sub.add_parser("lever", help="clashes and Rg/N^0.38 against chain length: model, real, independent pairs")
    v.add_argument("--checkpoint", default=None, help="angle-model weights or run directory (default: shipped)")
    v.add_argument("--source", required=True, help="structure folder (or prepared .npz) with held-out splits")
    v.add_argument("--lengths", type=int, nargs="+", default=[48, 80, 128], help="chain lengths")
    v.add_argument("-n", type=int, default=50, help="chains per length")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--sampler", default=None, help="default: protein sample's")
    v.add_argument("--steps", type=int, default=None, help="default: protein sample's")
    v.add_argument("--batch-size", type=int, default=50)
    v.add_argument("--threads", type=int, default=2)
    w = sub.add_parser("samplers", help="the angle model's samplers side by side (time and quality)")
    w.add_argument("--checkpoint", default=None, help="angle-model weights or run directory (default: shipped)")
    w.add_argument("--source", required=True, help="structure folder (or prepared .npz) with held-out splits")
    w.add_argument("--length", type=int, default=128)
    w.add_argument("-n", type=int, default=20, help="chains per sampler")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--runs", nargs="+", default=["ddpm:100", "ddpm:200", "ddpm:200:karras", "ddpm:1000"],
                   help="sampler:steps[:spacing] (spacing uniform, log_snr or karras; not for dpm2m)")
    w.add_argument("--batch-size", type=int, default=100)
    w.add_argument("--threads", type=int, default=2)
    h = sub.add_parser("heldout", help="rewrite the held-out chains shipped in molediff/proteins/resources")
    h.add_argument("--source", required=True, help="the structure folder (../shared/data/proteins-db55)")
    h.add_argument("-o", "--output", default=None, help="default: molediff.proteins.reference.HELDOUT_PATH")
    args = p.parse_args()
    if args.mode == "case":
        print(json.dumps(run_case(args)))
    else:
        {"graph": graph, "sampling": sampling, "quality": quality, "denoising": denoising, "acceptance": acceptance,
         "lever": lever, "samplers": samplers, "heldout": heldout}[args.mode](args)


if __name__ == "__main__":
    main()
