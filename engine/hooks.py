"""Run hooks: code called around a run and each of its steps (storage copies, tracking, the terminal).

A hook subclasses `RunHook` and overrides the events it needs. mmflow's own storage mirror is one
(added when a workflow has `storage:`); others register under the entry-point group
`mmflow.hooks` and a workflow turns them on by name (`hooks: [name, ...]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .plugins import load_registered, registered_names

if TYPE_CHECKING:
    from .spec import Workflow

ENTRY_POINT_GROUP = "mmflow.hooks"


@dataclass
class StepOutcome:
    """How one step ended in this run."""

    name: str
    state: str  # ran | reused | kept | failed | pending
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    reused_from: str | None = None


@dataclass
class RunInfo:
    """The run a hook is called for."""

    workflow: Workflow
    run_dir: Path
    runs_root: Path
    steps: list[str] = field(default_factory=list)  # the steps the run goes through, in order (a partial run: some)


class RunHook:
    """Called by the runner; every event does nothing unless overridden. An exception a hook raises fails
    the run, as a step's would."""

    def before_run(self, run: RunInfo) -> None:
        """Before anything of the run is written (a check that must fail first belongs here)."""

    def before_step(self, run: RunInfo, step: str) -> None:
        """A step is about to be looked up in the cache and, if not found, run."""

    def on_progress(self, run: RunInfo, step: str, event: dict[str, Any]) -> None:
        """Where a training step is (`session.progress` on its rank 0): `epoch` (from 1) of `epochs`, `batch` of
        `batches` within it, or the finished epoch's `metrics`; called on the driver, while the step runs."""

    def after_step(self, run: RunInfo, outcome: StepOutcome) -> None:
        """A step finished: ran, reused from another run or kept from this one (its folder is complete)."""

    def on_step_error(self, run: RunInfo, step: str, error: BaseException) -> None:
        """A step failed or was interrupted (its status and error.log are written)."""

    def after_run(self, run: RunInfo, outcomes: list[StepOutcome], error: BaseException | None) -> None:
        """The run ended, with `error` if it failed (its run.json already says how it ended)."""


def hook_names() -> list[str]:
    """Every hook registered under the entry-point group."""
    return registered_names(ENTRY_POINT_GROUP)


def create_hook(name: str) -> RunHook:
    """The hook registered as `name`."""
    return load_registered(ENTRY_POINT_GROUP, name, RunHook, "run hook")()
