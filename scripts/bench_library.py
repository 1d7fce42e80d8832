"""Benchmark ``molediff conformers`` on a library: memory of streaming and molecules/s on several workers.

1. Memory: ``--stream`` SMILES (the input's SMILES repeated; default 100,000) written to a ``.smi`` file and
   streamed, in a fresh process, through the lazy reader (``conformers.io.iter_inputs``), the library iterator
   (``conformers.batch.conformers_for_library``, in-process) with a stub stage in place of ``generate_conformers``
   (``stage=``: hydrogens added, one conformer at the origin) and the partial output (``io.PartialSDF``). Reports
   the peak resident memory of that process (``VmHWM``) and its peak before streaming (imports done).
2. Speed, on the same inputs (``--input``, first ``--n-molecules``; or ``--ccd-tuning N``: N CCD tuning molecules of
   ``bench_conformers.py``): molecules/s (wall clock, process start and refiner loading included) of
   ``molediff conformers --workers 1``, ``--workers 2``, ``--dask-scheduler`` on a ``LocalCluster`` of 2 worker
   processes with 1 thread each (cluster start not counted), and RDKit's ETKDGv3 + MMFF94 with its own
   ``numThreads=2`` (the same N conformers per molecule, in this process), and whether the three molediff output
   files are byte-identical.
3. Kill and resume: ``--workers 2`` again, killed with SIGKILL (the whole process group: the command and its
   workers) at a random point (``--kill-seed``) between 20 % and 80 % of the ``--workers 2`` run's time, then run
   with ``--resume``: how many molecules the partial output kept, that every input molecule is in the final file
   once, and whether the file is byte-identical to the uninterrupted run's.

    OMP_NUM_THREADS=1 python scripts/bench_library.py [--input datasets/drugs20.smi] [--n-molecules 20]
        [--ccd-tuning N] [-n 10] [--refiner shipped|none|WEIGHTS] [--stream 100000] [--skip-dask] [--skip-kill]
        [--kill-seed 0] [--skip-memory] [--skip-rdkit]

Prints a Markdown table with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DRUGS_FILE = HERE.parent / "datasets" / "drugs20.smi"


sys.path.insert(0, str(HERE))
from _bench import machine, peak_rss_kb  # noqa: E402  (the benchmarks' machine line and peak memory)


# ------------------------------------------------------------------------------------------ memory
def _stub_stage(mol, options, refiner):
    """The memory measurement's stage in place of ``generate_conformers``: hydrogens and one conformer at 0."""
    from rdkit import Chem

    molh = Chem.AddHs(mol)
    molh.AddConformer(Chem.Conformer(molh.GetNumAtoms()), assignId=True)
    return molh


def _stream_child(path: str, output: str) -> None:
    """The memory measurement's own process: stream ``path`` through reader, iterator, stub stage and output."""
    from molediff.conformers.batch import conformers_for_library
    from molediff.conformers.io import PartialSDF, iter_inputs

    before = peak_rss_kb()   # after importing torch, RDKit and molediff
    start = time.perf_counter()
    out = PartialSDF(output, {})
    out.open()
    for index, name, result in conformers_for_library(iter_inputs(path), stage=_stub_stage):
        out.add(index, name, result)
    out.finish()
    print(f"{before} {peak_rss_kb()} {out.done} {time.perf_counter() - start:.1f}")  # kB, kB, molecules, s


def measure_memory(smiles: list[str], count: int, workdir: Path) -> dict:
    """Peak RSS (MB) of streaming ``count`` SMILES (``smiles`` repeated) in a fresh process."""
    path = workdir / "stream.smi"
    with open(path, "w") as f:
        for k, s in zip(range(count), itertools.cycle(smiles)):
            f.write(f"{s} m{k}\n")
    result = subprocess.run([sys.executable, __file__, "--stream-child", str(path), str(workdir / "stream.sdf")],
                            capture_output=True, text=True, check=True)
    before, peak, done, seconds = result.stdout.split()
    return {"before_mb": int(before) / 1024, "peak_mb": int(peak) / 1024, "molecules": int(done),
            "seconds": float(seconds)}


