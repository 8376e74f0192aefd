"""Partial runs: the steps `--only`, `--from`, `--to` and `--tags` pick, and the steps upstream of them, whose
outputs must come from the cache (they never run in a partial run)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError, did_you_mean
from .graph import upstream_of
from .seeds import base_name
from .spec import Workflow


@dataclass(frozen=True)
class Selection:
    """What a partial run does with each step: runs it (or reuses it, as any run would), takes it from the cache
    only (it is upstream of a selected step), or leaves it out."""

    run: frozenset[str]
    cached: frozenset[str]

    def covers(self, step: str) -> bool:
        """Whether the run goes through the step at all."""
        return step in self.run or step in self.cached


def select_steps(workflow: Workflow, only: list[str] = (), start: str | None = None, stop: str | None = None,
                 tags: list[str] = ()) -> Selection | None:
    """The selection the options make (None: the whole workflow). `only` and `tags` pick steps (together: either);
    `start` keeps those at or downstream of it, `stop` those at or upstream of it."""
    if not (only or start or stop or tags):
        return None
    names = list(workflow.order)
    named = {n: {n} for n in names}  # a step run once per seed is also named as the workflow names it
    for n in names:
        named.setdefault(base_name(n), set()).add(n)
    for option, name in [*(("--only", n) for n in only), ("--from", start), ("--to", stop)]:
        if name is not None and name not in named:
            raise UsageError(f"{option} {name}: no step '{name}' in workflow '{workflow.name}'"
                             f"{did_you_mean(name, named)}; steps: {', '.join(names)}")
    known_tags = sorted({t for step in workflow.steps.values() for t in step.tags})
    for tag in tags:
        if tag not in known_tags:
            raise UsageError(f"--tags {tag}: no step of '{workflow.name}' has this tag{did_you_mean(tag, known_tags)}; "
                             f"tags: {', '.join(known_tags) or 'none'}")
    upstream = {name: upstream_of(workflow.steps[name].inputs) for name in names}
    chosen = set(names)
    if only or tags:
        chosen = set().union(*(named[n] for n in only)) | {n for n in names if set(workflow.steps[n].tags) & set(tags)}
    if start is not None:
        chosen &= {n for n in names if named[start] & ({n} | _ancestors(n, upstream))}
    if stop is not None:
        chosen &= set().union(*({s} | _ancestors(s, upstream) for s in named[stop]))
    if not chosen:
        raise UsageError("the options select no step together (--from and --to: a step downstream of --from and "
                         "upstream of --to)")
    cached = set().union(*(_ancestors(n, upstream) for n in chosen)) - chosen
    return Selection(frozenset(chosen), frozenset(cached))


def _ancestors(step: str, upstream: dict[str, set[str]]) -> set[str]:
    found: set[str] = set()
    pending = list(upstream[step])
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending += upstream[name]
    return found
