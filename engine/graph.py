"""Wire steps by named outputs, check the wiring, and order the steps."""

from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import Problem, did_you_mean

if TYPE_CHECKING:
    from .registry import ComponentSpec
    from .yaml_source import YamlDocument

REFERENCE = re.compile(r"^\$\{steps\.([A-Za-z_][A-Za-z0-9_-]*)\.outputs\.([a-z][a-z0-9_]*)\}$")


@dataclass(frozen=True)
class Edge:
    """An input fed by output `output` of step `step`."""

    step: str
    output: str

    def __str__(self) -> str:
        return f"${{steps.{self.step}.outputs.{self.output}}}"


def plan_graph(
    step_inputs: dict[str, dict[str, str]],
    components: dict[str, ComponentSpec],
    unresolved: set[str],
    doc: YamlDocument,
) -> tuple[dict[str, dict[str, Edge]], list[str], list[Problem]]:
    """Resolve every `inputs:` reference and order the steps topologically.

    `components` holds the steps whose component is known; steps in `unresolved` already have
    problems of their own, so references to them are accepted without checking outputs.
    Returns (edges per step, run order, problems).
    """
    problems: list[Problem] = []
    edges: dict[str, dict[str, Edge]] = {}
    all_steps = list(step_inputs)
    for name, comp in components.items():
        edges[name] = {}
        for input_name, ref in step_inputs[name].items():
            where = ("steps", name, "inputs", input_name)
            if input_name not in comp.inputs:
                problems.append(doc.problem(
                    where, f"component '{comp.name}' has no input '{input_name}'"
                    f"{did_you_mean(input_name, comp.inputs) or _expected(comp.inputs)}"))
                continue
            match = REFERENCE.match(ref.strip()) if isinstance(ref, str) else None
            if match is None:
                problems.append(doc.problem(
                    where, f"expected a reference like ${{steps.<step>.outputs.<output>}}, got {ref!r}"))
                continue
            source, output = match.groups()
            if source not in step_inputs:
                problems.append(doc.problem(where, f"unknown step '{source}'{did_you_mean(source, all_steps)}"))
                continue
            if source in unresolved:
                continue
            produced = components[source].outputs
            if output not in produced:
                problems.append(doc.problem(
                    where, f"step '{source}' ({components[source].name}) has no output '{output}'"
                    f"{did_you_mean(output, produced) or _expected(produced)}"))
                continue
            if produced[output] != comp.inputs[input_name]:
                problems.append(doc.problem(
                    where, f"type mismatch: '{source}.{output}' is {produced[output]!r} but input "
                    f"'{input_name}' of {comp.name} expects {comp.inputs[input_name]!r}"))
                continue
            edges[name][input_name] = Edge(source, output)
        for missing in comp.inputs.keys() - step_inputs[name].keys():
            problems.append(doc.problem(
                ("steps", name), f"missing input '{missing}' (expects {comp.inputs[missing]!r} "
                f"from another step, e.g. inputs: {{{missing}: ${{steps.<step>.outputs.<output>}}}})"))

    sorter = graphlib.TopologicalSorter({n: {e.step for e in ins.values()} for n, ins in edges.items()})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        problems.append(doc.problem(("steps", cycle[0], "inputs"), "cycle: " + " -> ".join(cycle[::-1])))
        order = []
    declared = {name: i for i, name in enumerate(all_steps)}
    return edges, sorted(order, key=lambda n: (_depth(n, edges), declared[n])), problems


def _depth(name: str, edges: dict[str, dict[str, Edge]]) -> int:
    ins = edges.get(name, {})
    return 1 + max((_depth(e.step, edges) for e in ins.values()), default=-1)


def _expected(names: dict[str, str]) -> str:
    return f" (it has: {', '.join(sorted(names))})" if names else " (it takes none)"
