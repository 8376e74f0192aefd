"""Execute a validated workflow: one folder per step, atomic outputs, caching and resume.

Run layout::

    <run_dir>/workflow.yaml     the file as written
    <run_dir>/run.json          name, overrides, order, state
    <run_dir>/<step>/params.json, metrics.json, status.json, outputs/<name>, error.log, work/

A step's outputs are written under `<step>/.outputs.tmp/` and renamed to `outputs/` only
when the step succeeds, so a crash never leaves half-written outputs behind. `status.json`
is written last and carries the cache key, a SHA-256 of every output and each output file's size
and mtime. A finished step is reused only while its outputs are unchanged: sizes and mtimes as
recorded (the fast path), else the SHA-256 (always with `verify`).

With a workflow `storage`, training checkpoints go to `<storage>/<workflow>/<run-id>/<step>/train`
and every finished step is copied to `<storage>/<workflow>/<run-id>/<step>/` (status.json last),
so `mmflow run --resume <that URI>` can finish the run on another machine. A step reused from a
run whose stored folder encloses this one's (a sweep's shared steps, for its trials) is not
copied again: its stored status names where its outputs are (`outputs_at`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import posixpath
import re
import secrets
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .context import StepContext, StepRun
from .errors import InputDataError, StepFailed, UsageError
from .executor import Executor, ExecutorSettings, create_executor
from .graph import Wiring, edges_of
from .nodes import StepInputs
from .spec import Step, Workflow, apply_overrides, load_workflow, validate_document
from .storage import Storage
from .yaml_source import parse_yaml

STATUS = "status.json"
RUN_RECORD = "run.json"
LOCK = ".lock"  # held by the process running in the folder
ELSEWHERE = ".runs_elsewhere"  # in a runs root: run folders placed outside it (--run-dir), one per line
MIRRORED = ("params.json", "metrics.json")  # with outputs/ and, last, status.json


@dataclass
class StepOutcome:
    """How one step ended in this run."""

    name: str
    state: str  # ran | reused | kept | failed | pending
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    reused_from: str | None = None


@dataclass
class PlanEntry:
    """What a dry run predicts for one step."""

    name: str
    action: str  # run | reuse | keep
    source: str | None = None


def new_run_dir(runs_root: Path, workflow_name: str) -> Path:
    """A fresh `<runs_root>/<workflow>/<timestamp>-<random>` path (not created)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_root / workflow_name / f"{stamp}-{secrets.token_hex(2)}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no temporary behind
        raise


def write_json(path: Path, data: Any) -> None:
    """Atomically write pretty JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def files_under(path: Path) -> list[Path]:
    """A file, or every file below a folder (symbolic links followed, each folder once), sorted."""
    if not path.is_dir():
        return [path] if path.is_file() else []
    found, seen = [], set()
    for folder, subfolders, names in os.walk(path, followlinks=True):
        identity = (os.stat(folder).st_dev, os.stat(folder).st_ino)
        if identity in seen:  # a link back up the tree
            subfolders.clear()
            continue
        seen.add(identity)
        found += [Path(folder, name) for name in names if Path(folder, name).is_file()]
    return sorted(found)


def digest_path(path: Path) -> str:
    """sha256 over a file, or over a folder's relative paths and file contents."""
    h = hashlib.sha256()
    for file in files_under(path):
        h.update(str(file.relative_to(path) if file != path else "").encode() + b"\0")
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def stat_fingerprint(path: Path) -> list[list[Any]]:
    """[relative path, size, mtime in ns] of a file, or of every file in a folder: a change to any of
    them is noticed without reading the contents."""
    return [[str(f.relative_to(path)) if f != path else "", stat.st_size, stat.st_mtime_ns]
            for f in files_under(path) for stat in [f.stat()]]


def changed_outputs(step_dir: Path, status: dict[str, Any], verify: bool = False) -> str | None:
    """Why a finished step's outputs are no longer what its status records (None while they are): a
    missing output, or one whose SHA-256 differs. Sizes and mtimes as recorded skip the SHA-256 unless
    `verify`."""
    for name, digest in status.get("outputs", {}).items():
        path = step_dir / "outputs" / name
        if not path.exists():
            return f"outputs/{name} is missing"
        if not verify and status.get("files", {}).get(name) == stat_fingerprint(path):
            continue
        if digest_path(path) != digest:
            return f"outputs/{name} changed after the step finished (its SHA-256 is not the one in {STATUS})"
    return None


