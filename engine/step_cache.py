"""The step cache: what determines a step's outputs (its key), and the finished steps of a runs root by key.

A step is reused when an earlier run (this one first: resume) holds a finished step with the same
key whose outputs are unchanged. The index covers `<runs_root>/<workflow>/<run>/<step>` and the
run folders placed outside the runs root (`--run-dir`), which are listed in it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

from .run_folder import STATUS, changed_outputs, digest_path, is_done, link_or_copy, read_status, stat_fingerprint
from .spec import Step, Workflow

ELSEWHERE = ".runs_elsewhere"  # in a runs root: run folders placed outside it (--run-dir), one per line


def cache_key(step: Step, workflow: Workflow, upstream: dict[str, str | list[str]]) -> str:
    """Hash of what determines a step's outputs: component, version, params, inputs, seed."""
    material: dict[str, Any] = {
        "component": step.component.name,
        "version": step.component.version,
        "params": step.params.model_dump(mode="json"),
        "inputs": upstream,
        "seed": workflow.seed_of(step),
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


class StepCache:
    """The finished steps of a runs root, by cache key (scanned once, then kept up to date by `add`)."""

    def __init__(self, runs_root: Path, verify: bool, echo: Callable[[str], None]) -> None:
        self.runs_root = runs_root
        self.verify = verify  # reuse checks every output's SHA-256, not only sizes and mtimes
        self._echo = echo
        self._index: dict[str, list[Path]] | None = None  # cache key -> finished step folders, newest first
        self._lock = threading.Lock()  # steps running side by side look up and add

    def find(self, own: Path, key: str) -> tuple[Path, dict[str, Any]] | None:
        """This run's own finished step first (resume), else the newest match in the runs root whose
        outputs are unchanged; a match whose outputs changed is passed over, saying why."""
        with self._lock:
            candidates = [own, *(d for d in self._finished(key) if d != own)]
        for step_dir in candidates:
            status = read_status(step_dir)
            if not is_done(step_dir, status, key):
                continue
            problem = changed_outputs(step_dir, status, self.verify)
            if problem is None:
                return step_dir, status
            self._echo(f"    not reusing {step_dir}: {problem}")
        return None

    def add(self, key: str, step_dir: Path) -> None:
        """Record a step this run just finished."""
        with self._lock:
            if self._index is not None:
                self._index.setdefault(key, []).insert(0, step_dir)

    def _finished(self, key: str) -> list[Path]:
        if self._index is None:
            self._index = {}
            if self.runs_root.exists():
                statuses = [*self.runs_root.glob(f"*/*/*/{STATUS}"),
                            *(p for run in runs_elsewhere(self.runs_root) for p in run.glob(f"*/{STATUS}"))]
                found = sorted((p.parent for p in statuses), key=lambda p: p.stat().st_mtime, reverse=True)
                for step_dir in found:
                    status = read_status(step_dir)
                    if status and is_done(step_dir, status, status.get("cache_key")):
                        self._index.setdefault(status["cache_key"], []).append(step_dir)
        return self._index.get(key, [])

    def register(self, run_dir: Path) -> None:
        """A run folder outside the runs root (--run-dir) is listed in it, so later runs reuse its steps."""
        if run_dir.is_relative_to(self.runs_root) or run_dir in runs_elsewhere(self.runs_root):
            return
        self.runs_root.mkdir(parents=True, exist_ok=True)
        with open(self.runs_root / ELSEWHERE, "a", encoding="utf-8") as listing:  # one short append: atomic
            listing.write(f"{run_dir}\n")

def runs_elsewhere(runs_root: Path) -> list[Path]:
    """The run folders outside `runs_root` that are listed in it (made with --run-dir)."""
    try:
        lines = (runs_root / ELSEWHERE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [Path(line) for line in dict.fromkeys(lines) if line and Path(line).is_absolute()]


def adopt(source: Path, step_dir: Path) -> None:
    """Bring an earlier run's finished step into this run (hard links where possible)."""
    step_dir.mkdir(parents=True, exist_ok=True)
    staging = step_dir / ".outputs.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(step_dir / "outputs", ignore_errors=True)
    shutil.copytree(source / "outputs", staging, copy_function=link_or_copy)
    for name in ("params.json", "metrics.json"):
        if (source / name).exists():
            shutil.copy2(source / name, step_dir / name)
    staging.rename(step_dir / "outputs")
