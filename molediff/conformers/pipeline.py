"""Conformer generation: ETKDGv3 embedding, stereo check, diverse selection, force-field relaxation and
refinement by the diffusion model, as named stages over ``Candidate`` records.

``generate_conformers(mol, options, refiner)`` is the pipeline behind ``molediff conformers``; ``options`` is a
frozen, validated ``ConformerOptions`` (RDKit's convention of parameter objects, as ``ETKDGv3()``) and ``refiner``
a ``Refiner`` (the model with its settings resolved once), ``"shipped"`` or None. Stages, for a molecule with
hydrogens added (``_prepare``):

1. ``_embed_and_relax``: embed a pool of ``pool × n`` candidates with ETKDGv3 (Wang, Witek, Landrum & Riniker,
   J. Chem. Inf. Model. 2020, 60, 2044), seeded: the first n, then the rest only when all of those embedded (a
   molecule whose embeddings fail ETKDGv3's checks spends every attempt on each failure); missing ones are retried
   from random starting coordinates (``useRandomCoords``), and when none embedded, a few with many more attempts
   each. With ``init="noise"`` the candidates are drawn instead from a ``ConformerDiffusion`` trained on all noise
   levels. With ``relax_when="pool"`` each candidate is relaxed with MMFF94 (Halgren, J. Comput. Chem. 1996, 17,
   490), or UFF (Rappé et al. 1992) where MMFF94 has no parameters. Each candidate's stereochemistry is checked
   against the input's (``stereo``): a candidate whose centres are all inverted is mirrored, any other mismatch
   is dropped (one that was right as embedded and wrong relaxed, the force field's minimum being another
   stereoisomer, keeps its embedding with only its hydrogens minimised); when too few remain, further rounds
   (another seed, then random coordinates) replace them;
2. ``_select``: n of them (``selection.select_conformers``): ``diverse`` (farthest-point sampling on
   symmetry-aware RMSD, within an energy window when the pool was relaxed), ``energy`` (energy-ordered RMSD
   pruning; needs ``relax_when="pool"``), ``model`` (the model's denoising score) or ``none``; with a relaxed
   pool, open slots that only duplicate minima would take are topped up with the most distinct candidates as
   ETKDGv3 embedded them (``top_up="unrelaxed"``). ``_relax_chosen`` then minimises the n chosen
   (``relax_when="chosen"``: n minimisations instead of the pool's pool × n); with ``relax_when="adaptive"``,
   when the chosen fall onto fewer than n distinct minima (rigid molecules: their ETKDGv3 candidates differ in
   noise, not in conformation) the rest of the pool is minimised too and the n are chosen again as from a relaxed
   pool (``_relax_rest_of_pool``);
3. ``_refine``: each chosen conformer is refined by partial diffusion from σ₀ (SDEdit, Meng et al. 2022, without
   fresh noise; ``refine``), its stereo checked again (a conformer that changed goes back to its seed) and then
   minimised by the force field with its heavy atoms held to the refined positions by harmonic restraints
   (``forcefield.relax_restrained``, k = ``restraint``): the force field mends the bond lengths and angles the
   model gets slightly wrong, the model keeps the torsions and ring puckers it moved (``_minimise``: a conformer
   whose stereo the force field would change gets only its hydrogens minimised);
4. ``_relax_top_ups``: chosen candidates that are still as ETKDGv3 embedded them (no refiner) get the same
   restrained minimisation, so that every written energy is a force-field minimum of some kind;
5. ``_drop_near_copies``: conformers within ``dedupe_rmsd`` of one written before are left out (rigid molecules
   get fewer than n, as RDKit's pruning and OMEGA give);
6. ``_to_mol``: the Mol with the conformers, each with ``conformer_index``, its energy and ``energy_kind`` (what
   the energy is), and the ``ConformerReport`` as molecule properties.

Reading the inputs and writing SD records is in ``molediff.conformers.io``, the stereo check in ``stereo``,
selection and the symmetric RMSD in ``selection``, the force-field steps in ``forcefield``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .forcefield import (
    DEFAULT_RESTRAINT,
    ENERGY_KIND_PROP,
    ENERGY_PROPS,
    MINIMUM,
    RESTRAINED_ITERS,
    choose_forcefield,
    energy_kind,
    relax_candidates,
    relax_restrained,
    transfer_torsions,
)
from .io import SCORE_PROP, parse_smiles
from .selection import DEFAULT_DISTINCT_RMSD, DEFAULT_PRUNE_RMSD, SELECT_METHODS, distinct_conformers, select_conformers
from .stereo import StereoReference, check_conformer_stereo, enforce_stereo, stereo_reference

RELAX_METHODS = ("mmff", "none")
INIT_METHODS = ("etkdg", "noise")
TOP_UP_METHODS = ("unrelaxed", "relaxed")
AFTER_REFINEMENT = ("restrained", "hydrogens", "torsions")
RELAX_WHEN = ("pool", "chosen", "adaptive", "final")
DEFAULT_SIGMA0 = 0.45  # Å; no fresh noise, DEFAULT_PASSES × DEFAULT_STEPS DDIM steps: best on the tuning sets
# one DDIM step of one pass (session 10, with the chosen conformers minimised before refinement and restrained
# after): best-of-10 RMSD within 0.001 Å of 3 × 3 steps on the tuning sets at a third of the refiner's cost
DEFAULT_STEPS = 1  # sampler steps of each refinement pass
DEFAULT_PASSES = 1  # refinement passes in a row (iterated partial diffusion)
HARD_EMBED_ITERATIONS = 1000  # ETKDGv3 attempts per conformer of the last embedding try (RDKit's default: 10 × atoms)
HARD_EMBED_COUNT = 3  # conformers asked of that try (each failure there costs HARD_EMBED_ITERATIONS attempts)
NOISE_STEPS = 50  # sampler steps from t = 1 (init="noise")
SHIPPED_REFINER = "conformer_refiner"  # molediff/pretrained/conformer_refiner.safetensors, when a release ships it
# Elements whose geometry ETKDGv3 and the force fields (MMFF94, else UFF) are known to get right; metals' coordination
# (square-planar Pt, octahedral Fe) is not modelled by either and comes out wrong, so it is refused by default
VALIDATED_ELEMENTS = frozenset((1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 34, 35, 53))
MAX_ATOMIC_NUMBER = 103  # UFF's periodic table (H..Lr) bounds what distance geometry and the force fields know
REFINER_SETTINGS = ("sigma0", "t0", "steps", "passes", "sampler", "fresh_noise", "bf16", "batch_size", "device")


# ------------------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class ConformerOptions:
    """What ``generate_conformers`` does, checked once when built (ValueError, one line, naming the option).

    Attributes:
        n: conformers wanted (>= 1).
        seed: random seed (0 <= seed < 2**31); the same seed gives the same conformers.
        pool: candidates embedded per wanted conformer (``pool × n`` in all; >= 1).
        relax: ``"mmff"``: MMFF94 minimisation (UFF where MMFF94 lacks parameters, none where both do; noted);
            ``"none"``: ETKDGv3 geometries as they are (no energies).
        select: ``"diverse"``, ``"energy"`` (needs ``relax="mmff"``), ``"none"`` or ``"model"`` (needs a refiner;
            ``selection.select_conformers``).
        max_atoms: the largest molecule accepted, hydrogens included.
        energy_window: kcal/mol above the lowest candidate kept by ``"diverse"``.
        prune_rmsd: Å; ``"energy"`` keeps no two conformers closer than this.
        top_up: when ``"diverse"`` or ``"energy"`` finds fewer than n distinct relaxed candidates (the force field
            collapses a small molecule's candidates onto a few minima), ``"unrelaxed"`` fills the open slots with
            the most distinct candidates as ETKDGv3 embedded them (then refined and minimised like the rest);
            ``"relaxed"`` with near-duplicates of the relaxed ones. Relaxed candidates within ``distinct_rmsd``
            Å of a chosen one count as duplicates.
        distinct_rmsd: Å, see ``top_up``.
        after_refinement: what the force field does to a refined conformer: ``"restrained"`` minimises it with
            each heavy atom held to its refined position by a harmonic restraint of ``restraint``
            (``forcefield.relax_restrained``; unrefined top-ups likewise, held where ETKDGv3 put them);
            ``"hydrogens"`` minimises only the hydrogens (heavy atoms fixed: the model's bond-length errors stay,
            with their strain; top-ups likewise); ``"torsions"`` takes the seed conformer (the force field's bond
            lengths and angles), sets its acyclic torsions to the refined ones (``forcefield.transfer_torsions``;
            ring conformations stay the seed's) and minimises the hydrogens (top-ups as ``"restrained"``).
        restraint: force constant k (kcal/mol/Å²) of the restraints E = k·d² of ``"restrained"``.
        dedupe_rmsd: Å; a conformer within this RMSD (heavy atoms and polar H) of one written before it is left
            out, and the report says so; 0 keeps all.
        relax_when: when the force field minimises (``relax="mmff"``): ``"pool"``, every candidate before
            selection (energies guide it; pool × n minimisations); ``"chosen"``, only the n chosen, selected among
            the candidates as ETKDGv3 embedded them, before refinement; ``"final"``, only the n chosen, after
            refinement (the ``after_refinement`` minimisation alone; unrefined ones held where ETKDGv3 put them);
            ``"adaptive"`` (the default), as ``"chosen"`` unless the n chosen fall onto fewer than n distinct
            minima (within ``distinct_rmsd``; ``select="diverse"`` only), then as ``"pool"`` (the rest of the pool
            minimised, the n chosen again): the pool's minima for rigid molecules, where minimising is cheap and
            finds the ring puckers and inversions that ETKDGv3's noise hides, and n minimisations for flexible
            ones.
        threads: threads for embedding and relaxation (0: all cores); torch's threads are the caller's.
        max_iters: force-field minimisation steps per candidate.
        init: ``"etkdg"`` (ETKDGv3 candidates) or ``"noise"`` (the model's samples from N(0, I); needs a refiner
            trained up to t = 1; the samples are relaxed and checked as ETKDG's, and not refined again).
        allow_unvalidated_elements: accept elements outside ``VALIDATED_ELEMENTS`` (metals), noted as
            unvalidated; by default they are refused.
    """

    n: int = 10
    seed: int = 0
    pool: int = 3
    relax: str = "mmff"
    select: str = "diverse"
    max_atoms: int = 500
    energy_window: float = 10.0
    prune_rmsd: float = DEFAULT_PRUNE_RMSD
    top_up: str = "unrelaxed"
    distinct_rmsd: float = DEFAULT_DISTINCT_RMSD
    after_refinement: str = "restrained"
    restraint: float = DEFAULT_RESTRAINT
    dedupe_rmsd: float = DEFAULT_DISTINCT_RMSD
    relax_when: str = "adaptive"
    threads: int = 1
    max_iters: int = 1000
    init: str = "etkdg"
    allow_unvalidated_elements: bool = False

    def __post_init__(self):
        if self.n < 1 or self.pool < 1:
            raise ValueError(f"n and pool must be at least 1, got n={self.n}, pool={self.pool}")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be in 0..2**31-1, got {self.seed}")
        if self.relax not in RELAX_METHODS:
            raise ValueError(f"relax must be one of {', '.join(RELAX_METHODS)}, got {self.relax!r}")
        if self.select not in SELECT_METHODS:
            raise ValueError(f"select must be one of {', '.join(SELECT_METHODS)}, got {self.select!r}")
        if self.select == "energy" and self.relax == "none":
            raise ValueError("select='energy' needs energies: use relax='mmff'")
        if not self.prune_rmsd >= 0 or not self.distinct_rmsd >= 0:
            raise ValueError(f"prune_rmsd and distinct_rmsd must be >= 0 (Å), got {self.prune_rmsd} and "
                             f"{self.distinct_rmsd}")
        if self.top_up not in TOP_UP_METHODS:
            raise ValueError(f"top_up must be one of {', '.join(TOP_UP_METHODS)}, got {self.top_up!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: all cores), got {self.threads}")
        if self.max_atoms < 1 or self.max_iters < 1:
            raise ValueError(f"max_atoms and max_iters must be at least 1, got {self.max_atoms}, {self.max_iters}")
        if self.after_refinement not in AFTER_REFINEMENT:
            raise ValueError(f"after_refinement must be one of {', '.join(AFTER_REFINEMENT)}, got "
                             f"{self.after_refinement!r}")
        if self.restraint is None or not (np.isfinite(self.restraint) and self.restraint >= 0):
            raise ValueError(f"restraint must be a force constant >= 0 (kcal/mol/Å²), got {self.restraint}")
        if not self.dedupe_rmsd >= 0:
            raise ValueError(f"dedupe_rmsd must be >= 0 (Å), got {self.dedupe_rmsd}")
        if self.relax_when not in RELAX_WHEN:
            raise ValueError(f"relax_when must be one of {', '.join(RELAX_WHEN)}, got {self.relax_when!r}")
        if self.select == "energy" and self.relax_when != "pool":
            raise ValueError("select='energy' needs the energy of every candidate: use relax_when='pool'")
        if self.init not in INIT_METHODS:
            raise ValueError(f"init must be one of {', '.join(INIT_METHODS)}, got {self.init!r}")


# ------------------------------------------------------------------------------------------ the refiner
def shipped_refiner() -> Path | None:
    """The shipped refiner weights ``molediff/pretrained/conformer_refiner.safetensors``, or None when this
    installation has none (``molediff.utils.pretrained_path``: no torch is imported)."""
    from ..utils import pretrained_path

    try:
        return pretrained_path(SHIPPED_REFINER)
    except FileNotFoundError:
        return None


_SHIPPED_MODELS: dict = {}  # device → the shipped refiner: many Refiner("shipped") in a process load it once


def _shipped_model(device: str):
    """The shipped refiner on ``device`` (loaded once); ValueError when this installation has none."""
    if device not in _SHIPPED_MODELS:
        from .refine import load_refiner

        path = shipped_refiner()
        if path is None:
            raise ValueError(f"refiner='shipped', but this installation has no {SHIPPED_REFINER}.safetensors")
        _SHIPPED_MODELS[device] = load_refiner(path, device)
    return _SHIPPED_MODELS[device]


class Refiner:
    """The diffusion refiner of ``generate_conformers``: a trained ``ConformerDiffusion`` with its settings checked
    and resolved once (load it once to refine many molecules).

    Args:
        model: ``"shipped"`` (the shipped ``conformer_refiner`` weights, loaded once per process), a weights file or
            run directory (loaded on ``device``), or a ``ConformerDiffusion``.
        sigma0: where refinement starts, in Å: the schedule's σ at t₀ (default ``DEFAULT_SIGMA0`` = 0.45; the
            nearest grid time); 0 turns refinement off (the model then serves ``select="model"`` or
            ``init="noise"`` only).
        t0: the start time instead of ``sigma0`` (a grid time in (0, t_max]).
        steps: sampler steps from t₀ to 0 in each pass, or from t = 1 for ``init="noise"`` (None:
            ``DEFAULT_STEPS`` = 1 per pass, ``NOISE_STEPS`` = 50 from noise).
        passes: refinement passes in a row, each from the previous output (None: ``DEFAULT_PASSES`` = 1).
        sampler: the core sampler (``ddim``, ``ddpm``, ``heun``, ``dpm2m``).
        fresh_noise: add SDEdit's noise of σ₀ before refining (default False: z_t₀ = α_t₀ x).
        bf16: bfloat16 autocast: True, False, or None (default) where the device computes bf16 natively
            (``molediff.utils.use_bf16``; there about 2× faster, best-of-10 RMSD within 0.001 Å on the tuning sets).
        batch_size: conformers per model call.
        device: where weights given as a path are loaded.

    ValueError (one line) for settings that cannot work (σ₀ beyond the model's training times, both σ₀ and t₀,
    an unknown sampler, counts below 1); FileNotFoundError for weights that do not exist.
    """

    def __init__(self, model="shipped", *, sigma0: float | None = None, t0: float | None = None,
                 steps: int | None = None, passes: int | None = None, sampler: str = "ddim",
                 fresh_noise: bool = False, bf16: bool | None = None, batch_size: int = 32, device: str = "cpu"):
        from ..diffusion import SAMPLERS

        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(sorted(SAMPLERS))}")
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if passes is not None and passes < 1:
            raise ValueError(f"passes must be at least 1, got {passes}")
        if sigma0 is not None and t0 is not None:
            raise ValueError(f"give sigma0 or t0, not both (got sigma0={sigma0}, t0={t0})")
        if sigma0 is not None and sigma0 < 0:
            raise ValueError(f"sigma0 must be >= 0 Å (0: no refinement), got {sigma0}")
        from ..utils import use_bf16
        from .refine import load_refiner, refine_time

        self.model = _shipped_model(device) if isinstance(model, str) and model == "shipped" \
            else load_refiner(model, device)
        self.sampler, self.fresh_noise, self.batch_size = sampler, fresh_noise, batch_size
        self.steps = steps
        self.passes = DEFAULT_PASSES if passes is None else passes
        self.bf16 = use_bf16(bf16, next(self.model.parameters()).device)
        # t0 of refinement, None when refinement is off; a start the model was not trained for fails here
        self.t0 = None if sigma0 == 0 else refine_time(
            self.model, DEFAULT_SIGMA0 if sigma0 is None and t0 is None else sigma0, t0)

    @property
    def refines(self) -> bool:
        """Whether chosen conformers are refined (False with σ₀ = 0)."""
        return self.t0 is not None

    def check_init(self, init: str) -> None:
        """ValueError unless the model can produce candidates for ``init`` (``"noise"`` needs t_max = 1)."""
        if init == "noise" and self.model.config.t_max < 1.0:
            raise ValueError(f"init='noise' needs a model trained on all noise levels (t_max = 1); this refiner was "
                             f"trained up to t_max = {self.model.config.t_max} only")

    def describe(self, init: str = "etkdg") -> str:
        """One line saying how the model is used (the line ``molediff conformers`` prints after the weights)."""
        if init == "noise":
            return f"candidates sampled from noise, {self.steps or NOISE_STEPS} {self.sampler} steps"
        if not self.refines:
            return "no refinement (sigma0 = 0)"
        import torch

        sigma = float(self.model.schedule.sigma(torch.tensor(self.t0, dtype=torch.float64)))
        steps = self.steps or DEFAULT_STEPS
        how = "with fresh noise" if self.fresh_noise else "from the conformers themselves"
        return (f"refining from sigma0 = {sigma:.3f} A (t0 = {self.t0:.3f}) {how}, {self.passes} pass"
                f"{'es' if self.passes != 1 else ''} of {steps} {self.sampler} step{'s' if steps != 1 else ''}, "
                f"{'bf16 autocast' if self.bf16 else 'float32'}")

    def inputs(self, molh):
        """The model's inputs for ``molh`` (types, graph node and edge features: computed once per molecule);
        ValueError when the model cannot read it (an element outside its vocabulary, too many atoms)."""
        from .refine import model_inputs

        return model_inputs(self.model, molh)

    def refine(self, molh, positions: np.ndarray, seed: int, inputs=None) -> np.ndarray:
        """``positions`` [K, n_atoms, 3] (Å) refined (``refine.refine_conformers``), [K, n_atoms, 3].

        Without the sampler's final denoise at t = 0 (``samplers._final``): it would move atoms by about σ_0 ≈
        0.003 Å, which the force-field minimisation after refinement makes moot, and it is half the network calls
        of the default single step."""
        from .refine import refine_conformers

        return refine_conformers(self.model, molh, positions, sigma0=None, t0=self.t0,
                                 steps=self.steps or DEFAULT_STEPS, sampler=self.sampler, seed=seed,
                                 batch_size=self.batch_size, fresh_noise=self.fresh_noise, passes=self.passes,
                                 bf16=self.bf16, inputs=inputs, final_denoise=False)

    def sample(self, molh, count: int, seed: int) -> np.ndarray:
        """``count`` conformers [count, n_atoms, 3] (Å) from the model's full reverse process (``init="noise"``)."""
        from .refine import sample_conformers

        return sample_conformers(self.model, molh, count, steps=self.steps or NOISE_STEPS, sampler=self.sampler,
                                 seed=seed, batch_size=self.batch_size)

    def score(self, molh, positions: np.ndarray, seed: int) -> np.ndarray:
        """The model's denoising score of each conformer [K] (lower is better; ``scoring.score_conformers``)."""
        from .scoring import score_conformers

        return score_conformers(self.model, molh, positions, seed=seed, batch_size=max(self.batch_size, 1))


# ------------------------------------------------------------------------------------------ records
@dataclass
class Candidate:
    """One conformer on its way through the pipeline.

    Attributes:
        positions: [n_atoms, 3] (Å).
        energy: force-field energy (kcal/mol) at ``positions``, None when not computed.
        origin: ``"relaxed"`` (a force-field minimum), ``"unrelaxed"`` (as ETKDGv3 embedded it: a top-up) or
            ``"embedded"`` (no relaxation asked for, or no force field has parameters).
        kind: what ``energy`` is (``forcefield.MINIMUM``, ``forcefield.energy_kind(k)``).
        score: the model's score (``select="model"``), else None.
        refined: whether the model's refinement replaced the positions.
    """

    positions: np.ndarray
    energy: float | None
    origin: str
    kind: str | None = None
    score: float | None = None
    refined: bool = False


@dataclass
class ConformerReport:
    """What happened to one molecule; written once onto the output Mol as ``molediff_*`` properties (``to_props``).

    Attributes: candidates embedded, stereo_fixed / stereo_dropped (candidates mirrored / discarded by the stereo
    check), forcefield (MMFF94, UFF or none), refined / reverted (conformers refined / put back to their seed
    because refinement broke their stereo), unrelaxed (written conformers that were unrelaxed top-ups), near_copies
    (left out as near-copies), init, notes (one-line remarks)."""

    init: str = "etkdg"
    candidates: int = 0
    stereo_fixed: int = 0
    stereo_dropped: int = 0
    forcefield: str = "none"
    refined: int = 0
    reverted: int = 0
    unrelaxed: int = 0
    near_copies: int = 0
    notes: list[str] = field(default_factory=list)

    def to_props(self, mol) -> None:
        for key in ("stereo_fixed", "stereo_dropped", "candidates", "refined", "unrelaxed", "near_copies"):
            mol.SetIntProp(f"molediff_{key}", getattr(self, key))
        mol.SetIntProp("molediff_refine_reverted", self.reverted)
        mol.SetProp("molediff_forcefield", self.forcefield)
        mol.SetProp("molediff_init", self.init)
        mol.SetProp("molediff_notes", "; ".join(self.notes))


def conformers_of(template, positions) -> object:
    """A copy of ``template`` (an RDKit Mol) holding ``positions`` [K, n_atoms, 3] (Å) as 3D conformers 0..K-1."""
    from rdkit import Chem

    from ..chem.bonds import rdkit_conformer

    mol = Chem.Mol(template)
    mol.RemoveAllConformers()
    for k, pos in enumerate(positions):
        mol.AddConformer(rdkit_conformer(pos, k), assignId=False)
    return mol


# ------------------------------------------------------------------------------------------ stage 0: the molecule
def _check_atoms(mol, max_atoms: int, allow_unvalidated_elements: bool = True) -> list[str]:
    """ValueError for a molecule the pipeline cannot handle: no atoms, dummy/query atoms or elements beyond
    UFF's table, more than ``max_atoms`` atoms (hydrogens included), more than one fragment, and, unless
    ``allow_unvalidated_elements``, an element outside ``VALIDATED_ELEMENTS``. Returns the unvalidated element
    symbols present (sorted)."""
    from rdkit import Chem

    if mol.GetNumAtoms() == 0:
        raise ValueError("empty molecule (no atoms)")
    for atom in mol.GetAtoms():
        z = atom.GetAtomicNum()
        if z == 0:
            raise ValueError(f"unsupported element {atom.GetSymbol()!r} (atom {atom.GetIdx() + 1}): dummy or query "
                             f"atoms have no geometry")
        if z > MAX_ATOMIC_NUMBER:
            raise ValueError(f"unsupported element {atom.GetSymbol()!r} (atom {atom.GetIdx() + 1}): no distance "
                             f"geometry or force-field data beyond Lr (Z = {MAX_ATOMIC_NUMBER})")
    if mol.GetNumAtoms() > max_atoms:
        raise ValueError(f"too many atoms: {mol.GetNumAtoms()} with hydrogens, more than max_atoms={max_atoms}")
    fragments = len(Chem.GetMolFrags(mol))
    if fragments > 1:
        # ETKDG embeds fragments on top of each other (a salt's ions at one point): refuse rather than write that
        raise ValueError(f"disconnected input ({fragments} fragments, e.g. a salt or a mixture): conformers are for "
                         f"one connected molecule; remove counter-ions (rdkit.Chem.SaltRemover) or give each "
                         f"fragment as its own record")
    other = sorted({a.GetSymbol() for a in mol.GetAtoms() if a.GetAtomicNum() not in VALIDATED_ELEMENTS})
    if other and not allow_unvalidated_elements:
        raise ValueError(f"unsupported element{'s' if len(other) > 1 else ''} {', '.join(other)}: distance geometry "
                         f"and MMFF94 cannot place metals and other elements outside H, B, C, N, O, F, Si, P, S, "
                         f"Cl, Se, Br, I (coordination geometry is not modelled); allow_unvalidated_elements / "
                         f"--allow-unvalidated-elements writes them anyway, labelled unvalidated")
    return other


def _prepare(mol_or_smiles, options: ConformerOptions, report: ConformerReport):
    """The input as a sanitised Mol with explicit hydrogens and no conformers, checked (``_check_atoms``)."""
    from rdkit import Chem

    if isinstance(mol_or_smiles, str):
        mol = parse_smiles(mol_or_smiles)
    elif isinstance(mol_or_smiles, Chem.Mol):
        mol = Chem.Mol(mol_or_smiles)
    else:
        raise ValueError(f"expected a SMILES string or an rdkit.Chem.Mol, got {type(mol_or_smiles).__name__}")
    # before adding hydrogens: the message names the input's atoms
    unvalidated = _check_atoms(mol, options.max_atoms, options.allow_unvalidated_elements)
    if unvalidated:
        report.notes.append(f"UNVALIDATED: contains {', '.join(unvalidated)}, whose geometry the force fields do "
                            f"not model (allow_unvalidated_elements)")
    molh = Chem.AddHs(mol)
    _check_atoms(molh, options.max_atoms)  # the count with hydrogens
    molh.RemoveAllConformers()
    return molh


# ------------------------------------------------------------------------------------------ stage 1: candidates
def _embed(mol, count: int, seed: int, threads: int, random_coords: bool, first: int = 0,
           max_iterations: int = 0) -> tuple[list[int], str]:
    """Add ``count`` ETKDGv3 conformers to ``mol`` (keeping those it has): numbers ``first`` … ``first + count - 1``
    of the sequence ``seed`` defines (so 0…k-1 and then k…m-1 give the same conformers as 0…m-1 at once), with
    ``max_iterations`` attempts each (0: RDKit's default). Returns the ids of those that embedded and, when some
    failed, the check that failed most often (RDKit's ``EmbedFailureCauses`` name). A Ctrl-C that RDKit caught
    while embedding is raised as KeyboardInterrupt."""
    from rdkit.Chem import rdDistGeom

    from ..chem.rdkit_log import rdkit_errors

    params = rdDistGeom.ETKDGv3()
    # RDKit derives conformer seeds from randomSeed: with randomSeed 0 (non-sequential) every conformer is the same,
    # and nearby seeds share conformers. Sequential seeds from a well-mixed start avoid both.
    params.randomSeed = int(np.random.SeedSequence(seed).generate_state(1)[0] % 2**30) + 1 + first
    params.enableSequentialRandomSeeds = True
    params.numThreads = threads
    params.pruneRmsThresh = -1.0  # selection is ours (stage 2): keep every candidate
    params.clearConfs = False
    params.useRandomCoords = random_coords
    params.maxIterations = max_iterations
    params.trackFailures = True
    before = {c.GetId() for c in mol.GetConformers()}
    with rdkit_errors() as messages:
        rdDistGeom.EmbedMultipleConfs(mol, count, params)
    if any("Interrupted" in m for m in messages):
        # RDKit catches SIGINT itself while it embeds and returns no conformers: Ctrl-C must stop the run, not be
        # counted as an embedding failure
        raise KeyboardInterrupt
    ids = [c.GetId() for c in mol.GetConformers() if c.GetId() not in before]
    cause = ""
    counts = list(params.GetFailureCounts())
    if len(ids) < count and any(counts):
        names = {int(v): k for k, v in rdDistGeom.EmbedFailureCauses.names.items()}
        cause = names.get(int(np.argmax(counts)), "")
    return ids, cause


def _embed_candidates(mol, count: int, wanted: int, seed: int, threads: int, notes: list[str],
                      random_coords: bool = False) -> list[int]:
    """ETKDGv3 candidates for ``_round``: the first ``wanted``, then the rest of the ``count`` only when all of
    those embedded (on a molecule whose embeddings mostly fail ETKDGv3's checks, each failure costs every attempt:
    more candidates would multiply that cost for few more geometries). When some of the first are missing they are
    retried from random coordinates; when none embedded at all, ``HARD_EMBED_COUNT`` from random coordinates with
    ``HARD_EMBED_ITERATIONS`` attempts each (strained cages: more attempts per conformer find what more conformers
    with RDKit's default attempts rarely do). Each step is noted; ValueError when nothing embeds."""
    first = min(wanted, count)
    ids, cause = _embed(mol, first, seed, threads, random_coords)
    if len(ids) == first and count > first:
        more, cause = _embed(mol, count - first, seed, threads, random_coords, first=first)
        ids += more
        if len(ids) < count:
            notes.append(f"ETKDGv3 embedded {len(ids)} of {count} candidates (most failures: {cause or 'unknown'})")
        return ids
    if len(ids) < first:
        notes.append(f"ETKDGv3 embedded {len(ids)} of the first {first} candidates (most failures: "
                     f"{cause or 'unknown'}): no more asked for")
    if 0 < len(ids) < first and not random_coords:
        # retry only the missing ones from random coordinates (slow on the molecules that need it)
        more, cause = _embed(mol, first - len(ids), seed, threads, random_coords=True)
        notes.append(f"{len(more)} of {first - len(ids)} more from random coordinates")
        ids += more
    if not ids:
        # strained cages (bicyclo[2.1.0]-like ring systems) fail ETKDGv3's final chirality and volume checks on most
        # attempts: many more attempts per conformer find some
        hard = min(first, HARD_EMBED_COUNT)
        ids, cause = _embed(mol, hard, seed + 2**31 + 2, threads, random_coords=True,
                            max_iterations=HARD_EMBED_ITERATIONS)
        notes.append(f"{len(ids)} of {hard} with {HARD_EMBED_ITERATIONS} attempts each")
    if not ids:
        raise ValueError(f"embedding failed: ETKDGv3 found no geometry for {first} candidates, nor "
                         f"{HARD_EMBED_COUNT} from random coordinates with {HARD_EMBED_ITERATIONS} attempts each "
                         f"(most failures: {cause or 'unknown'}; contradictory stereo or an impossible ring system?)")
    return ids


def _round(molh, options: ConformerOptions, seed: int, reference: StereoReference, report: ConformerReport,
           refiner: Refiner | None, random_coords: bool = False) -> tuple[list[Candidate], list[Candidate]]:
    """One round of ``pool × n`` candidates: embedded (ETKDGv3, or the model's samples for ``init="noise"``),
    relaxed and checked for stereo. Returns the candidates that passed (relaxed when the force field could) and,
    when relaxed, the same embeddings as they were before relaxation that pass the check (for the top-up).
    ValueError if none embeds."""
    from rdkit import Chem

    count = options.pool * options.n
    mol = Chem.Mol(molh)
    if options.init == "noise":
        ids = _model_samples(mol, refiner, count, seed)
    else:
        ids = _embed_candidates(mol, count, options.n, seed, options.threads, report.notes, random_coords)
    before = Chem.Mol(mol)
    if options.relax_when == "pool":
        forcefield, energies = relax_candidates(mol, options.relax, options.threads, options.max_iters, report.notes)
    else:   # only the chosen get minimised (stage 2 or 3): the pool stays as embedded
        forcefield, energies = choose_forcefield(mol, options.relax, report.notes), {}
    fixed, dropped = enforce_stereo(mol, reference, ids)
    report.forcefield = forcefield
    origin = "relaxed" if energies else "embedded"
    kept = [Candidate(mol.GetConformer(c).GetPositions(), energies.get(c), origin,
                      MINIMUM if energies.get(c) is not None else None) for c in ids if c not in set(dropped)]
    unrelaxed = []
    if energies:
        _, wrong = enforce_stereo(before, reference, ids)
        unrelaxed = [Candidate(before.GetConformer(c).GetPositions(), None, "unrelaxed") for c in ids
                     if c not in set(wrong)]
        # embedded right, relaxed wrong: the force field's minimum is another stereoisomer (MMFF94 inverts the
        # bridgeheads of some strained bicycles); such candidates keep their embedding, hydrogens minimised
        inverted = [c for c in dropped if c not in set(wrong)]
        if inverted:
            placed, values = relax_restrained(molh, np.stack([before.GetConformer(c).GetPositions() for c in inverted]),
                                              forcefield, None)
            kept += [Candidate(x, e, "relaxed", energy_kind(None)) for x, e in zip(placed, values)]
            dropped = [c for c in dropped if c not in set(inverted)]
            report.notes.append(f"{forcefield} changed the stereo of {len(inverted)} candidate"
                                f"{'s' if len(inverted) != 1 else ''}: kept as embedded, hydrogens minimised")
    report.candidates += len(ids)
    report.stereo_fixed += len(fixed)
    report.stereo_dropped += len(dropped)
    return kept, unrelaxed


def _model_samples(mol, refiner: Refiner, count: int, seed: int) -> list[int]:
    """``init="noise"``: adds ``count`` samples of the model to ``mol`` as conformers; returns their ids."""
    from ..chem.bonds import rdkit_conformer

    ids = [mol.AddConformer(rdkit_conformer(pos), assignId=True)
           for pos in refiner.sample(mol, count, seed) if np.isfinite(pos).all()]
    if not ids:
        raise ValueError(f"the model's {count} samples from noise were all non-finite")
    return ids


def _embed_and_relax(molh, options: ConformerOptions, reference: StereoReference, report: ConformerReport,
                     refiner: Refiner | None) -> tuple[list[Candidate], list[Candidate]]:
    """Stage 1: rounds of candidates until n pass the stereo check (a second round under another seed when some were
    dropped; a last one from random coordinates when none passed). ValueError when none passes."""
    candidates, unrelaxed = _round(molh, options, options.seed, reference, report, refiner)
    retries = [(options.seed + 2**31, False)]     # seeds no user seed maps to
    if options.init == "etkdg":
        retries.append((options.seed + 2**31 + 1, True))
    for seed, random_coords in retries:
        if len(candidates) >= options.n or not report.stereo_dropped or (random_coords and candidates):
            break
        quiet, more = ConformerReport(), []
        with contextlib.suppress(ValueError):  # a round that embeds nothing leaves what the others found
            more, more_unrelaxed = _round(molh, options, seed, reference, quiet, refiner, random_coords)
            candidates += more
            unrelaxed += more_unrelaxed
        report.candidates += quiet.candidates
        report.stereo_fixed += quiet.stereo_fixed
        report.stereo_dropped += quiet.stereo_dropped
        if random_coords and more:
            report.notes.append(f"no ETKDGv3 candidate had the input's stereo: {len(more)} found from random "
                                f"coordinates")
    if not candidates:
        raise ValueError(f"no conformer with the input's stereochemistry: all {report.stereo_dropped} candidates had "
                         f"inverted or flat centres or wrong double bonds")
    return candidates, unrelaxed


# ------------------------------------------------------------------------------------------ stage 2: selection
def _select(molh, candidates: list[Candidate], unrelaxed: list[Candidate], options: ConformerOptions,
            refiner: Refiner | None, inputs, report: ConformerReport) -> tuple[list[Candidate], list[int]]:
    """Stage 2: the n chosen candidates in selection order (``selection.select_conformers``), as copies, and their
    indices into ``candidates + unrelaxed`` top-ups; with ``select="model"`` each gets its score (``diverse``
    instead when the model cannot read the molecule)."""
    positions = np.stack([c.positions for c in candidates])
    how = options.select
    if how == "model":
        if inputs is not None:
            for c, s in zip(candidates, refiner.score(molh, positions, options.seed)):
                c.score = float(s)
        else:
            how = "diverse"
            report.notes.append("selected by 'diverse' instead of 'model'")
    energies = [c.energy for c in candidates]
    known = energies if all(e is not None for e in energies) else None
    top_ups = unrelaxed if options.top_up == "unrelaxed" and how != "model" else []
    chosen = select_conformers(molh, positions, known, options.n, how, options.energy_window,
                               [c.score for c in candidates] if how == "model" else None,
                               prune_rmsd=options.prune_rmsd,
                               unrelaxed=np.stack([c.positions for c in top_ups]) if top_ups else None,
                               distinct_rmsd=options.distinct_rmsd)
    pool = candidates + top_ups   # chosen indices past the candidates refer to the top-ups
    if len(chosen) < options.n:
        why = "embedded" + (" with the input's stereo" if report.stereo_dropped else "")
        report.notes.append(f"only {len(chosen)} of {options.n} conformers: too few candidates {why}")
    return [dataclasses.replace(pool[j]) for j in chosen], [int(j) for j in chosen]


def _relax_chosen(molh, chosen: list[Candidate], options: ConformerOptions, reference: StereoReference,
                  report: ConformerReport) -> None:
    """Stage 2b (``relax_when="chosen"``), in place: the chosen candidates minimised by the force field (stereo kept,
    ``_minimise``), as the pool would have been."""
    if chosen and report.forcefield in ENERGY_PROPS:
        placed, values, kinds = _minimise(molh, np.stack([c.positions for c in chosen]), report.forcefield, 0.0,
                                          reference, report, options.max_iters)
        for c, pos, e, kind in zip(chosen, placed, values, kinds):
            c.positions, c.energy, c.kind, c.origin = pos, e, kind, "relaxed"


def _relax_rest_of_pool(molh, candidates: list[Candidate], chosen: list[Candidate], indices: list[int],
                        options: ConformerOptions, refiner: Refiner | None, inputs, reference: StereoReference,
                        report: ConformerReport) -> list[Candidate]:
    """Stage 2c (``relax_when="adaptive"``, ``select="diverse"``): when the relaxed ``chosen`` (copies of
    ``candidates[indices]``) fall onto fewer than n distinct minima and the pool has more, the rest of the pool is
    minimised as ``chosen`` were and n are chosen again as from a relaxed pool (energy window, farthest-point,
    top-ups from the candidates as embedded). Returns the chosen (unchanged when they were distinct; other
    selections would choose the same candidates again, so they are left as ``"chosen"`` leaves them)."""
    taken = set(indices)
    rest = [j for j in range(len(candidates)) if j not in taken]
    if not rest or options.select != "diverse" or report.forcefield not in ENERGY_PROPS:
        return chosen   # nothing more to minimise, or a selection that would choose the same again
    distinct = distinct_conformers(molh, np.stack([c.positions for c in chosen]), options.distinct_rmsd)
    if len(distinct) == len(chosen):
        return chosen
    placed, values, kinds = _minimise(molh, np.stack([candidates[j].positions for j in rest]), report.forcefield,
                                      0.0, reference, report, options.max_iters)
    relaxed = {j: c for j, c in zip(indices, chosen)}
    for j, pos, e, kind in zip(rest, placed, values, kinds):
        relaxed[j] = dataclasses.replace(candidates[j], positions=pos, energy=e, kind=kind, origin="relaxed")
    pool = [relaxed[j] for j in range(len(candidates))]
    embedded = [dataclasses.replace(c, origin="unrelaxed") for c in candidates]
    quiet = ConformerReport()   # its notes would repeat the first selection's
    again, _ = _select(molh, pool, embedded, options, refiner, inputs, quiet)
    report.notes.append(f"the {len(chosen)} chosen fell onto {len(distinct)} distinct minima: the other "
                        f"{len(rest)} candidates minimised too")
    return again


# ------------------------------------------------------------------------------------------ stage 3: refinement
def _refine(molh, chosen: list[Candidate], refiner: Refiner, inputs, reference: StereoReference,
            options: ConformerOptions, report: ConformerReport) -> None:
    """Stage 3, in place: refine every chosen conformer (only the chosen n: refinement moves atoms by about σ₀, far
    less than the RMSD between the candidates selection tells apart, and refining the pool would cost pool times
    more), minimise it with its heavy atoms restrained to the refined positions when the candidates were relaxed,
    and keep it unless it is not finite or its stereo no longer matches the input (then its seed stays)."""
    seeds = np.stack([c.positions for c in chosen])
    refined = refiner.refine(molh, seeds, options.seed, inputs)
    finite = [bool(np.isfinite(x).all()) for x in refined]
    fresh: dict[int, float | None] = {}
    restraint = _restraint(options)
    if any(finite):
        if options.after_refinement == "torsions":
            refined[finite] = transfer_torsions(molh, seeds[finite], refined[finite])
        relaxed, values, kinds = _minimise(molh, refined[finite], report.forcefield, restraint, reference, report)
        refined[finite] = relaxed
        fresh = dict(zip(np.flatnonzero(finite).tolist(), zip(values, kinds)))
    check = conformers_of(molh, refined)
    for k, c in enumerate(chosen):
        if finite[k] and check_conformer_stereo(check, k, reference) == "ok":
            c.positions, (c.energy, c.kind), c.refined = refined[k], fresh.get(k, (None, None)), True
            c.kind = c.kind if report.forcefield in ENERGY_PROPS else None
    report.refined = sum(c.refined for c in chosen)
    report.reverted = len(chosen) - report.refined
    if report.reverted:
        report.notes.append(f"{report.reverted} refined conformer{'s' if report.reverted != 1 else ''} lost the "
                            f"input's stereo: kept unrefined")


def _minimise(molh, positions: np.ndarray, forcefield: str, restraint: float | None, reference: StereoReference,
              report: ConformerReport, max_iters: int = RESTRAINED_ITERS) -> tuple[np.ndarray, list[float | None],
                                                                                  list[str]]:
    """``forcefield.relax_restrained`` on ``positions`` [K, n_atoms, 3] (Å), except that a conformer whose stereo
    was right before and wrong after (the force field's minimum is another stereoisomer: MMFF94 inverts the
    bridgeheads of some strained bicycles) is minimised again with its heavy atoms fixed, which cannot change
    it (noted). Returns positions, energies (kcal/mol) and what each energy is (``energy_kind``)."""
    placed, energies = relax_restrained(molh, positions, forcefield, restraint, max_iters)
    kinds = [energy_kind(restraint)] * len(placed)
    if reference and forcefield in ENERGY_PROPS and restraint is not None:
        before, after = conformers_of(molh, positions), conformers_of(molh, placed)
        changed = [k for k in range(len(placed)) if check_conformer_stereo(after, k, reference) != "ok"
                   and check_conformer_stereo(before, k, reference) == "ok"]
        if changed:
            fixed, values = relax_restrained(molh, positions[changed], forcefield, None)
            for j, k in enumerate(changed):
                placed[k], energies[k], kinds[k] = fixed[j], values[j], energy_kind(None)
            report.notes.append(f"{forcefield} changed the stereo of {len(changed)} conformer"
                                f"{'s' if len(changed) != 1 else ''}: heavy atoms kept, hydrogens minimised")
    return placed, energies, kinds


def _restraint(options: ConformerOptions) -> float | None:
    """The force constant ``relax_restrained`` gets after refinement (None: heavy atoms fixed)."""
    return options.restraint if options.after_refinement == "restrained" else None


# ------------------------------------------------------------------------------------------ stages 4 and 5
def _relax_top_ups(molh, chosen: list[Candidate], options: ConformerOptions, reference: StereoReference,
                   report: ConformerReport) -> None:
    """Stage 4, in place: chosen conformers without an energy (unrelaxed top-ups left unrefined) are minimised like
    refined ones, heavy atoms restrained where ETKDGv3 put them: they keep their rotamer or pucker and get a
    force-field geometry and an honest energy."""
    bare = [c for c in chosen if c.energy is None]
    if bare and report.forcefield in ENERGY_PROPS:
        restraint = None if options.after_refinement == "hydrogens" else options.restraint
        placed, values, kinds = _minimise(molh, np.stack([c.positions for c in bare]), report.forcefield, restraint,
                                          reference, report)
        for c, pos, e, kind in zip(bare, placed, values, kinds):
            c.positions, c.energy, c.kind = pos, e, kind


def _drop_near_copies(molh, chosen: list[Candidate], options: ConformerOptions,
                      report: ConformerReport) -> list[Candidate]:
    """Stage 5: refinement and minimisation can bring the conformers of a rigid molecule together; each is written
    once (``selection.distinct_conformers`` with ``dedupe_rmsd``) and the report says how many went."""
    keep = distinct_conformers(molh, np.stack([c.positions for c in chosen]), options.dedupe_rmsd)
    report.near_copies = len(chosen) - len(keep)
    if report.near_copies:
        report.notes.append(f"{report.near_copies} near-cop{'ies' if report.near_copies != 1 else 'y'} (RMSD < "
                            f"{options.dedupe_rmsd:g} A) left out: only {len(keep)} distinct conformer"
                            f"{'s' if len(keep) != 1 else ''}")
    return [chosen[k] for k in keep]


# ------------------------------------------------------------------------------------------ stage 6: the output
def _to_mol(molh, chosen: list[Candidate], report: ConformerReport):
    """Stage 6: ``molh`` with the chosen conformers (ids 0..K-1 in selection order), their properties and the
    report."""
    out = conformers_of(molh, [c.positions for c in chosen])
    key = ENERGY_PROPS.get(report.forcefield)
    for k, c in enumerate(chosen):
        conf = out.GetConformer(k)
        conf.SetIntProp("conformer_index", k)
        if key is not None and c.energy is not None:
            conf.SetDoubleProp(key, c.energy)
            conf.SetProp(ENERGY_KIND_PROP, c.kind or MINIMUM)
        if c.score is not None:
            conf.SetDoubleProp(SCORE_PROP, c.score)
    report.unrelaxed = sum(c.origin == "unrelaxed" for c in chosen)
    report.to_props(out)
    return out


# ------------------------------------------------------------------------------------------ the pipeline
def _options_and_refiner(options: ConformerOptions | None, refiner, settings: dict) -> tuple[ConformerOptions,
                                                                                               Refiner | None]:
    """``generate_conformers``' arguments as one ``ConformerOptions`` and a ``Refiner`` (or None): keyword
    arguments are either option fields or refiner settings (``REFINER_SETTINGS``)."""
    model_settings = {k: settings.pop(k) for k in REFINER_SETTINGS if k in settings}
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(ConformerOptions)})
    if unknown:
        raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; options are the "
                         f"fields of ConformerOptions and the refiner settings {', '.join(REFINER_SETTINGS)}")
    options = dataclasses.replace(options, **settings) if options is not None else ConformerOptions(**settings)
    if isinstance(refiner, Refiner):
        if model_settings:
            raise ValueError(f"refiner settings ({', '.join(model_settings)}) given beside a Refiner: give them "
                             f"to the Refiner")
        return options, refiner
    if refiner is None:
        if options.init == "noise" or options.select == "model":
            what = "init='noise'" if options.init == "noise" else "select='model'"
            raise ValueError(f"{what} needs a model: give refiner (weights of a trained ConformerDiffusion)")
        given = [k for k in ("sigma0", "t0", "passes") if model_settings.get(k) is not None]
        if given or model_settings.get("fresh_noise"):
            raise ValueError("sigma0 / t0 / fresh_noise / passes set but no refiner given: refinement needs a "
                             "trained ConformerDiffusion")
        return options, None
    return options, Refiner(refiner, **model_settings)


