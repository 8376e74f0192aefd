"""Seeds as a workflow feature: `seeds: [0, 1, 2]` runs the steps that depend on the seed once per seed.

A component says how its steps take the seed (`@component(seeds=...)`): `each` (a training: a step per seed),
`together` (a comparison: one step over every seed's outputs of its list inputs), or `follow` (the default: a step
per seed when an input comes from a per-seed step, else one step with the workflow's `seed`, as fixed data and
shards). Step `train` becomes `train@0`, `train@1`, ...: each has its own seed, which enters its cache key.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .errors import WorkflowError
from .graph import Edge, Wiring, upstream_of

if TYPE_CHECKING:
    from .spec import Workflow

SEPARATOR = "@"


def seeded_name(step: str, seed: int) -> str:
    """The name of `step`'s run with `seed`: `train@1`."""
    return f"{step}{SEPARATOR}{seed}"


def base_name(step: str) -> str:
    """The workflow's name of a step: `train` for `train@1`."""
    return step.partition(SEPARATOR)[0]


def expand_seeds(workflow: Workflow) -> Workflow:
    """The workflow with a step per seed of `seeds:` for every step that depends on the seed (unchanged without
    `seeds:`); a `together` step reads every seed's outputs through its list inputs."""
    seeds = workflow.spec.seeds
    if not seeds:
        return workflow
    per_seed: set[str] = set()
    steps, order, problems = {}, [], []
    for name in workflow.order:
        step = workflow.steps[name]
        mode = step.component.seeds
        if mode == "each" or (mode == "follow" and upstream_of(step.inputs) & per_seed):
            per_seed.add(name)
            for seed in seeds:
                inputs = {k: _of_seed(w, per_seed, seed) for k, w in step.inputs.items()}
                steps[seeded_name(name, seed)] = replace(step, name=seeded_name(name, seed), seed=seed, inputs=inputs)
                order.append(seeded_name(name, seed))
            continue
        if mode == "together":
            for input_name, wiring in step.inputs.items():
                if isinstance(wiring, Edge) and wiring.step in per_seed:
                    problems.append(workflow.document.problem(
                        ("steps", name, "inputs", input_name), f"'{wiring.step}' runs once per seed: {name} "
                        f"({step.component.name}) takes every seed's outputs through a list input only"))
            step = replace(step, inputs={k: _of_every_seed(w, per_seed, seeds) for k, w in step.inputs.items()})
        steps[name] = step
        order.append(name)
    if problems:
        raise WorkflowError(problems)
    return replace(workflow, steps=steps, order=order)


def _of_seed(wiring: Wiring, per_seed: set[str], seed: int) -> Wiring:
    def one(edge: Edge) -> Edge:
        return Edge(seeded_name(edge.step, seed), edge.output) if edge.step in per_seed else edge

    return [one(e) for e in wiring] if isinstance(wiring, list) else one(wiring)


def _of_every_seed(wiring: Wiring, per_seed: set[str], seeds: list[int]) -> Wiring:
    if not isinstance(wiring, list):
        return wiring
    every: list[Edge] = []
    for edge in wiring:
        every += [Edge(seeded_name(edge.step, s), edge.output) for s in seeds] if edge.step in per_seed else [edge]
    return every


def over_seeds(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per step of the workflow (`train` for `train@0`, `train@1`, ...), per numeric metric: the mean, the sample
    standard deviation (0 for one seed) and how many seeds have it."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for step, values in metrics.items():
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                grouped.setdefault(base_name(step), {}).setdefault(key, []).append(float(value))
    return {step: {key: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                   for key, v in found.items()} for step, found in grouped.items()}
