"""Stereochemistry of conformers: what the input specifies (``stereo_reference``), whether a conformer reproduces
it (``check_conformer_stereo``, from its 3D coordinates), and mirroring conformers whose every centre is inverted
(``enforce_stereo``). Tetrahedral centres and double bonds (E/Z, or cis/trans for unlabelled ones) are checked;
allenes, atropisomers, square-planar centres and enhanced stereo groups are not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


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
    conf = mol.GetConformer(conf_id)
    conf.SetPositions(conf.GetPositions() * np.array([-1.0, 1.0, 1.0]))


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
