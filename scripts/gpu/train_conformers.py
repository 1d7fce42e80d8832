"""One self-contained job for a lent GPU: train the conformer refiner (task ``conformers``) on QM9 and CCD geometries.

The device command (the prepared files travel as git-ignored paths named in ``carry``):

    run(command="PYTHONUNBUFFERED=1 python3 scripts/gpu/train_conformers.py run "
                 "--data gpu_data/conformers_qm9_ccd_train.npz --valid gpu_data/conformers_qm9_valid.npz "
                 "--config configs/conformers_gpu.yaml --minutes 6 "
                 "--out $OUT 2>&1 | tee $OUT/log.txt",
        carry=["gpu_data/conformers_qm9_ccd_train.npz", "gpu_data/conformers_qm9_ccd_train_graphs.npz",
               "gpu_data/conformers_qm9_valid.npz", "gpu_data/conformers_qm9_valid_graphs.npz"], timeout_s=600)

The script puts the working tree's root first on ``sys.path``, so it imports the tree's molediff on a machine where
the package is not installed. ``tee`` brings the log back even if the command is killed at its limit. Six minutes
of training and about a minute around it leave room in a 15-minute device budget to rerun after an early failure.

Size: the device carries 64 MiB with the working tree, and the tracked tree (14 MiB, mostly shipped weights) plus
these 57 MiB do not fit. Session 6 left the two CIFAR weight files out of the index for the calls (``git rm
--cached`` them, list them in ``.git/info/exclude``, ``git add`` them back afterwards) and carried only the train
files and the ``--init`` weights. Measured there on one H200 (torch 2.11.0+cu130, bf16): 18.8 steps/s at batch 256
(4,800 molecules/s, 6.9 GiB peak), about 35 s to start a machine and 12 s to load the data.

1. ``prepare`` (CPU, here, with RDKit): for each split, the molecules of ``--sources`` (``qm9``: EDM's split of QM9,
   DFT coordinates, ``load_qm9``; ``ccd``: the Chemical Component Dictionary's experimental 'model' coordinates,
   ``load_ccd``'s split, no reserved ID) joined in that order → ``conformers_{sources}_{split}.npz`` (a compressed
   ``MoleculeDataset``) and ``conformers_{sources}_{split}_graphs.npz`` (their graph features, a compressed
   ``GraphStore``: int8 node features and one uint8 code per atom pair, ``molediff.conformers.graph``), in the same
   order. Molecules whose graph cannot be built (QM9's bonds are perceived in 3D: about 5 % fail on charged
   groups and missed bonds; the CCD's own bonds are used) are left out of both and counted. Prints the sizes and
   the ``carry`` list. Measured here (2 cores, busy): ``--sources qm9 ccd --splits train``: 126,642 molecules
   (95,368 QM9 + 31,274 CCD; 4,654 left out) in 82 s, 32.7 + 19.1 MiB; QM9's valid split 16,915 in 18 s,
   3.6 + 1.6 MiB.

       python scripts/gpu/train_conformers.py prepare --sources qm9 ccd --splits train --out gpu_data
       python scripts/gpu/train_conformers.py prepare --splits valid --out gpu_data

2. ``run`` (GPU machine; needs torch, numpy, safetensors and PyYAML only, no RDKit): train with the shared engine
   (bf16 autocast on CUDA when the config asks, TF32, EMA, checkpoints) for ``--minutes`` of wall time, resuming
   from ``--run-dir`` when it holds a checkpoint or starting from ``--init`` weights (e.g. the shipped refiner, or
   a CPU run's export: the GPU config has the CPU config's architecture, so training adds up); export the EMA
   weights; measure the held-out ε-loss at σ = 0.05, 0.1, 0.2, 0.3 Å on the first ``--eval-molecules`` of the valid
   split (and of the train split, for the gap); write into ``--out`` (the device tool's $OUT):

       report.json      steps, molecules/s, wall times, loss, held-out ε-loss per σ, peak GPU memory
       metrics.jsonl    the engine's training log
       conformer_refiner.safetensors
                        the EMA weights (--precision, fp32 by default: 1.4 MB for the 4x96 EGNN), when at most
                        --max-file-mib

3. Here, with returned weights: ``molediff conformers "CCO" --refiner OUT/conformer_refiner.safetensors`` and
   ``python scripts/bench_conformers.py --refiner OUT/conformer_refiner.safetensors``; CPU training continues with
   ``molediff train configs/conformers_cpu.yaml --init OUT/conformer_refiner.safetensors``.

Test stage 2 on CPU with a tiny config before spending device time (tests/scripts/test_conformer_gpu_job.py does):

    python scripts/gpu/train_conformers.py prepare --out /tmp/gpu_data --limit 64
    python scripts/gpu/train_conformers.py run --data /tmp/gpu_data/conformers_qm9_train.npz \\
        --config configs/conformers_tiny_test.yaml --minutes 1 --device cpu --out /tmp/gpu_test
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # job_report, also when this file is loaded by path
import job_report as job  # noqa: E402  (puts the tree's molediff on sys.path)

ROOT = job.ROOT

WEIGHTS = "conformer_refiner.safetensors"
MAX_MINUTES = 8.0
EVAL_SIGMAS = (0.05, 0.1, 0.2, 0.3)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def graphs_path(data: Path) -> Path:
    """The graph file that belongs to a molecule file: ``X.npz`` → ``X_graphs.npz``."""
    return data.with_name(data.stem + "_graphs.npz")


# ------------------------------------------------------------------------------------------- prepare (CPU)
def _load_source(source: str, split: str):
    """The molecules of one training source: ``qm9`` (DFT geometries, EDM's split) or ``ccd`` (the Chemical
    Component Dictionary's experimental 'model' coordinates; ``load_ccd``'s split, reserved IDs never in it)."""
    if source == "qm9":
        from molediff.data.qm9 import load_qm9

        return load_qm9(split)
    from molediff.data.ccd import load_ccd

    return load_ccd(split, coordinates="model")


def prepare(args) -> None:
    from molediff.chem.molecule import MoleculeDataset
    from molediff.conformers.training import GraphStore, build_graphs

    if args.limit < 0:
        raise SystemExit(f"prepare: --limit must be >= 0 (0: all molecules), got {args.limit}")
    out = Path(args.out)
    carry = []
    for split in args.splits:
        t0 = time.perf_counter()
        parts, stores, skipped = [], [], []
        for source in args.sources:
            try:
                molecules = _load_source(source, split)
            except (FileNotFoundError, ValueError, ImportError) as e:
                raise SystemExit(f"prepare: {source} {split} split: {' '.join(str(e).split())}") from None
            if args.limit:
                molecules = molecules.subset(range(min(args.limit, len(molecules))))
            # each source's graphs are built from its own bonds (the CCD's) or from 3D (QM9's) before joining
            store, kept, left_out = build_graphs(molecules)
            parts.append(molecules.subset(kept))
            stores.append(store)
            skipped += left_out
        molecules = parts[0] if len(parts) == 1 else MoleculeDataset.from_molecules(m for p in parts for m in p)
        store = GraphStore.concatenate(stores)
        data = out / f"conformers_{'_'.join(args.sources)}_{split}.npz"
        molecules.save(data, compress=True)
        store.save(graphs_path(data))
        kinds = Counter("unpaired electrons" if "unpaired" in r else "sanitisation failed" if "sanitisation" in r
                        else "other" for _, r in skipped)
        sizes = [p.stat().st_size / 2**20 for p in (data, graphs_path(data))]
        print(f"wrote {data} ({sizes[0]:.1f} MiB) and {graphs_path(data).name} ({sizes[1]:.1f} MiB): {len(molecules)} "
              f"molecules, {len(skipped)} left out ({', '.join(f'{n} {k}' for k, n in kinds.most_common()) or 'none'}"
              f"), {time.perf_counter() - t0:.0f} s")
        for p in (data, graphs_path(data)):
            try:
                carry.append(str(p.resolve().relative_to(ROOT)))
            except ValueError:
                carry.append(str(p))
    total = sum((ROOT / c if not Path(c).is_absolute() else Path(c)).stat().st_size for c in carry) / 2**20
    print(f"carry={carry!r}: {total:.1f} MiB (the device carries 64 MiB with the working tree)")


# ----------------------------------------------------------------------------------------------- run (GPU)
def _heldout(model, data: Path, n: int, batch_size: int) -> dict | None:
    """ε-loss per σ on the first ``n`` molecules of a prepared split (None when the files are missing)."""
    from molediff.chem.molecule import MoleculeDataset
    from molediff.conformers.training import GraphStore, denoising_error

    if n <= 0 or not data.is_file() or not graphs_path(data).is_file():
        return None
    molecules = MoleculeDataset.load(data)
    graphs = GraphStore.load(graphs_path(data))
    graphs.check_matches(molecules, f"graphs {graphs_path(data)}")
    keep = list(range(min(n, len(molecules))))
    sub = GraphStore(graphs.node[:graphs.atom_offsets[len(keep)]], graphs.atom_offsets[:len(keep) + 1],
                     graphs.pairs[:graphs.pair_offsets[len(keep)]], graphs.pair_offsets[:len(keep) + 1])
    t0 = time.perf_counter()
    errors = denoising_error(model, molecules.subset(keep), sub, EVAL_SIGMAS, batch_size=batch_size, seed=0)
    return {"file": str(data), "molecules": len(keep), "wall_s": time.perf_counter() - t0,
            "eps_mse_by_sigma_angstrom": {f"{s:g}": e for s, e in errors.items()}}


def run(args) -> None:
    from molediff.conformers.model import ConformerDiffusion
    from molediff.training import export_weights
    from molediff.training.weights import load_model

    t_all = time.perf_counter()
    if not 0 < args.minutes <= MAX_MINUTES:
        raise SystemExit(f"run: --minutes must lie in (0, {MAX_MINUTES:g}]: one device command runs 10 minutes "
                         f"and start-up, export and evaluation need the rest")
    if args.eval_molecules < 0 or args.eval_batch < 1:
        raise SystemExit("run: --eval-molecules must be >= 0 and --eval-batch at least 1")
    data = Path(args.data)
    graphs = Path(args.graphs) if args.graphs else graphs_path(data)
    for path, what in ((data, "--data"), (graphs, "--graphs")):
        if not path.is_file():
            raise SystemExit(f"run: {what} {path} does not exist; write it with the prepare stage and carry it")
    out = Path(args.out)
    run_dir = Path(args.run_dir or f"runs/gpu_{Path(args.config).stem}")
    try:
        # reads the molecules and their graphs: files that do not fit fail here
        training = job.JobRun(args, "conformers", run_dir,
                              data={"dataset": "npz", "path": str(data), "graphs": str(graphs)},
                              optim={"ema_decay": args.ema_decay, "lr": args.lr, "lr_schedule": args.lr_schedule})
    except (FileNotFoundError, ValueError) as e:
        raise job.usage_error(e) from None
    device, molecules = training.device, len(training.task.dataset)
    load_s = time.perf_counter() - t_all
    training.train(out)

    weights = export_weights(run_dir, run_dir / WEIGHTS, dtype=PRECISIONS[args.precision])
    returned = job.returned_weights(weights, out, args.max_file_mib)
    model = load_model(ConformerDiffusion, weights, device=device)   # what comes back
    valid = Path(args.valid) if args.valid else data.with_name(data.name.replace("train", "valid"))
    heldout = {"valid": _heldout(model, valid, args.eval_molecules, args.eval_batch) if valid != data else None,
               "train": _heldout(model, data, args.eval_molecules, args.eval_batch)}

    report = {
        **training.facts(model, "molecules", load_s), "data": str(data), "graphs": str(graphs),
        "t_max": model.config.t_max, "molecules": molecules,
        "epochs_this_run": training.items_trained / max(molecules, 1),
        "heldout_eps_loss": heldout, "weights": returned,
    }
    job.write_report(report, out, t_all)


def build_parser() -> argparse.ArgumentParser:
    p, sub = job.stage_parsers(__doc__)
    a = sub.add_parser("prepare", help="QM9 / CCD splits -> molecules + precomputed graph features (.npz, CPU, RDKit)",
                       description="Write OUT/conformers_{sources}_{split}.npz and OUT/conformers_{sources}_{split}"
                                   "_graphs.npz for each split: the molecules whose graph builds, and their graph "
                                   "features.")
    a.add_argument("--out", default="gpu_data", help="folder for the files (gpu_data/ is git-ignored; carry them)")
    a.add_argument("--sources", nargs="+", choices=["qm9", "ccd"], default=["qm9"],
                   help="training molecules: QM9's DFT geometries and/or the CCD's experimental coordinates "
                        "(joined in this order into one file)")
    a.add_argument("--splits", nargs="+", choices=["train", "valid", "test"], default=["train", "valid"],
                   help="splits to prepare (default: train and valid)")
    a.add_argument("--limit", type=int, default=0,
                   help="keep the first N molecules of each split (smoke tests); 0 keeps all")
    b = sub.add_parser("run", help="train for a time budget, export, held-out loss (GPU, no RDKit)",
                       description="Train the refiner, export the EMA weights and measure the held-out "
                                   "eps-loss; write report.json, metrics.jsonl and the weights into --out.")
    b.add_argument("--data", required=True, help="conformers_qm9_ccd_train.npz from the prepare stage")
    b.add_argument("--graphs", default=None,
                   help="its graph file (default: the --data name with _graphs before .npz)")
    b.add_argument("--valid", default=None,
                   help="held-out molecules for the eps-loss (default: --data with 'train' replaced by 'valid'; "
                        "its graph file beside it); skipped when missing")
    b.add_argument("--config", default="configs/conformers_gpu.yaml",
                   help="training config (YAML, task: conformers)")
    b.add_argument("--run-dir", default=None,
                   help="checkpoints and metrics of the run; a second call resumes from it (default: "
                        "runs/gpu_<config name>; keep it out of carried paths, which replace what is there)")
    job.add_run_arguments(b, weights_limit=True)
    b.add_argument("--minutes", type=float, default=6.0,
                   help=f"training wall-time budget in minutes (at most {MAX_MINUTES:g}; a checkpoint is written "
                        f"when it runs out)")
    b.add_argument("--ema-decay", type=float, default=None, help="EMA decay (overrides the config's)")
    b.add_argument("--lr", type=float, default=None, help="peak learning rate (overrides the config's)")
    b.add_argument("--lr-schedule", choices=["constant", "cosine"], default=None,
                   help="learning-rate schedule after warm-up (overrides the config's); cosine decays to 0 at "
                        "--train-steps, so set both to anneal a run that fits the time budget")
    b.add_argument("--eval-molecules", type=int, default=2000,
                   help="held-out eps-loss on the first N molecules of the valid and train files (0: skip)")
    b.add_argument("--eval-batch", type=int, default=256, help="molecules per batch for the held-out loss")
    b.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                   help="floating-point type of the exported weights (fp32: 1.4 MB for the 4x96 EGNN, the shipped "
                        "file's type, so CPU training continues from exactly what the GPU trained)")
    return p


def main(argv: list[str] | None = None) -> None:
    job.run_stage({"prepare": prepare, "run": run}, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
