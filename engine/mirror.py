"""A run's copy in the workflow's `storage` (a shared path or an object store), and fetching it back.

With a workflow `storage`, training checkpoints go to `<storage>/<workflow>/<run-id>/<step>/train`
and every finished step is copied to `<storage>/<workflow>/<run-id>/<step>/` (status.json last),
so `mmflow run --resume <that URI>` can finish the run on another machine. A step reused from a
run whose stored folder encloses this one's (a sweep's shared steps, for its trials) is not
copied again: its stored status names where its outputs are (`outputs_at`). The copying is a run
hook (`StorageMirror`).
"""

from __future__ import annotations

import json
import posixpath
import re
import shutil
from pathlib import Path
from typing import Any

from .errors import UsageError
from .graph import edges_of
from .hooks import RunHook, RunInfo, StepOutcome
from .nodes import StepInputs
from .run_folder import (RUN_RECORD, STATUS, changed_outputs, is_done, read_json, read_status, write_json)
from .spec import Step, Workflow, validate_document
from .storage import Storage
from .yaml_source import apply_overrides, parse_yaml

MIRRORED = ("params.json", "metrics.json")  # with outputs/ and, last, status.json


def run_storage(workflow: Workflow, run_dir: Path, runs_root: Path) -> Storage | None:
    """A run's folder in the workflow's storage: the one its record names (a resumed run), else
    <storage>/<run dir relative to the runs root>; None without a storage."""
    if workflow.spec.storage is None:
        return None
    record = read_json(run_dir / RUN_RECORD)
    if record.get("storage"):
        return Storage.open(record["storage"])
    try:
        key = run_dir.relative_to(runs_root).parts
    except ValueError:
        key = (workflow.name, run_dir.name)
    return Storage.open(workflow.spec.storage).joinpath(*key)


class StorageMirror(RunHook):
    """Copies the run's record and every finished step to the run's storage folder; knows where the
    storage holds each step's outputs, for workers on nodes without the run folder."""

    def __init__(self, storage: Storage, run_dir: Path) -> None:
        self.storage = storage
        # a run resumed inside its own local storage folder is its own copy
        self.copies = not (storage.is_local and Path(storage.path) == run_dir)
        self._run_dir = run_dir
        self._record_stored = False
        self._stored_outputs: dict[str, Storage] = {}  # step -> the stored step folder holding its outputs/

    def before_run(self, run: RunInfo) -> None:
        """Unreachable storage fails here, before anything is written."""
        if self.copies:
            self.storage.exists()

    def before_step(self, run: RunInfo, step: str) -> None:
        """The run's record goes first, so a run that dies in its first step can be resumed from the storage."""
        if not self._record_stored:
            self._store_record()
            self._record_stored = True

    def after_step(self, run: RunInfo, outcome: StepOutcome) -> None:
        """Copy the finished step."""
        step_dir = self._run_dir / outcome.name
        self._mirror(step_dir, read_status(step_dir) or {})

    def after_run(self, run: RunInfo, outcomes: list[StepOutcome], error: BaseException | None) -> None:
        """The final record: how the run ended."""
        self._store_record()

    def stored_inputs(self, step: Step) -> StepInputs:
        """The step's inputs with where the storage holds them (upstream steps are copied there when they
        finish)."""
        return StepInputs(str(self._run_dir), tuple(
            (f"{e.step}/outputs/{e.output}",
             self._stored_outputs.get(e.step, self.storage.joinpath(e.step)).joinpath("outputs", e.output).uri)
            for wiring in step.inputs.values() for e in edges_of(wiring)))

    def _store_record(self) -> None:
        if self.copies:
            self.storage.joinpath("workflow.yaml").upload(self._run_dir / "workflow.yaml")
            self.storage.joinpath(RUN_RECORD).upload(self._run_dir / RUN_RECORD)

    def _mirror(self, step_dir: Path, status: dict[str, Any]) -> None:
        """Copy a finished step to the storage, status.json last (what a reader trusts), unless it is there;
        a step reused from an enclosing run's stored copy refers to that copy's outputs instead."""
        if not self.copies:
            return
        target = self.storage.joinpath(step_dir.name)
        there = json.loads(target.joinpath(STATUS).read_text() or "{}")
        if there.get("state") == "done" and there.get("cache_key") == status.get("cache_key"):
            self._stored_outputs[step_dir.name] = outputs_holder(target, there)
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
        stored = read_json(source.parent / RUN_RECORD).get("storage")
        if not stored or not self.storage.uri.partition("?")[0].startswith(stored.partition("?")[0].rstrip("/") + "/"):
            return None
        copy = Storage.open(stored).joinpath(source.name)
        there = json.loads(copy.joinpath(STATUS).read_text() or "{}")
        if there.get("state") != "done" or there.get("cache_key") != status.get("cache_key"):
            return None
        return outputs_holder(copy, there)


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
        if status.get("state") != "done" or (is_done(run_dir / name, here, status.get("cache_key"))
                                             and changed_outputs(run_dir / name, here) is None):
            continue
        shutil.rmtree(run_dir / name, ignore_errors=True)
        outputs_holder(stored.joinpath(name), status).joinpath("outputs").download(run_dir / name / "outputs")
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


def outputs_holder(stored_step: Storage, status: dict[str, Any]) -> Storage:
    """The stored step folder whose outputs/ holds a stored step's files: its own, or the one its status names."""
    return Storage.open(status["outputs_at"]) if status.get("outputs_at") else stored_step
