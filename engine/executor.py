"""Executors: where a step's training function and side tasks run.

A training component writes one function `fn(session, config)`. An executor runs it: `ray` on
Ray Train workers, `inline` in this process as rank 0 of a world of size 1 (the very same
function). Independent side work (e.g. G-Blend's probe trainings) goes through `run_tasks` (or `start_tasks`).
One executor serves a whole run (the workflow's `executor:`). Executors register under the
entry-point group `mmflow.executors` (name = "module:Class"), mmflow's own included, so a
third-party executor is installed like any plugin.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from .errors import Interrupted
from .plugins import load_registered, registered_names

if TYPE_CHECKING:
    import torch

    from .nodes import StepInputs
    from .spec import Resources
    from .storage import Storage

ENTRY_POINT_GROUP = "mmflow.executors"
HISTORY_FILE = "mmflow_history.json"
PLACEMENT_FILE = "placement.json"  # rank -> node of a distributed run

TaskFunction = Callable[[dict[str, Any], "torch.device"], Any]
#: where a training step's progress goes on the driver: `{"epoch", "epochs", "batch", "batches", "metrics"}`
ProgressSink = Callable[[dict[str, Any]], None]
PROGRESS_EVERY_S = 0.5  # batch positions sent at most this often: each is a message to the driver on Ray


def run_in_turn(fn: TaskFunction, configs: list[dict[str, Any]], device: torch.device) -> list[Any]:
    """`fn(config, device)` for every config, one after another."""
    return [fn(config, device) for config in configs]


def latest_checkpoint(run_storage: Storage) -> Storage | None:
    """The newest complete checkpoint (one with its history file) under a run's storage, if any."""
    found = [run_storage.joinpath(name) for name in run_storage.folders() if name.startswith("checkpoint_")]
    complete = [c for c in found if c.joinpath(HISTORY_FILE).exists()]
    return complete[-1] if complete else None


