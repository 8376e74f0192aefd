"""`mmflow sweep` on Ray Tune: the shared steps once, then one Tune trial per sampled configuration.

Each trial runs the workflow with its values in a Tune worker, its training steps on a Ray
executor that reports every epoch to Tune (so ASHA can stop the trial early); every step's final
metrics are reported at the end. With the Ray executor, the only code that imports Ray.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from .console import RUN_LOG, RunConsole, SweepConsole, interrupt_cause
from .executor import ExecutorSettings, create_executor
from .ray_executor import RayExecutor, controller_to, off_main_thread
from .mirror import fetch_run
from .run_folder import RUN_RECORD, new_run_dir
from .runner import Runner
from .seeds import base_name, over_seeds
from .spec import Workflow, validate_document
from .storage import Storage
from .sweep import Scheduler, Space, Trial, best_workflow, override, swept_steps, write_results
from .yaml_source import apply_overrides, parse_yaml

#: `on_trial(name, sampled values, state, result or None)`: running (a result each epoch), done, stopped, error
TrialEvents = Callable[[str, dict[str, Any], str, "dict[str, Any] | None"], None]


def run_sweep(workflow: Workflow, runs_root: Path, console: SweepConsole,
              settings: ExecutorSettings = ExecutorSettings()) -> tuple[Path, str, Trial | None]:
    """Run the shared steps once, then the trials on Ray Tune; write results.csv and best.yaml. The console
    shows the sweep's lines and trials, and keeps them in the sweep folder's run.log.

    Returns (sweep folder, results table, best trial or None).
    """
    ray_executor = RayExecutor(settings)  # first: a wrong address fails before anything is written
    sweep = workflow.spec.sweep
    sweep_dir = new_run_dir(runs_root, workflow.name)
    sweep_dir.mkdir(parents=True)
    console.log.open(sweep_dir / RUN_LOG)
    echo = console.line
    swept = swept_steps(workflow)
    shared = [name for name in workflow.order if name not in swept]
    try:
        if shared:  # their folders sit where every trial's cache lookup finds them
            echo(f"shared steps (run once for all trials): {', '.join(shared)}")
            subset = Workflow(workflow.spec, {n: workflow.steps[n] for n in shared}, shared, workflow.document,
                              workflow.overrides)
            executor = ray_executor if workflow.spec.executor == RayExecutor.name else None
            Runner(subset, sweep_dir, runs_root, echo=echo, executor=executor, settings=settings, track=False).run()
        # in the workflow's storage, the trials' folders sit under the sweep's, beside Tune's state
        sweep_storage = (Storage.open(workflow.spec.storage).joinpath(*sweep_dir.relative_to(runs_root).parts)
                         if workflow.spec.storage else None)
        setup = {"text": workflow.document.text, "file": workflow.document.file,
                 "overrides": workflow.overrides, "runs_root": str(runs_root.resolve()),
                 "trials": str((sweep_dir / "trials").resolve()),
                 "shared": sweep_storage.uri if sweep_storage and shared else None}
        space: dict[str, Any] = {path: search_space(value) for path, value in sweep.parameters.items()}
        echo(f"trials of {', '.join(sweep.parameters)} ({sweep.scheduler.name}) -> {sweep_dir / 'trials'}")
        raw = run_trials(ray_executor, _trial, space, setup, num_samples=sweep.num_samples, scheduler=sweep.scheduler,
                         max_concurrent_trials=sweep.max_concurrent_trials, trial_cpus=sweep.trial_cpus,
                         storage=sweep_storage or Storage.open(sweep_dir),
                         callbacks=[*tracking_callbacks(workflow, sweep_dir),
                                    trial_events(console.trial, sweep.metric)], log=console.log.write)
    except KeyboardInterrupt as interrupt:
        console.log.write(interrupt_cause(interrupt))
        raise
    finally:
        ray_executor.close()
    trials = [Trial(name, {p: config.get(p) for p in sweep.parameters}, metrics,
                    "error" if error else "done" if sweep.metric in metrics else "stopped")
              for name, config, metrics, error in raw]
    table = write_results(sweep, trials, sweep_dir)
    best = best_workflow(workflow, sweep, trials)
    if best is not None:
        (sweep_dir / "best.yaml").write_text(best[1])
    return sweep_dir, table, None if best is None else best[0]


def search_space(space: Space) -> Any:
    """The Ray Tune search space of one swept value."""
    from ray import tune

    kind, value = space.given()
    if kind == "grid":
        return tune.grid_search(value)
    if kind == "choice":
        return tune.choice(value)
    return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](*value)


def asha(scheduler: Scheduler) -> Any:
    """Ray Tune's ASHA scheduler over the per-epoch metric, stopping no trial after `max_t` epochs before its
    final report (one more result)."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(metric=scheduler.metric, mode=scheduler.mode, max_t=scheduler.max_t + 1,
                         grace_period=scheduler.grace_period, reduction_factor=scheduler.reduction_factor)