def cache_key(step: Step, workflow: Workflow, upstream: dict[str, str | list[str]]) -> str:
    """Hash of what determines a step's outputs: component, version, params, inputs, seed."""
    material: dict[str, Any] = {
        "component": step.component.name,
        "version": step.component.version,
        "params": step.params.model_dump(mode="json"),
        "inputs": upstream,
        "seed": workflow.spec.seed,
    }
    if step.component.distributed:  # rank count and device change training results
        material["executor"] = workflow.spec.executor
        material["resources"] = workflow.spec.resources.model_dump(mode="json")
    if step.component.reads is not None:  # data changed outside the run is read again
        material["reads"] = read_fingerprint(step.component.reads(step.params), workflow.spec.fingerprint)
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def passed_on(step: Step, key: str, digests: dict[str, str]) -> dict[str, str]:
    """What keys downstream see of a step's outputs: their digests, and for a step that reads files outside
    the run, also its own key (which holds what it read): a listing of media names stays the same when the
    media change, and steps that read the media through it must not be reused."""
    if step.component.reads is None:
        return digests
    return {name: hashlib.sha256(f"{digest}\0{key}".encode()).hexdigest() for name, digest in digests.items()}


def read_fingerprint(paths: list[Path], how: str) -> dict[str, Any]:
    """What files outside the run hold, per path: each file's relative path, size and mtime (`how` stat),
    or the SHA-256 of its contents (sha256); None where nothing is."""
    resolved = [Path(p).expanduser().resolve() for p in paths]
    return {str(p): None if not p.exists() else stat_fingerprint(p) if how == "stat" else digest_path(p)
            for p in resolved}


def read_status(step_dir: Path) -> dict[str, Any] | None:
    """The step's status.json, or None if absent or unreadable."""
    try:
        return json.loads((step_dir / STATUS).read_text())
    except (OSError, ValueError):
        return None


