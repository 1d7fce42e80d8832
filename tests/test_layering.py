"""The package's layering: imports point down only, no module cycle, every module imports on its own, chem stands
alone beside data, and tests/ mirrors the package's folders.

Layers (ARCHITECTURE): utils → core (diffusion) and chemistry (chem) → data, nn, training → point-cloud layer →
domains (molecules, conformers) → commands. Imports inside functions count: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import molediff

PACKAGE_DIR = Path(molediff.__file__).resolve().parent

# Higher layers may import lower ones and their own layer's package; never the other way.
LAYER = {
    "utils": 0,
    "diffusion": 1, "chem": 1,
    "data": 2, "nn": 2, "training": 2, "testing": 2, "toy": 2,
    "pointcloud": 3,
    "molecules": 4, "conformers": 4, "proteins": 4, "images": 4,
    "commands": 5, "cli": 5,
    "train": 6,  # the `python -m molediff.train` entry point over the CLI
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    root = PACKAGE_DIR.parent
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """module → the package modules it imports (anywhere in the file)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # "from package import submodule" depends on the submodule itself
                targets = [f"{source}.{a.name}" if _is_module(f"{source}.{a.name}") else source for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t == "molediff" or t.startswith("molediff."))
        edges.discard(name)
        graph[name] = edges
    return graph


def _layer(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return parts[1], LAYER[parts[1]]


def test_every_top_level_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE_DIR.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert tops <= set(LAYER), f"place {sorted(tops - set(LAYER))} in the LAYER table (and ARCHITECTURE.md)"


def test_imports_point_down_only():
    wrong = []
    for module, targets in import_graph().items():
        here = _layer(module)
        for target in targets:
            there = _layer(target)
            if here is None or there is None or here[0] == there[0]:
                continue
            if there[1] >= here[1]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that do not point down a layer: " + ", ".join(sorted(wrong))


def test_chem_and_data_have_one_direction():
    graph = import_graph()
    chem_to_data = [f"{m} -> {t}" for m, ts in graph.items() if m.startswith("molediff.chem")
                    for t in ts if t.startswith("molediff.data")]
    assert not chem_to_data, chem_to_data


def test_chem_never_imports_other_molediff_packages():
    """``molediff.chem`` stands alone on ``utils``: ``molediff.data`` builds on it, never the reverse."""
    for module, targets in sorted(import_graph().items()):
        if module == "molediff.chem" or module.startswith("molediff.chem."):
            inner = sorted(t for t in targets if t.startswith("molediff.")
                           and not t.startswith(("molediff.chem", "molediff.utils")))
            assert inner == [], f"{module} imports {inner}"


@pytest.mark.slow
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


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.slow
def test_every_module_imports_in_a_fresh_interpreter():
    modules = sorted(m for m in import_graph() if not m.endswith("__main__"))
    code = f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_tests_mirror_the_package_folders():
    """Every package folder of molediff/ has a test folder of the same name under tests/ holding at least one test
    module, so a test goes beside the tests of the layer it checks (ARCHITECTURE.md: where a test goes)."""
    tests = Path(__file__).resolve().parent
    packages = sorted(p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file())
    assert {"diffusion", "nn", "training", "chem", "data", "molecules", "conformers", "proteins", "images",
            "commands"} <= set(packages)
    missing = [name for name in packages if not any((tests / name).glob("test_*.py"))]
    assert not missing, f"add tests/{'/, tests/'.join(missing)}/ with the tests of those packages"
