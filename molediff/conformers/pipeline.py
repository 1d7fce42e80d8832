"""Conformer generation: ETKDGv3 embedding, force-field relaxation, stereo check, diverse selection and
optional refinement by the diffusion model.

``generate_conformers`` is the pipeline behind ``molediff conformers``. Steps, for a molecule with hydrogens
added:

1. embed a pool of ``pool × n`` candidates with ETKDGv3 (Wang, Witek, Landrum & Riniker, J. Chem. Inf.
   Model. 2020, 60, 2044), seeded; if fewer than n embed, the missing ones are retried from random starting
   coordinates (``useRandomCoords``). With ``init="noise"`` the candidates are drawn instead from a
   ``ConformerDiffusion`` trained on all noise levels (the full reverse process from N(0, I));
2. relax each candidate with MMFF94 (Halgren, J. Comput. Chem. 1996, 17, 490), or UFF (Rappé et al. 1992)
   when MMFF94 has no parameters for the molecule, and keep its energy (kcal/mol);
3. check the stereochemistry of every candidate against the input (tetrahedral centres and double bonds
   that the input specifies): a candidate whose centres are all inverted is mirrored (x → −x), any other
   mismatch is dropped and the next candidate takes its place;
4. select n: ``diverse`` keeps candidates within an energy window of the lowest and picks them by
   farthest-point sampling on symmetry-aware RMSD over heavy atoms and polar hydrogens, starting from the
   lowest-energy one; ``energy`` the lowest in energy that differ by at least ``prune_rmsd`` (energy-ordered
   RMSD pruning). When the relaxed candidates hold fewer than n distinct minima (small molecules, whose
   candidates the force field collapses onto a few), both fill the open slots with the most distinct candidates
   as ETKDGv3 embedded them, before relaxation (``top_up="unrelaxed"``: they keep rotamers and puckers that the
   force field's minima miss; refined in step 5 like the rest). ``none`` the first n in embedding order; ``model``
   ranks them by the model's denoising error (``molediff.conformers.scoring``), keeps the best-scored third and
   picks from those by farthest-point sampling starting from the best-scored one;
5. with a refiner (a trained ``ConformerDiffusion``), refine each chosen conformer by partial diffusion from σ₀
   (SDEdit, Meng et al. 2022; ``molediff.conformers.refine``; by default without fresh noise and three passes
   in a row, each from the previous output), check its stereochemistry again (one that no
   longer matches is replaced by its unrefined seed and counted) and, when relaxed, minimise its hydrogens alone
   with the force field (heavy atoms fixed where the model put them) and record that energy.

Also here: reading the inputs of the command (SMILES, ``.smi`` and SDF files) and writing the SD records.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

RELAX_METHODS = ("mmff", "none")
SELECT_METHODS = ("diverse", "energy", "none", "model")
INIT_METHODS = ("etkdg", "noise")
MODEL_FRACTION = 1 / 3  # select="model": the best-scored third of the candidates is what farthest-point picks from
SCORE_PROP = "model_score"
DEFAULT_SIGMA0 = 0.45  # Å; no fresh noise, DEFAULT_PASSES × DEFAULT_STEPS DDIM steps: best on the tuning sets
DEFAULT_STEPS = 3  # sampler steps of each refinement pass
DEFAULT_PASSES = 3  # refinement passes in a row (iterated partial diffusion; tuning sets: better than one pass)
DEFAULT_PRUNE_RMSD = 0.5  # Å: select="energy" keeps no two conformers closer than this
DEFAULT_DISTINCT_RMSD = 0.25  # Å: relaxed candidates this close count as one minimum (then unrelaxed ones top up)
TOP_UP_METHODS = ("unrelaxed", "relaxed")
ENERGY_KIND_PROP = "energy_kind"  # SD field: what the written energy is (a minimum, restrained, hydrogens only)
DEFAULT_RESTRAINT = 10.0  # kcal/mol/Å²: heavy atoms held to the refined positions while the force field minimises
HYDROGEN_ITERS = 200  # force-field steps that re-place the hydrogens of a refined conformer
RESTRAINED_ITERS = 1000  # force-field steps of the restrained minimisation after refinement
NOISE_STEPS = 50  # sampler steps from t = 1 (init="noise")
SHIPPED_REFINER = "conformer_refiner"  # molediff/pretrained/conformer_refiner.safetensors, when a release ships it
# Elements whose geometry ETKDGv3 and the force fields (MMFF94, else UFF) are known to get right; metals' coordination
# (square-planar Pt, octahedral Fe) is not modelled by either and comes out wrong, so it is refused by default
VALIDATED_ELEMENTS = frozenset((1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 34, 35, 53))
MAX_ATOMIC_NUMBER = 103  # UFF's periodic table (H..Lr) bounds what distance geometry and the force fields know
MAX_SYMMETRY_MAPS = 1000  # automorphisms tried per RMSD; more only tightens an upper bound (selection is heuristic)
SMILES_SUFFIXES = (".smi", ".smiles")
SDF_SUFFIXES = (".sdf", ".sd", ".mol", ".sdf.gz", ".sd.gz", ".mol.gz")
ENERGY_PROPS = {"MMFF94": "MMFF94_energy_kcal_mol", "UFF": "UFF_energy_kcal_mol"}


# ------------------------------------------------------------------------------------------ parsing
def _rdkit_reason(messages: Sequence[str], text: str = "") -> str:
    """One line from RDKit's log messages: prefixes, echoes of the input and caret lines dropped."""
    keep = []
    for msg in messages:
        msg = msg.removeprefix("SMILES Parse Error: ").strip().rstrip(":")
        if not msg or msg == text or not msg.strip("~^ ") or msg.startswith("Failed parsing SMILES"):
            continue
        if msg not in keep:
            keep.append(msg)
    reason = "; ".join(keep)
    return reason if len(reason) <= 200 else reason[:197] + "..."


def parse_smiles(smiles: str):
    """A sanitised ``rdkit.Chem.Mol`` from a SMILES string (text after whitespace is ignored).

    Raises ValueError ``could not parse SMILES '...': <RDKit's reason>`` for a string RDKit refuses (syntax,
    valence, kekulisation) and ``empty molecule (no atoms)`` for an empty string.
    """
    from rdkit import Chem

    from ..chem.io import rdkit_errors

    text = smiles.strip()
    if not text:
        raise ValueError("empty molecule (no atoms): the SMILES is empty")
    with rdkit_errors() as messages:
        mol = Chem.MolFromSmiles(text.split()[0])
    if mol is None:
        reason = _rdkit_reason(messages, text.split()[0])
        raise ValueError(f"could not parse SMILES {text.split()[0]!r}" + (f": {reason}" if reason else ""))
    return mol


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


# ------------------------------------------------------------------------------------------ stereochemistry
@dataclass(frozen=True)
class StereoReference:
    """The stereochemistry an input specifies, against which conformers are checked.

    Attributes:
        centres: atom index → ``ChiralType`` (CW/CCW) of each specified tetrahedral centre. Tags refer to the
            atom's bond order in the molecule, so a conformer's tags (assigned from 3D on the same molecule) can
            be compared directly: this also covers centres without a CIP label (e.g. ring cis/trans).
        bonds: bond index → ``BondStereo`` of each specified double bond: E/Z (CIP) when RDKit labels it so,
            else CIS/TRANS relative to ``bond_atoms[bond index]``.
        bond_atoms: bond index → the two reference neighbours (a, d) of a CIS/TRANS bond a-b=c-d.
    """

    centres: dict[int, object] = field(default_factory=dict)
    bonds: dict[int, object] = field(default_factory=dict)
    bond_atoms: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.centres or self.bonds)


