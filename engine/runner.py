"""Execute a validated workflow: each step reused from the cache or run, once its upstream steps are done, side by
side where the executor has room (schedule.py says which may start).

The run folder's layout and atomic writes are in run_folder.py, cache keys and the index of finished
steps in step_cache.py, the copy to a workflow's `storage` in mirror.py (a run hook); hooks.py says
what hooks are called with.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .context import StepContext, StepRun
from .errors import InputDataError, Interrupted, StepFailed, StepsFailed, UsageError
from .executor import Executor, ExecutorSettings, create_executor
from .graph import Wiring, edges_of, upstream_of
from .hooks import RunHook, RunInfo, StepOutcome, create_hook
from .mirror import StorageMirror, run_storage
from .run_folder import (RUN_RECORD, STATUS, digest_path, now, read_json, read_metrics, run_lock,
                         stat_fingerprint, write_json)
from .schedule import Schedule
from .selection import Selection
from .spec import Step, Workflow
from .step_cache import StepCache, adopt, cache_key, passed_on
from .storage import Storage
from .tracking import TrackingHook


@dataclass
class PlanEntry:
    """What a dry run predicts for one step."""

    name: str
    action: str  # run | reuse | keep
    source: str | None = None


class Runner:
    """Runs a workflow in a run directory, reusing cached steps from the same runs root."""

    def __init__(self, workflow: Workflow, run_dir: Path, runs_root: Path,
                 echo: Callable[[str], None] | None = None, verify: bool = False, executor: Executor | None = None,
                 settings: ExecutorSettings = ExecutorSettings(), hooks: list[RunHook] | None = None,
                 name: str | None = None, track: bool = True, selection: Selection | None = None,
                 max_parallel_steps: int | None = None) -> None:
        """`executor`: one the caller keeps using after this run (a sweep's Ray); by default the workflow's
        executor is created with `settings` and closed when the run ends. `hooks`: called besides the
        workflow's own (`hooks:`), the storage mirror and the workflow's `tracking:` (unless not `track`: a sweep
        trial, which Tune's callbacks track). `name`: the run's name in `mmflow runs` (a resumed run keeps its
        own unless given another). `echo` takes the run's lines (from one thread at a time). `selection`: a partial run
        (--only, --from, --to, --tags): the steps it runs, and those upstream of them that must come from the cache.
        `max_parallel_steps`: how many steps run at once at most (default: the workflow's; on an executor that runs
        one step at a time, 1)."""
        self.workflow = workflow
        self._own_executor = executor is None
        self.executor = executor or create_executor(workflow.spec.executor, settings)
        self.run_dir = run_dir.resolve()  # Ray workers do not share the driver's working directory
        self.runs_root = runs_root.resolve()
        self.echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._lock = threading.RLock()  # one thread at a time calls echo and the hooks
        self.executor.log = self._say
        self.cache = StepCache(self.runs_root, verify, self._say)
        tracking = [TrackingHook(workflow.spec.tracking)] if workflow.spec.tracking and track else []
        self.hooks = [*(create_hook(name) for name in workflow.spec.hooks), *tracking, *(hooks or [])]
        self._digests: dict[str, dict[str, str]] = {}  # step -> output -> digest passed downstream
        self.name = name
        self.selection = selection
        # the steps this run goes through: all, or a partial run's and those upstream of them
        self.steps = [n for n in workflow.order if selection is None or selection.covers(n)]
        self._earlier: dict[str, Any] = {}  # the run record of an earlier attempt (resume)
        self._attempt_started = 0.0
        at_most = max_parallel_steps or workflow.spec.max_parallel_steps or len(self.steps)
        self.max_parallel_steps = at_most if self.executor.parallel_steps else 1
        self._started = 0  # steps started so far
        self._keys: dict[str, str] = {}  # cache keys worked out before a step started
        self._abandoned = False  # interrupted while steps ran in threads: they say nothing more
        self._beside: set[str] = set()  # steps that ran beside others: their lines carry their names

    @functools.cached_property
    def storage(self) -> Storage | None:
        """This run's folder in the workflow's storage. Opened on first use: a plan contacts no store."""
        return run_storage(self.workflow, self.run_dir, self.runs_root)

    @functools.cached_property
    def _mirror(self) -> StorageMirror | None:
        return StorageMirror(self.storage, self.run_dir) if self.storage is not None else None

    # -- planning ---------------------------------------------------------------------------
    def plan(self) -> list[PlanEntry]:
        """Predict, without running anything, which steps would run, be reused, be kept, be left out of a partial
        run (skip), or are missing: upstream of a partial run's steps, with no outputs in the cache."""
        entries = []
        for name in self.workflow.order:
            step = self.workflow.steps[name]
            if name not in self.steps:
                entries.append(PlanEntry(name, "skip"))
                continue
            cache_only = self._cache_only(name)
            upstream = self._upstream_digests(step)
            key = cache_key(step, self.workflow, upstream) if upstream is not None else None
            found = self.cache.find(self.run_dir / name, key) if key is not None else None
            if found is None:
                why = "an upstream step runs" if upstream is None else None
                entries.append(PlanEntry(name, "missing", "no run has its outputs: run it first") if cache_only
                               else PlanEntry(name, "run", why))
                continue
            self._digests[name] = passed_on(step, key, found[1]["outputs"])
            own = found[0] == self.run_dir / name
            entries.append(PlanEntry(name, "keep" if own else "reuse", None if own else str(found[0])))
        self._digests.clear()
        return entries

    # -- running ----------------------------------------------------------------------------
    def run(self) -> list[StepOutcome]:
        """Run the steps (of a partial run: its steps), each once its upstream steps are done, side by side where
        the executor allows; after a failing step those running finish, nothing else starts, and StepFailed names
        every step that failed."""
        plan = self.plan() if self.selection is not None or self._own_executor else []
        if self.selection is not None:  # before anything is written: what it needs from the cache is there
            missing = [e.name for e in plan if e.action == "missing"]
            if missing:
                raise UsageError(f"{', '.join(missing)}: upstream of the steps this run selects, and no earlier run "
                                 f"has {'their' if len(missing) > 1 else 'its'} outputs for these settings; run "
                                 f"{'them' if len(missing) > 1 else 'it'} first (mmflow run WF --to {missing[-1]})")
        info = RunInfo(self.workflow, self.run_dir, self.runs_root, self.steps)
        hooks = [*([self._mirror] if self._mirror else []), *self.hooks]
        self._info, self._all_hooks = info, hooks
        for hook in hooks:
            hook.before_run(info)
        steps = self.workflow.steps
        if any(e.action == "run" and steps[e.name].component.distributed for e in plan) and self._own_executor:
            self.executor.warm_up()  # a step will train, its outputs not in the cache
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(self.run_dir):
            self._clean_temporaries()
            self.cache.register(self.run_dir)
            earlier = read_json(self.run_dir / RUN_RECORD)
            self._earlier = earlier if isinstance(earlier, dict) else {}
            self._earlier.setdefault("started", now("milliseconds"))  # kept by every later write of the record
            self._attempt_started = time.perf_counter()
            self._write_run_record("running")
            self._outcomes = {name: StepOutcome(name, "pending") for name in self.steps}
            try:
                self._run_steps()
            except BaseException as exc:
                with contextlib.suppress(OSError):  # a full disk: what went wrong first is what to report
                    self._write_run_record("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
                self._end(hooks, info, list(self._outcomes.values()), exc)
                raise
            self._write_run_record("done")
            self._end(hooks, info, list(self._outcomes.values()), None)
        return list(self._outcomes.values())

    def _run_steps(self) -> None:
        """Start every step whose upstream steps are done while the schedule has room: in this thread one at a
        time, or each in a thread of its own where steps run side by side."""
        steps = self.workflow.steps
        upstream = {name: upstream_of(steps[name].inputs) for name in self.steps}
        resources = self.workflow.spec.resources
        reserved = {"CPU": resources.workers * resources.cpus_per_worker,
                    "GPU": resources.workers * resources.gpus_per_worker}
        demand = {name: reserved for name in self.steps if steps[name].component.distributed}
        schedule = Schedule(self.steps, upstream, demand, self.executor.capacity, self.max_parallel_steps)
        self._schedule = schedule
        if schedule.max_parallel == 1:
            while not schedule.over:
                for name in schedule.next():
                    Interrupted.raise_pending()  # one a library swallowed in the step before
                    self._step(name)
                    schedule.finish(name)
            return
        ended: queue.Queue[tuple[str, BaseException | None]] = queue.Queue()
        failures: list[BaseException] = []
        try:
            while not schedule.over:
                started = schedule.next(self._may_start)
                if len(schedule.running) > 1:
                    self._beside.update(schedule.running)
                for name in started:
                    threading.Thread(target=self._step_in_thread, args=(name, ended), name=f"mmflow-step-{name}",
                                     daemon=True).start()  # daemon: an interrupted run does not wait for it
                with contextlib.suppress(queue.Empty):
                    name, error = ended.get(timeout=0.5)  # wakes for signal handlers
                    if isinstance(error, KeyboardInterrupt):
                        raise error
                    schedule.finish(name, error is None)
                    if error is not None:
                        failures.append(error)
        except KeyboardInterrupt as exc:
            self._abandon(schedule.running, exc)
            raise
        if failures:
            raise failures[0] if len(failures) == 1 else StepsFailed(failures)

    def _step(self, name: str) -> None:
        """Look one step up in the cache or run it, with its hooks; its outcome is the run's."""
        with self._lock:
            self._started += 1
            self.echo(f"[{self._started}/{len(self.steps)}] {name} ({self.workflow.steps[name].component.name})")
            for hook in self._all_hooks:
                hook.before_step(self._info, name)
        try:
            outcome = self._run_step(self.workflow.steps[name], self._cache_only(name))
        except BaseException as exc:
            if self._abandoned:  # the run was interrupted and has already said so
                return
            with self._lock:
                for hook in self._all_hooks:
                    hook.on_step_error(self._info, name, exc)
            raise
        if self._abandoned:
            return
        with self._lock:
            self._outcomes[name] = outcome
            for hook in self._all_hooks:
                hook.after_step(self._info, outcome)

    def _step_in_thread(self, name: str, ended: queue.Queue[tuple[str, BaseException | None]]) -> None:
        try:
            self._step(name)
        except BaseException as exc:  # the scheduling thread decides what it means for the run
            ended.put((name, exc))
        else:
            ended.put((name, None))

    def _may_start(self, name: str) -> bool:
        """Not beside a running step of the same cache key: it takes that step's outputs once they are done."""
        step = self.workflow.steps[name]
        upstream = self._upstream_digests(step)
        assert upstream is not None, "a step starts once its upstream steps are done"
        self._keys[name] = key = self._keys.get(name) or cache_key(step, self.workflow, upstream)
        return all(self._keys.get(other) != key for other in self._schedule.running)

    def _abandon(self, running: list[str], error: BaseException) -> None:
        """The run was interrupted while `running` went on in threads: mark them interrupted (as their own error
        handling would), and have those threads say nothing more."""
        self._abandoned = True
        for name in running:
            status_file = self.run_dir / name / STATUS
            status = read_json(status_file)
            if isinstance(status, dict) and status.get("state") == "running":
                with contextlib.suppress(OSError):
                    write_json(status_file, {**status, "state": "interrupted", "error": f"{type(error).__name__}: "
                                             f"{error}", "finished": now()})
            with self._lock:
                for hook in self._all_hooks:
                    hook.on_step_error(self._info, name, error)

    def _end(self, hooks: list[RunHook], info: RunInfo, outcomes: list[StepOutcome],
             error: BaseException | None) -> None:
        if self._own_executor:
            self.executor.close()
        # after a failure, what went wrong first is what to report (a storage that went away too)
        with contextlib.suppress(OSError) if error else contextlib.nullcontext():
            for hook in hooks:
                hook.after_run(info, outcomes, error)

    def _run_step(self, step: Step, cache_only: bool = False) -> StepOutcome:
        step_dir = self.run_dir / step.name
        upstream = self._upstream_digests(step)
        assert upstream is not None, "steps run in topological order"
        key = self._keys.get(step.name) or cache_key(step, self.workflow, upstream)
        found = self.cache.find(step_dir, key)
        if found is None and cache_only:  # its outputs went since the run's check
            raise UsageError(f"{step.name}: upstream of the steps this run selects, and its outputs are gone; "
                             f"run it first (mmflow run WF --to {step.name})")
        if found is None:
            return self._execute(step, step_dir, key)
        source, status = found
        if source != step_dir:
            adopt(source, step_dir)
            status = {**status, "reused_from": str(source), "finished": now()}
        files = self._fingerprints(step_dir, status)
        if source != step_dir or status.get("files") != files:  # verified: the fast path holds again
            write_json(step_dir / STATUS, {**status, "files": files})
        self._digests[step.name] = passed_on(step, key, status["outputs"])
        state = "kept" if source == step_dir else "reused"
        self._step_line(step.name, f"{state} ({'this run' if state == 'kept' else source})")
        return StepOutcome(step.name, state, 0.0, read_metrics(step_dir), status.get("reused_from"))

    def _execute(self, step: Step, step_dir: Path, key: str) -> StepOutcome:
        step_dir.mkdir(parents=True, exist_ok=True)
        staging, final = step_dir / ".outputs.tmp", step_dir / "outputs"
        for stale in (staging, final):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in (step_dir / "metrics.json", step_dir / "error.log"):
            stale.unlink(missing_ok=True)
        staging.mkdir()
        status = {"state": "running", "component": step.component.name, "version": step.component.version,
                  "cache_key": key, "started": now()}
        write_json(step_dir / STATUS, status)
        write_json(step_dir / "params.json", step.params.model_dump(mode="json"))
        ctx = StepContext(
            step=step.name, seed=self.workflow.seed_of(step),
            inputs={name: self._paths(w) for name, w in step.inputs.items()},
            sources={name: [e.step for e in edges_of(w)] for name, w in step.inputs.items()},
            log=functools.partial(self._step_line, step.name),
            _run=StepRun(component=step.component, outputs_dir=staging, work_dir=step_dir / "work",
                         resources=self.workflow.spec.resources, executor=self.executor,
                         max_failures=self.workflow.spec.failure.max_failures,
                         storage=self.storage.joinpath(step.name) if self.storage else None,
                         stored_inputs=self._mirror.stored_inputs(step) if self._mirror else None,
                         progress=functools.partial(self._progress, step.name)),
        )
        started = time.perf_counter()
        try:
            metrics = step.component.run(ctx, step.params) or {}
            missing = [o for o in step.component.outputs if not (staging / o).exists()]
            if missing:
                raise RuntimeError(f"component '{step.component.name}' did not write output(s) {missing}")
        except BaseException as exc:
            if self._abandoned:  # the run was interrupted and marked the step so
                raise
            log = step_dir / "error.log"
            shutil.rmtree(staging, ignore_errors=True)
            interrupted = isinstance(exc, KeyboardInterrupt)
            with contextlib.suppress(OSError):  # the step is marked even when its log cannot be written
                log.write_text("".join(traceback.format_exception(exc)))
            with contextlib.suppress(OSError):
                write_json(step_dir / STATUS, {**status, "state": "interrupted" if interrupted else "failed",
                                               "error": f"{type(exc).__name__}: {exc}", "finished": now()})
            if interrupted:
                raise
            if isinstance(exc, (InputDataError, UsageError)):  # the data or the settings: one line, exit 2
                raise StepFailed(step.name, str(exc), str(log), user_error=True) from exc
            raise StepFailed(step.name, f"{type(exc).__name__}: {exc}", str(log)) from exc
        seconds = time.perf_counter() - started
        write_json(step_dir / "metrics.json", metrics)
        digests = {o: digest_path(staging / o) for o in step.component.outputs}
        staging.rename(final)
        status = {**status, "state": "done", "outputs": digests}
        write_json(step_dir / STATUS, {**status, "files": self._fingerprints(step_dir, status),
                                       "seconds": round(seconds, 3), "finished": now()})
        self._digests[step.name] = passed_on(step, key, digests)
        self.cache.add(key, step_dir)
        return StepOutcome(step.name, "ran", seconds, metrics)

    def _cache_only(self, step: str) -> bool:
        """Whether a partial run takes the step from the cache only (it is upstream of the selected steps)."""
        return self.selection is not None and step in self.selection.cached

    def _progress(self, step: str, event: dict[str, Any]) -> None:
        with self._lock:
            for hook in self._all_hooks:
                hook.on_progress(self._info, step, event)

    def _say(self, text: str) -> None:
        with self._lock:
            self.echo(text)

    def _step_line(self, step: str, text: str) -> None:
        """A line of a step's log, named by its step if other steps ran beside it."""
        self._say(f"    {step}: {text}" if step in self._beside else f"    {text}")

    # -- inputs -------------------------------------------------------------------------------
    def _paths(self, wiring: Wiring) -> Path | list[Path]:
        paths = [self.run_dir / e.step / "outputs" / e.output for e in edges_of(wiring)]
        return paths if isinstance(wiring, list) else paths[0]

    def _upstream_digests(self, step: Step) -> dict[str, str | list[str]] | None:
        out: dict[str, str | list[str]] = {}
        for name, wiring in sorted(step.inputs.items()):
            digests = [self._digests.get(e.step, {}).get(e.output) for e in edges_of(wiring)]
            if None in digests:
                return None
            out[name] = digests if isinstance(wiring, list) else digests[0]
        return out

    @staticmethod
    def _fingerprints(step_dir: Path, status: dict[str, Any]) -> dict[str, list[list[Any]]]:
        return {name: stat_fingerprint(step_dir / "outputs" / name) for name in status["outputs"]}

    def _clean_temporaries(self) -> None:
        """Remove what an earlier process in this folder left half-written (killed, or the disk full)."""
        for folder in (self.run_dir, *(self.run_dir / name for name in self.workflow.order)):
            shutil.rmtree(folder / ".outputs.tmp", ignore_errors=True)
            for partial in folder.glob(".*.tmp"):
                partial.unlink(missing_ok=True)

    def _write_run_record(self, state: str) -> None:
        copy = self.run_dir / "workflow.yaml"
        if Path(self.workflow.document.file).resolve() != copy.resolve():
            copy.write_text(self.workflow.document.text)  # as read: the file may be elsewhere (a sweep trial)
        earlier_seconds = self._earlier.get("seconds")
        seconds = time.perf_counter() - self._attempt_started  # over every attempt (resumes) at this run
        write_json(self.run_dir / RUN_RECORD, {
            "workflow": self.workflow.name, "name": self.name or self._earlier.get("name"),
            "overrides": self.workflow.overrides, "order": self.workflow.order, "state": state,
            "selection": None if self.selection is None else sorted(self.selection.run),
            "started": self._earlier["started"], "updated": now(),
            "seconds": round(seconds + (earlier_seconds if isinstance(earlier_seconds, (int, float)) else 0), 3),
            "storage": self.storage.uri if self.storage else None,
        })
