"""The one place that talks to Ray: per-worker training sessions, TorchTrainer, local Ray start.

A training component writes one function `fn(session, config)`. The `ray` executor runs it
on `resources.workers` Ray Train workers; the `inline` executor calls the very same function
in-process as rank 0 of a world of size 1. Independent side work (e.g. G-Blend's probe
trainings) goes through `run_tasks`: Ray tasks side by side, or one after another inline.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import shutil
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .errors import ResourcesError, UsageError

if TYPE_CHECKING:
    import torch

    from .nodes import StepInputs
    from .spec import Resources
    from .storage import Storage

HISTORY_FILE = "mmflow_history.json"
PLACEMENT_FILE = "placement.json"  # rank -> node of a Ray Train run

RAY_ENV = {
    # The Train controller takes one report per poll and a worker's next report waits for it:
    # the 2 s default caps short epochs at one every 2 s. Each poll wakes the controller and
    # every worker, preempting training on a small machine: 0.5 s, not less.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # Train re-routes print() through logging, which prints progress lines twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}
LOCAL_RAY_ENV = {
    # A local Ray is never drained, so Train's preemption watcher has nothing to watch; its actor
    # logs an error line at every run ("... max_restarts > 0") that looks like a failure.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


TaskFunction = Callable[[dict[str, Any], "torch.device"], Any]


def run_tasks(fn: TaskFunction, configs: list[dict[str, Any]], *, executor: str, resources: Resources,
              device: torch.device | None = None, at_once: int | None = None,
              inputs: StepInputs | None = None) -> list[Any]:
    """`fn(config, device)` for every config, results in order: parallel Ray tasks or, inline, in turn.

    Each Ray task gets `resources.cpus_per_task` CPUs and `gpus_per_task` GPUs; a local Ray is
    sized to run `at_once` of them together (default: all), the rest queue. Inline tasks run
    on `device` (default: the GPU when gpus_per_task > 0, else the CPU). A failing task raises
    its own exception, after every task has stopped (none is left writing). A Ray task on a node
    without the step's `inputs` fetches them from the run's storage first.
    """
    import torch

    use_gpu = resources.gpus_per_task > 0
    if executor == "inline":
        device = device or torch.device("cuda" if use_gpu else "cpu")
        return [fn(config, device) for config in configs]
    import ray

    ensure_ray(min(at_once or len(configs), len(configs)) * resources.cpus_per_task)
    per_task = _per_task(resources)
    require(per_task, f"each parallel task ({_amount(per_task)})", "lower resources.cpus_per_task or gpus_per_task")
    task = ray.remote(_task_entry).options(num_cpus=resources.cpus_per_task, num_gpus=resources.gpus_per_task)
    pending = [task.remote(fn, config, use_gpu, resources.cpus_per_task, inputs) for config in configs]
    ray.wait(pending, num_returns=len(pending), fetch_local=False)
    try:
        return ray.get(pending)
    except ray.exceptions.RayTaskError as error:
        raise error.cause from error  # the chain keeps the remote traceback for error.log


def _task_entry(fn: TaskFunction, config: dict[str, Any], use_gpu: bool, cpus: float,
                inputs: StepInputs | None) -> Any:
    import torch

    if inputs is not None:
        inputs.ensure_local()

    torch.set_num_threads(max(1, int(cpus)))  # side-by-side tasks must not each take every core
    return fn(config, torch.device("cuda" if use_gpu else "cpu"))


class TrainSession:
    """What the per-worker function sees: rank, device, reporting, collectives and side tasks."""

    rank: int = 0
    world_size: int = 1
    seed: int = 0
    executor: str = "inline"
    inputs: StepInputs | None = None  # the step's inputs, for side tasks on other nodes
    tasks_inside = False  # side tasks run in this worker: the Ray cannot hold them beside the workers

    def __init__(self, resources: Resources, log: Callable[[str], None] = print) -> None:
        self.history: list[dict[str, Any]] = []
        self.placement: list[dict[str, Any]] = []  # where each rank runs (Ray), kept with checkpoints
        self.resources = resources
        self._log = log

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
        """Print progress once (rank 0)."""
        if self.rank == 0:
            self._log(message)

    def run_tasks(self, fn: TaskFunction, configs: list[dict[str, Any]]) -> list[Any]:
        """Independent side work from this worker: parallel Ray tasks (ray), or in turn on this device (inline, or
        when the Ray has no room for them beside the workers)."""
        inside = self.executor == "inline" or self.tasks_inside
        return run_tasks(fn, configs, executor="inline" if inside else self.executor, resources=self.resources,
                         device=self.device if inside else None, inputs=self.inputs)


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


class InlineSession(TrainSession):
    """World of size 1 in this process; checkpoints are copied under `scratch` and, when given, to
    `storage` as `checkpoint_<n>` (so a restart on another machine finds them)."""

    def __init__(self, scratch: Path, seed: int, resources: Resources, log: Callable[[str], None],
                 storage: Storage | None = None) -> None:
        super().__init__(resources, log)
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
        stored = _latest_checkpoint(self._storage) if self._storage and not found.is_dir() else None
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
            # the history file goes last: a checkpoint without it is incomplete (_latest_checkpoint)
            self._storage.joinpath(name).upload(target, last=HISTORY_FILE)
            for old in earlier:
                self._storage.joinpath(old).delete()


class RaySession(TrainSession):
    """A Ray Train worker: rank and device from the Train context, DDP over gloo or NCCL."""

    executor = "ray"

    def __init__(self, seed: int, resources: Resources, resume_from: Any = None, history: Any = None) -> None:
        super().__init__(resources, lambda message: print(message, flush=True))
        self._history_sink = history  # a _History actor: Ray Train hands the driver only checkpointed metrics
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.seed = seed
        self._resume_from = resume_from  # a ray.train.Checkpoint an earlier fit left (mmflow run --resume)
        self._restore_dir: Path | None = None
        self.placement = self._gather_placement()

    def _gather_placement(self) -> list[dict[str, Any]]:
        """Where every rank runs (node id, IP, process), known to all ranks."""
        import ray
        import torch.distributed as dist

        mine = {"rank": self.rank, "node_id": ray.get_runtime_context().get_node_id(),
                "ip": ray.util.get_node_ip_address(), "pid": os.getpid()}
        if self.world_size == 1:
            return [mine]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, mine)
        return gathered

    def restored(self) -> Path | None:
        folder = super().restored()
        self._send_history()  # every epoch may have run already: the restored history is the result
        return folder

    def _send_history(self) -> None:
        if self.rank == 0 and self._history_sink is not None:
            import ray

            ray.get(self._history_sink.put.remote(self.history))  # waited for: the worker may exit next

    def _checkpoint_to_restore(self) -> Path | None:
        import tempfile

        import ray.train

        # this fit's latest after a worker failure, else an earlier fit's whose driver died
        checkpoint = ray.train.get_checkpoint() or self._resume_from
        if checkpoint is None:
            return None
        self.close()
        self._restore_dir = Path(tempfile.mkdtemp(prefix="mmflow-restore-"))
        checkpoint.to_directory(str(self._restore_dir))
        return self._restore_dir

    def close(self) -> None:
        """Remove the local copy of a restored checkpoint."""
        if self._restore_dir is not None:
            shutil.rmtree(self._restore_dir, ignore_errors=True)
            self._restore_dir = None

    @property
    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters})

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def _report(self, metrics: dict[str, Any], checkpoint_dir: str | Path | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        self._send_history()
        ray.train.report(metrics, checkpoint=checkpoint)


class _History:
    """An actor holding rank 0's metrics history for the driver: Ray Train's Result carries the metrics of
    checkpointed reports only, and a training function need not checkpoint every epoch."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def put(self, rows: list[dict[str, Any]]) -> None:
        """Replace the history (after a restart from a checkpoint it is the restored one, then grows)."""
        self.rows = rows

    def get(self) -> list[dict[str, Any]]:
        """The history so far."""
        return self.rows


