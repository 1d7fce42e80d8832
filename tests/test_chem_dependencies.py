"""``molediff.chem`` stands alone: ``molediff.data`` builds on it, never the reverse."""

import ast
import subprocess
import sys
from pathlib import Path

import molediff.chem

CHEM = Path(molediff.chem.__file__).parent


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of everything ``path`` imports (also inside functions), relative imports resolved."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative to the package molediff.chem: "." is molediff.chem, ".." is molediff
                base = ["molediff", "chem"][:3 - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def test_chem_never_imports_other_molediff_packages():
    for path in sorted(CHEM.glob("*.py")):
        inner = [m for m in _imported_modules(path) if m.startswith("molediff.")
                 and not m.startswith(("molediff.chem", "molediff.utils"))]
        assert inner == [], f"{path.name} imports {inner}"


def test_importing_chem_loads_no_data_module():
    code = ("import sys, molediff.chem, molediff.chem.molecule, molediff.chem.elements, molediff.chem.conformers, "
            "molediff.chem.physics, molediff.chem.sascore; "
            "print(sorted(m for m in sys.modules if m.startswith('molediff.data')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_data_reexports_the_chem_molecule_types():
    from molediff.chem.molecule import Molecule, MoleculeDataset
    from molediff.data import Molecule as DataMolecule
    from molediff.data import MoleculeDataset as DataMoleculeDataset

    assert DataMolecule is Molecule and DataMoleculeDataset is MoleculeDataset
