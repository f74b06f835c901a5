"""The import layers the packages cannot express to import-linter: the single-file modules.

`lint-imports` (pyproject.toml, run by `make lint`) checks the packages; import-linter only takes
packages as roots, so main.py (the top) and errors.py / logs.py (the ground floor) are checked here.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "migrations", "handlers", "app", "engine", "pipeline", "adapters", "database", "config",
            "values")
PROJECT = {*PACKAGES, "main", "errors", "logs"}


def imported_roots(path: Path) -> set[str]:
    """Top-level project modules imported by a file: lazily, under TYPE_CHECKING or not."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots & PROJECT


def test_ground_modules_import_no_project_module() -> None:
    for name in ("errors.py", "logs.py"):
        assert imported_roots(ROOT / name) == set(), f"{name} is on the ground floor: it imports nothing of CAF"


def test_only_the_cli_imports_main() -> None:
    offenders = [str(path.relative_to(ROOT)) for package in PACKAGES if package != "cli"
                 for path in sorted((ROOT / package).rglob("*.py")) if "main" in imported_roots(path)]
    assert offenders == [], "main.py is the top of the layers: only cli/ may import it"


def test_every_package_is_in_the_contract_and_the_readme_layout() -> None:
    """A new top-level package is checked by import-linter and named in the README's layout."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert packages == set(config["root_packages"]) == set(PACKAGES)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):readme.index("## Documentation")]
    assert [name for name in sorted(PROJECT) if f"\n{name}" not in layout] == []