def stereo_reference(mol) -> StereoReference:
    """The specified tetrahedral centres and double bonds of ``mol`` (with the hydrogens the conformers will have).
    Other stereo (allenes, atropisomers, square-planar centres, enhanced stereo groups) is not checked.

    Stereo is re-perceived (``AssignStereochemistry(cleanIt=True, force=True)``) on a copy, so tags on atoms that
    are no stereocentre do not count; unspecified centres and bonds are not checked.
    """
    from rdkit import Chem

    ref = Chem.Mol(mol)
    Chem.AssignStereochemistry(ref, cleanIt=True, force=True)
    tetrahedral = (Chem.ChiralType.CHI_TETRAHEDRAL_CW, Chem.ChiralType.CHI_TETRAHEDRAL_CCW)
    centres = {a.GetIdx(): a.GetChiralTag() for a in ref.GetAtoms() if a.GetChiralTag() in tetrahedral}
    bonds, bond_atoms = {}, {}
    s = Chem.BondStereo
    for b in ref.GetBonds():
        stereo = b.GetStereo()
        if stereo in (s.STEREOE, s.STEREOZ):
            bonds[b.GetIdx()] = stereo
        elif stereo in (s.STEREOCIS, s.STEREOTRANS) and len(b.GetStereoAtoms()) == 2:
            bonds[b.GetIdx()] = stereo
            bond_atoms[b.GetIdx()] = tuple(b.GetStereoAtoms())
    return StereoReference(centres, bonds, bond_atoms)


def _dihedral(p: np.ndarray) -> float:
    """Dihedral angle (degrees) of four points [4, 3]."""
    b0, b1, b2 = p[0] - p[1], p[2] - p[1], p[3] - p[2]
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - b0.dot(b1) * b1, b2 - b2.dot(b1) * b1
    return float(np.degrees(np.arctan2(np.cross(b1, v).dot(w), v.dot(w))))


def check_conformer_stereo(mol, conf_id: int, reference: StereoReference) -> str:
    """Whether conformer ``conf_id`` of ``mol`` has the ``reference`` stereochemistry.

    Stereo is assigned from the 3D coordinates (``AssignStereochemistryFrom3D``) on a one-conformer copy whose
    stereo marks were cleared, then compared with the reference: chiral tags of the specified centres, E/Z of the
    specified double bonds (CIS/TRANS ones by the dihedral of their reference atoms, cis below 90°).

    Returns ``"ok"``, ``"mirrored"`` (every specified centre inverted, at least one, double bonds right: the
    mirror image is right) or ``"wrong"`` (anything else, including a flat centre).
    """
    from rdkit import Chem

    if not reference:
        return "ok"
    m = Chem.Mol(mol, False, conf_id)
    for atom in m.GetAtoms():
        atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    for bond in m.GetBonds():
        bond.SetBondDir(Chem.BondDir.NONE)
        if bond.GetBondType() == Chem.BondType.DOUBLE:
            bond.SetStereo(Chem.BondStereo.STEREONONE)
    Chem.AssignStereochemistryFrom3D(m)
    pos = m.GetConformer().GetPositions()
    s = Chem.BondStereo
    for idx, want in reference.bonds.items():
        if want in (s.STEREOCIS, s.STEREOTRANS):
            b = m.GetBondWithIdx(idx)
            a, d = reference.bond_atoms[idx]
            cis = abs(_dihedral(pos[[a, b.GetBeginAtomIdx(), b.GetEndAtomIdx(), d]])) < 90.0
            if cis != (want == s.STEREOCIS):
                return "wrong"
        elif m.GetBondWithIdx(idx).GetStereo() != want:
            return "wrong"
    same = inverted = 0
    for idx, want in reference.centres.items():
        got = m.GetAtomWithIdx(idx).GetChiralTag()
        if got == want:
            same += 1
        elif got in (Chem.ChiralType.CHI_TETRAHEDRAL_CW, Chem.ChiralType.CHI_TETRAHEDRAL_CCW):
            inverted += 1
    if same == len(reference.centres):
        return "ok"
    if inverted == len(reference.centres):
        return "mirrored"
    return "wrong"


def mirror_conformer(mol, conf_id: int) -> None:
    """Reflect conformer ``conf_id`` in place through the yz plane (x → −x): every centre inverts, E/Z stays."""
    from rdkit.Geometry import Point3D

    conf = mol.GetConformer(conf_id)
    for k, p in enumerate(conf.GetPositions()):
        conf.SetAtomPosition(k, Point3D(-float(p[0]), float(p[1]), float(p[2])))


def enforce_stereo(mol, reference: StereoReference, conf_ids: Sequence[int] | None = None) -> tuple[list, list]:
    """Check conformers of ``mol`` (all, or ``conf_ids``) against ``reference``; mirror those with every centre
    inverted (then rechecked) in place.

    Returns ``(fixed, dropped)``: ids of mirrored conformers, and of conformers whose stereochemistry is wrong
    (left in ``mol``; the caller discards them). Force-field energies are unchanged by mirroring.
    """
    ids = [c.GetId() for c in mol.GetConformers()] if conf_ids is None else list(conf_ids)
    fixed, dropped = [], []
    if not reference:
        return fixed, dropped
    for cid in ids:
        status = check_conformer_stereo(mol, cid, reference)
        if status == "mirrored":
            mirror_conformer(mol, cid)
            status = "ok" if check_conformer_stereo(mol, cid, reference) == "ok" else "wrong"
            if status == "ok":
                fixed.append(cid)
        if status == "wrong":
            dropped.append(cid)
    return fixed, dropped


def shipped_refiner() -> Path | None:
    """The shipped refiner weights ``molediff/pretrained/conformer_refiner.safetensors``, or None when this
    installation has none (the path of ``molediff.training.weights.pretrained_path``, found without importing
    torch)."""
    path = Path(__file__).resolve().parent.parent / "pretrained" / f"{SHIPPED_REFINER}.safetensors"
    return path if path.is_file() else None


# ------------------------------------------------------------------------------------------ RMSD
class SymmetricRMSD:
    """Heavy-atom RMSD (Å) after optimal superposition, minimised over the heavy-atom graph's automorphisms, between
    conformers of one molecule (as RDKit's ``GetBestRMS``, vectorised over conformers).

    ``positions`` [P, n_atoms, 3] (Å); automorphisms of the hydrogen-free graph (elements and connectivity) are
    found once (at most ``MAX_SYMMETRY_MAPS``). Superposition is the Kabsch SVD with proper rotations only.
    ``polar_hydrogens``: also count hydrogens bonded to N, O, S (for selection: rotamers of OH, NH and SH groups
    differ only there, so heavy atoms alone call them duplicates; benchmarks compare heavy atoms only).
    """

    def __init__(self, mol, positions: np.ndarray, polar_hydrogens: bool = False):
        from rdkit import Chem

        def counted(atom) -> bool:
            if atom.GetAtomicNum() > 1:
                return True
            return polar_hydrogens and any(b.GetAtomicNum() in (7, 8, 16) for b in atom.GetNeighbors())

        heavy = [a.GetIdx() for a in mol.GetAtoms() if counted(a)]
        x = np.asarray(positions, dtype=np.float64)[:, heavy]
        self.x = x - x.mean(axis=1, keepdims=True)  # [P, h, 3]
        self.sq = (self.x ** 2).sum(axis=(1, 2))  # [P]
        if len(heavy) < 2:
            self.maps = np.arange(len(heavy))[None]
            return
        # connectivity and elements only (as molediff.chem.conformers): the two O of a carboxylic acid are
        # interchangeable once hydrogens are gone, as in RDKit's symmetrised terminal groups
        g = Chem.RWMol()
        for i in heavy:
            g.AddAtom(Chem.Atom(mol.GetAtomWithIdx(i).GetAtomicNum()))
        where = {i: k for k, i in enumerate(heavy)}
        for b in mol.GetBonds():
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            if i in where and j in where:
                g.AddBond(where[i], where[j], Chem.BondType.SINGLE)
        g.UpdatePropertyCache(strict=False)
        maps = g.GetSubstructMatches(g, uniquify=False, useChirality=False, maxMatches=MAX_SYMMETRY_MAPS)
        self.maps = np.array(maps, dtype=np.int64) if maps else np.arange(len(heavy))[None]

    def from_one(self, i: int) -> np.ndarray:
        """RMSD [P] from conformer ``i`` to every conformer."""
        h = self.x.shape[1]
        if h < 2:
            return np.zeros(len(self.x))
        ref = self.x[i][self.maps]  # [K, h, 3]: conformer i's atoms relabelled by each automorphism
        cov = np.einsum("khc,phd->kpcd", ref, self.x)  # [K, P, 3, 3]
        sv = np.linalg.svd(cov, compute_uv=False)
        sign = np.sign(np.linalg.det(cov))
        trace = sv[..., 0] + sv[..., 1] + np.where(sign < 0, -1.0, 1.0) * sv[..., 2]
        msd = (self.sq[i] + self.sq[None] - 2 * trace) / h
        return np.sqrt(np.clip(msd, 0, None)).min(axis=0)


