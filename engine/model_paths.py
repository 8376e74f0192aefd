"""Walking pydantic models along the paths of the data they validate: which model or field a YAML path
lands on, for hints and for checks pydantic does not make."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from .choices import ChoiceField
from .yaml_source import YamlPath


def dotted(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as `{"a.b.c": leaf}` (lists and empty mappings are leaves)."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in dotted(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value} if prefix else {}


def bools_for_numbers(model: type[BaseModel], data: Any) -> list[YamlPath]:
    """Where `data` has `true`/`false` for a number of `model`: pydantic would take them as 1 and 0 silently."""
    found: list[YamlPath] = []
    pending: list[tuple[Any, Any, YamlPath]] = [(model, data, ())]
    while pending:
        annotation, value, path = pending.pop()
        target = model_in(annotation, value)
        if target is not None:
            if isinstance(value, dict):
                pending += [(target.model_fields[k].annotation, v, path + (k,))
                            for k, v in value.items() if k in target.model_fields]
        elif isinstance(value, bool):
            if _takes_number_not_bool(annotation):
                found.append(path)
        elif isinstance(value, (dict, list)):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            pending += [(_element(annotation, key), item, path + (key,)) for key, item in items]
    return found


def _element(annotation: Any, key: str | int) -> Any:
    """The annotation of one item of a list[X], tuple[X, Y], tuple[X, ...] or dict[K, X]."""
    annotation = _unwrap_optional(annotation)
    args = [a for a in typing.get_args(annotation) if a is not ...]
    if not args:
        return Any
    if typing.get_origin(annotation) is tuple and isinstance(key, int) and key < len(args):
        return args[key]
    return args[-1]


def _takes_number_not_bool(annotation: Any) -> bool:
    members = _members(annotation)
    if any(m in (bool, Any, object) or (typing.get_origin(m) is typing.Literal and
                                       any(isinstance(a, bool) for a in typing.get_args(m))) for m in members):
        return False
    return any(isinstance(m, type) and issubclass(m, (int, float)) for m in members)


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Optional, Annotated) union annotation."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def fields_at(model: type[BaseModel], loc: YamlPath, data: Any) -> list[str]:
    """Field names of the (nested) model found at `loc` in `data`, for 'did you mean' hints."""
    annotation: Any = model
    for part in loc:
        annotation = _descend(annotation, part, data)
        data = data[part] if isinstance(data, (dict, list)) and _has(data, part) else None
        if annotation is None:
            return []
    target = model_in(annotation, data)
    return list(target.model_fields) if target else []


def _has(data: dict | list, part: str | int) -> bool:
    return part in data if isinstance(data, dict) else isinstance(part, int) and part < len(data)


def _descend(annotation: Any, part: str | int, data: Any) -> Any:
    annotation = _unwrap_optional(annotation)
    model = model_in(annotation, data)
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


def model_in(annotation: Any, data: Any = None) -> type[BaseModel] | None:
    """The model an annotation names; for a union of models, the member whose Literal fields match `data`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, ChoiceField):
        return annotation.params_for(data)
    if typing.get_origin(annotation) is typing.Annotated:
        return model_in(typing.get_args(annotation)[0], data)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [m for m in (model_in(arg) for arg in typing.get_args(annotation)) if m]
        for member in members:
            if isinstance(data, dict) and any(
                typing.get_origin(f.annotation) is typing.Literal and data.get(name) in typing.get_args(f.annotation)
                for name, f in member.model_fields.items()
            ):
                return member
        return members[0] if members else None
    return None
