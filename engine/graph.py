"""Wire steps by named outputs, check the wiring, and order the steps."""

from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import Problem, did_you_mean
from .registry import Many, Maybe, is_optional

if TYPE_CHECKING:
    from .registry import ComponentSpec
    from .yaml_source import YamlDocument, YamlPath

REFERENCE = re.compile(r"^\$\{steps\.([A-Za-z_][A-Za-z0-9_-]*)\.outputs\.([a-z][a-z0-9_]*)\}$")


@dataclass(frozen=True)
class Edge:
    """An input fed by output `output` of step `step`."""

    step: str
    output: str

    def __str__(self) -> str:
        return f"${{steps.{self.step}.outputs.{self.output}}}"


Wiring = Edge | list[Edge]


def edges_of(wiring: Wiring) -> list[Edge]:
    """The edges of one input, whether it takes one output or a list."""
    return wiring if isinstance(wiring, list) else [wiring]


def upstream_of(inputs: dict[str, Wiring]) -> set[str]:
    """The steps a step's inputs come from."""
    return {e.step for w in inputs.values() for e in edges_of(w)}


def plan_graph(
    step_inputs: dict[str, dict[str, Any]],
    components: dict[str, ComponentSpec],
    unresolved: set[str],
    doc: YamlDocument,
) -> tuple[dict[str, dict[str, Wiring]], list[str], list[Problem]]:
    """Resolve every `inputs:` reference and order the steps topologically.

    `components` holds the steps whose component is known; steps in `unresolved` already have
    problems of their own, so references to them are accepted without checking outputs.
    Returns (wiring per step, run order, problems).
    """
    problems: list[Problem] = []
    wiring: dict[str, dict[str, Wiring]] = {}
    for name, comp in components.items():
        wiring[name] = {}
        for input_name, value in step_inputs[name].items():
            where: YamlPath = ("steps", name, "inputs", input_name)
            if input_name not in comp.inputs:
                problems.append(doc.problem(
                    where, f"component '{comp.name}' has no input '{input_name}'"
                    f"{did_you_mean(input_name, comp.inputs) or _expected(comp.inputs)}"))
                continue
            expected = comp.inputs[input_name]
            if isinstance(expected, Many):
                if not isinstance(value, list) or not value:
                    problems.append(doc.problem(where, f"expected a list of references ({_kind(expected)}), got {value!r}"))
                    continue
                edges = [_resolve(ref, where + (i,), expected.kind, comp, input_name, step_inputs, components,
                                  unresolved, doc, problems) for i, ref in enumerate(value)]
                if all(edges):
                    wiring[name][input_name] = edges
            else:
                kind = expected.kind if isinstance(expected, Maybe) else expected
                edge = _resolve(value, where, kind, comp, input_name, step_inputs, components, unresolved,
                                doc, problems)
                if edge:
                    wiring[name][input_name] = edge
        for missing in comp.inputs.keys() - step_inputs[name].keys():
            if is_optional(comp.inputs[missing]):
                continue
            problems.append(doc.problem(
                ("steps", name), f"missing input '{missing}' (expects {_kind(comp.inputs[missing])} "
                f"from another step, e.g. inputs: {{{missing}: ${{steps.<step>.outputs.<output>}}}})"))

    sorter = graphlib.TopologicalSorter(
        {n: upstream_of(ins) for n, ins in wiring.items()})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        problems.append(doc.problem(("steps", cycle[0], "inputs"), "cycle: " + " -> ".join(cycle[::-1])))
        order = []
    declared = {name: i for i, name in enumerate(step_inputs)}
    depth: dict[str, int] = {}
    for name in order:  # topological, so every upstream depth is known
        depth[name] = 1 + max((depth[e.step] for w in wiring[name].values() for e in edges_of(w)
                               if e.step in depth), default=-1)
    return wiring, sorted(order, key=lambda n: (depth[n], declared[n])), problems


def _resolve(ref: Any, where: YamlPath, kind: str, comp: ComponentSpec, input_name: str,
             step_inputs: dict[str, dict[str, Any]], components: dict[str, ComponentSpec],
             unresolved: set[str], doc: YamlDocument, problems: list[Problem]) -> Edge | None:
    """One reference -> Edge, or None after recording why not."""
    match = REFERENCE.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        problems.append(doc.problem(where, f"expected a reference like ${{steps.<step>.outputs.<output>}}, got {ref!r}"))
        return None
    source, output = match.groups()
    if source not in step_inputs:
        problems.append(doc.problem(where, f"unknown step '{source}'{did_you_mean(source, list(step_inputs))}"))
        return None
    if source in unresolved:
        return None
    produced = components[source].outputs
    if output not in produced:
        problems.append(doc.problem(
            where, f"step '{source}' ({components[source].name}) has no output '{output}'"
            f"{did_you_mean(output, produced) or _expected(produced)}"))
        return None
    if produced[output] != kind:
        problems.append(doc.problem(
            where, f"type mismatch: '{source}.{output}' is {produced[output]!r} but input "
            f"'{input_name}' of {comp.name} expects {kind!r}"))
        return None
    return Edge(source, output)


def _kind(kind: str | Many | Maybe) -> str:
    return repr(kind) if isinstance(kind, str) else str(kind)


def _expected(names: dict[str, Any]) -> str:
    return f" (it has: {', '.join(sorted(names))})" if names else " (it takes none)"
