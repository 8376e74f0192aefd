"""The runs in a runs root, as `mmflow runs` shows them: a listing, one run's detail, and runs side by side.

Everything here reads what a run wrote (run.json, workflow.yaml, each step's status, params and metrics); a
run folder that is half-written or not mmflow's is listed with what can be read of it, never an error.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError, WorkflowError, did_you_mean
from .model_paths import dotted
from .registry import REGISTRY
from .run_folder import RUN_RECORD, STATUS, read_json, read_metrics
from .seeds import base_name, over_seeds
from .step_cache import runs_elsewhere
from .yaml_source import apply_overrides, parse_yaml


@dataclass
class RunRecord:
    """One run folder as its files describe it."""

    path: Path
    record: dict[str, Any]

    @property
    def id(self) -> str:
        """The folder's name: `<date>-<time>-<random>`, so runs sort by when they started."""
        return self.path.name

    @property
    def name(self) -> str:
        """The name given with `mmflow run --name`, or ''."""
        return self.record.get("name") or ""

    @property
    def workflow(self) -> str:
        return self.record.get("workflow") or self.path.parent.name

    @property
    def state(self) -> str:
        """running, done, failed or interrupted; a sweep says how many trials it has."""
        state = self.record.get("state", "unknown")
        trials = self.path / "trials"
        if trials.is_dir():
            state += f" (sweep, {sum(1 for t in trials.iterdir() if (t / RUN_RECORD).exists())} trials)"
        return state

    @property
    def overrides(self) -> list[str]:
        value = self.record.get("overrides")
        return value if isinstance(value, list) else []

    def steps(self) -> list[str]:
        """The step folders of the run, in the workflow's order."""
        order = self.record.get("order") if isinstance(self.record.get("order"), list) else []
        return [s for s in order if isinstance(s, str) and (self.path / s / STATUS).exists()]

    def status(self, step: str) -> dict[str, Any]:
        return read_json(self.path / step / STATUS)

    def headline(self, step: str) -> dict[str, Any]:
        """The step's headline metrics, as its component declares them; a mean with its `<name>_std` beside it (a
        comparison over seeds) as `mean±std`."""
        spec = REGISTRY.get(self.status(step).get("component", ""))
        metrics = read_metrics(self.path / step)
        found = spec.headline_of(metrics) if spec else {}
        return {k: plus_minus(v, metrics[f"{k}_std"]) if isinstance(metrics.get(f"{k}_std"), (int, float)) else v
                for k, v in found.items()}

    def result(self) -> dict[str, Any]:
        """The headline of the last step that finished with metrics (what the run was for); of a step run once per
        seed, the mean±std over its seeds."""
        for step in reversed(self.steps()):
            found = self.headline(step)
            if not found:
                continue
            base = base_name(step)
            if base == step:
                return {f"{step}.{k}": v for k, v in found.items()}
            seeds = {s: self.headline(s) for s in self.steps() if base_name(s) == base}
            return {f"{base}.{k}": plus_minus(mean, std) for k, (mean, std, _) in over_seeds(seeds)[base].items()}
        return {}


def find_runs(runs_root: Path, workflow: str | None = None) -> list[RunRecord]:
    """Every run folder of the runs root (and those placed elsewhere with --run-dir), oldest first."""
    folders = [*runs_root.glob(f"*/*/{RUN_RECORD}"), *(p / RUN_RECORD for p in runs_elsewhere(runs_root))]
    runs = [RunRecord(f.parent, read_json(f)) for f in folders if f.is_file()]
    runs = [r for r in runs if workflow is None or r.workflow == workflow]
    return sorted(runs, key=lambda r: (r.record.get("started") or "", r.id))


