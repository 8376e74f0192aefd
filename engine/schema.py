"""JSON Schema of workflow files, with each step's params discriminated by component name."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, create_model

from .executor import executor_names
from .graph import REFERENCE
from .hooks import hook_names
from .registry import REGISTRY, Many, Maybe, Registry, is_optional
from .spec import StepSpec, WorkflowSpec


def workflow_schema(registry: Registry = REGISTRY) -> dict[str, Any]:
    """The JSON Schema an editor can use to autocomplete and check workflow files."""
    variants = [_step_model(registry, name) for name in registry.names()]
    step_type: Any = variants[0] if len(variants) == 1 else Annotated[
        Union[tuple(variants)], Field(discriminator="component")
    ]
    fields = WorkflowSpec.model_fields
    hooks = tuple(hook_names())
    model = create_model(
        "Workflow",
        __base__=WorkflowSpec,
        steps=(dict[str, step_type], Field(min_length=1, description="step name -> step")),
        # the executors and hooks installed now, so an editor can offer them
        executor=(Literal[tuple(executor_names())], Field(fields["executor"].default,
                                                         description=fields["executor"].description)),
        hooks=(list[Literal[hooks]] if hooks else list[str], Field(default_factory=list,
                                                                   description=fields["hooks"].description)),
    )
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mmflow workflow"
    return schema


def _step_model(registry: Registry, name: str) -> type:
    comp = registry.get(name)
    assert comp is not None
    reference = Annotated[str, Field(pattern=REFERENCE.pattern)]
    inputs = create_model(
        f"Inputs_{_ident(name)}",
        __config__=ConfigDict(extra="forbid"),
        **{
            input_name: _input_field(kind, reference) for input_name, kind in comp.inputs.items()
        },
    )
    wired = any(not is_optional(kind) for kind in comp.inputs.values())
    required = any(f.is_required() for f in comp.params.model_fields.values())
    return create_model(
        f"Step_{_ident(name)}",
        __base__=StepSpec,
        __doc__=comp.description or f"Step running component {name}.",
        component=(Literal[name], Field(description=comp.description)),
        params=(comp.params, Field(...) if required else Field(default_factory=comp.params)),
        inputs=(inputs, Field(...) if wired else Field(default_factory=inputs)),
    )


def _input_field(kind: str | Many | Maybe, reference: Any) -> tuple[Any, Any]:
    description = f"{kind} produced by other steps"
    if isinstance(kind, Many):
        if kind.optional:
            return list[reference] | None, Field(None, description=description)
        return list[reference], Field(description=description)
    if isinstance(kind, Maybe):
        return reference | None, Field(None, description=description)
    return reference, Field(description=description)


def _ident(name: str) -> str:
    return name.replace(".", "_")
