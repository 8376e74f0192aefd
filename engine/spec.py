"""Pydantic models of a workflow file and its validation into a checked, ordered Workflow."""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import Problem, UsageError, WorkflowError, did_you_mean
from .graph import Wiring, plan_graph
from .registry import REGISTRY, ComponentSpec, Registry
from .storage import check_location
from .sweep import SweepSpec, check_sweep
from .yaml_source import YamlDocument, YamlPath, dotted, load_yaml

_STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    """Workers for training steps and what each one gets."""

    workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel ranks) per training step")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved for each worker")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker; > 0 trains on GPU with NCCL")
    cpus_per_task: float = Field(1, gt=0, description="CPUs for each parallel task a step fans out (e.g. G-Blend probes)")
    gpus_per_task: float = Field(0, ge=0, description="GPUs for each parallel task; > 0 runs it on GPU")


class Failure(_Strict):
    """What a training step does when a worker dies."""

    max_failures: int = Field(0, ge=-1, description="restarts of a training step's workers from their latest "
                              "checkpoint (Ray Train FailureConfig; -1: unlimited)")


class StepSpec(_Strict):
    """One step: a registered component, its parameters and where its inputs come from."""

    component: str = Field(description="registered component name, see `mmflow components`")
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str | list[str]] = Field(
        default_factory=dict, description="input name -> ${steps.<step>.outputs.<output>} (or a list of them)"
    )


class WorkflowSpec(_Strict):
    """A workflow file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="names the runs folder")
    description: str = ""
    seed: int = Field(0, ge=0, description="seed for every step; same seed, same results")
    executor: Literal["ray", "inline"] = Field(
        "ray", description="ray: Ray Train workers; inline: one in-process worker (debugging)"
    )
    resources: Resources = Field(default_factory=Resources)
    failure: Failure = Field(default_factory=Failure)
    steps: dict[str, StepSpec] = Field(min_length=1)
    sweep: SweepSpec | None = Field(None, description="a Ray Tune sweep over steps' params (mmflow sweep)")
    storage: str | None = Field(
        None, description="where checkpoints and a copy of every finished step go, for restarts on other "
        "nodes: a shared path or a pyarrow filesystem URI (s3://bucket/prefix, gs://..., ?endpoint_override=...)")

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


def load_workflow(path: str | Path, overrides: list[str] | None = None, registry: Registry = REGISTRY) -> Workflow:
    """Read, override and validate a workflow file; raise WorkflowError listing every problem."""
    doc = load_yaml(path)
    overrides = list(overrides or [])
    apply_overrides(doc, overrides)
    return validate_document(doc, registry, overrides)


def apply_overrides(doc: YamlDocument, overrides: list[str]) -> None:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to the document in place."""
    if doc.data is None:
        doc.data = {}
    for expr in overrides:
        key, sep, raw = expr.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise UsageError(f"--set {expr!r}: expected PATH=VALUE, e.g. steps.train.params.lr=0.01")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = doc.data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UsageError(f"--set {expr!r}: '{'.'.join(parts[: i + 1])}' is not a mapping")
            node = child
        if not isinstance(node, dict):
            raise UsageError(f"--set {expr!r}: cannot set a key inside a non-mapping")
        node[parts[-1]] = value
        doc.overrides[tuple(parts)] = expr