def run_trials(executor: RayExecutor, trial: Callable[[dict[str, Any], dict[str, Any]], None],
               param_space: dict[str, Any], setup: dict[str, Any], *, num_samples: int, scheduler: Scheduler,
               max_concurrent_trials: int | None, trial_cpus: float, storage: Storage,
               callbacks: list[Any] | None = None, log: Callable[[str], None] = lambda text: None,
               ) -> list[tuple[str, dict[str, Any], dict[str, Any], str | None]]:
    """Ray Tune over `trial(config, setup)` on the executor's Ray, with its state under `storage`/tune; per trial
    (name, config, last reported metrics, error or None). The config holds the sampled values only (what Tune's
    loggers record); `setup` is the same for every trial, with "actors" added: the actor where the trial's Train
    controllers go (see controller_to), so that an interrupt kills them first. After an interrupt, what Tune logs
    goes to `log` only."""
    import ray
    from ray import tune

    executor.connect()
    stopper, trial_actors, stop = stop_switch(log)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_enlisted, trial=trial, setup=setup, trial_actors=trial_actors),
                            {"cpu": trial_cpus}),
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=num_samples, scheduler=asha(scheduler) if scheduler.name == "asha"
                                    else None, max_concurrent_trials=max_concurrent_trials,
                                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(name="tune", storage_path=storage.path, storage_filesystem=storage.filesystem,
                                  verbose=0, callbacks=callbacks, stop=stopper),
    )
    try:
        with executor.in_ray(stop):  # an interrupt ends the trials, then Tune's loop, before Ray stops
            results = off_main_thread(tuner.fit, stop=stop)
    finally:
        ray.kill(trial_actors)
    return [(Path(r.path).name, r.config, dict(r.metrics or {}), None if r.error is None else str(r.error))
            for r in results]


def stop_switch(log: Callable[[str], None]) -> tuple[Any, Any, Callable[[], bool]]:
    """A Tune stopper, an actor where each trial leaves its own handle (see _enlisted), and the function that
    stops every trial at once: Tune's own stop waits for a trial's next report and then up to 15 s before it
    kills the trial, while Ctrl-C should end a sweep in seconds."""
    import ray
    from ray import tune
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    stopping = threading.Event()

    class StopSwitch(tune.stopper.Stopper):
        def __init__(self, stopping: threading.Event) -> None:  # an argument: a closure is pickled with the class
            self.stopping: threading.Event | None = stopping

        def __getstate__(self) -> dict[str, Any]:  # Tune pickles its run config with its state: not the event
            return {"stopping": None}

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return self.stopping is not None and self.stopping.is_set()

    trial_actors = ray.remote(num_cpus=0)(_TrialActors).options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None)).remote()

    def stop() -> bool:
        stopping.set()  # first: no trial starts from now on
        log_only_to(logging.getLogger("ray.tune"), log)  # each trial killed is no error to report on the terminal
        for actor in reversed(ray.get(trial_actors.all.remote(), timeout=5)):  # a trial's controllers before it
            ray.kill(actor)
        return True

    return StopSwitch(stopping), trial_actors, stop


def log_only_to(logger: logging.Logger, log: Callable[[str], None]) -> None:
    """From now on `logger`'s records (tracebacks included) go to `log` alone: not to the terminal, yet kept (was
    Tune's final state saved?)."""

    class ToLog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log(self.format(record) + "\n")

    handler = ToLog()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    logger.handlers, logger.propagate = [handler], False


class _TrialActors:
    """An actor holding the handles of the trials' actors and their Train controllers (Tune keeps its own
    private)."""

    def __init__(self) -> None:
        self.actors: list[Any] = []

    def started(self, actor: Any) -> None:
        """A trial, or a Train controller of one, has started in `actor`."""
        self.actors.append(actor)

    def all(self) -> list[Any]:
        """Every actor so far, in the order they started."""
        return self.actors