def farthest_point_order(rmsd: SymmetricRMSD, candidates: Sequence[int], n: int,
                         start: int | Sequence[int], stop_within: float | None = None) -> list[int]:
    """Greedy max-min selection of ``n`` of ``candidates`` (indices into rmsd's conformers), beginning at ``start``
    (one candidate, or several chosen already, which lead the result, and need not be among ``candidates``); ties
    go to the earlier candidate (callers list them by energy). ``stop_within`` (Å): stop early once every
    candidate left lies within this RMSD of one chosen (only duplicates remain)."""
    chosen = [int(start)] if isinstance(start, (int, np.integer)) else [int(c) for c in start]
    taken = set(chosen)
    cand = chosen + [int(c) for c in candidates if int(c) not in taken]
    dmin = np.min([rmsd.from_one(c)[cand] for c in chosen], axis=0)
    for c in chosen:
        dmin[cand.index(c)] = -1.0
    while len(chosen) < min(n, len(cand)):
        k = int(np.argmax(dmin))
        if stop_within is not None and dmin[k] <= stop_within:
            break
        chosen.append(cand[k])
        dmin = np.minimum(dmin, rmsd.from_one(cand[k])[cand])
        for c in chosen:
            dmin[cand.index(c)] = -1.0
    return chosen


# ------------------------------------------------------------------------------------------ pipeline
def _embed(mol, count: int, seed: int, threads: int, random_coords: bool) -> tuple[list[int], str]:
    """Add ``count`` ETKDGv3 conformers to ``mol`` (keeping those it has); returns the ids of those that embedded
    and, when some failed, the check that failed most often (RDKit's ``EmbedFailureCauses`` name)."""
    from rdkit.Chem import rdDistGeom

    from ..chem.io import rdkit_errors

    params = rdDistGeom.ETKDGv3()
    # RDKit derives conformer seeds from randomSeed: with randomSeed 0 (non-sequential) every conformer is the same,
    # and nearby seeds share conformers. Sequential seeds from a well-mixed start avoid both.
    params.randomSeed = int(np.random.SeedSequence(seed).generate_state(1)[0] % 2**30) + 1
    params.enableSequentialRandomSeeds = True
    params.numThreads = threads
    params.pruneRmsThresh = -1.0  # selection is ours (step 4): keep every candidate
    params.clearConfs = False
    params.useRandomCoords = random_coords
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


def _relax(mol, relax: str, threads: int, max_iters: int, notes: list[str]) -> tuple[str, dict[int, float]]:
    """Relax every conformer of ``mol`` in place; returns the force field used (``MMFF94``, ``UFF`` or ``none``) and
    the energy (kcal/mol) per conformer id."""
    from rdkit.Chem import rdForceFieldHelpers as ff

    if relax == "none" or mol.GetNumConformers() == 0:
        return "none", {}
    ids = [c.GetId() for c in mol.GetConformers()]
    if ff.MMFFHasAllMoleculeParams(mol):
        name, results = "MMFF94", ff.MMFFOptimizeMoleculeConfs(mol, numThreads=threads, maxIters=max_iters,
                                                               mmffVariant="MMFF94")
    elif ff.UFFHasAllMoleculeParams(mol):
        notes.append("MMFF94 has no parameters for this molecule: relaxed with UFF")
        name, results = "UFF", ff.UFFOptimizeMoleculeConfs(mol, numThreads=threads, maxIters=max_iters)
    else:
        notes.append("neither MMFF94 nor UFF has parameters for this molecule: conformers are not relaxed")
        return "none", {}
    unconverged = sum(1 for flag, _ in results if flag != 0)
    if unconverged:
        notes.append(f"{unconverged} of {len(results)} candidates did not converge in {max_iters} {name} steps")
    return name, {cid: float(e) for cid, (_, e) in zip(ids, results)}


@dataclass
class _Round:
    """Candidates of one embedding round that passed the stereo check: positions [n_atoms, 3] (Å) and energies
    (kcal/mol; None when not relaxed), and when relaxed also the candidates as they were before relaxation that
    pass the stereo check (``unrelaxed``; empty otherwise)."""

    positions: list
    energies: list
    forcefield: str
    embedded: int
    fixed: int
    dropped: int
    unrelaxed: list = field(default_factory=list)


def _round(template, count: int, wanted: int, seed: int, relax: str, threads: int, max_iters: int,
           reference: StereoReference, notes: list[str], source=None) -> _Round:
    """Embed ``count`` candidates of ``template`` (if fewer than ``wanted`` embed, the missing ones are retried from
    random coordinates), relax them and check their stereo. ValueError if none embeds.

    ``source(mol, count, seed) -> conformer ids`` replaces ETKDGv3 (``init="noise"``: the model's samples)."""
    from rdkit import Chem

    mol = Chem.Mol(template)
    if source is not None:
        ids = source(mol, count, seed)
    else:
        ids = _embed_candidates(mol, count, wanted, seed, threads, notes)
    before = Chem.Mol(mol)
    forcefield, energies = _relax(mol, relax, threads, max_iters, notes)
    fixed, dropped = enforce_stereo(mol, reference, ids)
    keep = [c for c in ids if c not in set(dropped)]
    unrelaxed = []
    if forcefield != "none":
        _, wrong = enforce_stereo(before, reference, ids)
        unrelaxed = [before.GetConformer(c).GetPositions() for c in ids if c not in set(wrong)]
    return _Round([mol.GetConformer(c).GetPositions() for c in keep], [energies.get(c) for c in keep], forcefield,
                  len(ids), len(fixed), len(dropped), unrelaxed)


def _embed_candidates(mol, count: int, wanted: int, seed: int, threads: int, notes: list[str]) -> list[int]:
    """ETKDGv3 candidates for ``_round`` (the missing ones up to ``wanted`` retried from random coordinates)."""
    ids, cause = _embed(mol, count, seed, threads, random_coords=False)
    if len(ids) < count:
        notes.append(f"ETKDGv3 embedded {len(ids)} of {count} candidates (most failures: {cause or 'unknown'})")
    if len(ids) < wanted:
        # fewer than wanted: retry only the missing ones from random coordinates (slow on the molecules that need it)
        more, cause = _embed(mol, wanted - len(ids), seed, threads, random_coords=True)
        notes.append(f"{len(more)} of {wanted - len(ids)} more from random coordinates")
        ids += more
    if not ids:
        raise ValueError(f"embedding failed: ETKDGv3 found no geometry for {count} candidates, nor from random "
                         f"coordinates (most failures: {cause or 'unknown'}; contradictory stereo or an "
                         f"impossible ring system?)")
    return ids


