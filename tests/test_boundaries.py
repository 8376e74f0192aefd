"""The layers' boundaries, read from the source: Ray stays in its executor and the Tune module, and components
use the engine only through its public API (mmflow.engine)."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

RAY_MODULES = {"engine/ray_executor.py", "engine/tune.py"}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def test_only_the_ray_executor_and_the_tune_module_import_ray():
    importers = {str(p.relative_to(REPO)) for p in sources("engine", "components")
                 if any(m == "ray" or m.startswith("ray.") for m in imported_modules(p))}
    assert importers == RAY_MODULES


def test_components_import_the_engine_only_through_its_public_api():
    reaching_in = {str(p.relative_to(REPO)): sorted(m for m in imported_modules(p) if m.startswith("mmflow.engine."))
                   for p in sources("components")}
    assert {path: modules for path, modules in reaching_in.items() if modules} == {}
