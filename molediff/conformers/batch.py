"""Conformers for whole libraries: ``conformers_for_library`` runs ``generate_conformers`` over an iterable of
molecules, in this process, in worker processes or on a ``dask.distributed`` cluster, and yields
``(index, name, Mol or reason)`` in input order.

What a molecule gets does not depend on where it ran: molecule ``i`` (counted from 0 in the input) uses the seed
``options.seed + i`` (modulo 2**31), so molecule 0 gets exactly what ``generate_conformers(mol, options)`` gives,
and every worker runs the same function (``run_chunk``) on chunks of molecules. Workers build the refiner once
per process from a ``RefinerSpec`` (weights and settings: a description that pickles, not the model) and run torch
on one thread. Inputs are read lazily and only a bounded window of molecules is in flight, so memory does not grow
with the library.

Writing, resuming and the progress bar are the caller's (``molediff conformers`` uses ``io.PartialSDF``); to
continue a run, pass the inputs after the finished ones and their count as ``start``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .io import InputMolecule, _from_smiles
from .pipeline import ConformerOptions, Refiner, generate_conformers

SEED_MODULUS = 2**31          # ConformerOptions' seeds are 0..2**31-1; molecule i's seed wraps around
DASK_CHUNK = 4                # molecules per Dask task: a task is seconds of work, a lost worker loses little
DASK_RETRIES = 3              # a task that raised (its worker process died mid-task, say) is run again
# Molecules in flight per worker. Results leave in input order, so one slow molecule (a macrocycle can take
# minutes) holds back every later one; with a short window the other workers run dry behind it (4 per worker left
# one of two workers idle a third of the time on 500 CCD molecules; 32 still lost about 10 %). Finished molecules
# wait in memory as pickled Mols (tens of kB each), so even 128 a worker stays a few MB.
IN_FLIGHT_PER_WORKER = 128


# ------------------------------------------------------------------------------------------ what workers run
@dataclass(frozen=True)
class RefinerSpec:
    """A ``Refiner`` as a description that pickles: each worker process builds it once (``build``).

    Attributes:
        weights: ``"shipped"`` (the shipped weights of the worker's installation) or a weights file / run directory
            that every worker can read.
        settings: ``Refiner`` keyword arguments (``sigma0``, ``t0``, ``steps``, ``passes``, ``sampler``,
            ``fresh_noise``, ``bf16``, ``batch_size``, ``device``) as sorted ``(name, value)`` pairs; ``of`` builds
            it from keywords.
    """

    weights: str = "shipped"
    settings: tuple = ()

    @classmethod
    def of(cls, weights: str = "shipped", **settings) -> RefinerSpec:
        return cls(str(weights), tuple(sorted(settings.items())))

    def build(self) -> Refiner:
        """The ``Refiner`` (loads the weights; ValueError / FileNotFoundError as ``Refiner``)."""
        return Refiner(self.weights, **dict(self.settings))


@dataclass(frozen=True)
class _Job:
    """What every molecule of a run shares: the options (seed: molecule 0's), the refiner to build (or None) and
    the stage that makes one molecule's conformers."""

    options: ConformerOptions
    refiner: RefinerSpec | None = None
    stage: Callable = generate_conformers


_REFINERS: dict[RefinerSpec, Refiner] = {}   # built once per process


def _refiner_of(spec: RefinerSpec | None, worker: bool = False) -> Refiner | None:
    """The refiner ``spec`` describes, built once per process; in a ``worker`` process torch gets one thread."""
    if spec is None:
        return None
    if spec not in _REFINERS:
        if worker:
            import torch

            torch.set_num_threads(1)   # one process per core: its own single torch thread
        _REFINERS[spec] = spec.build()
    return _REFINERS[spec]


def molecule_seed(seed: int, index: int) -> int:
    """The seed of molecule ``index`` (from 0) of a run with ``seed``: ``(seed + index) mod 2**31``."""
    return (seed + index) % SEED_MODULUS


def _conformers(index: int, mol, options: ConformerOptions, refiner: Refiner | None, strict: bool = False,
                stage: Callable = generate_conformers):
    """Molecule ``index``'s Mol with conformers (``stage(mol, options, refiner)`` with the molecule's seed), or the
    one-line reason it failed (KeyboardInterrupt passes; ``strict`` lets unexpected exceptions pass too)."""
    try:
        return stage(mol, dataclasses.replace(options, seed=molecule_seed(options.seed, index)), refiner)
    except ValueError as e:
        return " ".join(str(e).split())
    except Exception as e:  # an RDKit failure on one molecule must not end the run
        if strict:
            raise
        return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def _pickled(mol) -> bytes:
    """A Mol as bytes with every property and double-precision coordinates (RDKit's default pickle drops
    properties and rounds coordinates to float32)."""
    from rdkit import Chem

    return mol.ToBinary(Chem.PropertyPickleOptions.AllProps | Chem.PropertyPickleOptions.CoordsAsDouble)


def _unpickled(data):
    from rdkit import Chem

    return Chem.Mol(data) if isinstance(data, bytes) else data


def run_chunk(job: _Job, chunk: list[tuple[int, str, bytes | str]]) -> list[tuple[int, str, bytes | str]]:
    """The worker function of processes and Dask: ``(index, name, Mol as bytes or a reason)`` for each molecule of
    ``chunk`` (given as ``(index, name, input Mol as bytes or the reason it cannot be read)``), in order. Builds
    the job's refiner once per process."""
    refiner = _refiner_of(job.refiner, worker=True)
    out = []
    for index, name, data in chunk:
        result = data if isinstance(data, str) else _conformers(index, _unpickled(data), job.options, refiner,
                                                                stage=job.stage)
        out.append((index, name, result if isinstance(result, str) else _pickled(result)))
    return out


_WORKER_JOB: _Job | None = None


def _start_worker(job: _Job) -> None:
    """Initialiser of a worker process: Ctrl-C is the parent's to handle; the refiner is loaded once, here."""
    global _WORKER_JOB
    import threading

    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing semaphore, which a worker stopped by the parent cannot release (the
    # resource tracker then warns of a leak); bars inside a worker need only a thread lock
    tqdm.set_lock(threading.RLock())
    _WORKER_JOB = job
    _refiner_of(job.refiner, worker=True)


def _run_in_worker(chunk):
    return run_chunk(_WORKER_JOB, chunk)


# ------------------------------------------------------------------------------------------ the inputs
def _as_input(index: int, item) -> InputMolecule:
    """An input item as an ``InputMolecule``: one already, an ``rdkit.Chem.Mol`` (named by its ``_Name``, else
    ``mol_<index + 1>``) or a ``"SMILES [name]"`` string."""
    if isinstance(item, InputMolecule):
        return item
    if isinstance(item, str):
        parts = item.strip().split(maxsplit=1)
        return _from_smiles(item, parts[1] if len(parts) > 1 else f"mol_{index + 1}")
    from rdkit import Chem

    if isinstance(item, Chem.Mol):
        name = item.GetProp("_Name") if item.HasProp("_Name") and item.GetProp("_Name").strip() else f"mol_{index + 1}"
        return InputMolecule(name, item)
    raise TypeError(f"input {index}: expected an InputMolecule, an rdkit.Chem.Mol or a SMILES string, got "
                    f"{type(item).__name__}")


def _chunks(inputs: Iterable, start: int, size: int) -> Iterator[list[tuple[int, str, bytes | str]]]:
    """Lists of up to ``size`` molecules as ``run_chunk`` takes them, indices from ``start``."""
    items = (_as_input(index, item) for index, item in enumerate(inputs, start))
    for index_base in itertools.count(start, size):
        chunk = [(index_base + k, rec.name, rec.error if rec.mol is None else _pickled(rec.mol))
                 for k, rec in enumerate(itertools.islice(items, size))]
        if not chunk:
            return
        yield chunk


def _in_order(chunks: Iterator[list], submit: Callable, result: Callable, window: int) -> Iterator:
    """Submit chunks while at most ``window`` are pending; yield their results' items in submission order."""
    pending: deque = deque()
    for chunk in chunks:
        pending.append(submit(chunk))
        while len(pending) >= window:
            yield from result(pending.popleft())
    while pending:
        yield from result(pending.popleft())


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------ the API
def conformers_for_library(inputs: Iterable, options: ConformerOptions | None = None,
                           refiner: Refiner | RefinerSpec | str | None = None, *, workers: int = 1,
                           dask_client=None, chunk_size: int | None = None, start: int = 0,
                           strict: bool = False, stage: Callable = generate_conformers
                           ) -> Iterator[tuple[int, str, object]]:
    """Conformers of every molecule of a library, in input order.

    Args:
        inputs: an iterable (read lazily) of ``io.InputMolecule`` (``io.iter_inputs(path)``: a ``.smi`` or SDF
            file), ``rdkit.Chem.Mol`` or ``"SMILES [name]"`` strings.
        options: ``ConformerOptions`` (None: the defaults); its ``seed`` is molecule 0's, molecule i uses
            ``seed + i`` (``molecule_seed``), wherever it runs.
        refiner: None (model-free), a ``RefinerSpec`` (built once in each worker), a weights path or
            ``"shipped"`` (a ``RefinerSpec`` with default settings), or a loaded ``Refiner`` (``workers=1`` only:
            a model is not sent to other processes).
        workers: 1 runs every molecule in this process; N > 1 runs them in N worker processes (``spawn``: torch
            and ``fork`` do not mix; scripts need ``if __name__ == "__main__":``), each with one torch thread and
            its own refiner.
        dask_client: a ``distributed.Client``: molecules go to its cluster in chunks (``workers`` is then not used);
            a task whose worker dies is run again elsewhere (and up to ``DASK_RETRIES`` times after errors). Every
            worker needs molediff installed (and the weights at the same path). Run workers with one thread
            (``dask worker --nthreads 1``): RDKit's error capture is per process.
        chunk_size: molecules per task (default 1 for processes, ``DASK_CHUNK`` for Dask).
        start: the input index of the first item of ``inputs`` (to continue a run: pass the items after the
            ``start`` finished ones).
        strict: let unexpected exceptions of a molecule end the run in this process (``workers=1``), not become its
            reason.
        stage: what makes one molecule's conformers, called as ``stage(mol, options, refiner)`` with the
            molecule's seed in ``options`` (default ``generate_conformers``); your own pipeline step, or a stub to
            measure the library machinery alone. With workers or Dask it must pickle (a module-level function).

    Yields:
        ``(index, name, result)`` for every input, in input order: ``index`` counts from 0 in the whole input,
        ``name`` is the molecule's name, ``result`` its ``rdkit.Chem.Mol`` with conformers (as
        ``generate_conformers`` returns it) or a one-line reason why it has none (unreadable record, invalid
        SMILES, embedding failure, ...).

    Raises (when iteration starts or as it goes):
        ValueError for ``workers`` < 1, ``chunk_size`` < 1, a ``Refiner`` with ``workers`` > 1 or Dask, and what
        ``Refiner`` raises; RuntimeError when a worker process dies (``BrokenProcessPool``) or a Dask task fails
        after its retries; KeyboardInterrupt passes (the workers are stopped).
    """
    options = options if options is not None else ConformerOptions()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if isinstance(refiner, str):
        refiner = RefinerSpec.of(refiner)
    if workers == 1 and dask_client is None:
        yield from _here(inputs, options, refiner, start, strict, stage)
        return
    if isinstance(refiner, Refiner):
        raise ValueError("a loaded Refiner cannot be sent to worker processes: give a RefinerSpec (weights and "
                         "settings), which each worker builds once")
    job = _Job(options, refiner, stage)
    if dask_client is not None:
        yield from _on_dask(inputs, job, dask_client, chunk_size or DASK_CHUNK, start)
    else:
        yield from _in_processes(inputs, job, workers, chunk_size or 1, start)


def _here(inputs, options, refiner, start, strict, stage) -> Iterator[tuple[int, str, object]]:
    refiner = _refiner_of(refiner) if isinstance(refiner, RefinerSpec) else refiner
    for index, item in enumerate(inputs, start):
        rec = _as_input(index, item)
        yield index, rec.name, (rec.error if rec.mol is None
                                else _conformers(index, rec.mol, options, refiner, strict, stage))


def _in_processes(inputs, job: _Job, workers: int, chunk_size: int, start: int) -> Iterator[tuple[int, str, object]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(job,))
    finished = False
    try:
        for index, name, result in _in_order(_chunks(inputs, start, chunk_size),
                                             lambda chunk: executor.submit(_run_in_worker, chunk),
                                             lambda future: future.result(),
                                             window=max(2, -(-IN_FLIGHT_PER_WORKER * workers // chunk_size))):
            yield index, name, _unpickled(result)
        finished = True
    except BrokenProcessPool as e:
        raise RuntimeError(f"a worker process died ({e}; out of memory?)") from None
    finally:
        if finished:
            executor.shutdown(wait=True)
        else:  # Ctrl-C, an error, or the caller stopped early: the molecules in flight are not wanted
            for process in list((getattr(executor, "_processes", None) or {}).values()):  # no public way before 3.14
                process.terminate()
            executor.shutdown(wait=True, cancel_futures=True)   # the pool sees its workers gone and cleans up


def _on_dask(inputs, job: _Job, client, chunk_size: int, start: int) -> Iterator[tuple[int, str, object]]:
    threads = sum(client.nthreads().values()) or 1
    futures = []

    def submit(chunk):
        future = client.submit(run_chunk, job, chunk, retries=DASK_RETRIES, pure=False)
        futures.append(future)
        return future

    def result(future):
        futures.remove(future)
        try:
            return future.result()
        except Exception as e:
            raise RuntimeError(f"a Dask task failed after {DASK_RETRIES} retries: {type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]}") from None

    try:
        for index, name, data in _in_order(_chunks(inputs, start, chunk_size), submit, result,
                                           window=max(4, -(-IN_FLIGHT_PER_WORKER * threads // chunk_size))):
            yield index, name, _unpickled(data)
    finally:
        if futures:
            client.cancel(futures)
