"""`sweep:` — a workflow's hyperparameter sweep: its spec, its checks and its results (tune.py runs it).

A sweep varies values addressed by dotted paths into steps' params
(`steps.train.params.method.alpha`) over Ray Tune search spaces. Steps that do not depend on a
swept value run once, before the trials, and every trial reuses them through the step cache;
each trial runs the rest of the workflow with its values, its training steps reporting every
epoch to Tune (so ASHA can stop it early). The results: a table (console, CSV) and the best
configuration as a ready-to-run workflow file.
"""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from .errors import Problem, did_you_mean
from .graph import edges_of
from .model_paths import bools_for_numbers
from .registry import Params
from .seeds import base_name
from .yaml_source import YamlDocument, apply_overrides, parse_yaml

if TYPE_CHECKING:
    from .registry import ComponentSpec
    from .spec import Workflow

SPACES = ("grid", "choice", "uniform", "loguniform", "randint")


class Space(Params):
    """One swept value: exactly one of the Ray Tune spaces below."""

    grid: list[Any] | None = Field(None, min_length=1, description="every value, in every sample (tune.grid_search)")
    choice: list[Any] | None = Field(None, min_length=1, description="one value at random (tune.choice)")
    uniform: tuple[float, float] | None = Field(None, description="[low, high] (tune.uniform)")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], low > 0 (tune.loguniform)")
    randint: tuple[int, int] | None = Field(None, description="[low, high) integers (tune.randint)")

    @model_validator(mode="after")
    def _one(self) -> "Space":
        given = [name for name in SPACES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SPACES)} (got {', '.join(given) or 'none'})")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]}: low {bounds[0]} must be below high {bounds[1]}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform: low must be > 0")
        return self

    def examples(self) -> list[tuple[tuple[str, int], Any]]:
        """Values to check the step's params with, each with where it is: every listed one, or a range's ends."""
        for name in ("grid", "choice", "uniform", "loguniform"):
            if getattr(self, name) is not None:
                return [((name, i), value) for i, value in enumerate(getattr(self, name))]
        return [(("randint", 0), self.randint[0]), (("randint", 1), self.randint[1] - 1)]

    def given(self) -> tuple[str, Any]:
        """The space's kind and its value, e.g. ("grid", [0.1, 0.01])."""
        return next((name, getattr(self, name)) for name in SPACES if getattr(self, name) is not None)


class Scheduler(Params):
    """How trials are stopped: fifo (never early) or ASHA on a per-epoch training metric."""

    name: Literal["fifo", "asha"] = "fifo"
    metric: str | None = Field(None, description="asha: a training step's per-epoch metric, '<step>.<metric>', "
                               "e.g. train.loss")
    mode: Literal["max", "min"] = Field("max", description="asha: whether higher is better")
    max_t: int = Field(100, ge=1, description="asha: the most epochs a trial trains")
    grace_period: int = Field(1, ge=1, description="asha: epochs before a trial can be stopped")
    reduction_factor: float = Field(2, gt=1, description="asha: keep 1/reduction_factor at each rung")

    @model_validator(mode="after")
    def _metric(self) -> "Scheduler":
        if self.name == "asha" and not self.metric:
            raise ValueError("asha needs metric: a per-epoch metric of a training step, e.g. train.loss")
        return self


class SweepSpec(Params):
    """A Ray Tune sweep over the workflow's params."""

    parameters: dict[str, Space] = Field(min_length=1, description="steps.<step>.params.<path> -> search space")
    num_samples: int = Field(1, ge=1, description="samples drawn (each grid point runs num_samples times)")
    metric: str = Field(description="the result to rank trials by: '<step>.<metric>', e.g. eval.accuracy")
    mode: Literal["max", "min"] = Field("max", description="whether a higher metric is better")
    scheduler: Scheduler = Field(default_factory=Scheduler)
    max_concurrent_trials: int | None = Field(None, ge=1, description="trials at once (default: as resources allow)")
    trial_cpus: float = Field(0.1, gt=0, description="CPUs reserved for each trial's driver, which runs its light "
                              "steps (its training steps reserve their Ray Train workers themselves)")