# ------------------------------------------------------------------------------------------ speed
def _timed_command(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "molediff.cli", "conformers", *argv], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise SystemExit(f"molediff conformers {' '.join(argv)} failed:\n{result.stderr}")
    return time.perf_counter() - start


def killed_and_resumed(argv: list[str], output: Path, seconds: float, seed: int) -> dict:
    """Run ``molediff conformers *argv -o output``, SIGKILL its process group at a random point between 20 % and
    80 % of ``seconds``, then run it again with ``--resume``; the molecules kept and the two runs' wall clock."""
    import os
    import random
    import signal

    delay = random.Random(seed).uniform(0.2, 0.8) * seconds
    command = [sys.executable, "-m", "molediff.cli", "conformers", *argv, "-o", str(output)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=delay)
        raise SystemExit(f"the run to be killed finished before {delay:.0f} s; nothing was tested")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)   # the command and its worker processes, as a crash would
        process.wait()
    killed_after = time.perf_counter() - start
    progress = output.with_name(output.name + ".partial.progress")
    kept = max(0, len(progress.read_text().splitlines()) - 1) if progress.exists() else 0   # header + a line each
    resumed = _timed_command([*argv, "-o", str(output), "--resume"])
    return {"killed_after": killed_after, "kept": kept, "resume_seconds": resumed}


def _molecule_names(path: Path) -> list[str]:
    """The names of an SD file's molecules in order (consecutive records of one molecule counted once)."""
    from rdkit import Chem

    with open(path, "rb") as f:
        titles = [m.GetProp("_Name") for m in Chem.ForwardSDMolSupplier(f, removeHs=False, sanitize=False)]
    return [name for name, _ in itertools.groupby(titles)]


def rdkit_baseline(path: str, n: int, threads: int) -> tuple[float, int]:
    """Seconds and molecules for ETKDGv3 + MMFF94 (RDKit's numThreads) over the readable molecules of ``path``."""
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

    from molediff.conformers.io import iter_inputs

    start, done = time.perf_counter(), 0
    for rec in iter_inputs(path):
        if rec.mol is None:
            continue
        mol = Chem.AddHs(rec.mol)
        params = rdDistGeom.ETKDGv3()
        params.randomSeed, params.numThreads = 42, threads
        if rdDistGeom.EmbedMultipleConfs(mol, n, params):
            rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(mol, numThreads=threads, maxIters=1000)
        done += 1
    return time.perf_counter() - start, done


