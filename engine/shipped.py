"""Workflows that installed packages ship (entry-point group `mmflow.workflows`, each a package holding
`<name>.yaml` files): listed by `mmflow workflows`, copied to edit, and run by name from any folder."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import yaml

from .errors import UsageError, did_you_mean
from .plugins import entry_points
from .run_folder import atomic_write_text

ENTRY_POINT_GROUP = "mmflow.workflows"


def shipped_workflows() -> dict[str, Path]:
    """Every shipped workflow file by name (its file name without `.yaml`), sorted; the first package to
    ship a name keeps it."""
    found: dict[str, Path] = {}
    for entry in entry_points(ENTRY_POINT_GROUP):
        try:
            folder = importlib.resources.files(entry.load())
        except Exception as exc:  # a broken plugin must name itself, not crash the CLI
            raise UsageError(f"cannot load mmflow workflows '{entry.name}' ({entry.value}): "
                             f"{type(exc).__name__}: {exc}") from exc
        for item in folder.iterdir():
            if item.name.endswith(".yaml"):
                found.setdefault(item.name.removesuffix(".yaml"), Path(str(item)))
    return dict(sorted(found.items()))


def description_of(path: Path) -> str:
    """A workflow file's `description:` (its first comment line when it has none)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:  # listed all the same; running it reports where it is broken
        data = None
    if isinstance(data, dict) and isinstance(data.get("description"), str):
        return " ".join(data["description"].split())
    comments = [line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")]
    return comments[0] if comments else ""


def workflow_file(given: str) -> Path:
    """The workflow file a command names: a path, else a shipped workflow's name (`quickstart`)."""
    path = Path(given)
    if path.exists() or path.suffix or len(path.parts) > 1:  # a path: a missing file is load_yaml's error
        return path
    shipped = shipped_workflows()
    if given in shipped:
        return shipped[given]
    raise UsageError(f"{given}: no such workflow file, and no shipped workflow of that name"
                     f"{did_you_mean(given, shipped)} (`mmflow workflows` lists them)")


def copy_workflow(name: str, destination: Path | None, force: bool = False) -> Path:
    """Write the shipped workflow `name` to `destination` (a file, or a folder to put `<name>.yaml` in;
    default ./<name>.yaml) to edit; an existing file is kept unless `force`."""
    shipped = shipped_workflows()
    if name not in shipped:
        raise UsageError(f"no shipped workflow '{name}'{did_you_mean(name, shipped)}; one of: {', '.join(shipped)}")
    target = destination or Path(f"{name}.yaml")
    if target.is_dir():
        target = target / f"{name}.yaml"
    if target.exists() and not force:
        raise UsageError(f"{target} exists; give another destination, or --force to overwrite it")
    atomic_write_text(target, shipped[name].read_text(encoding="utf-8"))
    return target