def _ray_worker_entry(config: dict[str, Any]) -> None:
    """`train_loop_per_worker` for TorchTrainer: build the session and call the component's fn."""
    import logging

    from ray.train.v2._internal.execution import context as train_context

    # Ray 2.60 logs every report at INFO through a logger named by file path, which escapes
    # RunConfig's LoggingConfig; those lines drown the progress output.
    train_context.logger.setLevel(logging.WARNING)
    if config["inputs"] is not None:  # a node without the run directory (no shared filesystem)
        config["inputs"].ensure_local()
    session = RaySession(config["seed"], config["resources"], config.get("resume_from"), config["history"])
    session.inputs = config["inputs"]
    session.tasks_inside = config["tasks_inside"]
    try:
        config["fn"](session, config["config"])
    finally:
        session.close()


def run_training(
    fn: TrainFunction,
    config: dict[str, Any],
    *,
    executor: str,
    resources: Resources,
    storage: Path | Storage,
    seed: int,
    log: Callable[[str], None],
    parallel_tasks: int = 0,
    name: str = "train",
    max_failures: int = 0,
    scratch: Path | None = None,
    inputs: StepInputs | None = None,
) -> TrainResult:
    """Run `fn` on the chosen executor and return its history and final checkpoint.

    `storage`: where Ray Train keeps checkpoints: a local folder, or a Storage (a workflow's
    `storage:`, which then receives inline checkpoints too); `scratch`: the local folder for the
    final checkpoint's copy and inline checkpoints (default: `storage`, when it is a folder).
    `parallel_tasks`: how many `run_tasks` tasks `fn` may run at once (a local Ray is sized for them).
    `name` (the step) prefixes the per-epoch metrics forwarded to Ray Tune inside a sweep trial.
    `max_failures`: Ray Train restarts the workers from the latest checkpoint that many times.
    A checkpoint an earlier attempt left in `storage` is offered to `fn` (`session.restored()`).
    `inputs`: the step's inputs in the run's storage, fetched by workers on nodes that lack them.
    """
    from .storage import Storage

    kept_apart = not isinstance(storage, Path)  # a workflow's storage: inline checkpoints are copied there too
    if isinstance(storage, Path):
        scratch = scratch or storage
        storage = Storage.open(storage)
    if scratch is None:
        raise ValueError("run_training: give a local `scratch` folder with a non-local storage")
    scratch.mkdir(parents=True, exist_ok=True)
    if executor == "inline":
        session = InlineSession(scratch, seed, resources, log, storage.joinpath("inline") if kept_apart else None)
        fn(session, config)
        return TrainResult(session.history, session.checkpoint)
    return _fit_on_ray(fn, config, resources, storage, scratch.resolve(), seed, log, parallel_tasks, name,
                       max_failures, inputs)


