"""One self-contained QM9 job for a lent GPU, in three stages.

1. ``prepare`` (CPU, here): QM9's training and validation splits → compact array files that travel with the tree.

       python scripts/gpu/train_qm9.py prepare --out gpu_data

   For a model that diffuses bonds with the atoms (``configs/qm9_bonds_cpu.yaml``), ``--bonds`` writes the
   molecules with their bond orders (determined from the geometry with RDKit, cached; the molecules without an
   assignment are left out), so the run stage needs no RDKit:

       python scripts/gpu/train_qm9.py prepare --bonds --out gpu_data_bonds

2. ``run`` (GPU machine; needs only torch, numpy, safetensors — no RDKit): train for a wall-time budget,
   resuming from a run directory or starting from shipped weights, then sample and write everything the
   session needs into ``--out`` (the device tool's $OUT): bf16 EMA weights, samples, metrics, timings.

       python scripts/gpu/train_qm9.py run --data gpu_data/qm9_train.npz --config configs/qm9_edm.yaml \
           --minutes 8 --samples 10000 --out $OUT [--init molediff/pretrained/qm9_egnn.safetensors]

3. ``score`` (CPU, here): the samples → SDF, EDM's metrics with novelty against the training SMILES.

       python scripts/gpu/train_qm9.py score --samples OUT/samples.npz --sdf OUT/samples.sdf

Test stage 2 on CPU with a tiny config before spending device time:

       python scripts/gpu/train_qm9.py run --data gpu_data/qm9_train.npz --config configs/qm9_tiny_test.yaml \
           --minutes 0.3 --samples 20 --steps 20 --out /tmp/gpu_test --device cpu
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # job_report, also when this file is loaded by path
import job_report as job  # noqa: E402  (puts the tree's molediff on sys.path)


def prepare(args) -> None:
    from molediff.data.qm9 import load_qm9

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the validation split travels too, so that `molediff export --search` can pick the EMA length here
    for split in ("train", "valid"):
        molecules = load_qm9(split, bonds=args.bonds)
        molecules.save(out / f"qm9_{split}.npz")
        print(f"wrote {out / f'qm9_{split}.npz'}: {len(molecules)} molecules, "
              f"{(out / f'qm9_{split}.npz').stat().st_size / 2**20:.1f} MiB")


def run(args) -> None:
    from molediff.molecules.pretrained import load_model
    from molediff.training import export_weights

    out = Path(args.out)
    run_dir = Path(args.run_dir)
    valid = Path(args.data).with_name("qm9_valid.npz")
    try:
        training = job.JobRun(args, "molecules", run_dir, data={
            "dataset": "npz", "path": args.data, "valid_path": str(valid) if valid.exists() else None})
    except (FileNotFoundError, ValueError) as e:
        raise job.usage_error(e) from None
    device = training.device
    training.train(out)
    export_weights(run_dir, out / "qm9_egnn.safetensors", dtype=torch.bfloat16)

    model = load_model(out / "qm9_egnn.safetensors", device=device)
    if device.type == "cuda":
        model = model.to(torch.float32)
    counts = model.sample_atom_counts(args.samples, torch.Generator().manual_seed(12345))
    with job.Stopwatch(device) as sampling, \
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and args.bf16_sampling):
        molecules = model.sample_molecules(counts, seeds=range(args.samples), batch_size=args.sample_batch,
                                           sampler=args.sampler, steps=args.steps)
    sample_s = sampling.seconds
    positions = np.zeros((args.samples, int(counts.max()), 3), np.float32)
    numbers = np.zeros((args.samples, int(counts.max())), np.int8)
    bonds = {}
    if model.has_bonds:   # the predicted bond orders, [S, N, N] (0: no bond)
        bonds["bond_orders"] = np.zeros((args.samples, int(counts.max()), int(counts.max())), np.int8)
    for i, m in enumerate(molecules):
        positions[i, :len(m.atomic_numbers)] = m.positions
        numbers[i, :len(m.atomic_numbers)] = m.atomic_numbers
        if bonds:
            bonds["bond_orders"][i, :m.num_atoms, :m.num_atoms] = m.bond_matrix()
    np.savez_compressed(out / "samples.npz", positions=positions, atomic_numbers=numbers, counts=counts.numpy(),
                        **bonds)
    report = {
        **training.facts(model, "molecules"), "sample_wall_s": sample_s,
        "samples": args.samples, "sampler": args.sampler, "steps": args.steps or model.schedule.T,
        "sampling_molecules_per_s": args.samples / sample_s,
    }
    job.write_report(report, out)


def score(args) -> None:
    from molediff.chem.bonds import bond_list
    from molediff.chem.molecule import Molecule
    from molediff.chem.sdf import write_sdf
    from molediff.chem.stability import evaluate_molecules
    from molediff.data.qm9 import qm9_train_smiles

    data = np.load(args.samples)
    predicted = "bond_orders" in data   # a bond model's samples carry their bonds; the SDF writes them
    molecules = [Molecule(atomic_numbers=data["atomic_numbers"][i, :n].astype(np.int64),
                          positions=data["positions"][i, :n], name=f"sample_{i}",
                          bonds=bond_list(data["bond_orders"][i, :n, :n]) if predicted else None)
                 for i, n in enumerate(data["counts"])]
    if args.sdf:
        write_sdf(args.sdf, molecules)
    scores = evaluate_molecules(molecules, train_smiles=qm9_train_smiles())
    summary = {k: v for k, v in scores.items() if k != "per_molecule"}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


def build_parser() -> argparse.ArgumentParser:
    p, sub = job.stage_parsers(__doc__)
    a = sub.add_parser("prepare", help="QM9 training and validation splits -> compact .npz files (CPU)")
    a.add_argument("--out", default="gpu_data", help="folder for qm9_train.npz, qm9_valid.npz (git-ignored, carried)")
    a.add_argument("--bonds", action="store_true",
                   help="store each molecule's bond orders (from its geometry, RDKit; molecules without an "
                        "assignment left out), for a config with model.bond_orders")
    b = sub.add_parser("run", help="train for a time budget, sample, export (GPU)")
    b.add_argument("--data", required=True, help="qm9_train.npz from the prepare stage")
    b.add_argument("--config", default="configs/qm9_edm.yaml", help="training config (YAML)")
    b.add_argument("--run-dir", default="gpu_data/run", help="checkpoints and metrics of the run")
    job.add_run_arguments(b, sampling=True)
    b.add_argument("--minutes", type=float, default=8.0, help="training wall-time budget in minutes")
    b.add_argument("--samples", type=int, default=10000, help="molecules to sample after training")
    b.add_argument("--sample-batch", type=int, default=1000, help="molecules sampled together")
    c = sub.add_parser("score", help="score samples on CPU with EDM's metrics (RDKit)")
    c.add_argument("--samples", required=True, help="samples.npz from the run stage")
    c.add_argument("--sdf", default=None, help="also write the samples as SDF")
    c.add_argument("--json", default=None, help="write the summary as JSON")
    return p


def main(argv: list[str] | None = None) -> None:
    job.run_stage({"prepare": prepare, "run": run, "score": score}, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