class Runner:
    """Runs a workflow in a run directory, reusing cached steps from the same runs root."""

    def __init__(self, workflow: Workflow, run_dir: Path, runs_root: Path,
                 echo: Callable[[str], None] | None = None, verify: bool = False, executor: Executor | None = None,
                 settings: ExecutorSettings = ExecutorSettings()) -> None:
        """`executor`: one the caller keeps using after this run (a sweep's Ray); by default the workflow's
        executor is created with `settings` and closed when the run ends."""
        self.workflow = workflow
        self.verify = verify  # reuse checks every output's SHA-256, not only sizes and mtimes
        self._own_executor = executor is None
        self.executor = executor or create_executor(workflow.spec.executor, settings)
        self.run_dir = run_dir.resolve()  # Ray workers do not share the driver's working directory
        self.runs_root = runs_root.resolve()
        self.echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._digests: dict[str, dict[str, str]] = {}  # step -> output -> digest
        self._index: dict[str, list[Path]] | None = None  # cache key -> finished step folders, newest first
        self._stored_outputs: dict[str, Storage] = {}  # step -> the stored step folder holding its outputs/

    @functools.cached_property
    def storage(self) -> Storage | None:
        """This run's folder in the workflow's storage: the one its record names (a resumed run), else
        <storage>/<run dir relative to the runs root>. Opened on first use: a plan contacts no store."""
        if self.workflow.spec.storage is None:
            return None
        record = _read_json(self.run_dir / RUN_RECORD)
        if record.get("storage"):
            return Storage.open(record["storage"])
        try:
            key = self.run_dir.relative_to(self.runs_root).parts
        except ValueError:
            key = (self.workflow.name, self.run_dir.name)
        return Storage.open(self.workflow.spec.storage).joinpath(*key)

    @functools.cached_property
    def _mirrors(self) -> bool:
        """Whether finished steps are copied to the storage (a run resumed inside its own local storage
        folder is its own copy)."""
        return self.storage is not None and not (self.storage.is_local and Path(self.storage.path) == self.run_dir)

    # -- planning ---------------------------------------------------------------------------
    def plan(self) -> list[PlanEntry]:
        """Predict, without running anything, which steps would run, be reused or be kept."""
        entries = []
        for name in self.workflow.order:
            step = self.workflow.steps[name]
            upstream = self._upstream_digests(step)
            if upstream is None:
                entries.append(PlanEntry(name, "run", "an upstream step runs"))
                continue
            key = cache_key(step, self.workflow, upstream)
            found = self._find_done(name, key)
            if found is None:
                entries.append(PlanEntry(name, "run"))
                continue
            self._digests[name] = passed_on(step, key, found[1]["outputs"])
            own = found[0] == self.run_dir / name
            entries.append(PlanEntry(name, "keep" if own else "reuse", None if own else str(found[0])))
        self._digests.clear()
        return entries

    # -- running ----------------------------------------------------------------------------
    def run(self) -> list[StepOutcome]:
        """Run every step in order; raise StepFailed on the first failing step."""
        if self._mirrors:
            self.storage.exists()  # unreachable storage fails here, before anything is written
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with _run_lock(self.run_dir):
            self._clean_temporaries()
            self._register_elsewhere()
            self._write_run_record("running")
            outcomes = [StepOutcome(name, "pending") for name in self.workflow.order]
            try:
                for i, name in enumerate(self.workflow.order):
                    self.echo(f"[{i + 1}/{len(outcomes)}] {name} ({self.workflow.steps[name].component.name})")
                    outcomes[i] = self._run_step(self.workflow.steps[name])
            except BaseException as exc:
                with contextlib.suppress(OSError):  # a full disk: what went wrong first is what to report
                    self._write_run_record("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
                raise
            finally:
                if self._own_executor:
                    self.executor.close()
            self._write_run_record("done")
        return outcomes

    def _run_step(self, step: Step) -> StepOutcome:
        step_dir = self.run_dir / step.name
        upstream = self._upstream_digests(step)
        assert upstream is not None, "steps run in topological order"
        key = cache_key(step, self.workflow, upstream)
        found = self._find_done(step.name, key)
        if found is not None:
            source, status = found
            if source != step_dir:
                self._adopt(source, step_dir)
                status = {**status, "reused_from": str(source), "finished": _now()}
            files = self._fingerprints(step_dir, status)
            if source != step_dir or status.get("files") != files:  # verified: the fast path holds again
                status = {**status, "files": files}
                write_json(step_dir / STATUS, status)
            self._digests[step.name] = passed_on(step, key, status["outputs"])
            state = "kept" if source == step_dir else "reused"
            self.echo(f"    {state} ({'this run' if state == 'kept' else source})")
            self._mirror(step_dir, status)
            return StepOutcome(step.name, state, 0.0, _read_metrics(step_dir), status.get("reused_from"))
        outcome = self._execute(step, step_dir, key)
        self._mirror(step_dir, read_status(step_dir) or {})
        return outcome

    def _execute(self, step: Step, step_dir: Path, key: str) -> StepOutcome:
        step_dir.mkdir(parents=True, exist_ok=True)
        staging, final = step_dir / ".outputs.tmp", step_dir / "outputs"
        for stale in (staging, final):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in (step_dir / "metrics.json", step_dir / "error.log"):
            stale.unlink(missing_ok=True)
        staging.mkdir()
        status = {"state": "running", "component": step.component.name, "version": step.component.version,
                  "cache_key": key, "started": _now()}
        write_json(step_dir / STATUS, status)
        write_json(step_dir / "params.json", step.params.model_dump(mode="json"))
        ctx = StepContext(
            step=step.name, seed=self.workflow.spec.seed,
            inputs={name: self._paths(w) for name, w in step.inputs.items()},
            sources={name: [e.step for e in edges_of(w)] for name, w in step.inputs.items()},
            log=lambda msg: self.echo(f"    {msg}"),
            _run=StepRun(component=step.component, outputs_dir=staging, work_dir=step_dir / "work",
                         resources=self.workflow.spec.resources, executor=self.executor,
                         max_failures=self.workflow.spec.failure.max_failures,
                         storage=self.storage.joinpath(step.name) if self.storage else None,
                         stored_inputs=self._stored_inputs(step)),
        )
        started = time.perf_counter()
        try:
            metrics = step.component.run(ctx, step.params) or {}
            missing = [o for o in step.component.outputs if not (staging / o).exists()]
            if missing:
                raise RuntimeError(f"component '{step.component.name}' did not write output(s) {missing}")
        except BaseException as exc:
            log = step_dir / "error.log"
            shutil.rmtree(staging, ignore_errors=True)
            interrupted = isinstance(exc, KeyboardInterrupt)
            with contextlib.suppress(OSError):  # the step is marked even when its log cannot be written
                log.write_text("".join(traceback.format_exception(exc)))
            with contextlib.suppress(OSError):
                write_json(step_dir / STATUS, {**status, "state": "interrupted" if interrupted else "failed",
                                               "error": f"{type(exc).__name__}: {exc}", "finished": _now()})
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
                                       "seconds": round(seconds, 3), "finished": _now()})
        self._digests[step.name] = passed_on(step, key, digests)
        if self._index is not None:
            self._index.setdefault(key, []).insert(0, step_dir)
        return StepOutcome(step.name, "ran", seconds, metrics)

    # -- cache --------------------------------------------------------------------------------
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

    def _find_done(self, step_name: str, key: str) -> tuple[Path, dict[str, Any]] | None:
        """This run's own finished step first (resume), else the newest match in the runs root whose
        outputs are unchanged; a match whose outputs changed is passed over, saying why."""
        own = self.run_dir / step_name
        for step_dir in [own, *(d for d in self._finished(key) if d != own)]:
            status = read_status(step_dir)
            if not _is_done(step_dir, status, key):
                continue
            problem = changed_outputs(step_dir, status, self.verify)
            if problem is None:
                return step_dir, status
            self.echo(f"    not reusing {step_dir}: {problem}")
        return None

    def _finished(self, key: str) -> list[Path]:
        """The runs root's finished step folders with cache key `key`, newest first (scanned once per run)."""
        if self._index is None:
            self._index = {}
            if self.runs_root.exists():
                statuses = [*self.runs_root.glob(f"*/*/*/{STATUS}"),
                            *(p for run in self._runs_elsewhere() for p in run.glob(f"*/{STATUS}"))]
                found = sorted((p.parent for p in statuses), key=lambda p: p.stat().st_mtime, reverse=True)
                for step_dir in found:
                    status = read_status(step_dir)
                    if status and _is_done(step_dir, status, status.get("cache_key")):
                        self._index.setdefault(status["cache_key"], []).append(step_dir)
        return self._index.get(key, [])

    @staticmethod
    def _fingerprints(step_dir: Path, status: dict[str, Any]) -> dict[str, list[list[Any]]]:
        return {name: stat_fingerprint(step_dir / "outputs" / name) for name in status["outputs"]}

    def _clean_temporaries(self) -> None:
        """Remove what an earlier process in this folder left half-written (killed, or the disk full)."""
        for folder in (self.run_dir, *(self.run_dir / name for name in self.workflow.order)):
            shutil.rmtree(folder / ".outputs.tmp", ignore_errors=True)
            for partial in folder.glob(".*.tmp"):
                partial.unlink(missing_ok=True)

    def _register_elsewhere(self) -> None:
        """A run folder outside the runs root (--run-dir) is listed in it, so later runs reuse its steps."""
        if self.run_dir.is_relative_to(self.runs_root) or self.run_dir in self._runs_elsewhere():
            return
        self.runs_root.mkdir(parents=True, exist_ok=True)
        with open(self.runs_root / ELSEWHERE, "a", encoding="utf-8") as listing:  # one short append: atomic
            listing.write(f"{self.run_dir}\n")

    def _runs_elsewhere(self) -> list[Path]:
        try:
            lines = (self.runs_root / ELSEWHERE).read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        return [Path(line) for line in dict.fromkeys(lines) if line and Path(line).is_absolute()]

    def _adopt(self, source: Path, step_dir: Path) -> None:
        """Bring an earlier run's finished step into this run (hard links where possible)."""
        step_dir.mkdir(parents=True, exist_ok=True)
        staging = step_dir / ".outputs.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(step_dir / "outputs", ignore_errors=True)
        shutil.copytree(source / "outputs", staging, copy_function=_link_or_copy)
        for name in ("params.json", "metrics.json"):
            if (source / name).exists():
                shutil.copy2(source / name, step_dir / name)
        staging.rename(step_dir / "outputs")

    def _write_run_record(self, state: str) -> None:
        copy = self.run_dir / "workflow.yaml"
        if Path(self.workflow.document.file).resolve() != copy.resolve():
            copy.write_text(self.workflow.document.text)  # as read: the file may be elsewhere (a sweep trial)
        write_json(self.run_dir / RUN_RECORD, {
            "workflow": self.workflow.name, "overrides": self.workflow.overrides,
            "order": self.workflow.order, "state": state, "updated": _now(),
            "storage": self.storage.uri if self.storage else None,
        })
        if self._mirrors:
            self.storage.joinpath("workflow.yaml").upload(copy)
            self.storage.joinpath(RUN_RECORD).upload(self.run_dir / RUN_RECORD)

    # -- storage ------------------------------------------------------------------------------
    def _stored_inputs(self, step: Step) -> StepInputs | None:
        """The step's inputs with where the storage holds them (upstream steps are copied there when they finish)."""
        if self.storage is None:
            return None
        return StepInputs(str(self.run_dir), tuple(
            (f"{e.step}/outputs/{e.output}",
             self._stored_outputs.get(e.step, self.storage.joinpath(e.step)).joinpath("outputs", e.output).uri)
            for wiring in step.inputs.values() for e in edges_of(wiring)))

    def _mirror(self, step_dir: Path, status: dict[str, Any]) -> None:
        """Copy a finished step to the storage, status.json last (what a reader trusts), unless it is there;
        a step reused from an enclosing run's stored copy refers to that copy's outputs instead."""
        if not self._mirrors:
            return
        target = self.storage.joinpath(step_dir.name)
        there = json.loads(target.joinpath(STATUS).read_text() or "{}")
        if there.get("state") == "done" and there.get("cache_key") == status.get("cache_key"):
            self._stored_outputs[step_dir.name] = _outputs_holder(target, there)
            return
        target.joinpath(STATUS).delete()
        enclosing = self._enclosing_copy(status)
        if enclosing is None:
            target.joinpath("outputs").upload(step_dir / "outputs")
        else:
            status = {**status, "outputs_at": enclosing.uri}
            target.joinpath("outputs").delete()
            self._stored_outputs[step_dir.name] = enclosing
        for name in MIRRORED:
            if (step_dir / name).exists():
                target.joinpath(name).upload(step_dir / name)
        target.joinpath(STATUS).write_text(json.dumps(status, indent=2, sort_keys=True, default=str) + "\n")

    def _enclosing_copy(self, status: dict[str, Any]) -> Storage | None:
        """For a step reused from another run: that run's stored step folder holding the outputs, when
        that run's storage folder encloses this run's (a sweep and its trials), else None."""
        if not status.get("reused_from"):
            return None
        source = Path(status["reused_from"])
        stored = _read_json(source.parent / RUN_RECORD).get("storage")
        if not stored or not self.storage.uri.partition("?")[0].startswith(stored.partition("?")[0].rstrip("/") + "/"):
            return None
        copy = Storage.open(stored).joinpath(source.name)
        there = json.loads(copy.joinpath(STATUS).read_text() or "{}")
        if there.get("state") != "done" or there.get("cache_key") != status.get("cache_key"):
            return None
        return _outputs_holder(copy, there)


