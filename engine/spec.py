"""Pydantic models of a workflow file and its validation into a checked, ordered Workflow."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from .choices import CHOICE_ERRORS
from .errors import Problem, WorkflowError, did_you_mean
from .executor import executor_names
from .graph import Wiring, plan_graph
from .hooks import hook_names
from .model_paths import bools_for_numbers, fields_at
from .registry import REGISTRY, ComponentSpec, Params, Registry
from .seeds import expand_seeds
from .storage import check_location
from .sweep import SweepSpec, check_sweep
from .tracking import TrackingSpec
from .yaml_source import YamlDocument, YamlPath, apply_overrides, load_yaml, value_problems

_STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class Resources(Params):
    """Workers for training steps and what each one gets."""

    workers: int = Field(1, ge=1, le=100_000, description="Ray Train workers (data-parallel ranks) per training step")
    cpus_per_worker: float = Field(1, gt=0, le=4096, description="CPUs reserved for each worker")
    gpus_per_worker: float = Field(0, ge=0, le=64, description="GPUs per worker; > 0 trains on GPU with NCCL")
    cpus_per_task: float = Field(1, gt=0, le=4096, description="CPUs for each parallel task a step fans out (e.g. G-Blend probes)")
    gpus_per_task: float = Field(0, ge=0, le=64, description="GPUs for each parallel task; > 0 runs it on GPU")


class Failure(Params):
    """What a training step does when a worker dies."""

    max_failures: int = Field(0, ge=-1, le=1000, description="restarts of a training step's workers from their latest "
                              "checkpoint (Ray Train FailureConfig; -1: unlimited)")


class StepSpec(Params):
    """One step: a registered component, its parameters and where its inputs come from."""

    component: str = Field(description="registered component name, see `mmflow components`")
    description: str = ""
    tags: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]] = Field(
        default_factory=list, description="names to run a group of steps by (mmflow run --tags)")
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str | list[str]] = Field(
        default_factory=dict, description="input name -> ${steps.<step>.outputs.<output>} (or a list of them)"
    )


class WorkflowSpec(Params):
    """A workflow file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="names the runs folder")
    description: str = ""
    seed: int = Field(0, ge=0, description="seed for every step; same seed, same results")
    seeds: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, min_length=1, max_length=1000, description="run the steps that depend on the seed (trainings and "
        "what reads their outputs) once per seed, e.g. [0, 1, 2]; comparisons show mean ± std over them "
        "(mmflow run --seeds 0,1,2); steps that do not (data, shards) run once with `seed`")
    executor: str = Field(
        "ray", description="ray: Ray Train workers; inline: one in-process worker (debugging); or an executor a "
        "plugin registers (entry-point group mmflow.executors)"
    )
    hooks: list[str] = Field(default_factory=list, description="run hooks to call around the run and its steps "
                             "(tracking, notifications): names plugins register (entry-point group mmflow.hooks)")
    resources: Resources = Field(default_factory=Resources)
    max_parallel_steps: int | None = Field(
        None, ge=1, le=10_000, description="how many steps run at once at most (default: as many as are ready and "
        "the executor has room for; the inline executor runs one at a time); mmflow run --max-parallel-steps")
    failure: Failure = Field(default_factory=Failure)
    steps: dict[str, StepSpec] = Field(min_length=1)
    sweep: SweepSpec | None = Field(None, description="a Ray Tune sweep over steps' params (mmflow sweep)")
    fingerprint: Literal["stat", "sha256"] = Field(
        "stat", description="how the files a step reads from outside the run (a dataset's root) enter its cache "
        "key: stat (each file's path, size and modification time) or sha256 (its contents: every byte read, each run)")
    tracking: TrackingSpec | None = Field(
        None, description="where metrics, params and the workflow go besides the run folder: TensorBoard event "
        "files, an MLflow tracking URI (mmflow run --tracking)")
    storage: str | None = Field(
        None, description="where checkpoints and a copy of every finished step go, for restarts on other "
        "nodes: a shared path or a pyarrow filesystem URI (s3://bucket/prefix, gs://..., ?endpoint_override=...)")

    @field_validator("hooks")
    @classmethod
    def _registered_hooks(cls, value: list[str]) -> list[str]:
        known = hook_names()
        for name in value:
            if name not in known:
                raise ValueError(f"'{name}' is not a registered run hook{did_you_mean(name, known)}; registered: "
                                 f"{', '.join(known) or 'none'}")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) < len(value):
            raise ValueError(f"each seed once (got {value})")
        return value

    @field_validator("executor")
    @classmethod
    def _registered_executor(cls, value: str) -> str:
        known = executor_names()
        if value not in known:
            raise ValueError(f"should be a registered executor: {', '.join(known)}{did_you_mean(value, known)}")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_location(cls, value: str | None) -> str | None:
        problem = check_location(value) if value is not None else ""
        if problem:
            raise ValueError(problem)
        return value