class TrainSession:
    """What the per-worker function sees: rank, device, reporting, collectives and side tasks."""

    rank: int = 0
    world_size: int = 1
    seed: int = 0

    def __init__(self, resources: Resources, log: Callable[[str], None] = print,
                 progress: ProgressSink | None = None) -> None:
        self.history: list[dict[str, Any]] = []
        self.placement: list[dict[str, Any]] = []  # where each rank runs (distributed), kept with checkpoints
        self.resources = resources
        self._log = log
        self._progress = progress
        self._progress_sent = 0.0

    @property
    def device(self) -> torch.device:
        """The device this worker trains on."""
        raise NotImplementedError

    def prepare_model(self, model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """Move to the device and wrap for data-parallel training where world size > 1.

        `find_unused_parameters`: some parameters may get no gradient in a step (DDP must know).
        """
        raise NotImplementedError

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over all workers (in place) and return it."""
        return tensor

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | Path | None = None) -> None:
        """Report an epoch's metrics; rank 0 may attach a checkpoint folder.

        Every worker must call this the same number of times. The metrics history so far is
        written into the checkpoint, so the final checkpoint carries the whole history.
        """
        Interrupted.raise_pending()  # an interrupt swallowed during the epoch stops the run here
        self.history.append(dict(metrics))
        if checkpoint_dir is not None:
            (Path(checkpoint_dir) / HISTORY_FILE).write_text(json.dumps(self.history))
            if self.placement:
                (Path(checkpoint_dir) / PLACEMENT_FILE).write_text(json.dumps(self.placement, indent=1))
        self._report(metrics, checkpoint_dir)

    def _report(self, metrics: dict[str, Any], checkpoint_dir: str | Path | None) -> None:
        raise NotImplementedError

    def restored(self) -> Path | None:
        """The checkpoint folder to continue from, after a worker or the driver died (else None);
        the history reported up to it is restored too, so reports continue where they were."""
        folder = self._checkpoint_to_restore()
        if folder is None or not (folder / HISTORY_FILE).exists():
            return None
        self.history = json.loads((folder / HISTORY_FILE).read_text())
        return folder

    def _checkpoint_to_restore(self) -> Path | None:
        return None

    def log(self, message: str) -> None:
        """A line of the step's log, written once (rank 0)."""
        if self.rank == 0:
            self._log(message)

    def progress(self, epoch: int, epochs: int, batch: int | None = None, batches: int | None = None,
                 metrics: dict[str, Any] | None = None) -> None:
        """Where training is, for the run's live display (rank 0): epoch (from 1) of epochs, batch (from 1) of
        batches within it, or the finished epoch's `metrics`. Cheap to call every batch: batch positions are
        passed on at most every PROGRESS_EVERY_S seconds."""
        if self.rank != 0 or self._progress is None:
            return
        now = time.monotonic()
        if metrics is None and batch is not None and now - self._progress_sent < PROGRESS_EVERY_S:
            return
        self._progress_sent = now
        self._progress({"epoch": epoch, "epochs": epochs, "batch": batch, "batches": batches,
                        "metrics": metrics})

    def run_tasks(self, fn: TaskFunction, configs: list[dict[str, Any]]) -> list[Any]:
        """Independent side work from this worker, results in order (see start_tasks)."""
        return self.start_tasks(fn, configs)()

    def start_tasks(self, fn: TaskFunction, configs: list[dict[str, Any]]) -> Callable[[], list[Any]]:
        """Start independent side work from this worker; returns what waits for its results, in order. Here it
        runs at once, one task after another on this worker's device; a distributed session runs the tasks side by
        side in processes of their own while this worker trains on."""
        results = run_in_turn(fn, configs, self.device)
        return lambda: results


TrainFunction = Callable[[TrainSession, dict[str, Any]], None]


@dataclass
class TrainResult:
    """Per-epoch metrics reported by rank 0 and a local copy of the last checkpoint."""

    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None

    def save_checkpoint(self, target: Path) -> None:
        """Copy the last checkpoint's files to `target`, without mmflow's history of the run: it holds timings,
        so the same training twice would not give the same bytes (nor reuse what follows it)."""
        if self.checkpoint is None:
            raise ValueError("the training function reported no checkpoint")
        shutil.copytree(self.checkpoint, target, ignore=shutil.ignore_patterns(HISTORY_FILE))


@dataclass
class TrainingJob:
    """One training of a step: what it may use, where its checkpoints go, how it reports.

    `storage`: where checkpoints are kept: a local folder, or a Storage (a workflow's `storage:`,
    which then receives every executor's checkpoints); `scratch`: the local folder for the final
    checkpoint's copy and working checkpoints (default: `storage`, when it is a folder).
    `parallel_tasks`: how many `session.run_tasks` tasks the function runs at once.
    `name` (the step) labels what the job reports outside (e.g. to a sweep).
    `max_failures`: how often failed workers are restarted from the latest checkpoint.
    `inputs`: the step's inputs in the run's storage, fetched by workers on nodes that lack them.
    `progress`: where `session.progress` goes on the driver (the run's display).
    A checkpoint an earlier attempt left in `storage` is offered to the function (`session.restored()`).
    """

    resources: Resources
    storage: Path | Storage
    seed: int = 0
    log: Callable[[str], None] = print
    scratch: Path | None = None
    parallel_tasks: int = 0
    name: str = "train"
    max_failures: int = 0
    inputs: StepInputs | None = None
    progress: ProgressSink | None = None
    kept_apart: bool = field(init=False)  # a workflow's storage, beside the local scratch

    def __post_init__(self) -> None:
        from .storage import Storage

        self.kept_apart = not isinstance(self.storage, Path)
        if isinstance(self.storage, Path):
            self.scratch = self.scratch or self.storage
            self.storage = Storage.open(self.storage)
        if self.scratch is None:
            raise ValueError("TrainingJob: give a local `scratch` folder with a non-local storage")
        self.scratch.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class ExecutorSettings:
    """How the run was started: the cluster to use (`--address`, else the environment), whether a local
    cluster may count more CPUs than the machine has (`--oversubscribe`), and how much it says (`-v`)."""

    address: str | None = None
    oversubscribe: bool = False
    verbose: bool = False  # the executor's own informational logs too (`mmflow run -v`)


class Executor(ABC):
    """Runs a step's training function on workers and its side tasks; one serves a whole run."""

    name: ClassVar[str]
    #: whether several steps may train at once, each on workers of its own (else a run takes one step at a time)
    parallel_steps: ClassVar[bool] = False

    def __init__(self, settings: ExecutorSettings = ExecutorSettings()) -> None:
        self.settings = settings
        # what the executor says about what it started (a local Ray's dashboard); a runner passes its own log
        self.log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)

    @abstractmethod
    def train(self, fn: TrainFunction, config: dict[str, Any], job: TrainingJob) -> TrainResult:
        """Run `fn(session, config)` on the workers; its history and final checkpoint."""

    @abstractmethod
    def run_tasks(self, fn: TaskFunction, configs: list[dict[str, Any]], resources: Resources,
                  at_once: int | None = None, inputs: StepInputs | None = None) -> list[Any]:
        """`fn(config, device)` per config, results in order; a failing task raises its own exception after
        every task has stopped. `at_once`: how many must run side by side (default all)."""

    def warm_up(self) -> None:
        """Start what training steps will need (a cluster connection) in the background, while the steps before
        them run; a training step waits for it. Nothing by default."""

    def capacity(self) -> dict[str, float]:
        """What it holds in all for training steps' workers (CPU, GPU): how many steps train side by side."""
        return {}

    def close(self) -> None:
        """Release what the executor started (e.g. a local cluster)."""


def executor_names() -> list[str]:
    """Every registered executor's name."""
    return registered_names(ENTRY_POINT_GROUP)


def create_executor(name: str, settings: ExecutorSettings = ExecutorSettings()) -> Executor:
    """The executor registered as `name`, configured with `settings`."""
    return load_registered(ENTRY_POINT_GROUP, name, Executor, "executor")(settings)
