"""What a running step sees: its inputs, where to write outputs, resources, and how to train."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .registry import ComponentSpec

if TYPE_CHECKING:
    from .distributed import TaskFunction, TrainFunction, TrainResult
    from .nodes import StepInputs
    from .spec import Resources
    from .storage import Storage


@dataclass
class StepContext:
    """Handed to a component's run function."""

    step: str
    component: ComponentSpec
    seed: int
    inputs: dict[str, Path | list[Path]]  # a list for Many(kind) inputs
    outputs_dir: Path
    work_dir: Path
    resources: Resources
    executor: str
    log: Callable[[str], None]
    sources: dict[str, list[str]] = field(default_factory=dict)  # input -> the upstream step names
    max_failures: int = 0  # worker restarts of a training step (the workflow's failure.max_failures)
    storage: Storage | None = None  # this step's folder in the workflow's storage, if it has one
    stored_inputs: StepInputs | None = None  # where workers on other nodes fetch the inputs from

    def output(self, name: str) -> Path:
        """Path where declared output `name` must be written (a file or a folder)."""
        if name not in self.component.outputs:
            raise KeyError(f"component '{self.component.name}' declares no output '{name}'")
        return self.outputs_dir / name

    def train(self, fn: TrainFunction, config: dict[str, Any], parallel_tasks: int = 0) -> TrainResult:
        """Run `fn(session, config)` on the workflow's executor: Ray Train workers or inline.

        `parallel_tasks`: how many side tasks `fn` runs at once through `session.run_tasks`.
        """
        from .distributed import run_training

        scratch = self.work_dir / "train"
        storage = self.storage.joinpath("train") if self.storage else scratch
        return run_training(fn, config, executor=self.executor, resources=self.resources, storage=storage,
                            scratch=scratch, seed=self.seed, log=self.log,
                            parallel_tasks=parallel_tasks, name=self.step, max_failures=self.max_failures,
                            inputs=self.stored_inputs)

    def run_tasks(self, fn: TaskFunction, configs: list[dict[str, Any]], at_once: int | None = None) -> list[Any]:
        """`fn(config, device)` per config: parallel Ray tasks (executor ray) or one after another (inline).

        `at_once`: how many must run side by side (default all; e.g. 1 for many small jobs that may queue).
        """
        from .distributed import run_tasks

        return run_tasks(fn, configs, executor=self.executor, resources=self.resources, at_once=at_once,
                         inputs=self.stored_inputs)