def check_sweep(sweep: SweepSpec, components: dict[str, ComponentSpec | None], raw_params: dict[str, dict],
                doc: YamlDocument) -> list[Problem]:
    """Problems with the sweep's paths, values and metrics, each at its line. `components`: every step of
    the workflow, None where its component is unknown (a problem reported with the step)."""
    problems = []
    for path, space in sweep.parameters.items():
        where = ("sweep", "parameters", path)
        parts = path.split(".")
        if len(parts) < 4 or parts[0] != "steps" or parts[2] != "params":
            problems.append(doc.problem(where, f"'{path}' must look like steps.<step>.params.<name>"))
            continue
        if parts[1] not in components:
            problems.append(doc.problem(where, f"unknown step '{parts[1]}'{_suggest(parts[1], components)}"))
            continue
        component = components[parts[1]]
        if component is None:
            continue
        own = {(e["loc"], e["type"]) for e in _errors(component, raw_params.get(parts[1]) or {})}  # reported there
        for item, value in space.examples():
            params = copy.deepcopy(raw_params.get(parts[1]) or {})
            _set(params, parts[3:], value)
            new = [e for e in _errors(component, params) if (e["loc"], e["type"]) not in own]
            if isinstance(value, bool) and tuple(parts[3:]) in bools_for_numbers(component.params, params):
                problems.append(doc.problem(where + item, f"expected a number (got {str(value).lower()})"))
            if new:
                field = ".".join(str(p) for p in new[0]["loc"])
                if new[0]["type"] == "extra_forbidden":
                    problems.append(doc.problem(where, f"value {value!r}: {field}: unknown parameter"))
                    break
                reason = new[0]["msg"].removeprefix("Value error, ")
                problems.append(doc.problem(where + item, f"value {value!r}: {field}: {reason}"))
    for where, metric in ((("sweep", "metric"), sweep.metric), (("sweep", "scheduler", "metric"), sweep.scheduler.metric)):
        if metric is None:
            continue
        step_name = metric.split(".")[0]
        if "." not in metric or step_name not in components:
            problems.append(doc.problem(where, f"'{metric}' must be '<step>.<metric>' of a step of this workflow"
                                        f"{_suggest(step_name, components)}"))
        elif where[1] == "scheduler" and components[step_name] is not None and not components[step_name].distributed:
            problems.append(doc.problem(where, f"step '{step_name}' does not train: ASHA needs a per-epoch metric "
                                        "of a training step"))
    return problems


def _errors(component: ComponentSpec, params: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        component.params.model_validate(params)
    except ValidationError as exc:
        return exc.errors(include_url=False)
    return []


def _suggest(name: str, steps: dict[str, Any]) -> str:
    return did_you_mean(name, list(steps))


def _set(tree: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {}) if isinstance(tree.get(key, {}), dict) else tree
    tree[keys[-1]] = value


def swept_steps(workflow: Workflow) -> set[str]:
    """Steps whose params are swept, and every step downstream of one."""
    named = {path.split(".")[1] for path in workflow.spec.sweep.parameters}
    swept: set[str] = set()
    for name in workflow.order:  # run order: upstream steps come first
        if base_name(name) in named or any(edge.step in swept for wiring in workflow.steps[name].inputs.values()
                                           for edge in edges_of(wiring)):
            swept.add(name)
    return swept


def override(path: str, value: Any) -> str:
    """A `--set` expression for one swept value."""
    return f"{path}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


@dataclass
class Trial:
    """One trial's values and outcome."""

    name: str
    values: dict[str, Any]
    metrics: dict[str, Any]
    status: str  # done, stopped (by the scheduler) or error


def write_results(sweep: SweepSpec, trials: list[Trial], out: Path) -> str:
    """results.csv and a console table, best first; returns the table."""
    paths = list(sweep.parameters)
    finished = [t for t in trials if isinstance(t.metrics.get(sweep.metric), (int, float))]
    ranked = sorted(finished, key=lambda t: t.metrics[sweep.metric], reverse=sweep.mode == "max")
    ranked += [t for t in trials if t not in finished]
    header = ["trial", "status", *paths, sweep.metric, "results"]  # results: epochs reported + the final one
    rows = [[t.name, t.status, *[t.values.get(p) for p in paths], t.metrics.get(sweep.metric),
             t.metrics.get("training_iteration")] for t in ranked]
    with (out / "results.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    cells = [[_cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def best_workflow(workflow: Workflow, sweep: SweepSpec, trials: list[Trial]) -> tuple[Trial, str] | None:
    """The best finished trial and its workflow as YAML: the sweep's values set, the sweep removed."""
    finished = [t for t in trials if isinstance(t.metrics.get(sweep.metric), (int, float))]
    if not finished:
        return None
    pick = max if sweep.mode == "max" else min
    best = pick(finished, key=lambda t: t.metrics[sweep.metric])
    doc = parse_yaml(workflow.document.text, workflow.document.file)
    apply_overrides(doc, [*workflow.overrides, *(override(p, v) for p, v in best.values.items())])
    data = {k: v for k, v in doc.data.items() if k != "sweep"}
    header = (f"# best trial {best.name} of the sweep in {workflow.document.file}: "
              f"{sweep.metric} = {best.metrics[sweep.metric]:.6g}\n")
    return best, header + yaml.safe_dump(data, sort_keys=False)