def _fit_on_ray(fn: TrainFunction, config: dict[str, Any], resources: Resources, storage: Storage, scratch: Path,
                seed: int, log: Callable[[str], None], parallel_tasks: int, name: str,
                max_failures: int, inputs: StepInputs | None) -> TrainResult:
    import ray.train
    from ray.train.torch import TorchTrainer

    per_worker = {kind: n for kind, n in {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker}.items()
                  if n}  # Ray's resources_per_worker: no GPU entry on CPU workers
    workers = {kind: resources.workers * n for kind, n in per_worker.items()}
    tasks = {kind: parallel_tasks * n for kind, n in _per_task(resources).items()}
    ensure_ray(workers["CPU"] + tasks["CPU"])
    use_gpu = "GPU" in per_worker
    require(workers, f"{resources.workers} worker(s) x {_amount(per_worker)}",
            "lower resources.workers, cpus_per_worker or gpus_per_worker")
    tasks_inside = parallel_tasks > 0 and bool(lacking({k: workers.get(k, 0) + n for k, n in tasks.items()}))
    log(f"Ray Train: {resources.workers} worker(s), {per_worker} each, backend {'nccl' if use_gpu else 'gloo'}")
    if tasks_inside:  # waiting for room beside the workers would wait forever
        log(f"its {parallel_tasks} side tasks run in the training worker, one after another: the Ray has no room "
            f"for them beside the workers (they need {_amount(tasks)} more)")
    earlier = _latest_checkpoint(storage.joinpath("run"))
    if earlier is not None:
        log(f"an earlier attempt left {posixpath.basename(earlier.path)}: training continues from it")
        kept = storage.joinpath("resume_checkpoint")  # the new fit may prune checkpoints under storage/run
        earlier.copy_to(kept)
        earlier = kept
    resume_from = ray.train.Checkpoint(earlier.path, earlier.filesystem) if earlier else None
    history = ray.remote(num_cpus=0)(_History).remote()
    trainer = TorchTrainer(
        _ray_worker_entry,
        train_loop_config={"fn": fn, "config": config, "seed": seed, "resources": resources,
                           "resume_from": resume_from, "inputs": inputs, "history": history,
                           "tasks_inside": tasks_inside},
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name="run",
            storage_path=storage.path,
            storage_filesystem=storage.filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=[_step_to_tune(name)] if _IN_SWEEP_TRIAL else None,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
    )
    try:
        result = _off_main_thread(trainer.fit)
        rows = ray.get(history.get.remote())
    except ray.train.TrainingFailedError as exc:
        raise _root_cause(exc) from exc  # the chain keeps every worker's traceback for error.log
    finally:
        ray.kill(history)
    if result.error is not None:
        raise _root_cause(result.error) from result.error
    checkpoint = result.checkpoint or resume_from  # resumed with every epoch run: that checkpoint is the result
    if checkpoint is None:
        return TrainResult(rows)
    local = scratch / "final_checkpoint"
    shutil.rmtree(local, ignore_errors=True)
    checkpoint.to_directory(str(local))
    return TrainResult(rows, local)


