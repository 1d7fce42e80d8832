"""Element symbols and atomic numbers without RDKit (so saved datasets load anywhere)."""

from __future__ import annotations

SYMBOLS: tuple[str, ...] = (
    "*", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar",
    "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr",
    "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe",
    "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu",
    "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra",
    "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db",
    "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)
"""``SYMBOLS[z]`` is the symbol of atomic number ``z`` (1..118); index 0 is a placeholder, not an element."""

_NUMBER = {s.upper(): z for z, s in enumerate(SYMBOLS) if z > 0}
_NUMBER["D"] = 1  # deuterium, common in files
_NUMBER["T"] = 1

ORGANIC_ELEMENTS: tuple[int, ...] = (1, 6, 7, 8, 9, 15, 16, 17, 35, 53)
"""H, C, N, O, F, P, S, Cl, Br, I: the elements kept from the Chemical Component Dictionary."""


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol (case-insensitive, D/T count as H); ValueError if unknown."""
    z = _NUMBER.get(symbol.strip().upper())
    if z is None:
        raise ValueError(f"unknown element {symbol.strip()!r}")
    return z


def symbol(z: int) -> str:
    """Element symbol of atomic number ``z``; ValueError outside 1..118."""
    if not 1 <= int(z) < len(SYMBOLS):
        raise ValueError(f"no element with atomic number {z}")
    return SYMBOLS[int(z)]


METALS = frozenset([3, 4, 11, 12, 13, *range(19, 32), *range(37, 51), *range(55, 85), *range(87, 119)])
"""Atomic numbers of the metals (alkali, alkaline earth, Al, transition metals, lanthanides, actinides, and the
post-transition metals Ga, Ge, In, Sn, Sb, Tl, Pb, Bi, Po)."""
