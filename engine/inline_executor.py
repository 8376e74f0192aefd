"""The `inline` executor: the training function runs in this process as rank 0 of a world of size 1."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .executor import (HISTORY_FILE, Executor, ProgressSink, TaskFunction, TrainFunction, TrainingJob, TrainResult,
                       TrainSession, latest_checkpoint, run_in_turn)

if TYPE_CHECKING:
    import torch

    from .nodes import StepInputs
    from .spec import Resources
    from .storage import Storage


class InlineSession(TrainSession):
    """World of size 1 in this process; checkpoints are copied under `scratch` and, when given, to
    `storage` as `checkpoint_<n>` (so a restart on another machine finds them)."""

    def __init__(self, scratch: Path, seed: int, resources: Resources, log: Callable[[str], None],
                 storage: Storage | None = None, progress: ProgressSink | None = None) -> None:
        super().__init__(resources, log, progress)
        import torch

        self.seed = seed
        self._scratch = scratch
        self._storage = storage
        self.checkpoint: Path | None = None
        if resources.gpus_per_worker > 0 and not torch.cuda.is_available():
            raise RuntimeError("resources.gpus_per_worker > 0 but no CUDA device is visible to torch")
        self._device = torch.device("cuda" if resources.gpus_per_worker > 0 else "cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    def prepare_model(self, model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        return model.to(self._device)

    def _checkpoint_to_restore(self) -> Path | None:
        found = self._scratch / "checkpoint"  # an earlier attempt of this step (mmflow run --resume)
        stored = latest_checkpoint(self._storage) if self._storage and not found.is_dir() else None
        if stored is not None:  # the attempt ran on another machine
            stored.download(found)
        return found if found.is_dir() else None

    def restored(self) -> Path | None:
        folder = super().restored()
        self.checkpoint = folder  # the result, if every epoch had already run (a later report replaces it)
        return folder

    def _report(self, metrics: dict[str, Any], checkpoint_dir: str | Path | None) -> None:
        if checkpoint_dir is None:
            return
        target = self._scratch / "checkpoint"
        staging = self._scratch / ".checkpoint.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(checkpoint_dir, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        self.checkpoint = target
        if self._storage is not None:
            name = f"checkpoint_{len(self.history):06d}"
            earlier = [n for n in self._storage.folders() if n.startswith("checkpoint_") and n != name]
            # the history file goes last: a checkpoint without it is incomplete (latest_checkpoint)
            self._storage.joinpath(name).upload(target, last=HISTORY_FILE)
            for old in earlier:
                self._storage.joinpath(old).delete()


class InlineExecutor(Executor):
    """Trains in this process (debugging, a laptop, the GPU of this machine); side tasks run one after another."""

    name = "inline"

    def train(self, fn: TrainFunction, config: dict[str, Any], job: TrainingJob) -> TrainResult:
        """Run `fn` as rank 0 of a world of size 1; its history and final checkpoint."""
        session = InlineSession(job.scratch, job.seed, job.resources, job.log,
                                job.storage.joinpath("inline") if job.kept_apart else None, job.progress)
        fn(session, config)
        return TrainResult(session.history, session.checkpoint)

    def run_tasks(self, fn: TaskFunction, configs: list[dict[str, Any]], resources: Resources,
                  at_once: int | None = None, inputs: StepInputs | None = None) -> list[Any]:
        """One after another, on the GPU when the tasks ask for one, else the CPU."""
        import torch

        return run_in_turn(fn, configs, torch.device("cuda" if resources.gpus_per_task > 0 else "cpu"))

