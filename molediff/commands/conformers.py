"""Generate 3D conformers for given molecules and write them as SDF.

INPUT is a SMILES string, a .smi file (one 'SMILES [name]' per line; blank lines and # comments skipped) or an
SDF file (2D, 3D or no coordinates; the title is the name). Each molecule gets N conformers: a pool of
ETKDGv3 embeddings (Wang et al. 2020) checked against the input's stereochemistry (mirror images are reflected,
other mismatches dropped), N of them selected for diversity and minimised with MMFF94 (Halgren 1996; UFF where
MMFF94 has no parameters; --relax-when pool minimises every candidate first and selects among the low-energy
ones, with --top-up), refined by the diffusion refiner when one is available (partial diffusion from sigma0
Angstrom, SDEdit without fresh noise unless --fresh-noise; a refined conformer whose stereo changed is put back
to its seed), then minimised by the force field with its heavy atoms held near the refined positions
(--after-refinement, --restraint), so that bond lengths and angles are the force field's and the local strain
is small. Near-copies are written once (--dedupe-rmsd): a rigid molecule gets fewer than N conformers, and its
summary line says so. The refiner is --refiner WEIGHTS, else the shipped
molediff/pretrained/conformer_refiner.safetensors when the installation has it, else none (the model-free
pipeline; no torch is loaded); the first output line says which. Each conformer is one SD record titled with
the molecule's name (mol_<k> when it has none) with the fields conformer_index and, when relaxed,
MMFF94_energy_kcal_mol (kcal/mol) with energy_kind saying what that energy is (a minimum; a restrained
minimum; hydrogens minimised only).

A molecule that fails (bad SMILES, unreadable record, unsupported element, too many atoms, no embedding) is
reported once with its reason and input record number, and the others proceed. Metals and other elements the
force fields cannot place are refused unless --allow-unvalidated-elements.

Libraries: inputs are read lazily, molecules run in --workers processes (default: one per core, at most one per
molecule) or on a Dask cluster (--dask-scheduler), and molecule i (from 0) uses seed + i, so the output does not
depend on where it ran; records come out in input order. Each molecule is appended to OUT.partial as soon as it
is done (OUT.partial.progress records it) and OUT.partial becomes OUT when the run ends: after a kill or Ctrl-C,
the same command with --resume continues after the last whole molecule. An output ending in .sdf.gz is written
as one gzip member per molecule. Exit status: 0 when at least one molecule got conformers, 1 when none did, 2 for
usage errors, 130 for Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import sys

from ..conformers.forcefield import DEFAULT_RESTRAINT
from ..conformers.pipeline import (
    AFTER_REFINEMENT,
    DEFAULT_PASSES,
    DEFAULT_STEPS,
    NOISE_STEPS,
    RELAX_WHEN,
    TOP_UP_METHODS,
    ConformerOptions,
)
from ..conformers.selection import DEFAULT_DISTINCT_RMSD, DEFAULT_PRUNE_RMSD
from ..utils import add_precision_argument

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT",
                        help="a SMILES string (quote it), a .smi/.smiles file or an .sdf/.sd/.mol file "
                             "(optionally .gz)")
    parser.add_argument("-n", "--num-conformers", type=int, default=10, metavar="N",
                        help="conformers per molecule")
    parser.add_argument("-o", "--output", default="conformers.sdf",
                        help="output SDF file (.sdf, or .sdf.gz for gzip); written as OUTPUT.partial while the run "
                             "goes on")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed, default 0; the same seed gives the same conformers")
    parser.add_argument("--pool", type=int, default=3,
                        help="candidates embedded per wanted conformer (pool x N in all); more gives more diverse, "
                             "lower-energy conformers at proportional cost")
    parser.add_argument("--relax", choices=["none", "mmff"], default="mmff",
                        help="'mmff': minimise each candidate with MMFF94 (UFF where MMFF94 has no parameters) and "
                             "record its energy; 'none': keep the ETKDGv3 geometries (no energies)")
    parser.add_argument("--relax-when", choices=list(RELAX_WHEN), default=ConformerOptions.relax_when,
                        help=f"when the force field minimises: 'pool', every candidate before selection (energies "
                             f"guide it; pool x N minimisations); 'chosen', only the N chosen, picked among the "
                             f"candidates as ETKDGv3 embedded them, before refinement; 'adaptive', as 'chosen' "
                             f"unless the N chosen fall onto fewer than N distinct minima (rigid molecules), then "
                             f"as 'pool'; 'final', only the N chosen, "
                             f"after refinement (the --after-refinement step alone); default "
                             f"{ConformerOptions.relax_when}")
    parser.add_argument("--select", choices=["diverse", "energy", "none", "model"], default="diverse",
                        help="'diverse': farthest-point selection on RMSD over heavy atoms and polar H among "
                             "candidates within 10 kcal/mol of the lowest (closest to protein-bound ligands); "
                             "'energy': the lowest-energy candidates that differ by at least --prune-rmsd (closest "
                             "to QM minima; needs --relax mmff); 'none': the first N candidates; 'model': "
                             "farthest-point selection among the best-scored third by the model's denoising error "
                             "(needs a refiner; writes model_score)")
    parser.add_argument("--prune-rmsd", type=float, default=DEFAULT_PRUNE_RMSD, metavar="ANGSTROM",
                        help="--select energy keeps no two conformers closer than this RMSD (heavy atoms and polar "
                             "H) while enough distinct candidates exist; the rest are topped up (--top-up)")
    parser.add_argument("--top-up", choices=list(TOP_UP_METHODS), default="unrelaxed",
                        help="when fewer than N distinct relaxed candidates exist (small molecules: the force field "
                             "collapses most candidates onto a few minima), fill the open slots with the most "
                             "distinct candidates as ETKDGv3 embedded them, before relaxation ('unrelaxed'; refined "
                             "and minimised like the rest), or with near-duplicates of the relaxed ones "
                             "('relaxed'; --dedupe-rmsd then leaves them out); with --relax mmff only")
    parser.add_argument("--dedupe-rmsd", type=float, default=DEFAULT_DISTINCT_RMSD, metavar="ANGSTROM",
                        help="write a conformer only if its RMSD (heavy atoms and polar H) to every conformer "
                             "written before it is at least this; rigid molecules then get fewer than N, and the "
                             "summary line says so (0: always write N when N candidates exist)")
    parser.add_argument("--max-atoms", type=int, default=500,
                        help="skip molecules with more atoms than this (hydrogens included)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for embedding and relaxation, and torch's for the refiner in this process "
                             "(default and 0: all cores; with several --workers or on Dask, one per worker)")
    parser.add_argument("--allow-unvalidated-elements", action="store_true",
                        help="accept metals and other elements outside H, B, C, N, O, F, Si, P, S, Cl, Se, Br, I "
                             "(refused by default: the force fields do not model their coordination geometry); "
                             "such molecules are written with an UNVALIDATED note")
    parser.add_argument("--no-hs", action="store_true",
                        help="write conformers without hydrogens (they are still used to generate them)")
    library = parser.add_argument_group("libraries")
    library.add_argument("--workers", type=int, default=None, metavar="N",
                         help="worker processes, each with one torch thread and its own refiner (default: one per "
                              "core, at most one per molecule; 1: run in this process); the output does not depend "
                              "on N")
    library.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                         help="run the molecules on an existing dask.distributed cluster (e.g. tcp://host:8786; "
                              "pip install molediff[dask]); chunks whose worker dies are run again")
    library.add_argument("--resume", action="store_true",
                         help="continue an interrupted run from OUTPUT.partial: molecules already written or failed "
                              "are skipped (the same INPUT and options are required)")
    model = parser.add_argument_group("diffusion refiner")
    model.add_argument("--refiner", default=None, metavar="WEIGHTS",
                       help="refiner weights (.safetensors or a training run directory); 'none' for the "
                            "model-free pipeline; default: the shipped conformer_refiner weights if installed, "
                            "else none")
    start = model.add_mutually_exclusive_group()
    start.add_argument("--sigma0", type=float, default=None,
                       help="where refinement starts, as the noise level sigma_t0 in Angstrom (default 0.45; 0: "
                            "no refinement, the model then only scores for --select model)")
    start.add_argument("--t0", type=float, default=None,
                       help="start time of refinement in (0, t_max] instead of --sigma0")
    model.add_argument("--steps", type=int, default=None,
                       help="reverse sampler steps from t0 to 0 in each refinement pass, or from t = 1 with --init "
                            f"noise (defaults: {DEFAULT_STEPS} and {NOISE_STEPS})")
    model.add_argument("--passes", type=int, default=None,
                       help=f"refinement passes in a row, each from the previous output (default {DEFAULT_PASSES})")
    add_precision_argument(model)   # bf16 where native: the same best-of-10 RMSD on the tuning sets
    model.add_argument("--fp32", dest="precision", action="store_const", const="fp32",
                       help="the same as --precision fp32 (kept for older scripts)")
    model.add_argument("--after-refinement", choices=list(AFTER_REFINEMENT), default="restrained",
                       help="what the force field does to each refined conformer: 'restrained' minimises it with its "
                            "heavy atoms held to the refined positions by harmonic restraints (--restraint): bond "
                            "lengths and angles become the force field's, torsions and ring puckers stay close to the "
                            "model's; 'hydrogens' minimises only the hydrogens (the model's bond lengths stay, with "
                            "their strain); 'torsions' puts the refined acyclic torsions on the unrefined conformer "
                            "(the force field's bond lengths and angles) and minimises the hydrogens")
    model.add_argument("--restraint", type=float, default=DEFAULT_RESTRAINT, metavar="K",
                       help="force constant of those restraints in kcal/mol/A^2 (E = K d^2 per heavy atom; larger "
                            "keeps more of the model's geometry and more strain)")
    model.add_argument("--fresh-noise", action="store_true",
                       help="add SDEdit's fresh noise of sigma0 before refining (default: start from the conformer "
                            "itself, which measured better)")
    model.add_argument("--sampler", default="ddim", help="core sampler: ddim, ddpm, heun or dpm2m")
    model.add_argument("--init", choices=["etkdg", "noise"], default="etkdg",
                       help="'etkdg': refine ETKDGv3 candidates; 'noise': draw the candidates from the model's full "
                            "reverse process (needs a model trained up to t = 1)")
    model.add_argument("--device", default="cpu", help="device for the model: cpu or cuda")
    model.add_argument("--batch-size", type=int, default=32, help="conformers per model call")


def _as_flags(message: str, args: argparse.Namespace) -> str:
    """``message`` (a ``ConformerOptions`` error, which names its fields: ``relax_when='pool'``) with each
    ``field=value`` of an option the command has a flag for written as the user knows it: ``--relax-when pool``.
    A field's flag is its name with dashes (argparse's dest), ``n`` is ``--num-conformers``."""
    import dataclasses
    import re

    flags = {f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(ConformerOptions)
             if hasattr(args, f.name)}
    flags["n"] = "--num-conformers"
    return re.sub(r"\b(" + "|".join(flags) + r")=(['\"]?)([^'\"\s,:;]+)\2",
                  lambda match: f"{flags[match.group(1)]} {match.group(3)}", message)


def _usage_error(message: str) -> int:
    from ..utils import report_usage_error  # every command's one format of usage errors (exit status 2)

    return report_usage_error("molediff conformers", message)


def _summary(name: str, mol) -> str:
    k = mol.GetNumConformers()
    parts = [f"{k} conformer{'s' if k != 1 else ''}", f"force field {mol.GetProp('molediff_forcefield')}"]
    fixed, dropped = mol.GetIntProp("molediff_stereo_fixed"), mol.GetIntProp("molediff_stereo_dropped")
    parts.append(f"stereo: {fixed} mirrored, {dropped} dropped")
    if mol.HasProp("molediff_refined") and (mol.GetIntProp("molediff_refined")
                                            or mol.GetIntProp("molediff_refine_reverted")):
        parts.append(f"refined {mol.GetIntProp('molediff_refined')} "
                     f"({mol.GetIntProp('molediff_refine_reverted')} kept unrefined: stereo)")
    if mol.HasProp("molediff_unrelaxed") and mol.GetIntProp("molediff_unrelaxed"):
        parts.append(f"{mol.GetIntProp('molediff_unrelaxed')} from unrelaxed candidates (--top-up)")
    notes = mol.GetProp("molediff_notes")
    return f"{name}: " + ", ".join(parts) + (f" ({notes})" if notes else "")


def _refiner_path(args) -> tuple[str | None, str]:
    """The refiner weights to use and how they were chosen (for the first output line)."""
    if args.refiner is not None and args.refiner.lower() == "none":
        return None, "none (--refiner none)"
    if args.refiner is not None:
        return args.refiner, args.refiner
    from ..conformers.pipeline import shipped_refiner

    shipped = shipped_refiner()
    if shipped is None:
        return None, "none (no shipped conformer_refiner weights in this installation; pass --refiner WEIGHTS)"
    return str(shipped), f"{shipped} (shipped)"


def _options(args):
    """The run's ``ConformerOptions`` from the arguments (without --threads: all cores); ValueError (one line) for
    values that cannot work."""
    from ..conformers.pipeline import ConformerOptions

    return ConformerOptions(n=args.num_conformers, seed=args.seed, pool=args.pool, relax=args.relax,
                            select=args.select, max_atoms=args.max_atoms, prune_rmsd=args.prune_rmsd,
                            top_up=args.top_up, after_refinement=args.after_refinement, restraint=args.restraint,
                            dedupe_rmsd=args.dedupe_rmsd, relax_when=args.relax_when,
                            threads=0 if args.threads is None else args.threads, init=args.init,
                            allow_unvalidated_elements=args.allow_unvalidated_elements)


def _refiner_settings(args) -> dict:
    """The ``Refiner`` settings of the arguments (for this process and for workers)."""
    return dict(sigma0=args.sigma0, t0=args.t0, steps=args.steps,
                passes=args.passes if args.init != "noise" else None, sampler=args.sampler,
                fresh_noise=args.fresh_noise, bf16=None if args.precision == "auto" else args.precision == "bf16",
                batch_size=args.batch_size, device=args.device)


def _refiner(args, path: str, init: str):
    """The ``Refiner`` on --device with the model options, and how it will be used (one line); ValueError /
    FileNotFoundError (one line) for what cannot work."""
    from ..conformers.pipeline import Refiner
    from ..utils import set_threads

    if args.threads:
        set_threads(args.threads)
    refiner = Refiner(path, **_refiner_settings(args))
    refiner.check_init(init)
    return refiner, refiner.describe(init)


def _settings(args, options, refiner_how: str) -> dict:
    """What shapes the output, recorded with a partial output so that --resume continues only the same run."""
    import dataclasses

    fields = dataclasses.asdict(options)
    fields.pop("threads")  # how fast, not what
    return {**fields, "refiner": refiner_how, "hydrogens": not args.no_hs}


def _dask_client(address: str):
    """A ``distributed.Client`` of the cluster at ``address``; ValueError (one line) without Dask or a cluster."""
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--dask-scheduler needs Dask: pip install 'molediff[dask]'") from None
    try:
        return Client(address, timeout=30)
    except (OSError, TimeoutError) as e:
        raise ValueError(f"cannot reach the Dask scheduler at {address} ({' '.join(str(e).split())[:200]})") from None


def _report_interrupted(out, error: bool) -> None:
    """Keep a partial output that holds finished molecules (and say how to continue); delete one that does not."""
    if not out.done:
        out.discard()
        return
    out.close()
    what = "stopped by the error above" if error else "interrupted"
    print(f"molediff conformers: {what} after {out.done} molecule{'s' if out.done != 1 else ''}; they are kept in "
          f"{out.partial}: run the same command with --resume to continue", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from tqdm.auto import tqdm

    from ..conformers.batch import RefinerSpec, available_cores, conformers_for_library
    from ..conformers.io import PartialSDF, count_inputs, iter_inputs
    from ..utils import check_output_path, progress

    # Usage errors (exit 2) are found before any work: option values, the output path, the input itself.
    if not args.output.lower().endswith((".sdf", ".sdf.gz")):
        return _usage_error(f"output must end in .sdf or .sdf.gz, got {args.output!r}")
    try:
        options = _options(args)
    except ValueError as e:
        return _usage_error(_as_flags(str(e), args))
    if (args.steps is not None and args.steps < 1) or args.batch_size < 1 or (args.passes is not None
                                                                               and args.passes < 1):
        return _usage_error("--steps, --passes and --batch-size must be at least 1")
    if args.workers is not None and args.workers < 1:
        return _usage_error(f"--workers must be at least 1, got {args.workers}")
    if args.workers is not None and args.dask_scheduler is not None:
        return _usage_error("give --workers or --dask-scheduler, not both (the Dask cluster has its own workers)")
    path, described = _refiner_path(args)
    if path is not None:
        from ..diffusion import SAMPLERS

        if args.sampler not in SAMPLERS:
            return _usage_error(f"unknown --sampler {args.sampler!r}; choose one of {', '.join(sorted(SAMPLERS))}")
    if path is None:
        for flag, given in (("--select model", args.select == "model"), ("--init noise", args.init == "noise"),
                            ("--sigma0", args.sigma0 is not None), ("--t0", args.t0 is not None),
                            ("--fresh-noise", args.fresh_noise), ("--passes", args.passes is not None),
                            ("--precision / --fp32", args.precision != "auto")):
            if given:
                return _usage_error(f"{flag} needs a refiner: pass --refiner WEIGHTS (refiner: {described})")
    refiner = spec = client = None
    try:
        check_output_path(args.output)
        records = iter_inputs(args.input)
        if path is not None:
            refiner, how = _refiner(args, path, options.init)
            described = f"{described}; {how}"
            spec = RefinerSpec.of("shipped" if args.refiner is None else path, **_refiner_settings(args))
        out = PartialSDF(args.output, _settings(args, options, described), resume=args.resume)
        out.skip_finished(records)   # --resume: the input must still start with the finished molecules
        total = count_inputs(args.input)
        workers = 1 if args.dask_scheduler else (
            args.workers or max(1, min(available_cores(), total - out.resumed)))
        if args.dask_scheduler:
            client = _dask_client(args.dask_scheduler)
        if args.threads is None and (workers > 1 or client is not None):
            options = dataclasses.replace(options, threads=1)   # the worker processes share the cores already
    except (ValueError, OSError) as e:
        return _usage_error(" ".join(str(e).split()))
    print(f"refiner: {described}")
    if out.resumed:
        print(f"resuming after {out.resumed} of {total} molecules ({out.ok} written, {out.failed} failed)")
    if client is not None:
        print(f"running on the Dask cluster at {args.dask_scheduler} ({sum(client.nthreads().values())} threads)")
    elif workers > 1:
        print(f"running on {workers} worker processes")

    verbose = getattr(args, "verbose", False)
    results = conformers_for_library(records, options, spec if (workers > 1 or client is not None) else refiner,
                                     workers=workers, dask_client=client, start=out.resumed, strict=verbose)
    bar = progress(total=total, initial=out.resumed, desc="conformers", unit="mol")
    try:
        out.open()
        for index, name, result in results:
            out.add(index, name, result, hydrogens=not args.no_hs)
            if isinstance(result, str):
                tqdm.write(f"molediff conformers: skipped {name}: {result} (input record {index + 1})",
                           file=sys.stderr)
            else:
                tqdm.write(_summary(name, result), file=sys.stdout)
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        _report_interrupted(out, error=False)
        if out.done:
            return 130
        raise   # nothing was kept: the CLI says so
    except BaseException:
        bar.close()
        _report_interrupted(out, error=True)
        raise
    finally:
        results.close()
        if client is not None:
            client.close()
    bar.close()
    if out.ok == 0:
        out.discard()
        print(f"no conformers written: all {out.failed} molecule{'s' if out.failed != 1 else ''} failed",
              file=sys.stderr)
        return 1
    out.finish()
    print(f"wrote {out.records} conformer{'s' if out.records != 1 else ''} of {out.ok} molecule"
          f"{'s' if out.ok != 1 else ''} to {args.output}" + (f"; {out.failed} failed" if out.failed else ""))
    return 0