Result = TypeVar("Result")


def _off_main_thread(fit: Callable[[], Result]) -> Result:
    """`fit()` in a helper thread while this one waits. Ray Train and Tune trap Ctrl-C when they run on the
    main thread (to abort gracefully, then exit on their own terms); off it they leave signals to mmflow,
    which unwinds the run at once: steps marked interrupted, the local Ray stopped."""
    if threading.current_thread() is not threading.main_thread():
        return fit()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fit()
        except BaseException as exc:  # handed to the waiting thread; after an interrupt nobody asks
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="mmflow-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)  # wakes for signal handlers, which run on the main thread only
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _latest_checkpoint(run_storage: Storage) -> Storage | None:
    """The newest complete checkpoint Ray Train wrote under a run's storage, if any."""
    found = [run_storage.joinpath(name) for name in run_storage.folders() if name.startswith("checkpoint_")]
    complete = [c for c in found if c.joinpath(HISTORY_FILE).exists()]
    return complete[-1] if complete else None


def _root_cause(error: BaseException) -> BaseException:
    """The lowest-ranked worker's own exception, rather than Ray's multi-line summary of all workers."""
    failures = getattr(error, "worker_failures", None)  # ray.train.WorkerGroupError
    return failures[min(failures)] if failures else error


_STARTED_RAY = False
_RAY_ADDRESS: str | None = None
_OVERSUBSCRIBE = False  # a local Ray may count more CPUs than the machine has (--oversubscribe)
_IN_SWEEP_TRIAL = False  # set in a sweep trial's process: training steps report every epoch to Tune


