"""The layers' boundaries, read from the source: Ray stays in its executor and the Tune module, components
use the engine only through its public API (mmflow.engine), and the modules of each layer import each
other without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

RAY_MODULES = {"engine/ray_executor.py", "engine/tune.py"}


def imported_modules(path: Path, package: str = "", members: bool = False) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included, those only for type
    checkers not): absolute names, and relative ones resolved against `package` when it is given. With
    `members`, `from m import n` also counts as importing m.n (n may be a module)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in
                   ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.level == 0 or package):
            parts = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*parts, *([node.module] if node.module else [])])
            found |= {module, *(f"{module}.{alias.name}" for alias in node.names if members)}
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


def import_cycles(folder: str, package: str) -> list[list[str]]:
    """The groups of `folder`'s modules that import each other in a circle (Tarjan's strongly connected
    components), each sorted; a module importing its own package's __init__ does not count."""
    modules = {}
    for path in sources(folder):
        parts = [package, *path.relative_to(REPO / folder).with_suffix("").parts]
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = (path, name if path.name == "__init__.py" else name.rpartition(".")[0])
    graph = {name: {m for m in imported_modules(path, pkg, members=True) if m in modules and m != name
                    and not name.startswith(m + ".")} for name, (path, pkg) in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = stack[stack.index(node):]
            del stack[stack.index(node):]
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_modules_import_each_other_without_cycles():
    assert import_cycles("engine", "mmflow.engine") == []
    assert import_cycles("components", "mmflow.components") == []
