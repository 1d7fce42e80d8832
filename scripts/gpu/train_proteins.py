"""One self-contained Cα backbone job for a lent GPU, in three stages. ``run --model`` names the model as
``molediff protein sample`` does (``molediff.proteins.sampling.MODEL_KINDS``); without it the model is the one
whose task ``--config`` names, and without either the angle model:

* ``angles`` (default): ``ProteinAngleDiffusion``, virtual bond angles and dihedrals on the torus, task
  ``protein_angles``, config ``configs/protein_angles_gpu.yaml`` (the architecture of
  ``configs/protein_angles_cpu.yaml`` and of the shipped ``protein_ca_angles``, so ``--init`` continues it);
* ``egnn``: ``ProteinBackboneDiffusion``, Cartesian Cα coordinates with an EGNN, task ``proteins``. Its shipped
  weights and configs were retired (issue 20), so it has no default config: pass ``--config`` (e.g. a copy of
  ``configs/protein_tiny_test.yaml`` grown to size).

Both train on the same prepared chains, so one ``prepare`` serves both, and ``score`` reads either's samples.

The device command for the angle model (the prepared chains travel as the one git-ignored path in ``carry``; the
shipped weights are tracked, so they travel with the tree):

    run(command="PYTHONUNBUFFERED=1 python3 scripts/gpu/train_proteins.py run --model angles "
                 "--data gpu_data/proteins.npz --init molediff/pretrained/protein_ca_angles.safetensors "
                 "--minutes 6 --samples 100 --out $OUT 2>&1 | tee $OUT/log.txt",
        carry=["gpu_data/proteins.npz"], timeout_s=540)

Six minutes of training and about a minute around it (imports, data, sampling 2 x 100 chains as ``protein
sample`` does by default, export) leave room in a 15-minute device budget for a machine start and a shorter
rerun. ``tee`` brings the log back even if the command is killed at its limit. A second call on the same warm
machine resumes from the run directory (``gpu_data/protein_angles_run``, kept there between calls); a later
session starts from
the returned weights instead (copy them over the shipped file, as the model card's CPU continuation does, and
pass that as ``--init``). The cosine learning rate decays over the config's ``steps`` (an upper bound); once a
call has measured steps/s, ``--train-steps`` (the total reachable in the budget) makes it reach 0 at the end.

1. ``prepare`` (CPU, here; biotite): read, deduplicate and split the structure folder exactly as the ``proteins``
   and ``protein_angles`` tasks do (``molediff.proteins.data``: 30 % identity clusters, the data section of
   ``configs/protein_angles_cpu.yaml``), and write the training and
   validation chains (not the test chains: they stay here as the held-out reference) as one compact
   ``ProteinSet`` .npz (Cα coordinates, sequences, offsets, names, split labels; proteins-db55: 331 train and
   20 valid chains, 0.58 MiB) that travels with the tree (``gpu_data/`` is git-ignored; carry it). The angle
   task takes its bond angles and dihedrals (and its random 128-residue windows) from these coordinates as the
   CPU training does.

       python scripts/gpu/train_proteins.py prepare --source ../shared/data/proteins-db55 --out gpu_data

2. ``run`` (GPU machine; needs only torch, numpy, safetensors and PyYAML — no biotite, no RDKit: the tasks read
   a ``.npz`` data path with numpy alone): train with the shared engine (bf16 autocast on CUDA when the config
   asks, as both GPU configs do; TF32; EMA) for ``--minutes`` of wall time (at most 9), resuming from
   ``--run-dir`` or starting from ``--init`` weights, export the EMA weights (``--precision``, fp32 by default:
   2.3 MB for the angle model), named as the shipped file, sample ``--samples`` chains at each of ``--lengths``
   (80 and 128), as ``molediff protein sample`` samples them unless ``--sampler``/``--steps`` say otherwise
   (``proteins.sampling.sampling_for``: for the angle model its DDPM, noise scale and chain guide), and write
   everything into ``--out`` (the device tool's $OUT): the weights, samples.npz,
   metrics.jsonl and report.json (steps, loss, training and sampling chains/s, peak GPU memory, numpy-only
   geometry of the samples).

       python scripts/gpu/train_proteins.py run --model egnn --config MY_EGNN.yaml --data gpu_data/proteins.npz \
           --minutes 8 --samples 100 --out $OUT

3. ``score`` (CPU, here; biotite): the samples → one PDB file per chain, and the ``molediff protein score``
   metrics (overall and per length), with W1 distances against the held-out test chains of ``--source``
   (or any folder of structures given as ``--reference``).

       python scripts/gpu/train_proteins.py score --samples OUT/samples.npz --pdb-dir out/protein_samples \
           --source ../shared/data/proteins-db55 --json out/protein_scores.json --png out/protein_scores.png

   Returned angle weights then go through ``python scripts/bench_proteins.py acceptance --checkpoint
   OUT/protein_ca_angles.safetensors --source ../shared/data/proteins-db55`` (the model card's table).

Test stage 2 on CPU with a tiny config before spending device time (tests/scripts/test_protein_gpu_job.py does):

       python scripts/gpu/train_proteins.py run --model angles --data gpu_data/proteins.npz \
           --config configs/protein_angles_tiny_test.yaml --minutes 0.3 --samples 2 --lengths 30 --steps 4 \
           --out /tmp/gpu_test --device cpu
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # job_report, also when this file is loaded by path
import job_report as job  # noqa: E402  (puts the tree's molediff on sys.path)

MAX_MINUTES = 9.0
MODELS = {  # --model -> (its training task, default config, default run directory)
    "angles": ("protein_angles", "configs/protein_angles_gpu.yaml", "gpu_data/protein_angles_run"),
    "egnn": ("proteins", None, "gpu_data/protein_run"),   # retired shipped model: no default config
}
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ------------------------------------------------------------------------------------------- prepare (CPU)
def prepare(args) -> None:
    from molediff.proteins.data import ProteinDataConfig, load_proteins

    cfg = ProteinDataConfig(path=args.source, split="all", min_length=args.min_length, max_length=args.max_length)
    full = load_proteins(cfg, show_progress=True)
    keep = [i for i, s in enumerate(full.split) if s in ("train", "valid")]
    chains = full.subset(keep)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "proteins.npz"
    chains.save(path)
    size = path.stat().st_size / 2**20
    counts = {s: chains.split.count(s) for s in ("train", "valid")}
    print(f"wrote {path}: {len(chains)} chains (train {counts['train']}, valid {counts['valid']}; "
          f"{len(full) - len(chains)} test chains stay here), {int(chains.lengths.sum())} residues, "
          f"lengths {int(chains.lengths.min())}..{int(chains.lengths.max())}, {size:.2f} MiB; carry={[str(path)]}")
    if size > 60:
        raise SystemExit(f"{path} is {size:.1f} MiB, over the 60 MB the device tree may carry for data")


# ----------------------------------------------------------------------------------------------- run (GPU)
def _geometry(chains: list[np.ndarray]) -> dict:
    """Numpy-only geometry of sampled chains (the full score, with P-SEA, needs biotite: the score stage)."""
    from molediff.proteins.metrics import RG_EXPONENT, ca_distances, clashes, radius_of_gyration

    d = np.concatenate([ca_distances(c) for c in chains])
    clash = np.array([clashes(c) for c in chains])
    rg = np.array([radius_of_gyration(c) / len(c) ** RG_EXPONENT for c in chains])
    return {"ca_ca_mean": float(d.mean()), "ca_ca_std": float(d.std()),
            "ca_ca_outside": float((np.abs(d - 3.8) > 0.2).mean()),
            "clash_pair_rate": float(clash[:, 0].sum() / max(clash[:, 1].sum(), 1)),
            "rg_scaled_mean": float(rg.mean()), "rg_scaled_std": float(rg.std())}


def _check_run(args) -> None:
    """The run stage's own options, checked before anything is loaded (SystemExit with one line)."""
    if not 0 < args.minutes <= MAX_MINUTES:
        raise SystemExit(f"--minutes must lie in (0, {MAX_MINUTES:g}]: a lent GPU has 15 minutes in all")
    for name in ("samples", "sample_batch"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")


def _model_of(args) -> str:
    """The model to train: ``--model``; without it, the one whose task ``--config`` names (``angles`` without
    either). ValueError when the config's task is another model's or no protein model's."""
    from molediff.proteins.sampling import DEFAULT_MODEL, MODEL_KINDS
    from molediff.training.config import load_config

    if args.config is None:
        return args.model or DEFAULT_MODEL
    config_task = load_config(args.config).task
    trains = next((m for m, (t, _, _) in MODELS.items() if t == config_task), None)
    if trains is None:
        raise ValueError(f"{args.config} is a config for task {config_task!r}; this job trains task "
                         + " or ".join(f"{t!r} (--model {m})" for m, (t, _, _) in sorted(MODELS.items())))
    if args.model not in (None, trains):
        raise ValueError(f"{args.config} trains the {MODEL_KINDS[trains].description} (task {config_task!r}): "
                         f"run it with --model {trains}, or pass a {MODELS[args.model][0]!r} config")
    return trains


def run(args) -> None:
    from molediff.proteins.sampling import MODEL_KINDS, load_protein_model, sampling_for
    from molediff.training import export_weights

    started = time.perf_counter()
    _check_run(args)
    try:
        args.model = _model_of(args)
        task, default_config, default_run_dir = MODELS[args.model]
        if args.config is None and default_config is None:
            raise ValueError(f"--model {args.model} has no default config (its shipped model was retired): "
                             "pass --config")
        args.config = args.config or str(job.ROOT / default_config)   # the tree's config, from any folder
        run_dir = Path(args.run_dir or default_run_dir)
        training = job.JobRun(args, task, run_dir, data={"path": str(args.data), "split": "train"})
    except (FileNotFoundError, ValueError) as e:
        raise job.usage_error(e) from None
    kind = MODEL_KINDS[args.model]
    out = Path(args.out)
    lo, hi = kind.min_length, training.task.model.config.max_length
    if not all(lo <= n <= hi for n in args.lengths):   # before training: the config fixes max_length
        raise SystemExit(f"--lengths must lie in {lo}..{hi} for this {kind.description}, got {args.lengths}")
    device = training.device
    training.train(out)
    weights = export_weights(run_dir, out / f"{kind.shipped}.safetensors", dtype=PRECISIONS[args.precision])

    # the exported file as `molediff protein sample --model M --checkpoint FILE` reads it, sampled in fp32 (with
    # --bf16-sampling under bf16 autocast)
    model = load_protein_model(args.model, weights, device=str(device)).to(torch.float32)
    # as `protein sample` samples (its noise scale and guide), with --sampler/--steps when given
    how = sampling_for(args.model, model.schedule.T, args.sampler, args.steps)
    lengths = [int(n) for n in args.lengths for _ in range(args.samples)]
    with job.Stopwatch(device) as sampling, \
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and args.bf16_sampling):
        chains = model.sample_chains(lengths, seeds=range(len(lengths)), batch_size=args.sample_batch,
                                     **how.options())
    sample_s = sampling.seconds
    coords = np.zeros((len(chains), max(lengths), 3), np.float32)
    for i, c in enumerate(chains):
        coords[i, :len(c)] = c
    np.savez_compressed(out / "samples.npz", coords=coords, lengths=np.array(lengths, np.int64),
                        seeds=np.arange(len(lengths)))
    finite = [c for c in chains if np.isfinite(c).all()]
    report = {
        "model": args.model, "model_class": type(model).__name__, **training.facts(model, "chains"),
        "weights": {"file": weights.name, "precision": args.precision, "mib": weights.stat().st_size / 2**20},
        "sample_wall_s": sample_s, "samples": len(chains), "lengths": list(args.lengths),
        "sampler": how.label(model.schedule.T), "steps": how.steps or model.schedule.T,
        "bf16_sampling": device.type == "cuda" and args.bf16_sampling,
        "sampling_chains_per_s": len(chains) / sample_s,
        "geometry": {L: _geometry([c for c in finite if len(c) == L]) for L in args.lengths
                     if any(len(c) == L for c in finite)},
        "non_finite_chains": len(chains) - len(finite),
    }
    job.write_report(report, out, started)


