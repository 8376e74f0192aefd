"""The `ray` executor: training on Ray Train workers (TorchTrainer), side tasks as Ray tasks, a local Ray.

With the Tune module (tune.py), the only code that imports Ray.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import posixpath
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from .errors import ResourcesError, UsageError
from .executor import (Executor, ExecutorSettings, TaskFunction, TrainFunction, TrainingJob, TrainResult, TrainSession,
                       latest_checkpoint)

if TYPE_CHECKING:
    import torch

    from .nodes import StepInputs
    from .spec import Resources

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

TrainCallbacks = Callable[[str], list[Any]]  # step name -> Ray Train callbacks of its fit
STOP_TIMEOUT_S = 20.0  # how long stopping Ray waits at most for the steps' calls into it to end (see in_ray)


class RayExecutor(Executor):
    """Ray Train workers for training, Ray tasks for side work; the cluster at `settings.address`
    (else RAY_ADDRESS, as `ray job submit` sets it), or a local Ray of the run's own.

    `train_callbacks`: extra Ray Train callbacks per training step (a sweep trial's report to Tune); `label`
    names the trial in what its workers print.
    """

    name = "ray"
    parallel_steps = True  # each training step on workers of its own, placed by Ray

    def __init__(self, settings: ExecutorSettings = ExecutorSettings(),
                 train_callbacks: TrainCallbacks | None = None, label: str = "") -> None:
        super().__init__(settings)
        self.label = label  # before the step and rank in what workers print (a sweep's trial)
        # Every line a worker or trial prints is shown with its own label: Ray's deduplication would file one trial's
        # line under another's. Read when Ray is first imported, which happens after this (the user's setting wins).
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        # Ray's C++ crash handler in the driver takes SIGTERM for a crash: it prints a stack and sets an alarm that
        # aborts the process 3 s later, while mmflow unwinds the run (steps marked interrupted, Ray stopped). Also
        # read when Ray is first imported.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        self.address = settings.address or os.environ.get("RAY_ADDRESS") or None
        self.train_callbacks = train_callbacks
        self._started = False
        self._connecting = threading.Lock()  # steps running side by side connect once
        self._release = threading.Event()  # ends the thread that started Ray (see connect)
        self._calls: dict[object, Callable[[], bool]] = {}  # steps' calls into Ray, each with its stop (see in_ray)
        self._calls_lock = threading.Lock()
        self._closed = False
        if self.address:  # before any step runs: a wrong address is known in seconds, not after the data steps
            check_address(self.address)

    def train(self, fn: TrainFunction, config: dict[str, Any], job: TrainingJob) -> TrainResult:
        """Run `fn` on `job.resources.workers` Ray Train workers; restarts from the latest checkpoint
        `job.max_failures` times; an earlier attempt's checkpoint in `job.storage` is resumed."""
        channels: list[Any] = []  # the fit's, once made: it hands over Train's controller, which stopping kills
        with self.in_ray(lambda: bool(channels) and _end_fit(channels[0])):
            return self._train(fn, config, job, channels.append)

    def _train(self, fn: TrainFunction, config: dict[str, Any], job: TrainingJob,
               made: Callable[[Any], None]) -> TrainResult:
        import ray.train
        from ray.train.torch import TorchTrainer
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        resources = job.resources
        asked = {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker}
        per_worker = {kind: n for kind, n in asked.items() if n}  # Ray's resources_per_worker: no GPU on CPU workers
        workers = {kind: resources.workers * n for kind, n in per_worker.items()}
        tasks = {kind: job.parallel_tasks * n for kind, n in _per_task(resources).items()}
        self.connect(workers["CPU"] + tasks["CPU"])
        use_gpu = "GPU" in per_worker
        self.require(workers, f"{resources.workers} worker(s) x {_amount(per_worker)}",
                     "lower resources.workers, cpus_per_worker or gpus_per_worker")
        tasks_inside = job.parallel_tasks > 0 and bool(lacking({k: workers.get(k, 0) + n for k, n in tasks.items()}))
        job.log(f"Ray Train: {resources.workers} worker(s), {per_worker} each, backend {'nccl' if use_gpu else 'gloo'}")
        if tasks_inside:  # waiting for room beside the workers would wait forever
            job.log(f"its {job.parallel_tasks} side tasks run in the training worker, one after another: the Ray has "
                    f"no room for them beside the workers (they need {_amount(tasks)} more)")
        storage = job.storage
        earlier = latest_checkpoint(storage.joinpath("run"))
        if earlier is not None:
            job.log(f"an earlier attempt left {posixpath.basename(earlier.path)}: training continues from it")
            kept = storage.joinpath("resume_checkpoint")  # the new fit may prune checkpoints under storage/run
            earlier.copy_to(kept)
            earlier = kept
        resume_from = ray.train.Checkpoint(earlier.path, earlier.filesystem) if earlier else None
        # outside any placement group (a sweep trial's): the channel must outlive the workers that report to it
        channel = ray.remote(num_cpus=0)(_DriverChannel).options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None)).remote()
        made(channel)
        trainer = TorchTrainer(
            _ray_worker_entry,
            train_loop_config={"fn": fn, "config": config, "seed": job.seed, "resources": resources,
                               "resume_from": resume_from, "inputs": job.inputs, "channel": channel,
                               "tasks_inside": tasks_inside, "label": f"{self.label} {job.name}".strip()},
            scaling_config=ray.train.ScalingConfig(
                num_workers=resources.workers, use_gpu=use_gpu, resources_per_worker=per_worker
            ),
            run_config=ray.train.RunConfig(
                name="run",
                storage_path=storage.path,
                storage_filesystem=storage.filesystem,
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
                logging_config=ray.train.LoggingConfig(log_level="WARNING"),
                callbacks=[controller_to(channel), *(self.train_callbacks(job.name) if self.train_callbacks else [])],
                failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
            ),
        )

        def deliver() -> None:  # rank 0's log lines and progress, on the driver as they come
            for event in ray.get(channel.take.remote()):
                if "log" in event:
                    job.log(event["log"])
                elif job.progress is not None:
                    job.progress(event["progress"])

        try:
            result = off_main_thread(trainer.fit, deliver, lambda: _end_fit(channel))
            deliver()
            rows = ray.get(channel.get.remote())
        except ray.train.TrainingFailedError as exc:
            raise _root_cause(exc) from exc  # the chain keeps every worker's traceback for error.log
        finally:
            ray.kill(channel)
        if result.error is not None:
            raise _root_cause(result.error) from result.error
        checkpoint = result.checkpoint or resume_from  # resumed with every epoch run: that checkpoint is the result
        if checkpoint is None:
            return TrainResult(rows)
        local = job.scratch.resolve() / "final_checkpoint"
        shutil.rmtree(local, ignore_errors=True)
        checkpoint.to_directory(str(local))
        return TrainResult(rows, local)

    def run_tasks(self, fn: TaskFunction, configs: list[dict[str, Any]], resources: Resources,
                  at_once: int | None = None, inputs: StepInputs | None = None) -> list[Any]:
        """Parallel Ray tasks of `resources.cpus_per_task` CPUs and `gpus_per_task` GPUs each; a local Ray is
        sized to run `at_once` of them together (default: all), the rest queue. A task on a node without the
        step's `inputs` fetches them from the run's storage first."""
        import ray

        submitted: list[Any] = []

        def cancel() -> bool:
            for task in submitted:
                ray.cancel(task, force=True)
            return bool(submitted)

        with self.in_ray(cancel):
            self.connect(min(at_once or len(configs), len(configs)) * resources.cpus_per_task)
            submitted += submit_tasks(fn, configs, resources, inputs, self.address)
            return gather_tasks(submitted)

    def warm_up(self) -> None:
        """Start the local Ray (or connect to the cluster), then import Ray Train, in the background: seconds of the
        wait before a run's first epoch, spent while its data steps run. With --oversubscribe the first training's
        needs size the local Ray, so it starts then."""
        if self.settings.oversubscribe:
            return

        def start() -> None:
            with contextlib.suppress(Exception):  # the step that needs Ray connects again and says what failed
                self.connect()
                import ray.train.torch  # noqa: F401

        threading.Thread(target=start, name="mmflow-ray-warm-up", daemon=True).start()

    def connect(self, min_cpus: float = 1) -> None:
        """Connect to the configured cluster, or start a local Ray sized to this machine (or, with
        `--oversubscribe`, to `min_cpus` when that is more)."""
        import ray

        with self._connecting:
            if self._closed:  # a step's thread after an interrupt stopped the run: no new Ray
                raise RuntimeError("Ray was stopped: the run is ending")
            if ray.is_initialized():
                return
            # Ray's processes die with the thread that started them (PR_SET_PDEATHSIG): not a step's thread, which
            # ends with the step, but one that lives until close(). Off the main thread, ray.init leaves signals alone.
            self._release = threading.Event()
            started = threading.Event()
            failed: list[BaseException] = []

            def keep() -> None:
                try:
                    self._connect(min_cpus)
                except BaseException as exc:  # raised in the thread that asked
                    failed.append(exc)
                started.set()
                if not failed:
                    self._release.wait()

            threading.Thread(target=keep, name="mmflow-ray", daemon=True).start()
            started.wait()
            if failed:
                raise failed[0]

    def _connect(self, min_cpus: float) -> None:
        import ray

        defaults = RAY_ENV if self.address else {**RAY_ENV, **LOCAL_RAY_ENV}
        env = {name: os.environ.get(name, value) for name, value in defaults.items()}  # the user's setting wins
        if not self.settings.verbose:  # Ray's default token authentication stays on; its notice on every run is noise
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        logging.getLogger("ray._private.worker").addFilter(_not_sigterm_notice)
        options: dict[str, Any] = {"logging_level": logging.INFO if self.settings.verbose else logging.WARNING,
                                   "runtime_env": {"env_vars": env,
                                                   "worker_process_setup_hook": f"{__name__}.set_up_worker"}}
        if self.address:
            context = ray.init(address=self.address, **options)
        else:
            cores = os.cpu_count() or 1
            context = _start_private_ray(max(cores, math.ceil(min_cpus)) if self.settings.oversubscribe else cores,
                                         options)
        self._started = True
        dashboard = getattr(context, "dashboard_url", None)  # none where Ray runs without its dashboard
        if dashboard:
            self.log(f"Ray dashboard: http://{dashboard}")

    def capacity(self) -> dict[str, float]:
        """The CPUs and GPUs of the Ray in use (a local one is started for this)."""
        import ray

        self.connect()
        total = ray.cluster_resources()
        return {kind: total.get(kind, 0.0) for kind in ("CPU", "GPU")}

    def require(self, amounts: dict[str, float], what: str, fix: str) -> None:
        """Fail at once when the Ray in use has fewer CPUs or GPUs in all than `what` needs at the same time."""
        require(amounts, what, fix, self.address)

    @contextlib.contextmanager
    def in_ray(self, stop: Callable[[], bool]) -> Iterator[None]:
        """Around a step's (or a sweep's) calls into Ray: `close()` calls `stop()` (until it returns True: it took
        effect) to end them early, and waits until they have ended before it stops Ray: a thread inside Ray as Ray
        stops aborts the process (an interrupt)."""
        token = object()
        with self._calls_lock:
            if self._closed:
                raise RuntimeError("Ray was stopped: the run is ending")
            self._calls[token] = stop
        try:
            yield
        finally:
            with self._calls_lock:
                del self._calls[token]

    def _end_calls(self) -> None:
        """Have the steps' calls into Ray end (see in_ray); STOP_TIMEOUT_S at most."""
        stopped: set[object] = set()

        def stop() -> bool:
            with self._calls_lock:
                calls = dict(self._calls)
            for token, stop_call in calls.items():
                with contextlib.suppress(Exception):  # that call ended meanwhile
                    if token not in stopped and stop_call():
                        stopped.add(token)
            return stopped >= calls.keys()

        _stop_until(stop, lambda: not self._calls)

    def close(self) -> None:
        """Stop the Ray this executor started (a cluster it only connected to keeps running), once the steps'
        calls into it have ended: a training's Train controller is killed, side tasks are cancelled."""
        with self._calls_lock:
            self._closed = True  # no step's thread goes into Ray from now on
        self._end_calls()
        with self._connecting:  # a Ray still starting in the background is stopped once it has started
            if self._started:
                import ray

                ray.shutdown()
                self._started = False
                self._release.set()