def select_conformers(mol, positions: np.ndarray, energies: Sequence[float] | None, n: int, select: str = "diverse",
                      energy_window: float = 10.0, scores: Sequence[float] | None = None,
                      model_fraction: float = MODEL_FRACTION, prune_rmsd: float = DEFAULT_PRUNE_RMSD,
                      unrelaxed: np.ndarray | None = None, distinct_rmsd: float = DEFAULT_DISTINCT_RMSD) -> list[int]:
    """Indices of the ``n`` conformers chosen from candidates ``positions`` [P, n_atoms, 3] (Å) of ``mol``.

    ``energies`` [P] in kcal/mol or None. ``"none"``: the first n.
    ``"energy"`` (needs energies): energy-ordered RMSD pruning, the usual way to reduce a conformer ensemble:
    candidates from the lowest energy up, each kept unless it lies within ``prune_rmsd`` Å (the RMSD below) of one
    kept already, until n are kept.
    ``"diverse"``: candidates within ``energy_window`` of the lowest (topped up with the next lowest if fewer
    than n), then farthest-point sampling on symmetry-aware RMSD over heavy atoms and polar hydrogens (so OH / NH
    rotamers count as distinct) starting from the lowest-energy candidate (the first without energies); ties go
    to the lower energy. With ``unrelaxed`` it stops once every candidate left lies within ``distinct_rmsd`` Å of
    one chosen (only duplicates of the same minimum remain).
    Slots left open are topped up by farthest-point sampling: from ``unrelaxed`` [Q, n_atoms, 3] when given
    (the candidates before force-field relaxation: a small molecule's candidates collapse onto a few minima of
    the force field, and its unrelaxed ones keep the other rotamers and puckers), then from the remaining
    candidates. Indices ≥ P refer to ``unrelaxed`` (index P + q).
    ``"model"``: ``scores`` [P] (lower is better: ``scoring.score_conformers``); the best-scored
    max(n, ⌈model_fraction · P⌉) candidates, then farthest-point sampling on the same RMSD among them starting
    from the best-scored one; ties go to the better score (``unrelaxed`` is not used).
    """
    count = len(positions)
    if select == "none":
        return list(range(min(n, count)))
    if select == "model":
        if scores is None or len(scores) != count:
            raise ValueError(f"select='model' needs one model score per candidate ({count})")
        if not 0.0 < model_fraction <= 1.0:
            raise ValueError(f"model_fraction must lie in (0, 1], got {model_fraction}")
        best = [int(k) for k in np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")]
        best = best[:max(n, int(np.ceil(model_fraction * count - 1e-9)))]
        rmsd = SymmetricRMSD(mol, np.asarray(positions)[best], polar_hydrogens=True)
        return [best[k] for k in farthest_point_order(rmsd, range(len(best)), n, start=0)]
    if select not in ("energy", "diverse"):
        raise ValueError(f"select must be one of {', '.join(SELECT_METHODS)}, got {select!r}")
    if select == "energy":
        if energies is None:
            raise ValueError("select='energy' needs energies")
        if not prune_rmsd >= 0:
            raise ValueError(f"prune_rmsd must be >= 0 (Å), got {prune_rmsd}")
    if not distinct_rmsd >= 0:
        raise ValueError(f"distinct_rmsd must be >= 0 (Å), got {distinct_rmsd}")
    order = list(np.argsort(energies, kind="stable")) if energies is not None else list(range(count))
    order = [int(k) for k in order]
    extra = 0 if unrelaxed is None else len(unrelaxed)
    stack = np.asarray(positions)[order]
    rmsd = SymmetricRMSD(mol, stack, polar_hydrogens=True)  # rows: candidates in energy order
    if select == "energy":
        kept: list[int] = []
        dmin = np.full(count, np.inf)   # RMSD from each candidate to the nearest kept one
        for k in range(count):
            if len(kept) == n:
                break
            if dmin[k] > prune_rmsd:
                kept.append(k)
                dmin = np.minimum(dmin, rmsd.from_one(k))
    else:
        inside = count
        if energies is not None:
            inside = max(n, sum(1 for k in order if energies[k] <= energies[order[0]] + energy_window))
        kept = farthest_point_order(rmsd, range(min(inside, count)), n, start=0,
                                    stop_within=distinct_rmsd if extra else None)
    if len(kept) < n and extra:   # only now the unrelaxed rows: most larger molecules never need them
        stack = np.concatenate([stack, np.asarray(unrelaxed, dtype=stack.dtype).reshape(extra, *stack.shape[1:])])
        rmsd = SymmetricRMSD(mol, stack, polar_hydrogens=True)
        kept = farthest_point_order(rmsd, range(count, count + extra), n, start=kept)
    if len(kept) < min(n, count):   # too few distinct ones: the farthest of the rest
        kept = farthest_point_order(rmsd, range(count), n, start=kept)
    return [order[k] if k < count else k for k in kept]


def relax_restrained(mol, positions: np.ndarray, forcefield: str, restraint: float | None,
                     max_iters: int = RESTRAINED_ITERS) -> tuple[np.ndarray, list[float | None]]:
    """Minimise conformers ``positions`` [K, n_atoms, 3] (Å) of ``mol`` with ``forcefield`` (``MMFF94`` or ``UFF``,
    as ``_relax`` chose it) while every heavy atom is held near where it started; returns the new positions and
    each conformer's energy (kcal/mol) by the force field alone (restraint terms excluded) at those positions.

    ``restraint``: the force constant k (kcal/mol/Å²) of a harmonic restraint E = k·d² on each heavy atom's
    displacement d from its starting position (RDKit's ``MMFFAddPositionConstraint`` / ``UFFAddPositionConstraint``
    with no flat bottom); None fixes the heavy atoms exactly (only the hydrogens move). After refinement the
    model's heavy atoms carry what it learned (torsions, ring puckers) but also errors of a few hundredths to
    tenths of an Å in bond lengths and angles, which cost many kcal/mol: a weak restraint lets the force field
    mend those stiff terms (they relax within a few hundredths of an Å) while the soft ones the model moved
    (torsions) stay close to the model's (about 0.1 Å of heavy-atom motion at k = 3).

    Positions unchanged and Nones for ``none`` or when the force field cannot be set up; a conformer whose
    minimisation fails (RDKit's BFGS can stop on a bad line-search direction) keeps its positions and gets its
    single-point energy. ValueError for a negative or non-finite ``restraint``.
    """
    from rdkit import Chem
    from rdkit.Chem import rdForceFieldHelpers as ff
    from rdkit.Geometry import Point3D

    if restraint is not None and not (np.isfinite(restraint) and restraint >= 0):
        raise ValueError(f"restraint must be a force constant >= 0 (kcal/mol/Å²) or None, got {restraint}")
    positions = np.array(positions, dtype=np.float64)
    if forcefield not in ENERGY_PROPS:
        return positions, [None] * len(positions)
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    m.AddConformer(Chem.Conformer(m.GetNumAtoms()), assignId=True)
    props = ff.MMFFGetMoleculeProperties(m, mmffVariant="MMFF94") if forcefield == "MMFF94" else None
    heavy = [a.GetIdx() for a in m.GetAtoms() if a.GetAtomicNum() > 1]

    def field_at(pos: np.ndarray):
        conf = m.GetConformer()
        for i, p in enumerate(pos.tolist()):
            conf.SetAtomPosition(i, Point3D(*p))
        return ff.MMFFGetMoleculeForceField(m, props) if props is not None else ff.UFFGetMoleculeForceField(m)

    energies: list[float | None] = []
    for k, pos in enumerate(positions):
        field = field_at(pos)
        if field is None:
            energies.append(None)
            continue
        for i in heavy:
            if restraint is None:
                field.AddFixedPoint(i)
            elif props is not None:
                field.MMFFAddPositionConstraint(i, 0.0, restraint)
            else:
                field.UFFAddPositionConstraint(i, 0.0, restraint)
        try:
            field.Minimize(maxIts=max_iters)
            positions[k] = m.GetConformer().GetPositions()
        except RuntimeError:   # keep the positions as they came
            field = field_at(pos)
        if restraint is not None:   # the energy without the restraint terms: a fresh field at the final positions
            field = field_at(positions[k])
        energies.append(float(field.CalcEnergy()))
    return positions, energies


def relax_hydrogens(mol, positions: np.ndarray, forcefield: str,
                    max_iters: int = HYDROGEN_ITERS) -> tuple[np.ndarray, list[float | None]]:
    """Minimise only the hydrogens of conformers ``positions`` [K, n_atoms, 3] (Å) of ``mol``, every heavy atom held
    fixed (``relax_restrained`` with ``restraint=None``); returns the new positions and the energies (kcal/mol)
    there. Positions unchanged and Nones for ``none`` or when the force field cannot be set up; a conformer whose
    minimisation fails keeps its hydrogens and gets its single-point energy."""
    return relax_restrained(mol, positions, forcefield, None, max_iters)


def _conformers_of(template, positions: Sequence[np.ndarray]):
    """A copy of ``template`` holding ``positions`` as conformers 0..K-1."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    mol = Chem.Mol(template)
    mol.RemoveAllConformers()
    for k, pos in enumerate(positions):
        conf = Chem.Conformer(mol.GetNumAtoms())
        for i, p in enumerate(np.asarray(pos, dtype=np.float64).tolist()):
            conf.SetAtomPosition(i, Point3D(*p))
        conf.Set3D(True)
        conf.SetId(k)
        mol.AddConformer(conf, assignId=False)
    return mol


class _Refined(NamedTuple):
    positions: list
    energies: list
    kept: list  # per candidate: True where the refined conformer replaced its seed


def energy_kind(restraint: float | None) -> str:
    """What the energy of a conformer after ``relax_restrained`` with ``restraint`` is (the ``energy_kind`` field)."""
    if restraint is None:
        return "hydrogens minimised, heavy atoms fixed"
    return f"restrained minimum (heavy atoms, k = {restraint:g} kcal/mol/A^2)"


def _refine_pool(molh, positions: list, energies: list, forcefield: str, settings: _ModelSettings, seed: int,
                 reference: StereoReference, fresh_noise: bool, restraint: float | None) -> _Refined:
    """Refine every candidate by partial diffusion, then minimise it with the force field, heavy atoms restrained
    to the refined positions (``relax_restrained`` with ``restraint``), when the candidates were relaxed; a
    refined candidate whose stereo no longer matches the input (or that is not finite) is replaced by its seed.
    Refined candidates get the energy of that restrained minimisation."""
    from .refine import refine_conformers

    refined = refine_conformers(settings.model, molh, np.stack(positions), sigma0=None, t0=settings.t0,
                                steps=settings.steps, sampler=settings.sampler, seed=seed,
                                batch_size=settings.batch_size, fresh_noise=fresh_noise, passes=settings.passes,
                                bf16=settings.bf16)
    finite = [bool(np.isfinite(x).all()) for x in refined]
    fresh: dict[int, float | None] = {}
    if any(finite):
        relaxed, values = relax_restrained(molh, refined[finite], forcefield, restraint)
        refined[finite] = relaxed
        fresh = dict(zip(np.flatnonzero(finite).tolist(), values))
    check = _conformers_of(molh, refined)
    ok = [finite[k] and check_conformer_stereo(check, k, reference) == "ok" for k in range(len(refined))]
    out_pos = [refined[k] if good else positions[k] for k, good in enumerate(ok)]
    out_e = [fresh.get(k) if good else energies[k] for k, good in enumerate(ok)]
    return _Refined(out_pos, out_e, ok)


def _model_source(model, steps: int | None, sampler: str, batch_size: int):
    """``_round``'s source for ``init="noise"``: adds ``count`` samples of the model to ``mol`` as conformers."""
    from rdkit.Geometry import Point3D

    from .refine import sample_conformers

    def source(mol, count: int, seed: int) -> list[int]:
        from rdkit import Chem

        samples = sample_conformers(model, mol, count, steps=steps, sampler=sampler, seed=seed,
                                    batch_size=batch_size)
        ids = []
        for pos in samples:
            if not np.isfinite(pos).all():
                continue
            conf = Chem.Conformer(mol.GetNumAtoms())
            for i, p in enumerate(pos.tolist()):
                conf.SetAtomPosition(i, Point3D(*p))
            conf.Set3D(True)
            ids.append(mol.AddConformer(conf, assignId=True))
        if not ids:
            raise ValueError(f"the model's {count} samples from noise were all non-finite")
        return ids

    return source


@dataclass(frozen=True)
class _ModelSettings:
    model: object
    t0: float | None  # None: no refinement
    steps: int | None
    sampler: str
    batch_size: int
    passes: int = 1
    bf16: bool = False


_SHIPPED_MODELS: dict = {}  # device → the shipped refiner, loaded once per process


def _shipped_model(device: str):
    """The shipped refiner on ``device`` (loaded once); ValueError when this installation has none."""
    if device not in _SHIPPED_MODELS:
        from .refine import load_refiner

        path = shipped_refiner()
        if path is None:
            raise ValueError(f"refiner='shipped', but this installation has no {SHIPPED_REFINER}.safetensors")
        _SHIPPED_MODELS[device] = load_refiner(path, device)
    return _SHIPPED_MODELS[device]


def _model_settings(refiner, sigma0, t0, steps, sampler, init, select, device, batch_size,
                    fresh_noise: bool = False, passes: int | None = None,
                    bf16: bool | None = None) -> _ModelSettings | None:
    """Check the model options and load the refiner (once per call); None without a refiner."""
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {', '.join(INIT_METHODS)}, got {init!r}")
    if isinstance(refiner, str) and refiner == "shipped":
        refiner = _shipped_model(device)
    if refiner is None:
        if init == "noise" or select == "model":
            what = "init='noise'" if init == "noise" else "select='model'"
            raise ValueError(f"{what} needs a model: give refiner (weights of a trained ConformerDiffusion)")
        if sigma0 is not None or t0 is not None or fresh_noise or passes is not None:
            raise ValueError("sigma0 / t0 / fresh_noise / passes set but no refiner given: refinement needs a "
                             "trained ConformerDiffusion")
        return None
    from ..diffusion import SAMPLERS
    from .refine import load_refiner, refine_time

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
    model = load_refiner(refiner, device)
    if steps is None:
        steps = NOISE_STEPS if init == "noise" else DEFAULT_STEPS
    if init == "noise":
        if model.config.t_max < 1.0:
            raise ValueError(f"init='noise' needs a model trained on all noise levels (t_max = 1); this refiner was "
                             f"trained up to t_max = {model.config.t_max} only")
        return _ModelSettings(model, None, steps, sampler, batch_size)
    if sigma0 == 0:
        return _ModelSettings(model, None, steps, sampler, batch_size)
    start = refine_time(model, DEFAULT_SIGMA0 if sigma0 is None and t0 is None else sigma0, t0)
    return _ModelSettings(model, start, steps, sampler, batch_size, DEFAULT_PASSES if passes is None else passes,
                          refiner_uses_bf16(model, bf16))


def refiner_uses_bf16(model, bf16: bool | None = None) -> bool:
    """Whether refinement runs under bf16 autocast: ``bf16`` when given, else where the model's device computes
    bf16 natively (CUDA, or a CPU with AVX-512 BF16 / AMX); emulated bf16 is slower than float32."""
    if bf16 is not None:
        return bool(bf16)
    from ..utils import native_bf16

    return native_bf16(next(model.parameters()).device)


def generate_conformers(mol_or_smiles, n: int = 10, seed: int = 0, pool: int = 3, relax: str = "mmff",
                        select: str = "diverse", max_atoms: int = 500, *, energy_window: float = 10.0,
                        prune_rmsd: float = DEFAULT_PRUNE_RMSD, top_up: str = "unrelaxed",
                        distinct_rmsd: float = DEFAULT_DISTINCT_RMSD, threads: int = 1, max_iters: int = 1000,
                        refiner=None, sigma0: float | None = None,
                        t0: float | None = None, steps: int | None = None, sampler: str = "ddim",
                        fresh_noise: bool = False, passes: int | None = None, bf16: bool | None = None,
                        init: str = "etkdg", device: str = "cpu", batch_size: int = 32,
                        restraint: float | None = DEFAULT_RESTRAINT, dedupe_rmsd: float = DEFAULT_DISTINCT_RMSD,
                        allow_unvalidated_elements: bool = False):
    """``n`` conformers of a molecule, with explicit hydrogens, as one ``rdkit.Chem.Mol``.

    Args:
        mol_or_smiles: a SMILES string or an ``rdkit.Chem.Mol`` (coordinates it has are ignored; its stereo, e.g.
            from a 3D SDF record, is what conformers must reproduce). Its name (``_Name``) is kept.
        n: conformers wanted (>= 1).
        seed: random seed (0 <= seed < 2**31); the same seed gives the same conformers.
        pool: candidates embedded per wanted conformer (``pool × n`` in all; >= 1).
        relax: ``"mmff"``: MMFF94 minimisation (UFF when MMFF94 lacks parameters, no relaxation when both do;
            noted in ``molediff_notes``); ``"none"``: ETKDGv3 geometries as they are (no energies).
        select: ``"diverse"``, ``"energy"`` (needs ``relax="mmff"``), ``"none"`` or ``"model"`` (needs a refiner;
            see ``select_conformers``).
        max_atoms: the largest molecule accepted, hydrogens included.
        energy_window: kcal/mol above the lowest candidate kept by ``"diverse"``.
        prune_rmsd: Å; ``"energy"`` keeps no two conformers closer than this (``select_conformers``).
        top_up: when ``"diverse"`` or ``"energy"`` finds fewer than n distinct relaxed candidates (small molecules:
            the force field collapses most candidates onto a few minima), ``"unrelaxed"`` fills the open slots
            with the most distinct candidates as ETKDGv3 embedded them, before relaxation (refined like the rest
            when there is a refiner; their hydrogens minimised with the heavy atoms fixed); ``"relaxed"`` with
            near-duplicates of the relaxed ones (session 6's pipeline). Relaxed candidates within
            ``distinct_rmsd`` Å of a chosen one count as duplicates (``"diverse"``). ``"unrelaxed"`` lowered the
            mean best-of-10 RMSD by 19 % on 150 QM9 valid molecules and by 0.5 % on 100 CCD tuning molecules
            (held out: 0.142 → 0.113 Å and 0.793 → 0.782 Å; BENCHMARKS.md, session 7).
        threads: threads for embedding and relaxation (0: all cores); torch's threads are the caller's.
        max_iters: force-field minimisation steps per candidate.
        refiner: None (the model-free pipeline), ``"shipped"`` (the shipped ``conformer_refiner`` weights, what
            ``molediff conformers`` uses by default; loaded once per process), a trained ``ConformerDiffusion`` or
            its weights (a ``.safetensors`` file or run directory, loaded on ``device`` at every call: pass the
            model to refine many molecules). With a refiner the chosen conformers are refined (step 5 of the
            module docstring).
        sigma0: where refinement starts, in Å: the schedule's σ at t₀ (default ``DEFAULT_SIGMA0`` = 0.45); 0 turns
            refinement off (the model then serves ``select="model"`` or ``init="noise"`` only).
        t0: the start time of refinement instead of ``sigma0`` (a grid time in (0, t_max]).
        steps: reverse sampler steps from t₀ to 0 in each refinement pass, or from t = 1 with ``init="noise"``
            (None: ``DEFAULT_STEPS`` = 3 per pass, ``NOISE_STEPS`` = 50 from noise; at most the grid steps there
            are).
        sampler: the core sampler (``ddim``, ``ddpm``, ``heun``, ``dpm2m``).
        fresh_noise: True adds SDEdit's noise of σ₀ to each conformer before refining; False (default) starts
            from the conformer itself, z_t₀ = α_t₀ x (``molediff.conformers.refine``).
        passes: refinement passes in a row, each from the previous output (None: ``DEFAULT_PASSES`` = 3).
        bf16: run the refiner under bfloat16 autocast (None: where the hardware computes bf16 natively, CUDA or
            a CPU with AVX-512 BF16 / AMX; there it is about 2× faster, and on the tuning sets the best-of-10
            RMSD moved by less than 0.001 Å). Outputs then differ by about 0.01–0.03 Å between machines with
            and without native bf16.
        init: ``"etkdg"`` (ETKDGv3 candidates) or ``"noise"`` (the model's samples from N(0, I); needs a model
            trained up to t = 1; candidates are then relaxed and checked as ETKDG's, and not refined again).
        device: where a refiner given as weights is loaded (``cpu``, ``cuda``).
        batch_size: conformers per model call.

    Returns:
        A Mol with hydrogens and up to ``n`` conformers (ids 0..n-1 in selection order). Each conformer has the int
        property ``conformer_index`` and, when relaxed, ``MMFF94_energy_kcal_mol`` (or ``UFF_energy_kcal_mol``) in
        kcal/mol (after refinement: with only the hydrogens minimised); with ``select="model"`` also
        ``model_score``. Mol properties: ``molediff_stereo_fixed`` / ``molediff_stereo_dropped`` (candidates
        mirrored / discarded by the stereo check), ``molediff_candidates`` (candidates embedded),
        ``molediff_forcefield`` (MMFF94, UFF or none), ``molediff_refined`` / ``molediff_refine_reverted``
        (conformers refined / put back to their seed because refinement broke their stereo),
        ``molediff_unrelaxed`` (conformers that are unrelaxed candidates, ``top_up``), ``molediff_init``,
        ``molediff_notes`` ("; "-separated, may be empty; e.g. why a molecule the model cannot read was not
        refined). Fewer than ``n`` conformers only when fewer candidates embedded with the right stereo (noted).

    Raises:
        ValueError (one line) for bad arguments (including model options: σ₀ beyond the refiner's training
        times, ``init="noise"`` with a refiner trained only on low noise, ``select="model"`` or ``init="noise"``
        without a model, ``refiner="shipped"`` without shipped weights), an unparsable SMILES, an empty
        molecule, an unsupported element (dummy atoms, Z > 103), a disconnected input (salts), more than
        ``max_atoms`` atoms, embedding failure also from random coordinates, a molecule the model cannot read
        with ``init="noise"``, or no candidate with the input's stereochemistry.
        FileNotFoundError for refiner weights that do not exist.
    """
    from rdkit import Chem, rdBase
    from rdkit.Geometry import Point3D

    if n < 1 or pool < 1:
        raise ValueError(f"n and pool must be at least 1, got n={n}, pool={pool}")
    if not 0 <= seed < 2**31:
        raise ValueError(f"seed must be in 0..2**31-1, got {seed}")
    if relax not in RELAX_METHODS:
        raise ValueError(f"relax must be one of {', '.join(RELAX_METHODS)}, got {relax!r}")
    if select not in SELECT_METHODS:
        raise ValueError(f"select must be one of {', '.join(SELECT_METHODS)}, got {select!r}")
    if select == "energy" and relax == "none":
        raise ValueError("select='energy' needs energies: use relax='mmff'")
    if not prune_rmsd >= 0 or not distinct_rmsd >= 0:
        raise ValueError(f"prune_rmsd and distinct_rmsd must be >= 0 (Å), got {prune_rmsd} and {distinct_rmsd}")
    if top_up not in TOP_UP_METHODS:
        raise ValueError(f"top_up must be one of {', '.join(TOP_UP_METHODS)}, got {top_up!r}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: all cores), got {threads}")
    if restraint is not None and not (np.isfinite(restraint) and restraint >= 0):
        raise ValueError(f"restraint must be a force constant >= 0 (kcal/mol/Å²) or None, got {restraint}")
    if not dedupe_rmsd >= 0:
        raise ValueError(f"dedupe_rmsd must be >= 0 (Å), got {dedupe_rmsd}")
    settings = _model_settings(refiner, sigma0, t0, steps, sampler, init, select, device, batch_size, fresh_noise,
                               passes, bf16)
    if isinstance(mol_or_smiles, str):
        mol = parse_smiles(mol_or_smiles)
    elif isinstance(mol_or_smiles, Chem.Mol):
        mol = Chem.Mol(mol_or_smiles)
    else:
        raise ValueError(f"expected a SMILES string or an rdkit.Chem.Mol, got {type(mol_or_smiles).__name__}")
    unvalidated = _check_atoms(mol, max_atoms, allow_unvalidated_elements)  # before adding H: names the input's atoms
    notes: list[str] = []
    if unvalidated:
        notes.append(f"UNVALIDATED: contains {', '.join(unvalidated)}, whose geometry the force fields do not model "
                     f"(allow_unvalidated_elements)")
    with rdBase.BlockLogs():  # UFF typer warnings and the like would interleave with the caller's output
        molh = Chem.AddHs(mol)
        _check_atoms(molh, max_atoms)  # the count with hydrogens
        molh.RemoveAllConformers()
        reference = stereo_reference(molh)
        model_ok = settings is not None
        if model_ok:
            from .refine import model_inputs

            try:
                model_inputs(settings.model, molh)
            except ValueError as e:
                if init == "noise":
                    raise ValueError(f"the model cannot take this molecule: {e}") from None
                model_ok = False
                notes.append(f"not {'refined' if settings.t0 is not None else 'scored'} by the model: {e}")
        source = _model_source(settings.model, settings.steps, settings.sampler, settings.batch_size) \
            if init == "noise" else None
        rounds = [_round(molh, pool * n, n, seed, relax, threads, max_iters, reference, notes, source)]
        if len(rounds[0].positions) < n and rounds[0].dropped:
            # replace dropped candidates with one more round under another seed (one no user seed maps to)
            with contextlib.suppress(ValueError):  # that round embedding nothing leaves the first round's
                rounds.append(_round(molh, pool * n, n, seed + 2**31, relax, threads, max_iters, reference, [],
                                     source))
        positions = [p for r in rounds for p in r.positions]
        energies = [e for r in rounds for e in r.energies]
        fixed, dropped = sum(r.fixed for r in rounds), sum(r.dropped for r in rounds)
        if not positions:
            raise ValueError(f"no conformer with the input's stereochemistry: all {dropped} candidates had inverted "
                             f"or flat centres or wrong double bonds")
        forcefield = rounds[0].forcefield
        scores = None
        if select == "model":
            if model_ok:
                from .scoring import score_conformers

                scores = score_conformers(settings.model, molh, np.stack(positions), seed=seed,
                                          batch_size=max(settings.batch_size, 1))
            else:
                notes.append("selected by 'diverse' instead of 'model'")
        known = energies if all(e is not None for e in energies) else None
        how = select if select != "model" or scores is not None else "diverse"
        unrelaxed = [p for r in rounds for p in r.unrelaxed] if top_up == "unrelaxed" and how != "model" else []
        chosen = select_conformers(molh, np.stack(positions), known, n, how, energy_window, scores,
                                   prune_rmsd=prune_rmsd, unrelaxed=np.stack(unrelaxed) if unrelaxed else None,
                                   distinct_rmsd=distinct_rmsd)
        positions += unrelaxed   # chosen indices past the candidates refer to these
        energies += [None] * len(unrelaxed)
        kinds = {j: "minimum" for j in chosen if energies[j] is not None}
        refined = reverted = 0
        if model_ok and settings.t0 is not None:
            # only the chosen n are refined: refinement moves atoms by about σ₀, far less than the RMSD between
            # the candidates selection tells apart, and refining the whole pool would cost pool times more
            result = _refine_pool(molh, [positions[j] for j in chosen], [energies[j] for j in chosen], forcefield,
                                  settings, seed, reference, fresh_noise, restraint)
            for k, j in enumerate(chosen):
                positions[j], energies[j] = result.positions[k], result.energies[k]
                if result.kept[k] and forcefield in ENERGY_PROPS:
                    kinds[j] = energy_kind(restraint)
            refined, reverted = sum(result.kept), len(result.kept) - sum(result.kept)
            if reverted:
                notes.append(f"{reverted} refined conformer{'s' if reverted != 1 else ''} lost the input's stereo: "
                             f"kept unrefined")
        bare = [j for j in chosen if energies[j] is None]
        if bare and forcefield in ENERGY_PROPS:
            # unrelaxed top-ups left unrefined: minimised like refined ones, heavy atoms restrained where ETKDGv3
            # put them (they keep their rotamer or pucker, and get a force-field geometry and an honest energy)
            placed, values = relax_restrained(molh, np.stack([positions[j] for j in bare]), forcefield, restraint)
            for j, pos, e in zip(bare, placed, values):
                positions[j], energies[j], kinds[j] = pos, e, energy_kind(restraint)
        if len(chosen) < n:
            why = "embedded" + (" with the input's stereo" if dropped else "")
            notes.append(f"only {len(chosen)} of {n} conformers: too few candidates {why}")
        if dedupe_rmsd > 0 and len(chosen) > 1:
            # refinement and minimisation can bring conformers of a rigid molecule together: write each once
            rmsd = SymmetricRMSD(molh, np.stack([positions[j] for j in chosen]), polar_hydrogens=True)
            keep = []
            for k in range(len(chosen)):
                if not keep or rmsd.from_one(k)[keep].min() >= dedupe_rmsd:
                    keep.append(k)
            if len(keep) < len(chosen):
                notes.append(f"{len(chosen) - len(keep)} near-cop{'ies' if len(chosen) - len(keep) != 1 else 'y'} "
                             f"(RMSD < {dedupe_rmsd:g} A) left out: only {len(keep)} distinct conformer"
                             f"{'s' if len(keep) != 1 else ''}")
                chosen = [chosen[k] for k in keep]
    key = ENERGY_PROPS.get(forcefield)
    out = Chem.Mol(molh)
    for k, j in enumerate(chosen):
        conf = Chem.Conformer(out.GetNumAtoms())
        for i, p in enumerate(np.asarray(positions[j]).tolist()):
            conf.SetAtomPosition(i, Point3D(*p))
        conf.Set3D(True)
        conf.SetId(k)
        conf.SetIntProp("conformer_index", k)
        if key is not None and energies[j] is not None:
            conf.SetDoubleProp(key, energies[j])
            conf.SetProp(ENERGY_KIND_PROP, kinds.get(j, "minimum"))
        if scores is not None:
            conf.SetDoubleProp(SCORE_PROP, float(scores[j]))
        out.AddConformer(conf, assignId=False)
    out.SetIntProp("molediff_stereo_fixed", fixed)
    out.SetIntProp("molediff_stereo_dropped", dropped)
    out.SetIntProp("molediff_candidates", sum(r.embedded for r in rounds))
    out.SetIntProp("molediff_refined", refined)
    out.SetIntProp("molediff_refine_reverted", reverted)
    out.SetIntProp("molediff_unrelaxed", sum(1 for j in chosen if j >= len(positions) - len(unrelaxed)))
    out.SetProp("molediff_forcefield", forcefield)
    out.SetProp("molediff_init", init)
    out.SetProp("molediff_notes", "; ".join(notes))
    return out


# ------------------------------------------------------------------------------------------ inputs and outputs
class InputMolecule(NamedTuple):
    """One input record: its name, the parsed molecule (None if unusable) and the reason it is unusable."""

    name: str
    mol: object | None
    error: str | None = None


def input_kind(source: str) -> str:
    """``"smi"``, ``"sdf"`` or ``"smiles"`` (a SMILES string itself) for a command-line INPUT.

    A path that exists is a file and needs a known suffix; a string that ends in a file suffix but names no file
    is a missing file. Raises FileNotFoundError / ValueError for those.
    """
    lower = source.lower()
    is_file = os.path.isfile(source)
    if lower.endswith(SMILES_SUFFIXES):
        kind = "smi"
    elif lower.endswith(SDF_SUFFIXES):
        kind = "sdf"
    elif is_file or os.path.isdir(source):
        raise ValueError(f"{source}: unknown input type; give a SMILES string, a .smi/.smiles file or a "
                         f".sdf/.sd/.mol file (optionally .gz)")
    else:
        return "smiles"
    if not is_file:
        raise FileNotFoundError(f"input file {source} does not exist")
    return kind


def _read_file(path: str | os.PathLike) -> tuple[str, tuple[str, str] | None]:
    """Text of a file as molediff's readers decode it (``.gz``, byte-order marks, line endings), and the problem of a
    cut-off ``.gz`` (or None). ValueError naming the file when it cannot be read at all."""
    from ..chem.io import read_text

    try:
        return read_text(Path(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _from_smiles(smiles: str, name: str) -> InputMolecule:
    try:
        mol = parse_smiles(smiles)
    except ValueError as e:
        return InputMolecule(name, None, str(e))
    mol.SetProp("_Name", name)
    return InputMolecule(name, mol)


def read_smiles_file(path: str | os.PathLike) -> list[InputMolecule]:
    """Molecules of a SMILES file: ``SMILES [name]`` per line; blank lines, ``#`` comments and a header line whose
    first word is ``smiles`` are skipped. Unnamed molecules are called ``mol_<k>`` (k counts molecules from 1)."""
    from ..chem.io import text_lines

    text, problem = _read_file(path)
    out = []
    for line in text_lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(maxsplit=1)
        if not out and parts[0].lower() in ("smiles", "smi"):
            continue
        name = parts[1].strip() if len(parts) > 1 else f"mol_{len(out) + 1}"
        out.append(_from_smiles(parts[0], name))
    if problem is not None:
        out.append(InputMolecule(Path(path).name, None, f"file is truncated: {problem[1]}"))
    return out


def read_sdf_file(path: str | os.PathLike) -> list[InputMolecule]:
    """Molecules of an SDF file (2D, 3D or no coordinates; ``.gz`` allowed), with hydrogens and stereo as RDKit
    reads them (3D records: stereo from the coordinates; 2D: from wedges). The title is the name, ``mol_<k>`` when
    empty. Records that cannot be read are returned with molediff's reader's reason (``molediff.chem.io``); a file
    that cannot be read at all raises ValueError."""
    from rdkit import Chem

    from ..chem.io import precheck_molblock, rdkit_errors, split_sdf, text_lines

    text, problem = _read_file(path)
    out = []
    for k, (block, _) in enumerate(split_sdf(text_lines(text, cut=problem is not None)), start=1):
        name = (block[0].strip() if block else "") or f"mol_{k}"
        reason = precheck_molblock(block)
        if reason is None:
            with rdkit_errors() as messages:
                mol = Chem.MolFromMolBlock("\n".join(block) + "\n", sanitize=True, removeHs=False)
            if mol is None:
                reason = f"RDKit could not read the record: {_rdkit_reason(messages) or 'no message from RDKit'}"
        if reason is not None:
            out.append(InputMolecule(name, None, reason))
            continue
        mol.SetProp("_Name", name)
        out.append(InputMolecule(name, mol))
    if not out:
        out.append(InputMolecule(Path(path).name, None, "empty file (no records)"))
    if problem is not None:
        out.append(InputMolecule(Path(path).name, None, f"file is truncated: {problem[1]}"))
    return out


def read_inputs(source: str) -> list[InputMolecule]:
    """The molecules named by a command-line INPUT: a SMILES string (optionally followed by a name), a ``.smi``
    file or an SDF file (see ``input_kind``, ``read_smiles_file``, ``read_sdf_file``)."""
    kind = input_kind(source)
    if kind == "smi":
        return read_smiles_file(source)
    if kind == "sdf":
        return read_sdf_file(source)
    parts = source.strip().split(maxsplit=1)
    return [_from_smiles(source, parts[1] if len(parts) > 1 else "mol_1")]


def sd_writer(path: str | os.PathLike):
    """An ``rdkit.Chem.SDWriter`` for ``write_sd_records``: it writes only the fields ``conformer_index`` and the
    energies (not the ``molediff_*`` bookkeeping properties)."""
    from rdkit import Chem

    writer = Chem.SDWriter(str(path))
    # missing ones are skipped per record
    writer.SetProps(["conformer_index", *ENERGY_PROPS.values(), ENERGY_KIND_PROP, SCORE_PROP])
    return writer


def write_sd_records(writer, mol, name: str, hydrogens: bool = True) -> int:
    """Write each conformer of ``mol`` (from ``generate_conformers``) as one SD record titled ``name`` with the
    fields ``conformer_index``, its energy in kcal/mol and its ``model_score`` (when it has them);
    ``hydrogens=False`` strips hydrogens first. ``writer``: from ``sd_writer``. Returns the number of records
    written."""
    from rdkit import Chem

    out = Chem.RemoveHs(mol) if not hydrogens else Chem.Mol(mol)
    out.SetProp("_Name", name.replace("\n", " "))
    written = 0
    for conf in out.GetConformers():
        props = conf.GetPropsAsDict()
        out.SetIntProp("conformer_index", int(props.get("conformer_index", written)))
        for key in ENERGY_PROPS.values():
            if key in props:
                out.SetProp(key, f"{props[key]:.4f}")
        if ENERGY_KIND_PROP in props:
            out.SetProp(ENERGY_KIND_PROP, str(props[ENERGY_KIND_PROP]))
        if SCORE_PROP in props:
            out.SetProp(SCORE_PROP, f"{props[SCORE_PROP]:.5f}")
        writer.write(out, confId=conf.GetId())
        written += 1
    return written
