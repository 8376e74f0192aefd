"""What packages register under entry-point groups: classes by name (executors, run hooks), or modules that
register themselves when imported (components, choices)."""

from __future__ import annotations

import importlib.metadata
from typing import TypeVar

from .errors import UsageError

Base = TypeVar("Base", bound=type)


def load_group(group: str, what: str) -> None:
    """Import everything registered under the entry-point group (modules that register themselves when imported);
    `what` names the kind in errors ('component plugin')."""
    for entry in importlib.metadata.entry_points(group=group):
        try:
            entry.load()
        except Exception as exc:  # a broken plugin must name itself, not crash the CLI
            raise UsageError(f"cannot load mmflow {what} '{entry.name}' ({entry.value}): {type(exc).__name__}: {exc}") \
                from exc


def registered_names(group: str) -> list[str]:
    """Every name registered under the entry-point group."""
    return sorted({entry.name for entry in importlib.metadata.entry_points(group=group)})


def load_registered(group: str, name: str, base: Base, what: str) -> Base:
    """The class registered as `name` under `group`, which must subclass `base`; `what` names the kind in
    errors ('executor')."""
    entries = [e for e in importlib.metadata.entry_points(group=group) if e.name == name]
    if not entries:
        raise UsageError(f"unknown {what} '{name}' (registered: {', '.join(registered_names(group)) or 'none'})")
    try:
        cls = entries[0].load()
    except Exception as exc:  # a broken plugin must name itself, not crash the CLI
        raise UsageError(f"cannot load mmflow {what} '{name}' ({entries[0].value}): {type(exc).__name__}: {exc}") \
            from exc
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UsageError(f"mmflow {what} '{name}' ({entries[0].value}) is not a {base.__name__} subclass")
    return cls
