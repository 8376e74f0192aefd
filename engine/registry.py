"""Component registry: short names -> (params model, named inputs/outputs, run function).

Components register with `@component(...)`. Built-in and third-party packages are found the
same way, through the entry-point group `mmflow.components`; loading a component module must
stay cheap (pydantic only), so heavy libraries are imported inside the run function.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import BaseModel, ConfigDict

from .errors import UsageError, did_you_mean
from .plugins import load_group

if TYPE_CHECKING:
    from .context import StepContext

ENTRY_POINT_GROUP = "mmflow.components"
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_IO_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Params(BaseModel):
    """Base class for component parameters (and every model a workflow fills): unknown keys are errors,
    defaults are validated, infinities and NaN are refused (also written as strings, such as "1e309")."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


RunFunction = Callable[["StepContext", Any], "dict[str, Any] | None"]
#: `mmflow doctor`'s checks: `fn() -> detail` raises when what it checks does not work here
SelfCheck = Callable[[], str]


@dataclass(frozen=True)
class Many:
    """An input that takes a list of outputs of one kind, e.g. `inputs={"results": Many("metrics")}`;
    `optional`: the step may leave it unwired."""

    kind: str
    optional: bool = False

    def __str__(self) -> str:
        return f"{'optional ' if self.optional else ''}list of {self.kind}"


@dataclass(frozen=True)
class Maybe:
    """An input a step may leave unwired, e.g. `inputs={"weights": Maybe("gblend_weights")}`."""

    kind: str

    def __str__(self) -> str:
        return f"optional {self.kind}"


InputKind = str | Many | Maybe


def is_optional(kind: InputKind) -> bool:
    """Whether a step may leave an input of this kind unwired."""
    return isinstance(kind, Maybe) or (isinstance(kind, Many) and kind.optional)
SeedUse = Literal["each", "together", "follow"]  # how a component's steps take a workflow's `seeds:`
#: `check(params, wired_inputs) -> [(path under the step, message)]`: rules across params and wiring
WiringCheck = Callable[[Any, set[str]], list[tuple[tuple[str, ...], str]]]
#: `reads(params) -> paths`: the files and folders outside the run a step reads (a dataset's root)
ReadsFunction = Callable[[Any], list[Path]]


@dataclass(frozen=True)
class ComponentSpec:
    """Everything the engine knows about one registered component."""

    name: str
    run: RunFunction
    params: type[BaseModel]
    inputs: dict[str, InputKind]
    outputs: dict[str, str]
    version: str
    distributed: bool
    description: str
    source: str = field(compare=False)
    check: WiringCheck | None = field(default=None, compare=False)
    reads: ReadsFunction | None = field(default=None, compare=False)
    headline: tuple[str, ...] = field(default=(), compare=False)
    seeds: SeedUse = "follow"

    def headline_of(self, metrics: dict[str, Any], most: int = 4) -> dict[str, float]:
        """The metrics a summary shows for a step of this component: those its `headline` names (glob patterns,
        in order), else its first numeric ones."""
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not self.headline:
            return dict(list(numeric.items())[:most])
        chosen = [k for pattern in self.headline for k in numeric if fnmatch.fnmatchcase(k, pattern)]
        return {k: numeric[k] for k in list(dict.fromkeys(chosen))[:most]}


