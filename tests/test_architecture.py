"""The layer rules of docs/ARCHITECTURE.md, read from the source: every import, module-level or inside a function.

cli.py -> application/ -> present/ and calibration/ -> sim/ (core). Nothing below the application writes
run directories, opens progress bars or prints; calibration/ never imports presentation or the application;
sim/ never imports calibration/, present/ or application/.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("sim", "calibration", "present")
MAX_LINES = 600
# the sim core calibration/ may use: the model is the interface between them
CORE = ("sim.model", "sim.exact", "sim.errors", "sim.engines", "sim.limits", "sim.tomlio", "sim.defaults",
        "sim._version", "sim.scenario", "sim.uncertainty", "sim.rounding", "sim.records", "sim.forecast",
        "sim.arrivals", "sim.phases")
PRESENTATION_ONLY = ("rich", "typer", "click", "tqdm")


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(package: str, forbidden) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {name}" for path in modules(package)
            for name in sorted(imports(path)) if forbidden(name)]


def test_sim_imports_no_layer_above_it():
    assert offenders("sim", lambda n: under(n, ("calibration", "application", "present", "cli"))) == []


def test_calibration_imports_only_the_sim_core():
    bad = offenders("calibration", lambda n: under(n, ("application", "present", "cli"))
                    or (under(n, ("sim",)) and n != "sim" and not under(n, CORE)))
    assert bad == []


def test_presentation_never_imports_the_application():
    assert offenders("present", lambda n: under(n, ("application", "cli"))) == []


@pytest.mark.parametrize("package", LIBRARIES)
def test_libraries_neither_print_nor_show_progress(package):
    assert offenders(package, lambda n: under(n, PRESENTATION_ONLY)) == []
    printing = [str(path.relative_to(ROOT)) for path in modules(package)
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert printing == []


@pytest.mark.parametrize("package", (*LIBRARIES, "application"))
def test_no_module_is_too_long(package):
    long = {str(p.relative_to(ROOT)): n for p in modules(package) if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_cli_only_parses_and_delegates():
    allowed = ("typer", "application", "sim.errors", "sim.defaults", "sim._version", "sim")
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = [n for n in imports(ROOT / "cli.py") if n.split(".")[0] not in stdlib and not under(n, allowed)]
    assert bad == []


def test_cli_loads_no_numerical_library():
    code = "import sys, cli; bad = [m for m in ('numpy', 'pandas', 'pyarrow', 'scipy') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