def generate_conformers(mol_or_smiles, options: ConformerOptions | None = None, refiner="shipped", **settings):
    """Conformers of one molecule, with explicit hydrogens, as one ``rdkit.Chem.Mol`` (the stages of the module
    docstring).

    Args:
        mol_or_smiles: a SMILES string or an ``rdkit.Chem.Mol`` (coordinates it has are ignored; its stereo, e.g.
            from a 3D SDF record, is what conformers must reproduce). Its name (``_Name``) is kept.
        options: a ``ConformerOptions`` (None: the defaults, those of ``molediff conformers``).
        refiner: a ``Refiner``; ``"shipped"`` (default, as the command: the shipped ``conformer_refiner``); a
            trained ``ConformerDiffusion`` or its weights (a ``.safetensors`` file or run directory); or None (the
            model-free pipeline: no torch is loaded).
        **settings: option fields (``n=5``, ``seed=1``, ...; override ``options``) and, when ``refiner`` is not
            a ``Refiner``, its settings (``sigma0``, ``t0``, ``steps``, ``passes``, ``sampler``, ``fresh_noise``,
            ``bf16``, ``batch_size``, ``device``).

    Returns:
        A Mol with hydrogens and up to ``n`` conformers (ids 0..K-1 in selection order). Each conformer has the int
        property ``conformer_index`` and, when relaxed, ``MMFF94_energy_kcal_mol`` (or ``UFF_energy_kcal_mol``) in
        kcal/mol with ``energy_kind`` saying what it is (``minimum``; ``restrained minimum (heavy atoms, k = ...)``;
        ``hydrogens minimised, heavy atoms fixed``); with ``select="model"`` also ``model_score``. Mol properties
        (``ConformerReport``): ``molediff_stereo_fixed`` / ``molediff_stereo_dropped``, ``molediff_candidates``,
        ``molediff_forcefield``, ``molediff_refined`` / ``molediff_refine_reverted``, ``molediff_unrelaxed``,
        ``molediff_near_copies``, ``molediff_init``, ``molediff_notes`` ("; "-separated). Fewer than ``n``
        conformers when fewer candidates embedded with the right stereo, or when near-copies were left out (noted).

    Raises:
        ValueError (one line) for bad options or refiner settings (``ConformerOptions``, ``Refiner``;
        ``select="model"`` or ``init="noise"`` without a model, ``refiner="shipped"`` without shipped weights), an
        unparsable SMILES, an empty molecule, an unsupported element (dummy atoms, Z > 103; metals unless
        ``allow_unvalidated_elements``), a disconnected input (salts), more than ``max_atoms`` atoms, embedding
        failure also from random coordinates, a molecule the model cannot read with ``init="noise"``, or no
        candidate with the input's stereochemistry. FileNotFoundError for refiner weights that do not exist.
        KeyboardInterrupt for a Ctrl-C, also one that RDKit caught while embedding.
    """
    from rdkit import rdBase

    options, refiner = _options_and_refiner(options, refiner, dict(settings))
    if refiner is not None:
        refiner.check_init(options.init)
    report = ConformerReport(init=options.init)
    with rdBase.BlockLogs():  # UFF typer warnings and the like would interleave with the caller's output
        molh = _prepare(mol_or_smiles, options, report)
        reference = stereo_reference(molh)
        inputs = None
        if refiner is not None:
            try:
                inputs = refiner.inputs(molh)
            except ValueError as e:
                if options.init == "noise":
                    raise ValueError(f"the model cannot take this molecule: {e}") from None
                report.notes.append(f"not {'refined' if refiner.refines else 'scored'} by the model: {e}")
        candidates, unrelaxed = _embed_and_relax(molh, options, reference, report, refiner)
        chosen, indices = _select(molh, candidates, unrelaxed, options, refiner, inputs, report)
        if options.relax_when in ("chosen", "adaptive"):
            _relax_chosen(molh, chosen, options, reference, report)
        if options.relax_when == "adaptive":
            chosen = _relax_rest_of_pool(molh, candidates, chosen, indices, options, refiner, inputs, reference,
                                         report)
        if inputs is not None and refiner.refines and options.init == "etkdg":
            _refine(molh, chosen, refiner, inputs, reference, options, report)
        _relax_top_ups(molh, chosen, options, reference, report)
        chosen = _drop_near_copies(molh, chosen, options, report)
    return _to_mol(molh, chosen, report)