def submit_tasks(fn: TaskFunction, configs: list[dict[str, Any]], resources: Resources, inputs: StepInputs | None,
                 address: str | None = None) -> list[Any]:
    """`fn(config, device)` per config as Ray tasks on the connected Ray; their refs (see gather_tasks)."""
    import ray

    per_task = _per_task(resources)
    require(per_task, f"each parallel task ({_amount(per_task)})", "lower resources.cpus_per_task or gpus_per_task",
            address)
    task = ray.remote(_task_entry).options(num_cpus=resources.cpus_per_task, num_gpus=resources.gpus_per_task)
    return [task.remote(fn, config, resources.gpus_per_task > 0, resources.cpus_per_task, inputs)
            for config in configs]


def gather_tasks(pending: list[Any]) -> list[Any]:
    """The results of submitted tasks, in order; a failing task raises its own exception, after every task has
    stopped (none is left writing)."""
    import ray

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


class RaySession(TrainSession):
    """A Ray Train worker: rank and device from the Train context, DDP over gloo or NCCL."""

    inputs: StepInputs | None = None  # the step's inputs, for side tasks on other nodes
    tasks_inside = False  # side tasks run in this worker: the Ray cannot hold them beside the workers

    def __init__(self, seed: int, resources: Resources, resume_from: Any = None, channel: Any = None) -> None:
        # lines and progress go to the driver through the channel (a _DriverChannel actor), in order
        super().__init__(resources, lambda message: channel.send.remote({"log": message}),
                         lambda event: channel.send.remote({"progress": event}))
        self._channel = channel
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
        if self.rank == 0:
            import ray

            ray.get(self._channel.put.remote(self.history))  # waited for (and what was sent before): it may exit next

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

    def start_tasks(self, fn: TaskFunction, configs: list[dict[str, Any]]) -> Callable[[], list[Any]]:
        """Parallel Ray tasks beside the training, or at once in turn on this worker's device when the Ray has no
        room for them beside the workers."""
        if self.tasks_inside:
            return super().start_tasks(fn, configs)
        pending = submit_tasks(fn, configs, self.resources, self.inputs)
        return lambda: gather_tasks(pending)