def _enlisted(config: dict[str, Any], trial: Callable[[dict[str, Any], dict[str, Any]], None],
              setup: dict[str, Any], trial_actors: Any) -> None:
    """`trial(config, setup)` once its actor is in `trial_actors`, which the trial's fits join (setup["actors"])."""
    import ray

    ray.get(trial_actors.started.remote(ray.get_runtime_context().current_actor))
    trial(config, {**setup, "actors": trial_actors})


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id.rsplit('_', 1)[-1]}"


def step_to_tune(step: str) -> list[Any]:
    """Ray Tune's TuneReportCallback for a training step's fit, with the step's name before every metric
    ('train.loss')."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class StepToTune(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            named = [{f"{step}.{k}": v for k, v in m.items()} for m in metrics]
            super().after_report(run_context, named, checkpoint)

    return [StepToTune()]


def fetch_shared_steps(stored: str, sweep_dir: Path) -> None:
    """On a node without the sweep's folder (no shared filesystem), copy its shared steps from the
    storage, where the trials' cache lookups find them; trials on one node fetch once."""
    # always under the lock: the record is written before the steps, so only a finished fetch counts
    lock = Path(tempfile.gettempdir()) / f"mmflow-fetch-{hashlib.sha256(bytes(sweep_dir)).hexdigest()[:16]}.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when the file closes
        if not (sweep_dir / RUN_RECORD).exists():
            fetch_run(Storage.open(stored), sweep_dir.parent.parent)


def tracking_callbacks(workflow: Workflow, sweep_dir: Path) -> list[Any]:
    """Ray Tune's MLflow logger for a workflow whose `tracking:` names MLflow: one MLflow run per trial, its
    sampled values as params, every report as metrics. (Tune's TensorBoard logger writes each trial's event
    files under the sweep's tune/ folder by default.)"""
    tracking = workflow.spec.tracking
    if tracking is None or tracking.mlflow is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return [MLflowLoggerCallback(tracking_uri=tracking.mlflow, experiment_name=tracking.experiment or workflow.name,
                                 tags={"mmflow.workflow": workflow.name, "mmflow.sweep": sweep_dir.name})]


def trial_events(on_trial: TrialEvents, metric: str) -> Any:
    """A Tune callback passing each trial's start, results and end to `on_trial` (on the driver)."""
    from ray import tune

    class Events(tune.Callback):
        def __init__(self, on_trial: TrialEvents) -> None:  # an argument: a closure would be pickled with the class
            self.on_trial: TrialEvents | None = on_trial

        def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with its state: not the terminal
            return {"on_trial": None}

        def tell(self, trial: Any, state: str, result: dict[str, Any] | None = None) -> None:
            if self.on_trial is not None:
                self.on_trial(_trial_name(trial), trial.config, state, result)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.tell(trial, "running")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.tell(trial, "running", result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.tell(trial, "done" if metric in (trial.last_result or {}) else "stopped")  # ASHA: no final report

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.tell(trial, "error")

    return Events(on_trial)


def _trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """One Tune trial: the workflow with this trial's values, the shared steps reused from the cache;
    its training steps report every epoch, and every step's final metrics are reported at the end."""
    from ray import tune

    doc = parse_yaml(setup["text"], setup["file"])
    overrides = [*setup["overrides"], *(override(path, value) for path, value in config.items())]
    apply_overrides(doc, overrides)
    workflow = validate_document(doc, overrides=overrides)
    if setup["shared"]:
        fetch_shared_steps(setup["shared"], Path(setup["trials"]).parent)
    name = tune.get_context().get_trial_name()
    for stream in (sys.stdout, sys.stderr):  # Ray's log monitor labels this trial's output with its name
        print(f":actor_name:{name}", file=stream, flush=True)
    executor = (RayExecutor(train_callbacks=lambda step: [*step_to_tune(step), controller_to(setup["actors"])],
                            label=name) if workflow.spec.executor == RayExecutor.name
                else create_executor(workflow.spec.executor))
    console = RunConsole(live=False, summary=False)  # the trial's lines, and its run.log
    outcomes = Runner(workflow, Path(setup["trials"]) / name, Path(setup["runs_root"]), executor=executor,
                      echo=console.line, hooks=[console], track=False, max_parallel_steps=1).run()
    metrics = {f"{o.name}.{k}": v for o in outcomes for k, v in o.metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    per_seed = {o.name: o.metrics for o in outcomes if base_name(o.name) != o.name}
    # over the workflow's seeds: a step's metric is the mean over them (the sweep's metric names the step so)
    metrics.update({f"{step}.{k}": mean for step, stats in over_seeds(per_seed).items()
                    for k, (mean, _, _) in stats.items()})
    tune.report(metrics)