def _step_to_tune(step: str) -> Any:
    """Ray Tune's TuneReportCallback, with the step's name before every metric ('train.loss')."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class StepToTune(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            named = [{f"{step}.{k}": v for k, v in m.items()} for m in metrics]
            super().after_report(run_context, named, checkpoint)

    return StepToTune()


def run_sweep_trials(trial: Callable[[dict[str, Any]], None], param_space: dict[str, Any], *, num_samples: int,
                     scheduler: Any, max_concurrent_trials: int | None, trial_cpus: float,
                     storage: Storage) -> list[tuple[str, dict[str, Any], dict[str, Any], str | None]]:
    """Ray Tune over `trial(config)` with its state under `storage`/tune; per trial (name, config,
    last reported metrics, error or None)."""
    from ray import tune

    ensure_ray()
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": trial_cpus}),
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=num_samples, scheduler=scheduler,
                                    max_concurrent_trials=max_concurrent_trials,
                                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(name="tune", storage_path=storage.path, storage_filesystem=storage.filesystem,
                                  verbose=0),
    )
    results = _off_main_thread(tuner.fit)
    return [(Path(r.path).name, r.config, dict(r.metrics or {}), None if r.error is None else str(r.error))
            for r in results]


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id.rsplit('_', 1)[-1]}"


def asha(metric: str, mode: str, max_t: int, grace_period: int, reduction_factor: float) -> Any:
    """Ray Tune's ASHA scheduler over the per-epoch `metric`, stopping no trial after `max_t` epochs
    before its final report (one more result)."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(metric=metric, mode=mode, max_t=max_t + 1, grace_period=grace_period,
                         reduction_factor=reduction_factor)


def enter_sweep_trial() -> None:
    """Mark this process as a sweep trial: training steps forward their epochs to Tune."""
    global _IN_SWEEP_TRIAL
    _IN_SWEEP_TRIAL = True


def configure_ray(address: str | None, oversubscribe: bool = False) -> None:
    """Remember the cluster to use (`--address`, else RAY_ADDRESS as `ray job submit` sets it);
    without either, the first use starts a local Ray of this process's own, with this machine's cores
    (or, `oversubscribe`, as many as the first step asks for)."""
    global _RAY_ADDRESS, _OVERSUBSCRIBE
    _RAY_ADDRESS = address or os.environ.get("RAY_ADDRESS") or None
    _OVERSUBSCRIBE = oversubscribe
    if _RAY_ADDRESS:  # before any step runs: a wrong address is known in seconds, not after the data steps
        check_address(_RAY_ADDRESS)


def require(amounts: dict[str, float], what: str, fix: str) -> None:
    """Fail at once when the Ray in use has fewer CPUs or GPUs in all than `what` needs at the same time:
    Ray would wait for them forever."""
    short = lacking(amounts)
    if not short:
        return
    where = f"the Ray cluster at {_RAY_ADDRESS}" if _RAY_ADDRESS else "the local Ray"
    more = "" if _RAY_ADDRESS or "CPU" not in short else ", or pass --oversubscribe to start more workers than cores"
    raise ResourcesError(f"{what} need {_amount({k: amounts[k] for k in short})} at once; {where} has "
                         f"{_amount(short, zero=True)}: {fix}{more}")


def lacking(amounts: dict[str, float]) -> dict[str, float]:
    """The kinds of `amounts` the Ray in use has too few of in all, with how many it has."""
    import ray

    total = ray.cluster_resources()
    return {kind: total.get(kind, 0.0) for kind, need in amounts.items() if need > total.get(kind, 0.0) + 1e-9}


def _per_task(resources: Resources) -> dict[str, float]:
    return {"CPU": resources.cpus_per_task, "GPU": resources.gpus_per_task}


def _amount(amounts: dict[str, float], zero: bool = False) -> str:
    return " and ".join(f"{n:g} {kind}{'' if n == 1 else 's'}" for kind, n in amounts.items() if n or zero)


