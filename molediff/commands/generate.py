"""Generate new 3D molecules with a trained molecule diffusion model (by default the QM9 model shipped
with molediff, which generates the bonds with the atoms) and write them as SDF or XYZ."""

from __future__ import annotations

import argparse
import logging

from ..utils import LazyChoices, add_precision_argument

DEFAULT_STEPS = 250

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    from ..chem.diagnostics import LEGEND_HELP

    parser.add_argument("-n", "--num-molecules", type=int, default=100, help="number of molecules to generate")
    parser.add_argument("-o", "--output", default="generated.sdf",
                        help="output file; .sdf or .xyz, chosen by extension. SDF bonds: a model that generates "
                             "bonds with the atoms (model.bond_orders) writes its predicted bonds, others' bonds "
                             "are perceived from 3D")
    parser.add_argument("--checkpoint", default=None,
                        help="exported .safetensors weights, a training checkpoint directory or the name of shipped "
                             "weights (default: qm9_bonds, the QM9 model that generates bonds with the atoms; "
                             "qm9_egnn is the atoms-only model it continues)")
    parser.add_argument("--sampler", default="ddpm", choices=LazyChoices("molediff.diffusion:SAMPLERS"),
                        metavar="SAMPLER",  # argparse would list the choices, importing torch to refuse -o x.mol2
                        help="sampler: ddpm (ancestral), ddim, heun (Karras et al.) or dpm2m (DPM-Solver++(2M)); "
                             "BENCHMARKS.md compares them on the atoms-only model qm9_egnn")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"number of sampling steps (default: {DEFAULT_STEPS}, or all T steps of a model with "
                             f"fewer; on the atoms-only model qm9_egnn DDPM-{DEFAULT_STEPS} was 4x faster than "
                             f"DDPM-1000 and 2-4 points lower in molecule stability and validity: --steps 1000 for "
                             f"the best molecules)")
    parser.add_argument("--atoms", type=int, default=None,
                        help="fix the number of atoms of every molecule (default: drawn from the training "
                             "set's atom-count histogram)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; molecule i uses seed+i, so results do not depend on --batch-size")
    parser.add_argument("--batch-size", type=int, default=100, help="molecules sampled together")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice, usually all cores)")
    add_precision_argument(parser)   # bf16: the same quality on the shipped model
    parser.add_argument("--png", default=None, metavar="FILE",
                        help="also draw the molecules (up to 100) as a PNG grid of 2-D depictions (with the "
                             "model's bonds where it predicts them), each labelled with its name and why it "
                             "failed. " + LEGEND_HELP)
    parser.add_argument("--no-score", action="store_true",
                        help="skip the stability/validity summary printed after writing")


def check_arguments(args: argparse.Namespace) -> str:
    """UsageError for an argument that cannot work, before anything is loaded; returns the output format."""
    from ..utils import UsageError, check_device, check_output_path

    for flag, value in (("--num-molecules", args.num_molecules), ("--batch-size", args.batch_size),
                        ("--steps", args.steps), ("--atoms", args.atoms), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1")
    suffix = args.output.lower().rsplit(".", 1)[-1]
    if suffix not in ("sdf", "xyz"):
        raise UsageError(f"output must end in .sdf or .xyz, got {args.output!r}")
    # Every output is checked before sampling, which can take long: a bad path must not lose that work.
    check_output_path(args.output)
    if args.png is not None:
        if not args.png.lower().endswith(".png"):
            raise UsageError(f"--png must name a .png file, got {args.png!r}")
        check_output_path(args.png, "--png")
    check_device(args.device)   # imports torch: the last check
    return suffix


def run(args: argparse.Namespace) -> int:
    from ..utils import UsageError, set_threads, use_bf16

    suffix = check_arguments(args)
    import torch

    from ..chem import write_sdf, write_xyz
    from ..molecules.pretrained import load_model

    set_threads(args.threads)
    model = load_model(args.checkpoint, device=args.device)
    if args.steps is not None and not 1 <= args.steps <= model.schedule.T:
        raise UsageError(f"--steps must be in 1..{model.schedule.T} for this model")
    steps = args.steps or min(DEFAULT_STEPS, model.schedule.T)
    if args.atoms is not None:
        if not 1 <= args.atoms <= model.config.max_atoms:
            raise UsageError(f"--atoms must be in 1..{model.config.max_atoms} for this model, got {args.atoms}")
        trained = sorted(model.config.atom_count_histogram)
        if trained and not trained[0] <= args.atoms <= trained[-1]:
            log.warning("--atoms %d lies outside the molecule sizes this model was trained on (%d..%d atoms): "
                        "expect disconnected or unphysical molecules", args.atoms, trained[0], trained[-1])
    g = torch.Generator().manual_seed(args.seed)
    counts = (torch.full((args.num_molecules,), args.atoms, dtype=torch.long) if args.atoms is not None
              else model.sample_atom_counts(args.num_molecules, g))
    device_type = torch.device(args.device).type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16(args.precision, device_type)):
        molecules = model.sample_molecules(counts, seeds=range(args.seed, args.seed + args.num_molecules),
                                           batch_size=args.batch_size, sampler=args.sampler, steps=steps,
                                           show_progress=True, name_prefix="molediff")
    (write_sdf if suffix == "sdf" else write_xyz)(args.output, molecules)
    bonds = "predicted by the model" if getattr(model, "has_bonds", False) else "perceived from 3D"
    print(f"wrote {len(molecules)} molecules to {args.output}" + (f" (bonds {bonds})" if suffix == "sdf" else ""))
    scores = None
    if not args.no_score or args.png is not None:
        from ..chem.stability import evaluate_molecules

        scores = evaluate_molecules(molecules, properties=False)
    if args.png is not None:
        from ..chem.diagnostics import legend_label
        from ..chem.draw import draw_grid

        legends = [f"{row['name']}: {legend_label(row)}" for row in scores["per_molecule"]]
        drawn = draw_grid(molecules, args.png, legends)
        print(f"drew {drawn} molecules to {args.png}")
    if not args.no_score:
        rules = [("file_bonds", "the predicted bonds"), ("edm", "EDM's rule, bonds from distances")]
        for key, name in rules:
            s = scores.get(key) if key == "file_bonds" else scores
            if not s:
                continue
            print(f"[{name}] atom stability {100 * s['atom_stability']:.1f}%  molecule stability "
                  f"{100 * s['mol_stability']:.1f}%  validity {100 * s['validity']:.1f}%  connectivity "
                  f"{100 * s['connectivity']:.1f}%"
                  + (f"  uniqueness {100 * s['uniqueness']:.1f}%" if s["uniqueness"] is not None else
                     "  uniqueness - (no valid molecule)"))
    return 0