class _DriverChannel:
    """An actor between rank 0 and the driver: the metrics history (Ray Train's Result carries the metrics of
    checkpointed reports only, and a training function need not checkpoint every epoch), and the step's log
    lines and progress, which the driver takes while the training runs."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self.train_controller: Any = None

    def started(self, controller: Any) -> None:
        """Ray Train's controller of the fit has started (stopping the fit early kills it)."""
        self.train_controller = controller

    def controller(self) -> Any:
        """The fit's Train controller, None before it has started."""
        return self.train_controller

    def put(self, rows: list[dict[str, Any]]) -> None:
        """Replace the history (after a restart from a checkpoint it is the restored one, then grows)."""
        self.rows = rows

    def get(self) -> list[dict[str, Any]]:
        """The history so far."""
        return self.rows

    def send(self, event: dict[str, Any]) -> None:
        """A log line (`{"log": text}`) or a progress event (`{"progress": {...}}`) for the driver."""
        self.pending.append(event)

    def take(self) -> list[dict[str, Any]]:
        """What was sent since the last call."""
        taken, self.pending = self.pending, []
        return taken


def _ray_worker_entry(config: dict[str, Any]) -> None:
    """`train_loop_per_worker` for TorchTrainer: build the session and call the component's fn."""
    import ray

    from ray.train.v2._internal.execution import context as train_context

    # Ray 2.60 logs every report at INFO through a logger named by file path, which escapes
    # RunConfig's LoggingConfig; those lines drown the progress output.
    train_context.logger.setLevel(logging.WARNING)
    if config["inputs"] is not None:  # a node without the run directory (no shared filesystem)
        config["inputs"].ensure_local()
    session = RaySession(config["seed"], config["resources"], config.get("resume_from"), config["channel"])
    session.inputs = config["inputs"]
    session.tasks_inside = config["tasks_inside"]
    # What the worker prints itself (warnings, a user's print) reaches the driver through Ray's log monitor, which
    # labels it with the name that follows this marker (the mechanism behind an actor's __repr__ prefix).
    for stream in (sys.stdout, sys.stderr):
        print(f":actor_name:{config['label']} rank {session.rank}", file=stream, flush=True)
    try:
        config["fn"](session, config["config"])
    finally:
        if session.rank == 0:  # waited for, so what rank 0 sent last reaches the driver before the worker exits
            ray.get(config["channel"].get.remote())
        session.close()