def check_run_dir(run_dir: Path, workflow_name: str) -> None:
    """A run directory the user names must be new, empty, or a run folder of this workflow: any other
    folder holds the user's own files, which a run would delete or overwrite."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir}: a file, not a folder")
    if all(entry.name == LOCK for entry in run_dir.iterdir()):  # empty, or a run only just started
        return
    found = _read_json(run_dir / RUN_RECORD).get("workflow")
    if found == workflow_name:
        return
    what = f"a run of workflow '{found}'" if found else "no mmflow run folder (it has no run.json)"
    raise UsageError(f"--run-dir {run_dir}: the folder is not empty and is {what}; give a new or empty folder, "
                     f"or a run folder of '{workflow_name}'")


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process: two runs in one folder would overwrite each other's steps."""
    import fcntl

    with open(run_dir / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{run_dir}: another mmflow run is using this run folder; wait for it to finish "
                             "or give another --run-dir") from None
        yield  # the lock goes with the file's closing


def resume_workflow(run_dir: Path, overrides: list[str]) -> Workflow:
    """Reload the workflow a run directory was started with (plus its original overrides)."""
    record_file = run_dir / RUN_RECORD
    if not record_file.exists() or not (run_dir / "workflow.yaml").exists():
        raise UsageError(f"--resume {run_dir}: not a run directory (no run.json / workflow.yaml)")
    try:
        record = json.loads(record_file.read_text())
    except ValueError:  # cut short, or not written by mmflow
        record = None
    stored = record.get("overrides", []) if isinstance(record, dict) else None
    if not isinstance(stored, list) or not all(isinstance(o, str) for o in stored):
        raise UsageError(f"{record_file}: not a run record (expected JSON with a list of overrides)")
    return load_workflow(run_dir / "workflow.yaml", stored + overrides)


