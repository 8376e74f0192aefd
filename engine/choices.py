"""Named alternatives that a params field picks by `name` (e.g. a training method, a model part).

Each alternative registers its params class, the object the domain builds from (`target`) and
capabilities (plain values a field can filter on). The field's choices are read when a workflow is
validated and when its JSON Schema is generated, so alternatives that packages register late (through
the table's entry-point group) are offered like the built-in ones. A plain string picks an
alternative with its default params.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic_core import PydanticCustomError, core_schema

from .errors import UsageError, did_you_mean
from .plugins import load_group


@dataclass(frozen=True)
class Choice:
    """One registered alternative."""

    name: str
    params: type[BaseModel]
    target: Any  # what the domain builds from: a class, a function
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def description(self) -> str:
        """The first line of its params class's docstring."""
        return (self.params.__doc__ or "").strip().split("\n")[0]


Filter = Callable[[Choice], bool]
CHOICE_ERRORS = ("choice_name", "choice_unknown")  # the error types a choice field raises; their messages name the value


class ChoiceTable:
    """The alternatives of one kind (`what`, e.g. 'method'), filled by `register` and the entry-point `group`."""

    def __init__(self, what: str, group: str) -> None:
        self.what, self.group = what, group
        self._choices: dict[str, Choice] = {}
        self._plugins_loaded = False

    def register(self, name: str, params: type[BaseModel], **capabilities: Any) -> Callable[[Any], Any]:
        """Decorator: register the decorated class or function as the `name` alternative."""
        def add(target: Any) -> Any:
            source = getattr(target, "__module__", "")
            existing = self._choices.get(name)
            if existing is not None and existing.source != source:
                raise UsageError(f"{self.what} '{name}' is registered twice: by {existing.source} and by {source}")
            self._choices[name] = Choice(name, params, target, dict(capabilities), source)
            return target
        return add

    def choices(self, where: Filter | None = None) -> list[Choice]:
        """Every alternative (that `where` accepts), by name."""
        self._load_plugins()
        return [c for _, c in sorted(self._choices.items()) if where is None or where(c)]

    def get(self, name: str) -> Choice:
        """The alternative called `name` (UsageError naming the registered ones if none)."""
        self._load_plugins()
        if name not in self._choices:
            raise UsageError(f"unknown {self.what} '{name}'{did_you_mean(name, list(self._choices))}")
        return self._choices[name]

    def of(self, params: BaseModel) -> Choice:
        """The alternative whose params `params` are."""
        return self.get(params.name)  # type: ignore[attr-defined]

    def parse(self, value: Any) -> BaseModel:
        """The params a workflow's value (a name, or a mapping with `name`) stands for."""
        return ChoiceField(self, None, "").validate(value)

    def field(self, where: Filter | None = None, why: str = "") -> Any:
        """A pydantic field type holding the params of one alternative (that `where` accepts; `why` names the
        rule in errors): a mapping with `name` and that alternative's params, or just its name."""
        return ChoiceField(self, where, why)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        load_group(self.group, f"{self.what} plugin")


@dataclass(frozen=True)
class ChoiceField:
    """The pydantic type `ChoiceTable.field` returns."""

    table: ChoiceTable
    where: Filter | None
    why: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.validate, serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.model_dump(), when_used="always"))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        choices = self.table.choices(self.where)
        refs = {c.name: handler(c.params.__pydantic_core_schema__) for c in choices}
        return {"oneOf": [{"enum": list(refs), "type": "string"}, *refs.values()]}

    def __str__(self) -> str:
        return f"{self.table.what} (its name, or a mapping with name and params)"

    def params_for(self, value: Any) -> type[BaseModel] | None:
        """The params class of the alternative `value` (a name, or a mapping with `name`) picks, if registered."""
        name = value if isinstance(value, str) else value.get("name") if isinstance(value, Mapping) else None
        found = [c.params for c in self.table.choices(self.where) if c.name == name]
        return found[0] if found else None

    def validate(self, value: Any) -> BaseModel:
        """The params of the alternative `value` picks (pydantic errors naming what is wrong)."""
        allowed = {c.name: c for c in self.table.choices(self.where)}
        if isinstance(value, BaseModel) and type(value) in {c.params for c in allowed.values()}:
            return value
        names = {"what": self.table.what, "names": ", ".join(allowed)}
        if isinstance(value, Mapping) and "name" not in value:
            raise PydanticCustomError("choice_name", "missing required parameter 'name' (it selects the {what}; one "
                                      "of: {names})", names)
        if not isinstance(value, (str, Mapping)):
            raise PydanticCustomError("choice_name", "give the {what} as its name or a mapping with `name:` "
                                      "(one of: {names})", names)
        name = value if isinstance(value, str) else value["name"]
        if not isinstance(name, str):
            self._fail_at_name(PydanticCustomError("choice_name", "expected the {what}'s name (one of: {names}), got "
                                                   "{got}", {**names, "got": repr(name)}), name)
        if name not in allowed:
            registered = name in {c.name for c in self.table.choices()}
            problem = (f"{self.table.what} '{name}' {self.why}" if registered else
                       f"unknown {self.table.what} '{name}'{did_you_mean(name, list(allowed))}")
            error = PydanticCustomError("choice_unknown", "{problem}; one of: {names}",
                                        {"problem": problem, "names": ", ".join(allowed)})
            if isinstance(value, Mapping):
                self._fail_at_name(error, name)
            raise error
        return allowed[name].params.model_validate({"name": name} if isinstance(value, str) else dict(value))

    def _fail_at_name(self, error: PydanticCustomError, name: Any) -> None:
        """Raise `error` located at the mapping's `name:` line."""
        raise ValidationError.from_exception_data(self.table.what, [{"type": error, "loc": ("name",), "input": name}])
