"""Benchmark conformer generation against reference geometries: RDKit's ETKDGv3, ETKDGv3 + MMFF94, and molediff's
pipeline (``molediff.generate_conformers``: a pool of 3 × N ETKDGv3 candidates, diverse selection, MMFF94 on
the chosen, open slots topped up) with its ablations (pool 1; no relaxation), side by side in one run. With
``--refiner WEIGHTS`` also the diffusion refiner's arms: molediff's defaults with refinement (the pipeline's
defaults: σ₀ = 0.45 Å, one pass of one DDIM step, no fresh noise, bf16 where native, a restrained MMFF94 finish),
the model-free pipeline (no refinement), and unless ``--only-defaults`` the ablations: pool 1, no relaxation, other σ₀
(``--sigma0-ablations``), other step counts (``--steps-ablations``), one pass of 5 steps (session 5's
refinement), float32, the other top-up (``--top-up``), SDEdit's fresh noise, the other selections.

    OMP_NUM_THREADS=1 python scripts/bench_conformers.py [--set qm9|ccd] [--n-molecules 100] [--seed 0]
        [--threads 1] [--refiner WEIGHTS] [--device cpu]

Reference sets (``--set``):

- ``qm9``: ``--n-molecules`` molecules drawn (seeded) from EDM's QM9 test split (``load_qm9("test")``, needs
  qm9pack) against their DFT geometries, each built with molediff's bond perception
  (``molediff.chem.bonds.to_rdkit``) and RDKit sanitisation (molecules that fail, or with fewer than 3 heavy
  atoms, are skipped);
- ``ccd``: the 500 held-out Chemical Component Dictionary molecules of ``datasets/ccd_conformer_benchmark.txt``
  (``molediff.conformers.benchmark``; ``--n-molecules`` of them drawn seeded when fewer are asked for) against
  their experimental ("model") coordinates, with the CCD's bond orders and charges (biotite's copy of the CCD);
- ``drugs``: the 20 drug-like molecules of ``datasets/drugs20.smi`` (macrocycles, β-lactams, peptides), stereo as
  written, no reference geometry: CPU, failures, stereo and ``--validity`` only.

With ``--validity``, every N = 10 conformer is also checked with PoseBusters' intramolecular checks (the
``posebusters`` package's ``mol`` configuration) and for local strain (MMFF94 energy above the minimum reached
from it) and bond-length shifts on the way there (``molediff.chem.physics.mmff_strain``).

Stereo is assigned from the reference geometry, so every method is asked for the reference's stereoisomer.

For N = 1 and N = 10 conformers per molecule (each generated separately): best-of-N heavy-atom RMSD to the DFT
geometry (symmetry-aware: ``molediff.chem.rmsd.SymmetricRMSD``, as RDKit's ``GetBestRMS`` on
hydrogen-free copies), its mean and median over molecules,
coverage (fraction of all molecules whose best RMSD is below 0.5 / 1.0 Å; a molecule a method cannot embed is
not covered; mean and median are over the molecules it embedded),
and process CPU time per conformer (generation only, not the RMSD): all CPU time, failed molecules included, over
all conformers, and the median over molecules (robust to the few strained polycycles where embedding retries
dominate). ETKDGv3 baselines use RDKit's defaults except a fixed non-zero seed (RDKit's
randomSeed 0 gives N identical conformers) and the same MMFF94 step limit as molediff (1000). Prints a Markdown
table with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time

import numpy as np

from molediff.conformers.forcefield import DEFAULT_RESTRAINT
from molediff.conformers.pipeline import DEFAULT_PASSES, DEFAULT_SIGMA0, DEFAULT_STEPS, ConformerOptions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # _bench, also when this file is loaded by path
from _bench import machine, table_header  # noqa: E402

MAX_ITERS = 1000  # MMFF94 steps for both the baseline and molediff's pipeline
DEFAULT_RELAX_WHEN = ConformerOptions.relax_when
RELAX_WHEN_NAMES = {"pool": "on every candidate", "chosen": "on the chosen",
                    "adaptive": "on the chosen, on every candidate when the chosen collapse",
                    "final": "after refinement only"}
DRUGS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "datasets", "drugs20.smi")
N_VALUES = (1, 10)


def reference_molecules(n_molecules: int, seed: int, which: str = "qm9", tuning: bool = False):
    """Sanitised RDKit Mols with hydrogens, named, with the reference conformer (stereo from it), for a seeded
    sample of the set ``which`` (``qm9`` or ``ccd``), and the number skipped. ``tuning``: the set on which options
    are chosen instead (QM9's valid split; the qualifying CCD components outside the benchmark list)."""
    if which == "ccd":
        return ccd_reference_molecules(n_molecules, seed, tuning)
    if which == "drugs":
        from molediff.conformers.io import read_smiles_file

        records = read_smiles_file(DRUGS_FILE)
        mols = []
        for rec in records[:n_molecules]:
            rec.mol.SetProp("_Name", rec.name)
            mols.append(rec.mol)
        return mols, 0

    from molediff.chem.bonds import to_rdkit
    from molediff.data.qm9 import load_qm9

    data = load_qm9("valid" if tuning else "test")
    order = np.random.default_rng(seed).permutation(len(data))
    out, skipped = [], 0
    for i in order:
        if len(out) == n_molecules:
            break
        m = data[int(i)]
        mol = _reference(m.name or f"qm9_{int(i)}", to_rdkit, m.atomic_numbers, m.positions)
        if mol is None:
            skipped += 1
        else:
            out.append(mol)
    return out, skipped


def _reference(name: str, build, *args, **kwargs):
    """A sanitised reference Mol from ``build(*args, **kwargs)`` with stereo assigned from its 3D coordinates and titled
    ``name``; None when RDKit refuses the graph (charges, valence) or it has fewer than 3 heavy atoms."""
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        try:
            mol = build(*args, **kwargs)
            Chem.SanitizeMol(mol)
        except Exception:  # RDKit refuses the graph: not a usable reference
            return None
    if sum(a.GetAtomicNum() > 1 for a in mol.GetAtoms()) < 3:
        return None
    Chem.AssignStereochemistryFrom3D(mol)
    mol.SetProp("_Name", name)
    return mol


def ccd_reference_molecules(n_molecules: int, seed: int, tuning: bool = False):
    """The CCD benchmark molecules (all of them, or ``n_molecules`` drawn seeded) with their experimental
    coordinates, CCD bond orders and formal charges; the number skipped (fewer than 3 heavy atoms, or RDKit
    refuses them: none for the recorded list)."""

    from molediff.chem.bonds import to_rdkit
    from molediff.conformers.benchmark import ccd_tuning_ids, read_ccd_benchmark
    from molediff.data.ccd import build_ccd

    ids = ccd_tuning_ids() if tuning else read_ccd_benchmark()
    if n_molecules < len(ids):
        ids = [ids[int(k)] for k in np.random.default_rng(seed).permutation(len(ids))[:n_molecules]]
    data, _ = build_ccd("model", ids=ids)
    out, skipped = [], len(ids) - len(data)
    for m in data:
        mol = _reference(m.name, to_rdkit, m.atomic_numbers, m.positions, bonds=m.bonds,
                         formal_charges=m.formal_charges)
        if mol is None:
            skipped += 1
        else:
            out.append(mol)
    return out, skipped


def etkdg(mol, n: int, threads: int, relax: bool):
    """RDKit's ETKDGv3 (Wang et al. 2020), optionally followed by MMFF94 minimisation (Halgren 1996)."""
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

    m = Chem.AddHs(mol)  # as molediff does: perceived QM9 graphs can leave an implicit hydrogen
    m.RemoveAllConformers()
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = 0xF00D
    params.numThreads = threads
    if not rdDistGeom.EmbedMultipleConfs(m, n, params):
        raise ValueError("embedding failed")
    if relax:
        rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(m, numThreads=threads, maxIters=MAX_ITERS)
    return m


def molediff_pipeline(mol, n: int, threads: int, **kwargs):
    """``generate_conformers`` with seed 0 and the baseline's MMFF94 step limit; model-free unless ``kwargs`` name
    a refiner (the API's default is the shipped one)."""
    from molediff.conformers.pipeline import generate_conformers

    options = {"refiner": None, "max_iters": MAX_ITERS, **kwargs}
    return generate_conformers(mol, n=n, seed=0, threads=threads, **options)


METHODS = {
    "ETKDGv3": lambda mol, n, t: etkdg(mol, n, t, relax=False),
    "ETKDGv3 + MMFF94": lambda mol, n, t: etkdg(mol, n, t, relax=True),
    "molediff (pool 3, MMFF94, diverse)": lambda mol, n, t: molediff_pipeline(mol, n, t),
    "molediff, pool 1": lambda mol, n, t: molediff_pipeline(mol, n, t, pool=1),
    "molediff, no relaxation": lambda mol, n, t: molediff_pipeline(mol, n, t, relax="none"),
}


def methods(model=None, sigma0: float = DEFAULT_SIGMA0, ablations=(0.1, 0.3), steps: int = DEFAULT_STEPS,
            select: str = "diverse", pool: int = 3, only_defaults: bool = False, steps_ablations=(),
            passes: int = DEFAULT_PASSES, top_up: str = "unrelaxed", restraint: float = DEFAULT_RESTRAINT,
            restraint_ablations=(), pools=(), passes_ablations=(), model_free: bool = True,
            relax_when: str = DEFAULT_RELAX_WHEN, extra_arms: dict | None = None) -> dict:
    """The arms of the run: ``METHODS`` without a refiner. With a refiner ``model``: the baselines, molediff's
    defaults with refinement (σ₀ ``sigma0``, ``passes`` of ``steps`` DDIM steps, ``select``, ``pool``, ``top_up``)
    and its ablations: no refinement (the model-free pipeline), pool 1, no relaxation, the other σ₀ and step
    counts, one pass of 5 steps, float32, the other top-up, fresh noise, the other selections.
    ``only_defaults``: the baselines, the defaults and the model-free pipeline only, plus the ablations of what
    follows refinement (``restraint_ablations``: force constants in kcal/mol/Å², ``"none"`` for hydrogens only,
    ``"torsions"`` for the refined torsions on the seed), of the pool (``pools``) and of the passes asked for.
    ``model_free=False`` leaves out the model-free arm. ``extra_arms`` maps names to settings changed from the
    refined defaults (``--arm``, ``parse_arm``); they are measured in every case."""
    if model is None:
        return dict(METHODS)

    def refined(**kwargs):
        options = {"refiner": model, "sigma0": sigma0, "steps": steps, "passes": passes, "select": select,
                   "top_up": top_up, "pool": pool, "restraint": restraint, "relax_when": relax_when, **kwargs}
        return lambda mol, n, t: molediff_pipeline(mol, n, t, **options)

    arms = {"ETKDGv3": METHODS["ETKDGv3"], "ETKDGv3 + MMFF94": METHODS["ETKDGv3 + MMFF94"],
            f"molediff (pool {pool}, MMFF94 {RELAX_WHEN_NAMES[relax_when]}, {select} selection, refined from σ₀ "
            f"{sigma0:g} Å, {passes} × {steps} "
            f"DDIM steps, {_restraint_name(restraint)}{'' if top_up == 'unrelaxed' else ', top-up from ' + top_up})":
            refined(),
            "molediff, no refinement": lambda mol, n, t: molediff_pipeline(mol, n, t, pool=pool, top_up=top_up,
                                                                            restraint=restraint,
                                                                            relax_when=relax_when)}
    if not model_free:
        del arms["molediff, no refinement"]
    for k in restraint_ablations:
        arms[f"molediff + refiner, {_restraint_name(k)}"] = refined(**_after_refinement(k))
    for p in pools:
        arms[f"molediff + refiner, pool {p}"] = refined(pool=p)
    for k in passes_ablations:
        arms[f"molediff + refiner, {k} × {steps} DDIM steps"] = refined(passes=k)
    for name, changes in (extra_arms or {}).items():
        arms[f"molediff + refiner, {name}"] = refined(**changes)
    if only_defaults:
        return arms
    arms["molediff + refiner, pool 1"] = refined(pool=1)
    arms["molediff + refiner, no relaxation"] = refined(relax="none")
    for s in ablations:
        arms[f"molediff + refiner, σ₀ {s:g} Å"] = refined(sigma0=s)
    for k in steps_ablations:
        arms[f"molediff + refiner, {passes} × {k} DDIM steps"] = refined(steps=k)
    arms["molediff + refiner, 1 pass of 5 DDIM steps"] = refined(passes=1, steps=5)
    arms["molediff + refiner, float32"] = refined(bf16=False)
    other_top_up = "relaxed" if top_up == "unrelaxed" else "unrelaxed"
    arms[f"molediff + refiner, top-up from {other_top_up} candidates"] = refined(top_up=other_top_up)
    arms[f"molediff + refiner, SDEdit's fresh noise (σ₀ {sigma0:g} Å)"] = refined(fresh_noise=True)
    for other in ("energy", "diverse", "model"):
        if other != select:
            arms[f"molediff + refiner, {other} selection"] = refined(select=other)
    return arms


def parse_arm(spec: str) -> tuple[str, dict]:
    """``--arm NAME:KEY=VALUE,...`` → (NAME, settings changed from the run's refined defaults; values are Python
    literals: ``relax_when='final',passes=1,restraint=10.0``). ValueError for a malformed spec."""
    import ast

    name, sep, items = spec.partition(":")
    if not sep:
        raise ValueError("expected NAME:KEY=VALUE,...")
    changes = {}
    for item in filter(None, items.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        changes[key.strip()] = ast.literal_eval(value.strip())
    return name, changes


def _after_refinement(k) -> dict:
    """generate_conformers' options for a restraint ablation: a force constant, 'none' or 'torsions'."""
    if k in ("none", "torsions"):
        return {"after_refinement": "hydrogens" if k == "none" else "torsions"}
    return {"restraint": float(k)}


def _restraint_name(k) -> str:
    return {"none": "hydrogens minimised (heavy atoms fixed)",
            "torsions": "refined torsions on the seed, hydrogens minimised"}.get(k) or \
        f"restrained minimisation k = {float(k):g}"


def best_rmsd(generated, reference) -> float:
    """Lowest heavy-atom RMSD (Å) of any conformer of ``generated`` to the conformer of ``reference``, over the
    symmetries of the heavy-atom graph (``SymmetricRMSD``, the library's one). ``generated`` lists the atoms of
    ``reference`` first and in its order (``Chem.AddHs(reference)``: what every method here outputs); ValueError
    otherwise, and for a ``generated`` without conformers."""
    from molediff.chem.rmsd import SymmetricRMSD

    known = reference.GetConformer().GetPositions()   # [n_reference, 3]
    elements = [a.GetAtomicNum() for a in generated.GetAtoms()]
    if elements[:len(known)] != [a.GetAtomicNum() for a in reference.GetAtoms()]:
        raise ValueError("the generated molecule does not list the reference's atoms first, in its order")
    if not generated.GetNumConformers():
        raise ValueError("the generated molecule has no conformer")
    target = np.zeros((len(elements), 3))
    target[:len(known)] = known   # the rest are hydrogens AddHs appended, which are not compared
    positions = np.stack([target, *(c.GetPositions() for c in generated.GetConformers())])
    return float(SymmetricRMSD(generated, positions).from_one(0)[1:].min())


def stereo_kept(generated, reference) -> tuple[int, int]:
    """(conformers of ``generated`` whose tetrahedral centres and double bonds match ``reference``'s specified
    stereo, conformers checked); (0, 0) when the reference specifies none. Checked from 3D on each output
    conformer independently of the pipeline's own checks (``check_conformer_stereo``)."""
    from molediff.conformers.stereo import check_conformer_stereo

    if not reference:
        return 0, 0
    ok = sum(check_conformer_stereo(generated, c.GetId(), reference) == "ok" for c in generated.GetConformers())
    return ok, generated.GetNumConformers()


def validity(out, busters) -> dict:
    """Physical validity of every conformer of ``out`` (N = 10 outputs): PoseBusters' intramolecular checks
    (``busters``: ``posebusters.PoseBusters(config="mol")``, Buttenschoen et al. 2024: sanitisation, bond lengths,
    bond angles, internal clash, aromatic ring and double bond flatness, non-aromatic ring non-flatness, internal
    energy against an ETKDG/UFF ensemble; a conformer passes when every check passes) and local strain by MMFF94
    (``molediff.chem.physics.mmff_strain``: energy above the minimum reached from the conformer, and how far each
    bond length moves on the way). Lists per conformer / per bond; molecules without MMFF94 parameters give no
    strain."""
    from rdkit import Chem, rdBase

    confs = [Chem.Mol(out, confId=c.GetId()) for c in out.GetConformers()]
    with rdBase.BlockLogs():
        table = busters.bust(confs)
    passed = table.astype(bool).all(axis=1).tolist()
    failed_checks = [col for col in table.columns for ok in table[col].tolist() if not ok]
    strain, shifts = local_strain(out)
    return {"pb_pass": passed, "pb_failed": failed_checks, "strain": strain, "bond_shift": shifts}


def local_strain(out) -> tuple[list[float], list[float]]:
    """Local strain by MMFF94 of every conformer of ``out`` (``molediff.chem.physics.mmff_strain``: energy above
    the minimum reached from the conformer, kcal/mol) and how far each bond length moves on the way (Å, per bond);
    empty for a molecule without MMFF94 parameters."""
    from molediff.chem.physics import mmff_strain

    strain, shifts = [], []
    for c in out.GetConformers():
        try:
            e0, e1, shift = mmff_strain(out, c.GetId())
        except ValueError:
            continue
        strain.append(e0 - e1)
        shifts.extend(shift.tolist())
    return strain, shifts


def run(molecules, threads: int, arms: dict | None = None, check_validity: bool = False,
        n_values: tuple[int, ...] = N_VALUES) -> dict:
    from rdkit import Chem

    from molediff.conformers.stereo import stereo_reference

    busters = None
    if check_validity:
        import logging

        from posebusters import PoseBusters

        logging.getLogger("posebusters").setLevel(logging.ERROR)
        busters = PoseBusters(config="mol")

    arms = METHODS if arms is None else arms
    results = {}
    for method in arms.values():  # warm up (lazy imports, force-field tables) outside the timings
        method(molecules[0], 1, threads)
    references = [stereo_reference(Chem.AddHs(mol)) for mol in molecules]  # the atom order every method outputs
    for name, method in arms.items():
        row = {"failures": {n: 0 for n in n_values}, "fixed": 0, "dropped": 0, "refined": 0, "reverted": 0,
               "stereo_ok": 0, "stereo_checked": 0, "failed": [], "failed_names": set(), "right_stereo": set(),
               "valid": {"pb_pass": [], "pb_failed": [],
                                                                             "strain": [], "bond_shift": []}}
        for n in n_values:
            rmsd, cpu, conformers, per_molecule = [], 0.0, 0, []
            for mol, reference in zip(molecules, references):
                start = time.process_time()
                try:
                    out = method(mol, n, threads)
                except (ValueError, RuntimeError) as e:  # RDKit's internal failures count against the method too
                    row["failures"][n] += 1
                    if n == max(N_VALUES):
                        row["failed"].append(f"{mol.GetProp('_Name')}: {' '.join(str(e).split())[:120]}")
                        row["failed_names"].add(mol.GetProp("_Name"))
                    cpu += time.process_time() - start  # time spent failing counts too
                    continue
                seconds = time.process_time() - start
                cpu += seconds
                conformers += out.GetNumConformers()
                per_molecule.append(seconds / max(out.GetNumConformers(), 1))
                if n == max(N_VALUES) and busters is not None and name != "ETKDGv3":   # unrelaxed: not a product
                    for key, values in validity(out, busters).items():
                        row["valid"][key].extend(values)
                if n == max(N_VALUES):
                    ok, checked = stereo_kept(out, reference)
                    row["stereo_ok"] += ok
                    row["stereo_checked"] += checked
                    if out.GetNumConformers() and (ok or not checked):   # embedded with the input's stereo
                        row["right_stereo"].add(mol.GetProp("_Name"))
                if n == max(N_VALUES) and out.HasProp("molediff_stereo_fixed"):
                    row["fixed"] += out.GetIntProp("molediff_stereo_fixed")
                    row["dropped"] += out.GetIntProp("molediff_stereo_dropped")
                    row["refined"] += out.GetIntProp("molediff_refined")
                    row["reverted"] += out.GetIntProp("molediff_refine_reverted")
                if mol.GetNumConformers():   # the drugs set has no reference geometry: validity only
                    rmsd.append(best_rmsd(out, mol))
            r = np.array(rmsd) if rmsd else np.full(1, np.nan)
            total = len(molecules)  # a molecule a method cannot embed counts as not covered
            row[n] = {"cpu_per_mol": cpu / max(len(molecules), 1), "mean": r.mean(), "median": np.median(r),
                      "cov05": (r < 0.5).sum() / total,
                      "cov10": (r < 1.0).sum() / total,
                      "cpu_per_conf": cpu / max(conformers, 1), "cpu_median": float(np.median(per_molecule))}
        results[name] = row
        print(f"done: {name}", file=sys.stderr)
    return results


def print_validity(results: dict, n: int) -> None:
    """The validity table: PoseBusters pass rate, the checks that failed most, local strain and bond shifts."""
    from collections import Counter

    print("\n" + table_header([
        f"method (N={n})", "PoseBusters 'mol' checks passed (conformers)", "checks failed most",
        "strain median / 95th pct (kcal/mol)", "bonds within 0.05 Å of the MMFF94 minimum",
        "CPU per molecule vs ETKDGv3 + MMFF94", "failed where ETKDGv3 embeds the input's stereo", f"failures (N={n})"]))
    base = results.get("ETKDGv3 + MMFF94", {}).get(n, {}).get("cpu_per_mol")
    embeddable = results.get("ETKDGv3", {}).get("right_stereo", set())
    for name, row in results.items():
        v = row["valid"]
        passed = f"{np.mean(v['pb_pass']):.1%} of {len(v['pb_pass'])}" if v["pb_pass"] else "n/a"
        worst = ", ".join(f"{k} {c}" for k, c in Counter(v["pb_failed"]).most_common(3)) or "none"
        strain = (f"{np.median(v['strain']):.2f} / {np.percentile(v['strain'], 95):.2f}" if v["strain"] else "n/a")
        bonds = f"{np.mean(np.array(v['bond_shift']) <= 0.05):.2%}" if v["bond_shift"] else "n/a"
        failed = "; ".join(row["failed"]) or "none"
        ratio = f"{row[n]['cpu_per_mol'] / base:.2f}×" if base else "n/a"
        extra = len(row["failed_names"] & embeddable)
        print(f"| {name} | {passed} | {worst} | {strain} | {bonds} | {ratio} | {extra} | {failed} |")
    print("\nPoseBusters: the `posebusters` package's 'mol' configuration (Buttenschoen et al. 2024), each conformer "
          "on its own (not for plain ETKDGv3: its unrelaxed geometries are a baseline for RMSD and embedding only); "
          "strain: MMFF94 energy above the minimum reached from the conformer by unrestrained "
          "minimisation (2000 steps), molecules with MMFF94 parameters only.")


def _machine() -> str:
    """The conformer benchmarks' machine line (RDKit's version included; ``bench_library.py`` prints it too)."""
    return machine(rdkit=True)


def _num(value: float, spec: str) -> str:
    """``value`` formatted, or n/a for a column not measured (``--skip-n1``)."""
    return "n/a" if np.isnan(value) else format(value, spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=["qm9", "ccd", "drugs"], default="qm9",
                        help="reference set: QM9 test molecules (DFT), the held-out CCD list (experimental), or "
                             "datasets/drugs20.smi (20 drug-like molecules without reference geometry: CPU, "
                             "failures and --validity only)")
    parser.add_argument("--n-molecules", type=int, default=100,
                        help="molecules to use (ccd: at most the 500 of the list)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the molecule selection")
    parser.add_argument("--threads", type=int, default=1, help="RDKit (and torch) threads")
    parser.add_argument("--refiner", default=None, metavar="WEIGHTS",
                        help="conformer refiner weights: adds the refiner's arms (default: none)")
    parser.add_argument("--sigma0", type=float, default=DEFAULT_SIGMA0, help="σ₀ (Å) of the refiner's default arm")
    parser.add_argument("--sigma0-ablations", type=float, nargs="*", default=[0.1, 0.3],
                        help="other σ₀ (Å) measured as ablations")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="DDIM steps of each refinement pass")
    parser.add_argument("--passes", type=int, default=DEFAULT_PASSES, help="refinement passes in a row")
    parser.add_argument("--steps-ablations", type=int, nargs="*", default=[],
                        help="other DDIM step counts measured as ablations")
    parser.add_argument("--select", choices=["diverse", "energy", "model"], default="diverse",
                        help="selection of the refiner's default arm (the others are ablations)")
    parser.add_argument("--pool", type=int, default=3, help="candidates per wanted conformer of molediff's arms")
    parser.add_argument("--relax-when", choices=sorted(RELAX_WHEN_NAMES), default=DEFAULT_RELAX_WHEN,
                        help="when molediff's arms minimise: every candidate ('pool'), the chosen ('chosen'), the "
                             "chosen and the whole pool when they collapse ('adaptive') or after refinement only "
                             "('final'); default the pipeline's")
    parser.add_argument("--top-up", choices=["unrelaxed", "relaxed"], default="unrelaxed",
                        help="where the refiner's default arm fills slots left by too few distinct relaxed "
                             "candidates (generate_conformers' top_up; the other is an ablation)")
    parser.add_argument("--restraint", type=float, default=DEFAULT_RESTRAINT,
                        help="force constant (kcal/mol/Å²) of the restrained minimisation after refinement in the "
                             "default arm")
    parser.add_argument("--restraint-ablations", nargs="*", default=[],
                        help="other force constants, 'none' (hydrogens only) or 'torsions' (the refined torsions on "
                             "the seed) measured as ablations")
    parser.add_argument("--pool-ablations", type=int, nargs="*", default=[], help="other pools measured as ablations")
    parser.add_argument("--passes-ablations", type=int, nargs="*", default=[],
                        help="other numbers of refinement passes measured as ablations")
    parser.add_argument("--arm", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="an extra molediff arm with the refiner: its name, then generate_conformers settings "
                             "over the defaults (Python literals), e.g. "
                             "--arm \"chosen relaxed:relax_when='chosen',passes=1\"; repeatable")
    parser.add_argument("--skip-model-free", action="store_true",
                        help="with --refiner: leave out the model-free arm (molediff without refinement)")
    parser.add_argument("--validity", action="store_true",
                        help="also PoseBusters' intramolecular checks and MMFF94 local strain of every N=10 "
                             "conformer (needs the posebusters package)")
    parser.add_argument("--only-defaults", action="store_true",
                        help="with --refiner: the baselines, the defaults and the model-free pipeline only")
    parser.add_argument("--tuning", action="store_true",
                        help="use the tuning set instead (QM9's valid split; CCD components outside the list): "
                             "choose options there, report on the held-out sets")
    parser.add_argument("--skip-n1", action="store_true",
                        help="measure N = 10 only (half the time; the N = 1 columns read n/a)")
    parser.add_argument("--device", default="cpu", help="device of the refiner")
    args = parser.parse_args(argv)
    if args.n_molecules < 1 or args.threads < 1:
        parser.error("--n-molecules and --threads must be at least 1")
    model = None
    if args.refiner is not None:
        import torch

        from molediff.conformers.refine import load_refiner

        torch.set_num_threads(args.threads)
        try:
            model = load_refiner(args.refiner, args.device)
        except (FileNotFoundError, ValueError) as e:
            parser.error(" ".join(str(e).split()))
    molecules, skipped = reference_molecules(args.n_molecules, args.seed, args.set, args.tuning)
    for k in args.restraint_ablations:
        if k not in ("none", "torsions"):
            try:
                float(k)
            except ValueError:
                parser.error(f"--restraint-ablations takes force constants, 'none' or 'torsions', got {k!r}")
    if args.arm and model is None:
        parser.error("--arm needs --refiner")
    extra_arms = {}
    for spec in args.arm:
        try:
            name, changes = parse_arm(spec)
        except (ValueError, SyntaxError) as e:
            parser.error(f"--arm {spec!r}: {e}")
        extra_arms[name] = changes
    arms = methods(model, args.sigma0, args.sigma0_ablations, args.steps, args.select, args.pool, args.only_defaults,
                   args.steps_ablations, args.passes, args.top_up, args.restraint, args.restraint_ablations,
                   args.pool_ablations, args.passes_ablations, not args.skip_model_free, args.relax_when,
                   extra_arms)
    lo, hi = N_VALUES
    results = run(molecules, args.threads, arms, check_validity=args.validity,
                  n_values=(hi,) if args.skip_n1 else N_VALUES)
    what = {"qm9": ("QM9 DFT geometries", "valid-split (tuning) molecules" if args.tuning else "test molecules"),
            "ccd": ("CCD experimental geometries", "CCD tuning molecules" if args.tuning else "held-out CCD molecules"),
            "drugs": ("no reference geometry (validity only)", "drug-like molecules of datasets/drugs20.smi")}[args.set]
    print(f"### Conformers vs {what[0]} ({len(molecules)} {what[1]}, seed {args.seed}; {skipped} skipped)\n")
    if model is not None:
        print(f"Refiner: `{args.refiner}` ({sum(p.numel() for p in model.parameters())} parameters, "
              f"t_max = {model.config.t_max})  ")
    print(f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python scripts/bench_conformers.py "
          f"{shlex.join(sys.argv[1:])}`  ")
    print(f"Machine: {_machine()}, {args.threads} RDKit thread(s)  ")
    print(f"Date: {datetime.date.today().isoformat()}\n")
    print(table_header([
        "method", f"mean RMSD N={lo} (Å)", f"mean RMSD N={hi} (Å)", f"median N={hi} (Å)",
        f"COV<0.5 Å N={lo} / N={hi}", f"COV<1.0 Å N={lo} / N={hi}", f"CPU ms/conformer N={lo} / N={hi}",
        f"CPU vs ETKDGv3 + MMFF94 N={hi}: per conformer / per molecule", f"median ms/conformer N={hi}",
        f"stereo kept N={hi}",
        "stereo mirrored / dropped", f"failures N={lo} / N={hi}"]))
    base = results.get("ETKDGv3 + MMFF94", {}).get(hi, {})
    missing = {"mean": np.nan, "cov05": np.nan, "cov10": np.nan, "cpu_per_conf": np.nan}
    for name, row in results.items():
        a, b = row.get(lo, missing), row[hi]
        stereo = f"{row['fixed']} / {row['dropped']}" if name.startswith("molediff") else "n/a"
        if row["refined"] or row["reverted"]:
            stereo += f" ({row['reverted']} of {row['refined'] + row['reverted']} refined kept unrefined)"
        kept = (f"{row['stereo_ok'] / row['stereo_checked']:.1%} of {row['stereo_checked']}"
                if row["stereo_checked"] else "none specified")
        ratio = (f"{b['cpu_per_conf'] / base['cpu_per_conf']:.2f}× / {b['cpu_per_mol'] / base['cpu_per_mol']:.2f}×"
                 if base else "n/a")
        failures = f"{row['failures'].get(lo, 'n/a')} / {row['failures'][hi]}"
        if np.isnan(b["mean"]):   # no reference geometry (the drugs set)
            rmsd = "n/a | n/a | n/a | n/a | n/a"
        else:
            rmsd = (f"{_num(a['mean'], '.3f')} | {b['mean']:.3f} | {b['median']:.3f} | {_num(a['cov05'], '.0%')} / "
                    f"{b['cov05']:.0%} | {_num(a['cov10'], '.0%')} / {b['cov10']:.0%}")
        print(f"| {name} | {rmsd} | {_num(1e3 * a['cpu_per_conf'], '.1f')} / {1e3 * b['cpu_per_conf']:.1f} "
              f"| {ratio} | {1e3 * b['cpu_median']:.1f} | {kept} | {stereo} | {failures} |")
    if args.validity:
        print_validity(results, hi)
    print("\nRMSD: best of N, heavy atoms, symmetry-aware, mean/median over the molecules a method embedded; coverage "
          "over all molecules (failures not covered); CPU includes failed attempts. Seeds differ between methods, so "
          "single molecules can differ by chance (a best-of-10 of 0.1 vs 1.2 Å on a flexible molecule happens).")


if __name__ == "__main__":
    main()