# --------------------------------------------------------------------------------------------- score (CPU)
def score(args) -> None:
    from molediff.proteins.io import read_ca_traces, write_ca_trace
    from molediff.proteins.metrics import format_table, plot_distributions, score_chains

    data = np.load(args.samples)
    chains = [data["coords"][i, :n] for i, n in enumerate(data["lengths"])]
    pdb_dir = Path(args.pdb_dir)
    pdb_dir.mkdir(parents=True, exist_ok=True)
    non_finite = as_cif = 0
    for i, c in enumerate(chains):
        if not np.isfinite(c).all():
            non_finite += 1
            continue
        # PDB's fixed columns hold -999.999..9999.999 Å; a diverged chain is written as mmCIF (as `protein sample`)
        in_range = c.min() >= -999.999 and c.max() <= 9999.999
        as_cif += not in_range
        write_ca_trace(pdb_dir / f"sample_{i:04d}_L{len(c)}.{'pdb' if in_range else 'cif'}", c)
    if non_finite == len(chains):
        raise SystemExit(f"all {len(chains)} sampled chains have NaN or infinite coordinates")
    # score what the files hold (what `molediff protein score DIR` reads), not the arrays
    written, names, bad = read_ca_traces(pdb_dir)
    print(f"wrote and re-read {len(written)} of {len(chains)} chains in {pdb_dir} ({as_cif} as mmCIF: beyond the "
          f"PDB range; {non_finite} non-finite skipped)" + (f"; {len(bad)} unreadable" if bad else ""))
    reference, ref_label = None, None
    if args.reference:
        reference, _, _ = read_ca_traces(args.reference)
        ref_label = Path(args.reference).name
    elif args.source:
        from molediff.proteins.data import load_proteins

        test = load_proteins({"path": args.source, "split": "test"})
        reference, ref_label = [test[i].coords for i in range(len(test))], "held-out test chains"
    summaries = {"all": score_chains(written, reference)}
    for L in sorted({len(c) for c in written}):
        summaries[f"L={L}"] = score_chains([c for c in written if len(c) == L], reference)
    if reference is not None:
        summaries["reference"] = score_chains(reference, reference)
    for name, summary in summaries.items():
        print(f"\n## {name}\n{format_table(summary)}")
    if args.json:
        clean = {name: {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in s.items()}
                 for name, s in summaries.items()}
        Path(args.json).write_text(json.dumps({"samples": str(args.samples), "reference": ref_label, **clean},
                                              indent=1) + "\n")
    if args.png:
        plot_distributions(args.png, written, reference, label="samples", reference_label=ref_label or "reference")
        print(f"drew the distributions to {args.png}")