class Registry:
    """A name -> ComponentSpec table filled by decorators and entry points."""

    def __init__(self) -> None:
        self._components: dict[str, ComponentSpec] = {}
        self._checks: dict[str, SelfCheck] = {}
        self._plugins_loaded = False

    def add(self, spec: ComponentSpec) -> None:
        """Register `spec`; a second component with the same name is a packaging error."""
        existing = self._components.get(spec.name)
        if existing is not None and existing.source != spec.source:
            raise UsageError(
                f"component '{spec.name}' is registered twice: by {existing.source} and by {spec.source}"
            )
        self._components[spec.name] = spec

    def get(self, name: str) -> ComponentSpec | None:
        """The component called `name`, or None."""
        self.load_plugins()
        return self._components.get(name)

    def names(self) -> list[str]:
        """All registered component names, sorted."""
        self.load_plugins()
        return sorted(self._components)

    def add_check(self, name: str, fn: SelfCheck) -> None:
        """Register a self-check that `mmflow doctor` runs."""
        self._checks[name] = fn

    def checks(self) -> dict[str, SelfCheck]:
        """Every registered self-check by name, in registration order."""
        self.load_plugins()
        return dict(self._checks)

    def suggest(self, name: str) -> str:
        """A '(did you mean ...)' hint for an unknown component name."""
        return did_you_mean(name, self.names())

    def load_plugins(self) -> None:
        """Import every module advertised under the `mmflow.components` entry-point group."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        load_group(ENTRY_POINT_GROUP, "component plugin")


REGISTRY = Registry()


def component(
    name: str,
    *,
    params: type[BaseModel] = Params,
    inputs: dict[str, InputKind] | None = None,
    outputs: dict[str, str] | None = None,
    version: str = "1",
    distributed: bool = False,
    check: WiringCheck | None = None,
    reads: ReadsFunction | None = None,
    headline: tuple[str, ...] = (),
    seeds: SeedUse = "follow",
) -> Callable[[RunFunction], RunFunction]:
    """Register `fn(ctx, params) -> metrics` as component `name`.

    `inputs`/`outputs` map names to artifact kinds (e.g. `{"train": "shards"}`); wiring an
    output into an input of another kind is a validation error. `Many(kind)` takes a list (with
    `optional=True`, maybe none), `Maybe(kind)` may stay unwired. Bump `version` when the
    component's results change, so cached runs are not reused. `distributed=True` marks a step that trains on workers, so
    resources and executor become part of its cache key. `check` reports rules that span
    params and wiring (e.g. "this method needs that input") as validation problems. `reads` names
    the files and folders outside the run the step reads (e.g. a dataset's root): what they hold
    enters its cache key (see the workflow's `fingerprint`), so changed data is read again. `headline` names
    the metrics (or glob patterns, e.g. `accuracy_*_head`) that the run summary and `mmflow runs` show. `seeds`:
    how its steps take a workflow's `seeds:` (seeds.py): `each` (a step per seed: a training), `together` (one step
    over every seed's outputs of its list inputs: a comparison), `follow` (a step per seed when an input comes from
    a per-seed step, else one).
    """
    if not _NAME.match(name):
        raise ValueError(f"component name '{name}' must look like 'area.name' (lowercase, dotted)")
    for io in (inputs or {}, outputs or {}):
        for io_name in io:
            if not _IO_NAME.match(io_name):
                raise ValueError(f"component '{name}': input/output name '{io_name}' must be snake_case")
    if params.model_config.get("extra") != "forbid":
        raise TypeError(f"component '{name}': params model must forbid extra keys (subclass mmflow.engine.Params)")

    def register(fn: RunFunction) -> RunFunction:
        doc = inspect.getdoc(fn) or ""
        REGISTRY.add(
            ComponentSpec(
                name=name,
                run=fn,
                params=params,
                inputs=dict(inputs or {}),
                outputs=dict(outputs or {}),
                version=version,
                distributed=distributed,
                description=doc.splitlines()[0] if doc else "",
                source=f"{fn.__module__}.{fn.__qualname__}",
                check=check,
                reads=reads,
                headline=tuple(headline),
                seeds=seeds,
            )
        )
        return fn

    return register


def self_check(name: str) -> Callable[[SelfCheck], SelfCheck]:
    """Register `fn() -> detail` as a check `mmflow doctor` runs (e.g. that a decoder works here)."""

    def register(fn: SelfCheck) -> SelfCheck:
        REGISTRY.add_check(name, fn)
        return fn

    return register