def resolve_run(runs_root: Path, given: str) -> RunRecord:
    """The run a command names: its folder, its id, or the name it was given."""
    path = Path(given)
    if (path / RUN_RECORD).is_file():
        return RunRecord(path, read_json(path / RUN_RECORD))
    runs = find_runs(runs_root)
    matches = [r for r in runs if given in (r.id, r.name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"{given}: {len(matches)} runs have this name ({', '.join(str(r.path) for r in matches)}); "
                         "give the run's folder")
    raise UsageError(f"{given}: no run folder, id or name in {runs_root}"
                     f"{did_you_mean(given, [r.id for r in runs] + [r.name for r in runs if r.name])} "
                     "(`mmflow runs` lists them)")


def list_runs(runs: list[RunRecord]) -> str:
    """A table of runs: id, name, workflow, start, state, duration, overrides and headline result."""
    rows = [["id", "name", "workflow", "started", "state", "time", "overrides", "result"]]
    for run in runs:
        rows.append([run.id, run.name, run.workflow, _when(run.record.get("started")), run.state,
                     _duration(run.record.get("seconds")), " ".join(run.overrides), format_metrics(run.result())])
    return text_table(rows)


def show_run(run: RunRecord) -> str:
    """One run: what it is, its steps with their headline metrics, and the params its overrides changed."""
    lines = [f"run {run.id}" + (f" ({run.name})" if run.name else ""), f"  folder:    {run.path}",
             f"  workflow:  {run.workflow}", f"  state:     {run.state}",
             f"  started:   {_when(run.record.get('started'))}   time: {_duration(run.record.get('seconds'))}"]
    changed = changed_values(run)
    lines.append("  changed from the workflow file:" + ("" if changed else " nothing"))
    lines += [f"    {path}: {before} -> {after}" for path, (before, after) in changed.items()]
    rows = [["step", "component", "state", "time", "metrics"]]
    for step in run.steps():
        status = run.status(step)
        state = "reused" if status.get("reused_from") else status.get("state", "?")
        rows.append([step, status.get("component", "?"), state, _duration(status.get("seconds")),
                     format_metrics(run.headline(step))])
    return "\n".join(lines) + "\n\n" + text_table(rows)


def compare_runs(runs: list[RunRecord], every_metric: bool = False) -> str:
    """Runs side by side, one column each: the values that differ between them, then each step's headline
    metrics (every numeric metric with `every_metric`)."""
    params = [_flat_params(run) for run in runs]
    rows = [["", *(r.name or r.id for r in runs)], ["workflow", *(r.workflow for r in runs)],
            ["state", *(r.state for r in runs)], ["time", *(_duration(r.record.get("seconds")) for r in runs)]]
    for key in sorted(set().union(*params)):
        values = [p.get(key) for p in params]
        if any(v != values[0] for v in values):
            rows.append([key, *(_value(v) for v in values)])
    steps = list(dict.fromkeys(s for run in runs for s in run.steps()))
    for step in steps:
        chosen: dict[str, None] = {}
        for run in runs:
            metrics = read_metrics(run.path / step) if every_metric else run.headline(step)
            chosen.update(dict.fromkeys(k for k, v in metrics.items() if isinstance(v, (int, float))))
        for key in chosen:
            values = [read_metrics(run.path / step).get(key) for run in runs]
            rows.append([f"{step}.{key}", *(format_number(v) for v in values)])
    return text_table(rows)


def changed_values(run: RunRecord) -> dict[str, tuple[str, str]]:
    """path -> (value in the workflow file, value the run used) for each value its overrides changed."""
    as_written, used = _workflow_data(run)
    before, after = dotted(as_written), dotted(used)
    return {k: (_value(before[k]) if k in before else "(default)", _value(after[k]))
            for k in after if before.get(k, ...) != after[k]}


def _workflow_data(run: RunRecord) -> tuple[Any, Any]:
    """The run's workflow file as written and with its overrides applied ({} where they cannot be read)."""
    try:
        text = (run.path / "workflow.yaml").read_text(encoding="utf-8")
        as_written, used = parse_yaml(text, "workflow.yaml"), parse_yaml(text, "workflow.yaml")
        apply_overrides(used, list(run.overrides))
    except (OSError, UnicodeDecodeError, WorkflowError):  # a folder edited by hand: show what can be shown
        return {}, {}
    return as_written.data, used.data


def _flat_params(run: RunRecord) -> dict[str, Any]:
    """The run's settings (seed, executor, resources, ...) and every step's params as it used them (defaults
    included), by dotted path."""
    used = _workflow_data(run)[1]
    settings = {k: v for k, v in used.items() if k not in ("name", "description", "steps", "sweep")} \
        if isinstance(used, dict) else {}
    flat = dotted(settings)
    flat.update({f"steps.{step}.params.{k}": v for step in run.steps()
                 for k, v in dotted(read_json(run.path / step / "params.json")).items()})
    return flat


def text_table(rows: list[list[str]]) -> str:
    """Rows as aligned columns (the last column is not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1]
                     for row in rows)


def format_metrics(metrics: dict[str, Any]) -> str:
    """`key=value, ...` with four significant digits."""
    return ", ".join(f"{k}={format_number(v)}" for k, v in metrics.items())


def _value(value: Any) -> str:
    return "-" if value is None else value if isinstance(value, str) else json.dumps(value)


def plus_minus(mean: float, std: float) -> str:
    """`mean±std`, each with four significant digits."""
    return f"{format_number(float(mean))}±{format_number(float(std))}"


def format_number(value: Any, missing: str = "-") -> str:
    """A float with four significant digits, anything else as it prints; `missing` for None."""
    return missing if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _when(iso: Any) -> str:
    try:
        return dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return "-"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
