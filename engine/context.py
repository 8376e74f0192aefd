"""What a running step sees: its seed, inputs, where to write outputs, a log, and training on the run's executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .executor import TrainingJob

if TYPE_CHECKING:
    from .executor import Executor, ProgressSink, TaskFunction, TrainFunction, TrainResult
    from .nodes import StepInputs
    from .registry import ComponentSpec
    from .spec import Resources
    from .storage import Storage


@dataclass
class StepRun:
    """The runner's side of a running step, which components do not use directly."""

    component: ComponentSpec
    outputs_dir: Path
    work_dir: Path
    resources: Resources
    executor: Executor
    max_failures: int = 0  # worker restarts of a training step (the workflow's failure.max_failures)
    storage: Storage | None = None  # this step's folder in the workflow's storage, if it has one
    stored_inputs: StepInputs | None = None  # where workers on other nodes fetch the inputs from
    progress: ProgressSink | None = None  # the run's display of a training step's progress


@dataclass
class StepContext:
    """Handed to a component's run function."""

    step: str
    seed: int
    inputs: dict[str, Path | list[Path]]  # a list for Many(kind) inputs
    log: Callable[[str], None]
    _run: StepRun = field(repr=False)  # the runner's side: not for components
    sources: dict[str, list[str]] = field(default_factory=dict)  # input -> the upstream step names

    @classmethod
    def standalone(cls, component: ComponentSpec, inputs: dict[str, Path | list[Path]], outputs_dir: Path, *,
                   step: str = "step", seed: int = 0, sources: dict[str, list[str]] | None = None,
                   log: Callable[[str], None] = print, resources: Resources | None = None,
                   executor: Executor | None = None) -> StepContext:
        """A context for running a component outside a workflow (a test, a notebook): outputs go to
        `outputs_dir`, training runs on `executor` (default: inline) with `resources` (default: one worker)."""
        from .inline_executor import InlineExecutor
        from .spec import Resources

        outputs_dir.mkdir(parents=True, exist_ok=True)
        run = StepRun(component=component, outputs_dir=outputs_dir, work_dir=outputs_dir.parent / f"{step}.work",
                      resources=resources or Resources(), executor=executor or InlineExecutor())
        return cls(step=step, seed=seed, inputs=inputs, log=log, _run=run, sources=sources or {})

    def output(self, name: str) -> Path:
        """Path where declared output `name` must be written (a file or a folder)."""
        if name not in self._run.component.outputs:
            raise KeyError(f"component '{self._run.component.name}' declares no output '{name}'")
        return self._run.outputs_dir / name

    def train(self, fn: TrainFunction, config: dict[str, Any], parallel_tasks: int = 0) -> TrainResult:
        """Run `fn(session, config)` on the run's executor: Ray Train workers or inline.

        `parallel_tasks`: how many side tasks `fn` runs at once through `session.run_tasks`.
        """
        run = self._run
        scratch = run.work_dir / "train"
        job = TrainingJob(resources=run.resources, storage=run.storage.joinpath("train") if run.storage else scratch,
                          seed=self.seed, log=self.log, scratch=scratch, parallel_tasks=parallel_tasks,
                          name=self.step, max_failures=run.max_failures, inputs=run.stored_inputs,
                          progress=run.progress)
        return run.executor.train(fn, config, job)

    def run_tasks(self, fn: TaskFunction, configs: list[dict[str, Any]], at_once: int | None = None) -> list[Any]:
        """`fn(config, device)` per config on the run's executor: parallel Ray tasks (ray) or one after another
        (inline). `at_once`: how many must run side by side (default all; e.g. 1 for many small jobs that may
        queue)."""
        return self._run.executor.run_tasks(fn, configs, self._run.resources, at_once=at_once,
                                           inputs=self._run.stored_inputs)