@dataclass
class Step:
    """A validated step ready to run."""

    name: str
    component: ComponentSpec
    params: BaseModel
    inputs: dict[str, Wiring] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    seed: int | None = None  # one of the workflow's `seeds:` (a step per seed), else the workflow's `seed`


@dataclass
class Workflow:
    """A validated workflow: spec, steps in run order, and the document it came from."""

    spec: WorkflowSpec
    steps: dict[str, Step]
    order: list[str]
    document: YamlDocument
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The workflow's name."""
        return self.spec.name

    def seed_of(self, step: Step) -> int:
        """The seed a step runs with: its own (one of `seeds:`), else the workflow's."""
        return self.spec.seed if step.seed is None else step.seed


def load_workflow(path: str | Path, overrides: list[str] | None = None, registry: Registry = REGISTRY) -> Workflow:
    """Read, override and validate a workflow file; raise WorkflowError listing every problem."""
    doc = load_yaml(path)
    overrides = list(overrides or [])
    apply_overrides(doc, overrides)
    return validate_document(doc, registry, overrides)


def validate_document(doc: YamlDocument, registry: Registry = REGISTRY, overrides: list[str] | None = None) -> Workflow:
    """Validate a parsed document against the workflow model, the registry and the graph rules.

    One pass finds every problem: the workflow's own fields, each step's component, params and
    wiring, and the sweep are checked independently, each problem reported once.
    """
    if not isinstance(doc.data, dict):
        raise WorkflowError([doc.problem((), "a workflow must be a mapping with 'name' and 'steps'")])
    values = value_problems(doc) + _bools_for_numbers(doc, (), WorkflowSpec)  # what pydantic lets through
    problems: list[Problem] = []
    spec: WorkflowSpec | None = None
    try:
        spec = WorkflowSpec.model_validate(doc.data)
    except ValidationError as exc:  # problems inside a step's own entry are among these, once
        problems.extend(_problems_from(exc, doc, (), WorkflowSpec, noun="field"))

    raw_steps = doc.data.get("steps") if isinstance(doc.data.get("steps"), dict) else {}
    step_specs: dict[str, StepSpec] = {}
    components: dict[str, ComponentSpec] = {}  # steps whose component is known, valid params or not
    steps: dict[str, Step] = {}
    for name, raw in raw_steps.items():
        step_spec = _valid(StepSpec, raw)  # its own problems are among the workflow's
        if step_spec is None:
            continue
        step_specs[name] = step_spec
        where: YamlPath = ("steps", name)
        if not isinstance(name, str) or not _STEP_NAME.match(name):
            problems.append(doc.problem(where, f"step name '{name}' must be letters, digits, '_' or '-'"))
            continue
        comp = registry.get(step_spec.component)
        if comp is None:
            problems.append(
                doc.problem(where + ("component",),
                            f"unknown component '{step_spec.component}'{registry.suggest(step_spec.component)}")
            )
            continue
        components[name] = comp
        values.extend(_bools_for_numbers(doc, where + ("params",), comp.params))
        try:
            params = comp.params.model_validate(step_spec.params)
        except ValidationError as exc:
            problems.extend(_problems_from(exc, doc, where + ("params",), comp.params, noun="parameter"))
            continue
        steps[name] = Step(name, comp, params, tags=step_spec.tags)

    edges, order, graph_problems = plan_graph(
        {name: step_specs[name].inputs if name in step_specs else {} for name in raw_steps}, components,
        set(raw_steps) - set(components), doc)
    problems.extend(graph_problems)
    for name, step in steps.items():
        if step.component.check is not None:
            for path, message in step.component.check(step.params, set(step_specs[name].inputs)):
                problems.append(doc.problem(("steps", name) + path, message))
    sweep = _valid(SweepSpec, doc.data.get("sweep"))  # its own problems are among the workflow's
    if sweep is not None:
        problems.extend(check_sweep(sweep, {name: components.get(name) for name in raw_steps},
                                    {n: s.params for n, s in step_specs.items()}, doc))
    flagged = {(p.file, p.path) for p in values}  # one problem per value: pydantic may see it too
    problems = values + [p for p in problems if (p.file, p.path) not in flagged]
    if problems or spec is None:
        raise WorkflowError(problems)
    for name, step_wiring in edges.items():
        steps[name].inputs = step_wiring
    return expand_seeds(Workflow(spec, steps, order, doc, list(overrides or [])))


