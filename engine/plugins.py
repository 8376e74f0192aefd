"""What packages register under entry-point groups: classes by name (executors, run hooks), or modules that
register themselves when imported (components, choices)."""

from __future__ import annotations

import functools
import importlib.metadata
import sys
from typing import TypeVar

from .errors import UsageError

Base = TypeVar("Base", bound=type)


def entry_points(group: str) -> importlib.metadata.EntryPoints:
    """The entry points of `group` installed on the current `sys.path`."""
    return _installed(tuple(sys.path)).select(group=group)


@functools.lru_cache(maxsize=4)
def _installed(path: tuple[str, ...]) -> importlib.metadata.EntryPoints:
    # one scan of the installed distributions per search path (a CLI call reads five groups)
    return importlib.metadata.entry_points()


def load_group(group: str, what: str) -> None:
    """Import everything registered under the entry-point group (modules that register themselves when imported);
    `what` names the kind in errors ('component plugin')."""
    for entry in entry_points(group):
        try:
            entry.load()
        except Exception as exc:  # a broken plugin must name itself, not crash the CLI
            raise UsageError(f"cannot load mmflow {what} '{entry.name}' ({entry.value}): {type(exc).__name__}: {exc}") \
                from exc


def registered_names(group: str) -> list[str]:
    """Every name registered under the entry-point group."""
    return sorted({entry.name for entry in entry_points(group)})


def load_registered(group: str, name: str, base: Base, what: str) -> Base:
    """The class registered as `name` under `group`, which must subclass `base`; `what` names the kind in
    errors ('executor')."""
    entries = [e for e in entry_points(group) if e.name == name]
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