Result = TypeVar("Result")


def off_main_thread(fit: Callable[[], Result], poll: Callable[[], None] = lambda: None,
                    stop: Callable[[], bool] | None = None) -> Result:
    """`fit()` in a helper thread while this one waits, calling `poll()` about every 0.2 s. Ray Train and Tune trap
    Ctrl-C when they run on the main thread (to abort gracefully, then exit on their own terms); off it they leave
    signals to mmflow, which unwinds the run at once: steps marked interrupted, the local Ray stopped. An interrupt
    of the waiting thread first ends `fit()` with `stop()` (see _stop_until), so that no thread is inside Ray as Ray
    stops. Called off the main thread (a sweep trial), `fit()` runs in this one and `poll()` in a helper."""
    main = threading.current_thread() is threading.main_thread()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["result"] = fit()
        except BaseException as exc:  # handed to the waiting thread; after an interrupt nobody asks
            outcome["error"] = exc
        finally:
            done.set()

    def polling() -> None:
        while not done.wait(0.2):  # wakes for signal handlers, which run on the main thread only
            try:
                poll()
            except Exception:
                if main:
                    raise
                return  # what it polls went with the training (a trial ASHA stopped): fit() says what happened

    helper = threading.Thread(target=target if main else polling, name="mmflow-fit", daemon=True)
    helper.start()
    if main:
        try:
            polling()
        except KeyboardInterrupt as interrupt:
            if stop is not None:
                _stop_until(stop, lambda: not helper.is_alive())
            interrupt.__cause__ = outcome.get("error")  # how fit() ended, for run.log (see console.interrupt_cause)
            raise
    else:
        target()
        helper.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _stop_until(stop: Callable[[], bool], ended: Callable[[], bool], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Call `stop()` until it returns True (it took effect: what it ends may not have started yet) and wait until
    `ended()`; `timeout_s` at most."""
    deadline = time.monotonic() + timeout_s
    stopped = False
    while not ended() and time.monotonic() < deadline:
        if not stopped:
            with contextlib.suppress(Exception):  # what it stops ended meanwhile
                stopped = stop()
        time.sleep(0.1)


def _end_fit(channel: Any) -> bool:
    """Kill a fit's Train controller once it has started (see controller_to): its workers die with it and its
    fit() raises. Whether it had started."""
    import ray

    controller = ray.get(channel.controller.remote(), timeout=5)
    if controller is not None:
        ray.kill(controller)
    return controller is not None


def controller_to(channel: Any) -> Any:
    """A Ray Train callback that hands the fit's controller to `channel` (an actor: `started(controller)`) as the
    controller starts."""
    # a DeveloperAPI of Ray Train's internals: no public hook runs in the controller before the workers start
    from ray.train.v2._internal.execution.callback import ControllerCallback

    class ControllerToChannel(ControllerCallback):
        def after_controller_start(self, train_run_context: Any) -> None:
            import ray

            channel.started.remote(ray.get_runtime_context().current_actor)

    return ControllerToChannel()


def _not_sigterm_notice(record: logging.LogRecord) -> bool:
    # mmflow's CLI handles SIGTERM; Ray's notice that it set no handler of its own (off the main thread) is noise
    return "SIGTERM handler is not set" not in record.getMessage()


def _root_cause(error: BaseException) -> BaseException:
    """The lowest-ranked worker's own exception, rather than Ray's multi-line summary of all workers."""
    failures = getattr(error, "worker_failures", None)  # ray.train.WorkerGroupError
    return failures[min(failures)] if failures else error


def require(amounts: dict[str, float], what: str, fix: str, address: str | None) -> None:
    """Fail at once when the Ray in use (at `address`, else local) has fewer CPUs or GPUs in all than `what`
    needs at the same time: Ray would wait for them forever."""
    short = lacking(amounts)
    if not short:
        return
    where = f"the Ray cluster at {address}" if address else "the local Ray"
    more = "" if address or "CPU" not in short else ", or pass --oversubscribe to start more workers than cores"
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


def _start_private_ray(num_cpus: int, options: dict[str, Any]) -> Any:
    """A local Ray of this run's own, whatever other Ray runs on the host.

    "local": never attach to a cluster that `ray start` left recorded in /tmp/ray (possibly dead);
    connecting takes `--address auto`. Ray's state calls made without an address (Train's placement-group
    cleaner, for one) look for every Ray on the host and fail when there are two, and a trial ASHA
    stopped then never releases its workers: this Ray's GCS port is chosen here, and every process of
    the run gets its address as RAY_ADDRESS. No metrics export: on a small machine its wake-ups preempt training
    workers, and every all-reduce waits for the preempted one. The dashboard stays: without it, trials
    ASHA stops early leak their workers' CPUs. The driver does not wait for its last task events at the end.
    """
    import ray

    system = {"enable_metrics_collection": False,
              # it stops with the run: at its end the driver waited 5 s to flush task events to a dashboard going away
              "task_events_shutdown_flush_timeout_ms": 200}
    options["_system_config"] = {k: v for k, v in system.items() if f"RAY_{k}" not in os.environ}  # the user's wins
    port = os.environ.get("RAY_GCS_SERVER_PORT") or str(_free_port())
    options["runtime_env"]["env_vars"]["RAY_ADDRESS"] = f"127.0.0.1:{port}"  # Ray resolves it to the node's IP
    options["runtime_env"]["worker_process_setup_hook"] = f"{__name__}.set_up_local_worker"
    saved = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = port
    try:
        return ray.init(address="local", num_cpus=num_cpus, **options)
    finally:
        if saved is None:
            del os.environ["RAY_GCS_SERVER_PORT"]


def set_up_worker() -> None:
    """Set up every worker process of a run's Ray: one told to stop while it is already exiting exits without a
    traceback. (The raylet's SIGTERM can come while Python shuts a process down: Tune's report queue as its trial
    ended, a trial's actor as Tune let it go. Ray's handler then raised SystemExit inside threading's shutdown, an
    atexit function or a finaliser, and Python printed it as an ignored exception.)"""
    sys.unraisablehook = _exit_is_no_error(sys.unraisablehook)


def _exit_is_no_error(report: Callable[[Any], None]) -> Callable[[Any], None]:
    def unraisable(error: Any) -> None:  # sys.UnraisableHookArgs
        if not isinstance(error.exc_value, SystemExit):
            report(error)

    return unraisable


def set_up_local_worker() -> None:
    """Set up every worker process of a private local Ray as any other (set_up_worker); it has no autoscaler,
    so Train's resource requests to one serve nothing, and on a busy machine each timed-out request printed a
    traceback."""
    set_up_worker()
    # by name: importing Ray's internal module is not needed. A filter, not a level: the Train controller configures
    # its logging after this (dictConfig), which resets the levels of loggers under ray.train but keeps their filters
    logging.getLogger("ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client").addFilter(
        _errors_only)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]
