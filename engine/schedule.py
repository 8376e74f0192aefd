"""Which steps of a run may start now: those whose upstream steps are done, while the run has a free slot and
the executor has room for what they reserve (a training step's workers); the runner starts them side by side."""

from __future__ import annotations

from typing import Callable

Amounts = dict[str, float]  # resource kind (CPU, GPU) -> how many


class Schedule:
    """The steps of one run in topological `order`, each waiting for its `upstream` steps.

    `demand`: what a step reserves on the executor while it runs (none: it runs in the driver). `capacity()`
    (asked only once two reserving steps would overlap) is what the executor holds in all; a step that alone
    needs more still starts when no other reserving step runs, so that the executor says what is missing.
    `max_parallel`: how many steps run at once at most.
    """

    def __init__(self, order: list[str], upstream: dict[str, set[str]], demand: dict[str, Amounts],
                 capacity: Callable[[], Amounts], max_parallel: int) -> None:
        self.order = order
        self.upstream = {name: upstream.get(name, set()) & set(order) for name in order}
        self.demand = {name: {k: v for k, v in demand.get(name, {}).items() if v} for name in order}
        self._capacity = capacity
        self._known_capacity: Amounts | None = None
        self.max_parallel = max(1, max_parallel)
        self.running: list[str] = []
        self.finished: set[str] = set()
        self.stopped = False  # a step failed: those running finish, no other starts

    def next(self, may_start: Callable[[str], bool] = lambda name: True) -> list[str]:
        """The steps to start now, in order, counted as running; `may_start` can hold a ready step back."""
        started = []
        for name in self.order:
            if self.stopped or len(self.running) >= self.max_parallel:
                break
            if name in self.finished or name in self.running or not self.upstream[name] <= self.finished:
                continue
            if self._fits(name) and may_start(name):
                self.running.append(name)
                started.append(name)
        return started

    def finish(self, name: str, ok: bool = True) -> None:
        """`name` ended; when it failed, nothing more starts."""
        self.running.remove(name)
        self.finished.add(name)
        self.stopped = self.stopped or not ok

    @property
    def over(self) -> bool:
        """Nothing runs and nothing more can start."""
        return not self.running and (self.stopped or len(self.finished) == len(self.order))

    def _fits(self, name: str) -> bool:
        need = self.demand[name]
        reserving = [self.demand[other] for other in self.running if self.demand[other]]
        if not need or not reserving:
            return True
        if self._known_capacity is None:
            self._known_capacity = self._capacity()
        return all(need[kind] + sum(r.get(kind, 0.0) for r in reserving) <= self._known_capacity.get(kind, 0.0) + 1e-9
                   for kind in need)