def fetch_run(stored: Storage, runs_root: Path) -> Path:
    """Copy a run from its storage folder into `<runs_root>/<workflow>/<run-id>`: the record and every
    finished step (a step already finished here is kept); returns the local run directory.

    A bucket is not trusted: the record, the workflow and every step status are checked before anything
    is written, so the names they hold can only make folders inside the runs root.
    """
    record, workflow = _stored_run(stored)
    run_id = posixpath.basename(stored.path)
    if not _FOLDER_NAME.match(run_id):
        raise UsageError(f"--resume {stored}: '{run_id}' is not the name of a run folder")
    run_dir = runs_root / workflow.name / run_id
    statuses = {name: _stored_status(stored, name) for name in workflow.order}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "workflow.yaml").write_text(workflow.document.text)
    write_json(run_dir / RUN_RECORD, {**record, "storage": stored.uri})
    for name, status in statuses.items():
        here = read_status(run_dir / name) or {}
        if status.get("state") != "done" or (_is_done(run_dir / name, here, status.get("cache_key"))
                                             and changed_outputs(run_dir / name, here) is None):
            continue
        shutil.rmtree(run_dir / name, ignore_errors=True)
        _outputs_holder(stored.joinpath(name), status).joinpath("outputs").download(run_dir / name / "outputs")
        for file in MIRRORED:
            if stored.joinpath(name, file).exists():
                stored.joinpath(name, file).download(run_dir / name / file)
        write_json(run_dir / name / STATUS, status)
    return run_dir