def build_parser() -> argparse.ArgumentParser:
    p, sub = job.stage_parsers(__doc__)
    a = sub.add_parser("prepare", help="training and validation chains -> one compact .npz (CPU, biotite)")
    a.add_argument("--source", required=True, help="folder of PDB/mmCIF files (e.g. ../shared/data/proteins-db55)")
    a.add_argument("--out", default="gpu_data", help="folder for proteins.npz (git-ignored, carried)")
    a.add_argument("--min-length", type=int, default=40, help="shortest chain kept (residues)")
    a.add_argument("--max-length", type=int, default=256, help="longest chain kept (residues)")
    b = sub.add_parser("run", help="train for a time budget, export, sample (GPU; no biotite)")
    b.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="angles: the angle model (task protein_angles); egnn: the Cartesian Cα EGNN (task proteins); "
                        "default: the model of --config's task, else angles")
    b.add_argument("--data", required=True, help="proteins.npz from the prepare stage")
    b.add_argument("--config", default=None,
                   help="training config (YAML) of the model's task (default, in this tree: " + ", ".join(
                       f"{m}: {c or 'none, pass one'}" for m, (_, c, _) in sorted(MODELS.items())) + ")")
    b.add_argument("--run-dir", default=None,
                   help="checkpoints and metrics of the run; a second call resumes from it (default: " + ", ".join(
                       f"{m}: {d}" for m, (_, _, d) in sorted(MODELS.items())) + ")")
    b.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                   help="floating-point type of the exported weights (fp32: as the shipped files)")
    job.add_run_arguments(b, sampling=True)
    b.add_argument("--minutes", type=float, default=8.0, help=f"training wall-time budget (at most {MAX_MINUTES:g})")
    b.add_argument("--samples", type=int, default=100, help="chains sampled at each length")
    b.add_argument("--lengths", type=int, nargs="+", default=[80, 128], help="chain lengths to sample")
    b.add_argument("--sample-batch", type=int, default=100, help="chains sampled together")
    c = sub.add_parser("score", help="samples -> PDB files and the protein score metrics (CPU, biotite)")
    c.add_argument("--samples", required=True, help="samples.npz from the run stage")
    c.add_argument("--pdb-dir", required=True, help="folder for one PDB file per sampled chain")
    c.add_argument("--source", default=None, help="structure folder whose held-out test split is the reference")
    c.add_argument("--reference", default=None, help="or a folder of reference structures")
    c.add_argument("--json", default=None, help="write the summaries as JSON")
    c.add_argument("--png", default=None, help="draw the distributions as a PNG")
    return p


def main(argv: list[str] | None = None) -> None:
    job.run_stage({"prepare": prepare, "run": run, "score": score}, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