def check_address(address: str, timeout_s: float = 10.0) -> None:
    """Fail within seconds when no Ray cluster answers at `address`: ray.init would retry for minutes, and
    while it waits in native code the process does not see SIGTERM."""
    if address == "auto":  # looked up in this machine's Ray session files; Ray says at once when there is none
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address}: expected host:port (or ray://host:port, or auto)")
    hint = "start one with `ray start --head`, or leave --address out to start a local Ray"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UsageError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); {hint}") from None
    if address.startswith("ray://"):  # Ray Client: its own handshake, with its own timeout
        return
    answered = threading.Event()

    def ask() -> None:
        import ray._raylet

        with contextlib.suppress(Exception):  # an answer, even a refusal (a token), is a GCS answering
            ray._raylet.GcsClient(address=target).internal_kv_get(b"session_name", namespace=b"session",
                                                                  timeout=timeout_s)
        answered.set()

    threading.Thread(target=ask, name="mmflow-address-check", daemon=True).start()
    if not answered.wait(timeout_s):
        raise UsageError(f"--address {address}: something listens there, but no Ray GCS answered in "
                         f"{timeout_s:g} s; {hint}")


def ensure_ray(min_cpus: float = 1) -> None:
    """Connect to the configured cluster, or start a local Ray sized to this machine."""
    global _STARTED_RAY
    import logging

    import ray

    if ray.is_initialized():
        return
    defaults = RAY_ENV if _RAY_ADDRESS else {**RAY_ENV, **LOCAL_RAY_ENV}
    env = {name: os.environ.get(name, value) for name, value in defaults.items()}  # the user's setting wins
    options: dict[str, Any] = {"logging_level": logging.WARNING, "runtime_env": {"env_vars": env}}
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    if _RAY_ADDRESS:
        ray.init(address=_RAY_ADDRESS, **options)
    else:
        cores = os.cpu_count() or 1
        _start_private_ray(max(cores, math.ceil(min_cpus)) if _OVERSUBSCRIBE else cores, options)
    _STARTED_RAY = True
    if threading.current_thread() is threading.main_thread():  # ray.init makes SIGTERM exit the process at once
        for signum, handler in handlers.items():
            if handler is not None:
                signal.signal(signum, handler)


def _start_private_ray(num_cpus: int, options: dict[str, Any]) -> None:
    """A local Ray of this run's own, whatever other Ray runs on the host.

    "local": never attach to a cluster that `ray start` left recorded in /tmp/ray (possibly dead);
    connecting takes `--address auto`. Ray's state calls made without an address (Train's placement-group
    cleaner, for one) look for every Ray on the host and fail when there are two, and a trial ASHA
    stopped then never releases its workers: this Ray's GCS port is chosen here, and every process of
    the run gets its address as RAY_ADDRESS. No metrics export: on a small machine its wake-ups preempt training
    workers, and every all-reduce waits for the preempted one. The dashboard stays: without it, trials
    ASHA stops early leak their workers' CPUs.
    """
    import ray

    if "RAY_enable_metrics_collection" not in os.environ:  # the user's setting wins
        options["_system_config"] = {"enable_metrics_collection": False}
    port = os.environ.get("RAY_GCS_SERVER_PORT") or str(_free_port())
    options["runtime_env"]["env_vars"]["RAY_ADDRESS"] = f"127.0.0.1:{port}"  # Ray resolves it to the node's IP
    options["runtime_env"]["worker_process_setup_hook"] = "mmflow.engine.distributed.quiet_local_worker"
    saved = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = port
    try:
        ray.init(address="local", num_cpus=num_cpus, **options)
    finally:
        if saved is None:
            del os.environ["RAY_GCS_SERVER_PORT"]


def quiet_local_worker() -> None:
    """Set up every worker process of a private local Ray: it has no autoscaler, so Train's resource requests
    to one serve nothing, and on a busy machine each timed-out request printed a traceback."""
    import logging

    from ray.train.v2._internal.execution.scaling_policy import autoscaling_coordinator_client

    autoscaling_coordinator_client.logger.setLevel(logging.ERROR)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def shutdown_ray() -> None:
    """Stop the Ray this process started (a cluster we only connected to keeps running)."""
    global _STARTED_RAY
    if _STARTED_RAY:
        import ray

        ray.shutdown()
        _STARTED_RAY = False
