"""Force-field steps of the conformer pipeline: relaxing candidates with MMFF94 (Halgren, J. Comput. Chem. 1996, 17,
490), or UFF (Rappé et al., J. Am. Chem. Soc. 1992, 114, 10024) where MMFF94 has no parameters
(``relax_candidates``), and minimising refined conformers with their heavy atoms restrained (``relax_restrained``)
or fixed (``relax_hydrogens``). Energies are in kcal/mol, positions in Å."""

from __future__ import annotations

import numpy as np

ENERGY_PROPS = {"MMFF94": "MMFF94_energy_kcal_mol", "UFF": "UFF_energy_kcal_mol"}
ENERGY_KIND_PROP = "energy_kind"  # SD field: what the written energy is (a minimum, restrained, hydrogens only)
MINIMUM = "minimum"  # energy_kind of a candidate relaxed by the force field without restraints
DEFAULT_RESTRAINT = 10.0  # kcal/mol/Å²: heavy atoms held to the refined positions while the force field minimises
HYDROGEN_ITERS = 200  # force-field steps that re-place the hydrogens of a refined conformer
RESTRAINED_ITERS = 1000  # force-field steps of the restrained minimisation after refinement


def choose_forcefield(mol, relax: str, notes: list[str]) -> str:
    """The force field for ``mol``: ``MMFF94`` where it has parameters for every atom, else ``UFF`` (noted), else
    ``none`` (noted); ``none`` also for ``relax="none"``."""
    from rdkit.Chem import rdForceFieldHelpers as ff

    if relax == "none":
        return "none"
    if ff.MMFFHasAllMoleculeParams(mol):
        return "MMFF94"
    if ff.UFFHasAllMoleculeParams(mol):
        notes.append("MMFF94 has no parameters for this molecule: relaxed with UFF")
        return "UFF"
    notes.append("neither MMFF94 nor UFF has parameters for this molecule: conformers are not relaxed")
    return "none"


def relax_candidates(mol, relax: str, threads: int, max_iters: int, notes: list[str]) -> tuple[str, dict[int, float]]:
    """Relax every conformer of ``mol`` in place; returns the force field used (``MMFF94``, ``UFF`` or ``none``) and
    the energy (kcal/mol) per conformer id."""
    from rdkit.Chem import rdForceFieldHelpers as ff

    if mol.GetNumConformers() == 0:
        return "none", {}
    name = choose_forcefield(mol, relax, notes)
    ids = [c.GetId() for c in mol.GetConformers()]
    if name == "MMFF94":
        results = ff.MMFFOptimizeMoleculeConfs(mol, numThreads=threads, maxIters=max_iters, mmffVariant="MMFF94")
    elif name == "UFF":
        results = ff.UFFOptimizeMoleculeConfs(mol, numThreads=threads, maxIters=max_iters)
    else:
        return "none", {}
    unconverged = sum(1 for flag, _ in results if flag != 0)
    if unconverged:
        notes.append(f"{unconverged} of {len(results)} candidates did not converge in {max_iters} {name} steps")
    return name, {cid: float(e) for cid, (_, e) in zip(ids, results)}


def relax_restrained(mol, positions: np.ndarray, forcefield: str, restraint: float | None,
                     max_iters: int = RESTRAINED_ITERS) -> tuple[np.ndarray, list[float | None]]:
    """Minimise conformers ``positions`` [K, n_atoms, 3] (Å) of ``mol`` with ``forcefield`` (``MMFF94`` or ``UFF``,
    as ``_relax`` chose it) while every heavy atom is held near where it started; returns the new positions and
    each conformer's energy (kcal/mol) by the force field alone (restraint terms excluded) at those positions.

    ``restraint``: the force constant k (kcal/mol/Å²) of a harmonic restraint E = k·d² on each heavy atom's
    displacement d from its starting position (RDKit's ``MMFFAddPositionConstraint`` / ``UFFAddPositionConstraint``
    with no flat bottom); 0 is a plain minimisation; None fixes the heavy atoms exactly (only the hydrogens move).
    After refinement the model's heavy atoms carry what it learned (torsions, ring puckers) but also errors of a
    few hundredths to tenths of an Å in bond lengths and angles, which cost many kcal/mol: a weak restraint lets
    the force field mend those stiff terms (they relax within a few hundredths of an Å) while the soft ones the
    model moved (torsions) stay close to the model's (about 0.1 Å of heavy-atom motion at k = 3).

    Positions unchanged and Nones for ``none`` or when the force field cannot be set up; a conformer whose
    minimisation fails (RDKit's BFGS can stop on a bad line-search direction) keeps its positions and gets its
    single-point energy. ValueError for a negative or non-finite ``restraint``.
    """
    from rdkit import Chem
    from rdkit.Chem import rdForceFieldHelpers as ff

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
        m.GetConformer().SetPositions(np.asarray(pos, dtype=np.float64))
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
            elif restraint == 0:   # a plain minimisation
                break
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


def energy_kind(restraint: float | None) -> str:
    """What the energy of a conformer after ``relax_restrained`` with ``restraint`` is (the ``energy_kind`` field)."""
    if restraint is None:
        return "hydrogens minimised, heavy atoms fixed"
    if restraint == 0:
        return MINIMUM
    return f"restrained minimum (heavy atoms, k = {restraint:g} kcal/mol/A^2)"


def transfer_torsions(mol, seeds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Conformers with the bond lengths and angles of ``seeds`` and the acyclic torsions of ``targets`` (both
    [K, n_atoms, 3], Å, conformers of ``mol``): every rotatable bond of the seed (a single, non-ring bond between
    two atoms with other neighbours) is turned to the target's dihedral (RDKit ``SetDihedralRad``, which moves the
    smaller side). Ring conformations and the torsions of terminal groups stay the seed's. Returns [K, n_atoms, 3]
    float64."""
    from rdkit import Chem
    from rdkit.Chem import rdMolTransforms

    from ..chem.bonds import rdkit_conformer

    pattern = Chem.MolFromSmarts("[!D1;!$(*#*)]-&!@[!D1;!$(*#*)]")
    torsions = []
    for i, j in mol.GetSubstructMatches(pattern):
        a = next(n.GetIdx() for n in mol.GetAtomWithIdx(i).GetNeighbors() if n.GetIdx() != j)
        b = next(n.GetIdx() for n in mol.GetAtomWithIdx(j).GetNeighbors() if n.GetIdx() != i)
        torsions.append((a, i, j, b))
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    out = np.array(seeds, dtype=np.float64)
    for k, (seed, target) in enumerate(zip(seeds, targets)):
        m.RemoveAllConformers()
        m.AddConformer(rdkit_conformer(target), assignId=True)
        wanted = [rdMolTransforms.GetDihedralRad(m.GetConformer(), *t) for t in torsions]
        m.RemoveAllConformers()
        m.AddConformer(rdkit_conformer(seed), assignId=True)
        conf = m.GetConformer()
        for t, value in zip(torsions, wanted):
            rdMolTransforms.SetDihedralRad(conf, *t, value)
        out[k] = conf.GetPositions()
    return out
