"""Protein Cα backbones.

  molediff protein score DIR [--reference DIR] [--json OUT] [--png OUT]
      geometry of Cα traces (PDB/mmCIF files, optionally .gz): Cα–Cα distances, clashes, P-SEA secondary
      structure, Rg / N^0.38, and with --reference the W1 distances of virtual bond angles and dihedrals. The
      PNG draws the reference, or by default the shipped held-out real chains, beside the chains.
  molediff protein sample --length L -n N -o DIR [--model angles|egnn] [--checkpoint W]
      sample Cα traces with the shipped angle model or your own weights (a Cartesian EGNN you trained: --model
      egnn --checkpoint W); one PDB and one mmCIF file per chain.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..utils import UsageError, add_precision_argument

SHIPPED = "protein_ca_angles"   # molediff/pretrained/protein_ca_angles.safetensors and its card, the default model


def configure(parser: argparse.ArgumentParser) -> None:
    from ..diffusion import SAMPLERS
    from ..proteins.sampling import DEFAULT_MODEL, MODEL_KINDS

    HelpFormatter = parser.formatter_class  # the CLI's formatter (commands do not import the CLI module)

    sub = parser.add_subparsers(dest="protein_command", metavar="SUBCOMMAND", required=True)
    score = sub.add_parser("score", help="score Cα traces in a folder or file", formatter_class=HelpFormatter,
                           description="Score the Cα traces of every chain in DIR (.pdb/.ent/.cif/.mmcif, optionally "
                                       ".gz). Clashes are Cα pairs |i-j| >= 3 under 3.0 Å, as a fraction of such "
                                       "pairs and of chains. Unreadable files are listed and skipped.")
    score.add_argument("path", metavar="DIR", help="folder (or file) of structures")
    score.add_argument("--reference", metavar="DIR", default=None,
                       help="reference structures for the W1 distances of bond angles and dihedrals (without it "
                            "no W1 is computed; the PNG still draws the shipped held-out chains)")
    score.add_argument("--json", metavar="OUT", default=None, help="write the summary as JSON")
    score.add_argument("--png", metavar="OUT", default=None,
                       help="draw the distributions as a PNG, beside the --reference chains (default: the 39 "
                            "held-out test chains shipped with molediff)")
    sample = sub.add_parser("sample", help="sample Cα traces with a trained model", formatter_class=HelpFormatter,
                            description="Sample Cα traces and write NAME.pdb and NAME.cif per chain into DIR, "
                                        f"with the shipped '{SHIPPED}' weights of the angle model unless "
                                        "--checkpoint names others (train your own with 'molediff train "
                                        "configs/protein_angles_cpu.yaml'); --model egnn --checkpoint W samples "
                                        "a Cartesian Cα EGNN model you trained (task 'proteins'; its shipped "
                                        "weights were retired).")
    sample.add_argument("--length", type=int, default=None,
                        help="residues per chain, from 4 (angles) or 2 (egnn) up to the model's max_length (128 "
                             "for the shipped angle model; default: drawn from the training length histogram)")
    sample.add_argument("-n", "--num-chains", type=int, default=10, help="number of chains")
    sample.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    sample.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODEL_KINDS),
                        help="angles: virtual bond angles and dihedrals with every Cα–Cα at 3.80 Å; egnn: Cartesian "
                             "Cα coordinates (no shipped weights: give --checkpoint)")
    sample.add_argument("--checkpoint", default=None,
                        help="exported .safetensors weights or a training run/checkpoint directory of the --model "
                             "(default: its shipped weights, " + ", ".join(
                                 f"{k}: '{v.shipped}'" if v.ships else f"{k}: none, required"
                                 for k, v in sorted(MODEL_KINDS.items())) + ")")
    sample.add_argument("--sampler", default=None, choices=sorted(SAMPLERS), help="sampler (default: " + ", ".join(
        f"{k}: {v.sampler}" for k, v in sorted(MODEL_KINDS.items())) + ")")
    sample.add_argument("--steps", type=int, default=None, help="sampler steps (default: " + ", ".join(
        f"{k}: {v.steps or 'all T'}" for k, v in sorted(MODEL_KINDS.items())) + ")")
    sample.add_argument("--noise-scale", type=float, default=None, metavar="GAMMA",
                        help="ddpm only: scale of each step's fresh noise (below 1: low-temperature sampling, as "
                             "Genie and Chroma use it; 1 is the exact reverse process). Default: " + ", ".join(
                                 f"{k}: {v.noise_scale:g}" for k, v in sorted(MODEL_KINDS.items())))
    sample.add_argument("--guide", action=argparse.BooleanOptionalAction, default=None,
                        help="angle model only: steer the low-noise steps away from Cα clashes (non-adjacent pairs "
                             "under 4 Å) and from chains less compact than Rg = 2.6·L^0.38 Å, by gradient steps on "
                             "the angles through the chain's rebuilt coordinates (molediff.proteins.guidance; "
                             "default: on for the angle model; --no-guide samples the model alone)")
    sample.add_argument("--seed", type=int, default=0, help="chain i uses seed + i")
    sample.add_argument("--batch-size", type=int, default=16, help="chains sampled together")
    sample.add_argument("--device", default="cpu", help="torch device")
    sample.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    # fp32 by default: bf16 sampling is not measured on the protein models, and the default output stays the same
    add_precision_argument(sample, default="fp32")


def run(args: argparse.Namespace) -> int:
    return _score(args) if args.protein_command == "score" else _sample(args)


def _score(args: argparse.Namespace) -> int:
    from ..proteins.io import read_ca_traces
    from ..proteins.metrics import format_table, plot_distributions, score_chains
    from ..proteins.reference import heldout_chains
    from ..utils import atomic_write, check_output_path

    for flag, path, suffix in (("--json", args.json, ".json"), ("--png", args.png, ".png")):
        if path is not None:
            if not path.lower().endswith(suffix):
                raise UsageError(f"{flag} must name a {suffix} file, got {path!r}")
            check_output_path(path, flag)
    chains, _, bad = read_ca_traces(args.path)
    for name, reason in bad:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if not chains:
        raise ValueError(f"no chain could be read from {args.path}")
    reference = None
    if args.reference:
        reference, _, ref_bad = read_ca_traces(args.reference)
        for name, reason in ref_bad:
            print(f"skipped reference {name}: {reason}", file=sys.stderr)
        if not reference:
            raise ValueError(f"no reference chain could be read from {args.reference}")
    summary = score_chains(chains, reference)
    summary["n_unreadable"] = len(bad)
    print(format_table(summary))
    if args.json:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
        with atomic_write(args.json) as f:
            f.write(json.dumps({"path": str(args.path), "reference": args.reference, **clean}, indent=1) + "\n")
    if args.png:
        if reference is None:
            try:
                drawn, drawn_label = heldout_chains("test"), "held-out real chains (test split)"
            except FileNotFoundError:   # an installation without molediff/proteins/resources
                drawn, drawn_label = None, "reference"
                print("warning: no held-out real chains in this installation; pass --reference DIR to draw real "
                      "chains beside yours", file=sys.stderr)
        else:
            drawn, drawn_label = reference, f"reference ({Path(args.reference).name or args.reference})"
        plot_distributions(args.png, chains, drawn, label=Path(args.path).name or "chains",
                           reference_label=drawn_label)
        print(f"drew the distributions to {args.png}" + ("" if drawn is None else f" beside the {drawn_label}"))
    return 0


def _sampling(args: argparse.Namespace, total_steps: int | None):
    """The checked ``ProteinSampling`` of the arguments (``total_steps`` None before the model is loaded);
    UsageError naming the flag otherwise."""
    from ..proteins.sampling import sampling_for

    try:
        return sampling_for(args.model, total_steps, args.sampler, args.steps, args.noise_scale, args.guide)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_sample(args: argparse.Namespace) -> None:
    """UsageError for an argument of ``protein sample`` that cannot work, before anything is loaded. (--length
    and --steps are checked against the model's ranges once it is loaded.)"""
    from ..proteins.sampling import MODEL_KINDS, no_shipped_weights
    from ..utils import check_device, check_output_path

    if args.num_chains < 1 or args.batch_size < 1:
        raise UsageError("--num-chains and --batch-size must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    check_output_path(args.output, "--output", directory=True)
    if args.checkpoint is None and not MODEL_KINDS[args.model].ships:
        raise UsageError(no_shipped_weights(args.model))
    _sampling(args, None)
    check_device(args.device)


def _sample(args: argparse.Namespace) -> int:
    _check_sample(args)
    import torch

    from ..proteins.io import write_ca_trace
    from ..proteins.sampling import check_length, load_protein_model
    from ..utils import set_threads, use_bf16

    set_threads(args.threads)
    out = Path(args.output)
    model = load_protein_model(args.model, args.checkpoint, device=args.device)
    sampling = _sampling(args, model.schedule.T)
    if args.length is not None:
        try:
            check_length(model, args.model, args.length)
        except ValueError as e:   # an argument outside this model's range: a usage error
            raise UsageError(str(e)) from None
    lengths = (torch.full((args.num_chains,), args.length, dtype=torch.long) if args.length is not None
               else model.sample_lengths(args.num_chains, torch.Generator().manual_seed(args.seed)))
    seeds = range(args.seed, args.seed + args.num_chains)
    device_type = torch.device(args.device).type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16(args.precision, device_type)):
        chains = model.sample_chains(lengths, seeds=seeds, batch_size=args.batch_size, show_progress=True,
                                     **sampling.options())
    out.mkdir(parents=True, exist_ok=True)
    no_pdb = []
    for seed, coords in zip(seeds, chains):
        write_ca_trace(out / f"sample_{seed}.cif", coords)
        # PDB's fixed columns cannot hold coordinates beyond -999.999..9999.999 Å (an untrained or diverged
        # model can place atoms there): such a chain is written as mmCIF only, with a warning.
        if coords.min() < -999.999 or coords.max() > 9999.999:
            no_pdb.append(f"sample_{seed}")
        else:
            write_ca_trace(out / f"sample_{seed}.pdb", coords)
    print(f"wrote {len(chains)} chains to {out} (PDB and mmCIF)")
    if no_pdb:
        print(f"warning: {len(no_pdb)} chains have coordinates beyond the PDB format's range and were written as "
              f"mmCIF only: {', '.join(no_pdb)}", file=sys.stderr)
    return 0