_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # one path component, never '..'


def _stored_run(stored: Storage) -> tuple[dict[str, Any], Workflow]:
    """The run record and the validated workflow of a stored run; its steps are the workflow's own."""
    where = stored.joinpath(RUN_RECORD)
    record_text, workflow_text = where.read_text(), stored.joinpath("workflow.yaml").read_text()
    if record_text is None or workflow_text is None:
        raise UsageError(f"--resume {stored}: no run there (no run.json / workflow.yaml)")
    try:
        record = json.loads(record_text)
    except ValueError:
        raise UsageError(f"{where}: not a run record (not JSON)") from None
    overrides = record.get("overrides", []) if isinstance(record, dict) else None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise UsageError(f"{where}: not a run record (expected an object with a list of overrides)")
    document = parse_yaml(workflow_text, str(stored.joinpath("workflow.yaml")))
    apply_overrides(document, overrides)
    workflow = validate_document(document, overrides=overrides)
    if record.get("workflow") != workflow.name:
        raise UsageError(f"{where}: names workflow {record.get('workflow')!r}, but its workflow.yaml is "
                         f"'{workflow.name}'")
    return record, workflow


def _stored_status(stored: Storage, step: str) -> dict[str, Any]:
    """A stored step's status; outputs stored elsewhere can only be the same step of the sweep this run is a
    trial of (`<sweep>/trials/<trial>` reuses `<sweep>/<step>`), as `_mirror` writes them."""
    where = stored.joinpath(step, STATUS)
    try:
        status = json.loads(where.read_text() or "{}")
    except ValueError:
        raise UsageError(f"{where}: not a step status (not JSON)") from None
    if not isinstance(status, dict):
        raise UsageError(f"{where}: not a step status (expected an object)")
    holder = status.get("outputs_at")
    trials = posixpath.dirname(stored.uri.partition("?")[0].rstrip("/"))
    sweep_step = posixpath.join(posixpath.dirname(trials), step)
    if holder is not None and not (isinstance(holder, str) and posixpath.basename(trials) == "trials" and
                                   holder.partition("?")[0].rstrip("/") == sweep_step):
        raise UsageError(f"{where}: outputs_at {holder!r} is not the same step of the sweep this run belongs to")
    return status


def _outputs_holder(stored_step: Storage, status: dict[str, Any]) -> Storage:
    """The stored step folder whose outputs/ holds a stored step's files: its own, or the one its status names."""
    return Storage.open(status["outputs_at"]) if status.get("outputs_at") else stored_step


def _is_done(step_dir: Path | None, status: dict[str, Any] | None, key: str | None) -> bool:
    return bool(step_dir and status and status.get("state") == "done" and status.get("cache_key") == key
                and (step_dir / "outputs").is_dir())


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _read_metrics(step_dir: Path) -> dict[str, Any]:
    return _read_json(step_dir / "metrics.json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")
