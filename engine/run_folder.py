"""A run's folder on disk: its layout, atomic writes, digests of what it holds, and its lock.

Run layout::

    <run_dir>/workflow.yaml     the file as written
    <run_dir>/run.json          name, overrides, order, state
    <run_dir>/<step>/params.json, metrics.json, status.json, outputs/<name>, error.log, work/

A step's outputs are written under `<step>/.outputs.tmp/` and renamed to `outputs/` only
when the step succeeds, so a crash never leaves half-written outputs behind. `status.json`
is written last and carries the cache key, a SHA-256 of every output and each output file's size
and mtime. A finished step is reused only while its outputs are unchanged: sizes and mtimes as
recorded (the fast path), else the SHA-256 (always with `verify`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator

from .errors import UsageError
from .spec import Workflow, load_workflow

STATUS = "status.json"
RUN_RECORD = "run.json"
LOCK = ".lock"  # held by the process running in the folder


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


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's content, or {} when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_status(step_dir: Path) -> dict[str, Any] | None:
    """The step's status.json, or None if absent or unreadable."""
    try:
        return json.loads((step_dir / STATUS).read_text())
    except (OSError, ValueError):
        return None


def is_done(step_dir: Path | None, status: dict[str, Any] | None, key: str | None) -> bool:
    """Whether a step folder holds a finished step with cache key `key` and its outputs."""
    return bool(step_dir and status and status.get("state") == "done" and status.get("cache_key") == key
                and (step_dir / "outputs").is_dir())


def read_metrics(step_dir: Path) -> dict[str, Any]:
    """A step's metrics.json, or {}."""
    return read_json(step_dir / "metrics.json")


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


def check_run_dir(run_dir: Path, workflow_name: str) -> None:
    """A run directory the user names must be new, empty, or a run folder of this workflow: any other
    folder holds the user's own files, which a run would delete or overwrite."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir}: a file, not a folder")
    if all(entry.name == LOCK for entry in run_dir.iterdir()):  # empty, or a run only just started
        return
    found = read_json(run_dir / RUN_RECORD).get("workflow")
    if found == workflow_name:
        return
    what = f"a run of workflow '{found}'" if found else "no mmflow run folder (it has no run.json)"
    raise UsageError(f"--run-dir {run_dir}: the folder is not empty and is {what}; give a new or empty folder, "
                     f"or a run folder of '{workflow_name}'")


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
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


def link_or_copy(src: str, dst: str) -> str:
    """Hard-link `src` to `dst`, or copy it where links are impossible (another filesystem)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def now(timespec: str = "seconds") -> str:
    """The local time as ISO 8601, to the second (or another `timespec` of `datetime.isoformat`)."""
    return dt.datetime.now().isoformat(timespec=timespec)