def validate_document(doc: YamlDocument, registry: Registry = REGISTRY, overrides: list[str] | None = None) -> Workflow:
    """Validate a parsed document against the workflow model, the registry and the graph rules."""
    if not isinstance(doc.data, dict):
        raise WorkflowError([doc.problem((), "a workflow must be a mapping with 'name' and 'steps'")])
    problems: list[Problem] = []
    try:
        spec = WorkflowSpec.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, doc, (), WorkflowSpec, noun="field"))
        raise WorkflowError(problems) from None

    steps: dict[str, Step] = {}
    for name, step_spec in spec.steps.items():
        where: YamlPath = ("steps", name)
        if not _STEP_NAME.match(name):
            problems.append(doc.problem(where, f"step name '{name}' must be letters, digits, '_' or '-'"))
            continue
        comp = registry.get(step_spec.component)
        if comp is None:
            problems.append(
                doc.problem(where + ("component",),
                            f"unknown component '{step_spec.component}'{registry.suggest(step_spec.component)}")
            )
            continue
        try:
            params = comp.params.model_validate(step_spec.params)
        except ValidationError as exc:
            problems.extend(_problems_from(exc, doc, where + ("params",), comp.params, noun="parameter"))
            continue
        steps[name] = Step(name, comp, params)

    known = {name: step.component for name, step in steps.items()}
    unresolved = {name for name in spec.steps if name not in steps}
    edges, order, graph_problems = plan_graph(
        {name: s.inputs for name, s in spec.steps.items()}, known, unresolved, doc
    )
    problems.extend(graph_problems)
    for name, step in steps.items():
        if step.component.check is not None:
            for path, message in step.component.check(step.params, set(spec.steps[name].inputs)):
                problems.append(_locate(doc, ("steps", name) + path, message))
    if spec.sweep is not None:
        problems.extend(check_sweep(spec.sweep, steps, {n: s.params for n, s in spec.steps.items()}, doc))
    if problems:
        raise WorkflowError(problems)
    for name, step_wiring in edges.items():
        steps[name].inputs = step_wiring
    return Workflow(spec, steps, order, doc, list(overrides or []))


def _problems_from(exc: ValidationError, doc: YamlDocument, prefix: YamlPath,
                   model: type[BaseModel], noun: str) -> list[Problem]:
    messages: dict[YamlPath, list[str]] = {}
    for err in exc.errors(include_url=False):
        loc = _data_path(_at(doc.data, prefix), tuple(err["loc"]), err["type"] == "missing")
        kind = err["type"]
        if kind == "extra_forbidden":
            known = _fields_at(model, loc[:-1], _at(doc.data, prefix))
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
            if not isinstance(err.get("input"), (dict, list)):
                message += f" (got {err['input']!r})"
        messages.setdefault(prefix + loc, []).append(message)
    # a value that fits no member of a union gets one line naming every alternative
    return [_locate(doc, path, "; or ".join(dict.fromkeys(found))) for path, found in messages.items()]


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


def _locate(doc: YamlDocument, path: YamlPath, message: str) -> Problem:
    for end in range(len(path), 0, -1):
        expr = doc.overrides.get(tuple(str(p) for p in path[:end]))
        if expr is not None:
            return Problem(f"{doc.file} (--set {expr})", None, dotted(path), message)
    return doc.problem(path, message)


def _fields_at(model: type[BaseModel], loc: YamlPath, data: Any) -> list[str]:
    """Field names of the (nested) model found at `loc` in `data`, for 'did you mean' hints."""
    annotation: Any = model
    for part in loc:
        annotation = _descend(annotation, part, data)
        data = data[part] if isinstance(data, (dict, list)) and _has(data, part) else None
        if annotation is None:
            return []
    target = _model_in(annotation, data)
    return list(target.model_fields) if target else []


def _has(data: dict | list, part: str | int) -> bool:
    return part in data if isinstance(data, dict) else isinstance(part, int) and part < len(data)


def _descend(annotation: Any, part: str | int, data: Any) -> Any:
    annotation = _unwrap_optional(annotation)
    model = _model_in(annotation, data)
    if model is not None:
        found = model.model_fields.get(part) if isinstance(part, str) else None
        return found.annotation if found else None
    args = typing.get_args(annotation)
    return args[-1] if args else None  # list[X] -> X, dict[K, V] -> V


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _model_in(annotation: Any, data: Any = None) -> type[BaseModel] | None:
    """The model an annotation names; for a union of models, the member whose Literal fields match `data`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0], data)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [m for m in (_model_in(arg) for arg in typing.get_args(annotation)) if m]
        for member in members:
            if isinstance(data, dict) and any(
                typing.get_origin(f.annotation) is typing.Literal and data.get(name) in typing.get_args(f.annotation)
                for name, f in member.model_fields.items()
            ):
                return member
        return members[0] if members else None
    return None
