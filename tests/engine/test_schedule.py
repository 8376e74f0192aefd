"""Which steps may start: upstream steps done, a free slot, room for their workers."""

from __future__ import annotations

from mmflow.engine.schedule import Schedule

# a -> (b, c, d) -> e; b, c and d train on 2 CPUs each
UPSTREAM = {"b": {"a"}, "c": {"a"}, "d": {"a"}, "e": {"b", "c", "d"}}
TRAINING = dict.fromkeys("bcd", {"CPU": 2.0, "GPU": 0.0})


def schedule(cpus: float = 4.0, max_parallel: int = 10) -> tuple[Schedule, list[int]]:
    asked: list[int] = []

    def capacity() -> dict[str, float]:
        asked.append(1)
        return {"CPU": cpus, "GPU": 0.0}

    return Schedule(list("abcde"), UPSTREAM, TRAINING, capacity, max_parallel), asked


def test_a_step_starts_once_its_upstream_steps_are_done():
    s, _ = schedule(cpus=100)
    assert s.next() == ["a"] and s.next() == []
    s.finish("a")
    assert s.next() == ["b", "c", "d"]
    s.finish("b"), s.finish("c")
    assert s.next() == []  # e waits for d
    s.finish("d")
    assert s.next() == ["e"] and not s.over
    s.finish("e")
    assert s.over


def test_training_steps_start_while_the_executor_has_room_for_their_workers():
    s, asked = schedule(cpus=4)
    s.finish(*s.next())
    assert s.next() == ["b", "c"]  # 2 + 2 CPUs of 4
    s.finish("b")
    assert s.next() == ["d"]
    assert len(asked) == 1  # the executor is asked once, when a second training would start


def test_a_step_too_big_for_the_executor_starts_alone_so_that_the_executor_says_why():
    s, _ = schedule(cpus=1)
    s.finish(*s.next())
    assert s.next() == ["b"]
    s.finish("b")
    assert s.next() == ["c"]


def test_steps_without_workers_need_no_room_and_the_cap_counts_every_step():
    s = Schedule(list("xyz"), {}, {}, lambda: {}, max_parallel=2)
    assert s.next() == ["x", "y"]
    s.finish("y")
    assert s.next() == ["z"]


def test_a_held_back_step_starts_later_and_a_failure_stops_new_starts():
    s, _ = schedule(cpus=100)
    s.finish(*s.next())
    assert s.next(lambda name: name != "c") == ["b", "d"]
    assert s.next() == ["c"]
    s.finish("b", ok=False)
    assert s.next() == [] and not s.over  # c and d still run
    s.finish("c"), s.finish("d")
    assert s.over and "e" not in s.finished