def _valid(model: type[Params], data: Any) -> Any:
    """`data` as a `model`, or None when it is absent or invalid."""
    try:
        return None if data is None else model.model_validate(data)
    except ValidationError:
        return None


def _problems_from(exc: ValidationError, doc: YamlDocument, prefix: YamlPath,
                   model: type[BaseModel], noun: str) -> list[Problem]:
    messages: dict[YamlPath, list[str]] = {}
    for err in exc.errors(include_url=False):
        loc = _data_path(_at(doc.data, prefix), tuple(err["loc"]), err["type"] == "missing")
        kind = err["type"]
        if kind == "extra_forbidden":
            known = fields_at(model, loc[:-1], _at(doc.data, prefix))
            message = f"unknown {noun} '{loc[-1]}'{did_you_mean(str(loc[-1]), known)}"
        elif kind == "union_tag_invalid":  # a discriminated union: the tag picks the kind
            key, tag, tags = err["ctx"]["discriminator"].strip("'"), str(err["ctx"]["tag"]), err["ctx"]["expected_tags"]
            loc = loc + (key,)
            choices = [t.strip(" '") for t in tags.split(",")]
            message = f"unknown {key} '{tag}'{did_you_mean(tag, choices)}; one of: {', '.join(choices)}"
        elif kind == "union_tag_not_found":
            key = err["ctx"]["discriminator"].strip("'")
            message = f"missing required {noun} '{key}' (it selects the kind)"
        elif kind == "missing":
            loc, message = loc[:-1], f"missing required {noun} '{loc[-1]}'"  # point at the mapping
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            message = f"expected a mapping (got {err['input']!r})"
        else:
            message = err["msg"].removeprefix("Value error, ")  # a validator's own sentence reads better bare
            if not isinstance(err.get("input"), (dict, list)) and kind not in CHOICE_ERRORS:  # those name it
                message += f" (got {err['input']!r})"
        messages.setdefault(prefix + loc, []).append(message)
    # a value that fits no member of a union gets one line naming every alternative
    return [doc.problem(path, "; or ".join(dict.fromkeys(found))) for path, found in messages.items()]


def _bools_for_numbers(doc: YamlDocument, prefix: YamlPath, model: type[BaseModel]) -> list[Problem]:
    return [doc.problem(prefix + path, f"expected a number (got {str(_at(doc.data, prefix + path)).lower()})")
            for path in bools_for_numbers(model, _at(doc.data, prefix))]


def _at(data: Any, path: YamlPath) -> Any:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _data_path(data: Any, loc: YamlPath, last_is_missing: bool) -> YamlPath:
    """Drop the union-member tags pydantic puts in error locations: keep only real keys and indices."""
    kept: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        elif isinstance(data, dict) and last_is_missing and i == len(loc) - 1:
            data = None
        else:
            continue
        kept.append(part)
    return tuple(kept)