def _inputs(args, workdir: Path) -> tuple[str, list[str]]:
    """The benchmark's input file and its SMILES (for the memory stream)."""
    from rdkit import Chem

    from molediff.conformers.io import iter_inputs

    if args.ccd_tuning:
        from bench_conformers import ccd_reference_molecules

        mols, _ = ccd_reference_molecules(args.ccd_tuning, 0, tuning=True)
        path = workdir / "ccd_tuning.sdf"
        with Chem.SDWriter(str(path)) as writer:
            for mol in mols:
                writer.write(mol)
    else:
        path = workdir / "input.smi"
        with open(path, "w") as f:
            for rec in itertools.islice(iter_inputs(args.input), args.n_molecules):
                if rec.mol is not None:
                    f.write(f"{Chem.MolToSmiles(rec.mol)} {rec.name}\n")
    smiles = [Chem.MolToSmiles(rec.mol) for rec in iter_inputs(str(path)) if rec.mol is not None]
    return str(path), smiles


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--stream-child"]:
        _stream_child(argv[1], argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=str(DRUGS_FILE), help="a .smi or SDF file (default: drugs20.smi)")
    parser.add_argument("--n-molecules", type=int, default=20, help="the first N molecules of --input")
    parser.add_argument("--ccd-tuning", type=int, default=0, metavar="N",
                        help="N CCD tuning molecules instead of --input (needs the CCD, as bench_conformers.py)")
    parser.add_argument("-n", type=int, default=10, help="conformers per molecule")
    parser.add_argument("--refiner", default="shipped", help="shipped, none or WEIGHTS")
    parser.add_argument("--stream", type=int, default=100_000, help="SMILES streamed for the memory measurement")
    parser.add_argument("--skip-dask", action="store_true", help="leave the Dask LocalCluster out")
    parser.add_argument("--skip-kill", action="store_true", help="leave the kill -9 and --resume run out")
    parser.add_argument("--skip-memory", action="store_true", help="leave the memory measurement out")
    parser.add_argument("--skip-rdkit", action="store_true", help="leave RDKit's ETKDGv3 + MMFF94 row out")
    parser.add_argument("--kill-seed", type=int, default=0, help="seed of the random point of the kill")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path, smiles = _inputs(args, workdir)
        memory = None if args.skip_memory else measure_memory(smiles, args.stream, workdir)
        common = [path, "-n", str(args.n)] + ([] if args.refiner == "shipped" else ["--refiner", args.refiner])
        rows, outputs = [], {}
        for label, extra in (("molediff --workers 1", ["--workers", "1"]),
                             ("molediff --workers 2", ["--workers", "2"])):
            outputs[label] = workdir / f"{label.split()[-1]}.sdf"
            rows.append((label, _timed_command(common + extra + ["-o", str(outputs[label])])))
        if not args.skip_dask:
            from distributed import LocalCluster

            with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                              env={"OMP_NUM_THREADS": "1"}) as cluster:
                label = "molediff --dask-scheduler (LocalCluster, 2 workers x 1 thread)"
                outputs[label] = workdir / "dask.sdf"
                rows.append((label, _timed_command(common + ["--dask-scheduler", cluster.scheduler_address,
                                                             "-o", str(outputs[label])])))
        if not args.skip_rdkit:
            seconds, done = rdkit_baseline(path, args.n, threads=2)
            rows.append(("RDKit ETKDGv3 + MMFF94, numThreads=2", seconds))
        files = [p.read_bytes() for p in outputs.values()]
        identical = all(f == files[0] for f in files)
        written = _molecule_names(outputs["molediff --workers 1"])
        kill = None
        if not args.skip_kill:
            output = workdir / "killed.sdf"
            kill = killed_and_resumed(common + ["--workers", "2"], output, rows[1][1], args.kill_seed)
            names = _molecule_names(output)
            kill.update(identical=output.read_bytes() == files[0], once=len(names) == len(set(names)),
                        molecules=len(names))

    print(f"Command: `{' '.join(['python', 'scripts/bench_library.py', *argv])}`\n")
    print(f"Machine: {machine(rdkit=True)}\n")
    print(f"Date: {datetime.date.today().isoformat()}\n")
    if memory is not None:
        print(f"Memory: {memory['molecules']:,} SMILES streamed through the reader, the library iterator with a stub "
              f"stage and the partial output in {memory['seconds']:.1f} s: peak RSS {memory['peak_mb']:.0f} MB "
              f"({memory['before_mb']:.0f} MB before streaming).\n")
    print(f"Speed: {len(smiles)} molecules, N = {args.n} conformers each, refiner {args.refiner}; wall clock, process "
          f"start included; molediff output files byte-identical: {'yes' if identical else 'NO'}.\n")
    print(f"Molecules written (the rest failed, each reported): {len(written)} of {len(smiles)}.\n")
    if kill is not None:
        print(f"Kill and resume: `--workers 2` killed with SIGKILL (process group) after {kill['killed_after']:.0f} s "
              f"with {kill['kept']} molecules kept in the partial output; `--resume` finished in "
              f"{kill['resume_seconds']:.0f} s; {kill['molecules']} molecules in the final file, each once: "
              f"{'yes' if kill['once'] else 'NO'}; byte-identical to the uninterrupted run: "
              f"{'yes' if kill['identical'] else 'NO'}.\n")
    base = rows[0][1]
    print("| run | seconds | molecules/s | speed-up over --workers 1 |")
    print("|---|---|---|---|")
    for label, secs in rows:
        print(f"| {label} | {secs:.1f} | {len(smiles) / secs:.3f} | {base / secs:.2f}x |")
    print(f"\nPlatform: {platform.platform()}")


if __name__ == "__main__":
    main()
