"""The Ray executor's pieces that need no running Ray: error reporting, addresses, the local Ray's start."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmflow.engine import Resources
from mmflow.engine.executor import TrainSession
from mmflow.engine.ray_executor import RayExecutor, RaySession, _root_cause, check_address


def describe(config, device):
    return f"{config['n']} on {device.type}"


def test_a_worker_failure_surfaces_as_the_lowest_rank_s_own_error():
    from ray.train import WorkerGroupError

    error = WorkerGroupError("long multi-line summary", {1: ValueError("rank 1"), 0: KeyError("rank 0")})
    assert isinstance(_root_cause(error), KeyError)
    plain = RuntimeError("x")
    assert _root_cause(plain) is plain


def test_a_private_local_ray_tells_its_processes_which_ray_is_theirs(monkeypatch):
    """Ray's address-less state calls (Train's placement-group cleaner) find every Ray on the host and fail
    when there are two: the run's processes get RAY_ADDRESS naming the GCS port the local Ray starts on."""
    import importlib
    import logging
    import logging.config
    import os

    import ray

    started = {}

    def init(**options):
        started.update(options, gcs_port=os.environ.get("RAY_GCS_SERVER_PORT"))

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_GCS_SERVER_PORT", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    RayExecutor().connect()
    assert started["address"] == "local" and started["gcs_port"].isdigit()
    assert started["runtime_env"]["env_vars"]["RAY_ADDRESS"] == f"127.0.0.1:{started['gcs_port']}"
    assert "RAY_GCS_SERVER_PORT" not in os.environ  # only for the start; a later Ray picks its own
    module, _, name = started["runtime_env"]["worker_process_setup_hook"].rpartition(".")
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # the hook sets it: put back after the test
    getattr(importlib.import_module(module), name)()  # what each worker process runs first
    from ray.train.v2._internal.execution.scaling_policy import autoscaling_coordinator_client

    logger = autoscaling_coordinator_client.logger
    # the Train controller then configures its logging, which resets the levels of loggers under ray.train
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, "loggers": {"ray.train": {}}})
    warning, error = (logger.makeRecord(logger.name, level, "f", 1, "m", None, None)
                      for level in (logging.WARNING, logging.ERROR))
    assert not logger.filter(warning) and logger.filter(error)
    logger.filters.clear()


@pytest.mark.parametrize("hook", ["set_up_worker", "set_up_local_worker"])
def test_a_worker_stopped_while_it_exits_prints_no_traceback(hook):
    """CI saw Tune's report queue, and a trial's actor, print Ray's SystemExit when the raylet's SIGTERM came while
    Python was already shutting them down; here the SIGTERM comes while shutdown waits for a thread."""
    script = f"""
import os, signal, sys, threading, time
from mmflow.engine.ray_executor import {hook}
{hook}()

def ray_handler(signum, frame):  # what Ray's worker main loop installs
    raise SystemExit(1)

signal.signal(signal.SIGTERM, ray_handler)

class Broken:
    def __del__(self):
        raise ValueError("an error of the worker's own")

Broken()
threading.Thread(target=lambda: (time.sleep(0.5), os.kill(os.getpid(), signal.SIGTERM))).start()
sys.exit(0)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "ValueError: an error of the worker's own" in done.stderr  # any other error is still reported
    assert "SystemExit" not in done.stderr, done.stderr
    assert done.stderr.count("Traceback") == 1, done.stderr


def test_an_address_where_no_ray_answers_fails_in_seconds(cli, write_workflow, tmp_path):
    import socket
    import time

    from mmflow.engine.errors import UsageError

    wf = write_workflow("name: w\nsteps:\n  a: {component: test.text}\n")
    started = time.monotonic()
    status, _, err = cli("run", wf, "--address", "127.0.0.1:1", "--run-dir", tmp_path / "run")
    assert (status, err.strip()) == (2, "--address 127.0.0.1:1: no Ray cluster answers there (Connection refused); "
                                        "start one with `ray start --head`, or leave --address out to start a local "
                                        "Ray")
    assert time.monotonic() - started < 5 and not (tmp_path / "run").exists()  # before any step
    with socket.socket() as listener:  # something listens, but it is no Ray GCS: it never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(UsageError, match=f"^--address {address}: something listens there, but no Ray GCS "
                                             "answered in 1 s"):
            check_address(address, timeout_s=1)
    with pytest.raises(UsageError, match="expected host:port"):
        check_address("nowhere")


def test_side_tasks_run_inside_a_worker_the_ray_has_no_room_beside():
    import torch

    class Worker(RaySession):  # a Ray worker whose Ray cannot hold its side tasks beside the workers
        tasks_inside, device = True, torch.device("cpu")

        def __init__(self) -> None:
            TrainSession.__init__(self, Resources())

    assert Worker().run_tasks(describe, [{"n": 1}, {"n": 2}]) == ["1 on cpu", "2 on cpu"]


def test_an_interrupted_wait_for_a_fit_ends_the_fit_before_it_unwinds():
    """Ctrl-C while the main thread waits for a fit in a helper thread: `stop()` is called until it takes effect
    (the controller it kills may not have started yet), and the fit has ended when the interrupt goes on."""
    import threading

    from mmflow.engine.ray_executor import off_main_thread

    stopped, calls = threading.Event(), []

    def fit() -> str:
        stopped.wait(10)
        return "ended"

    def stop() -> bool:
        calls.append(len(calls))
        if len(calls) < 3:
            return False  # nothing to stop yet
        stopped.set()
        return True

    def interrupt() -> None:
        raise KeyboardInterrupt

    helpers = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        off_main_thread(fit, interrupt, stop)
    assert calls == [0, 1, 2] and stopped.is_set()
    assert not [t for t in threading.enumerate() if t not in helpers and t.name == "mmflow-fit"]


def test_how_an_interrupted_fit_ended_goes_with_the_interrupt_to_run_log(tmp_path):
    """After Ctrl-C nobody raises the fit's own error, yet it tells whether Ray's loop ended cleanly (a sweep's
    Tune state with a trial still pending, seen once): the interrupt carries it, and run.log gets its traceback."""
    import threading

    from mmflow.engine.console import RunConsole, StepRow, interrupt_cause
    from mmflow.engine.ray_executor import off_main_thread

    stopped = threading.Event()

    def fit() -> None:
        stopped.wait(10)
        raise RuntimeError("the loop broke while it stopped")

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as raised:
        off_main_thread(fit, interrupt, lambda: stopped.set() or True)
    assert isinstance(raised.value.__cause__, RuntimeError)
    console = RunConsole(live=False)
    console.rows["train"] = StepRow(component=None)
    console.log.open(tmp_path / "run.log")
    console.on_step_error(None, "train", raised.value)
    console.close()
    logged = (tmp_path / "run.log").read_text()
    assert "train: interrupted: KeyboardInterrupt" in logged and "the interrupted call ended on:" in logged
    assert "RuntimeError: the loop broke while it stopped" in logged and "in fit" in logged
    assert interrupt_cause(KeyboardInterrupt()) == "" == interrupt_cause(ValueError("x"))


def test_closing_ends_the_steps_calls_into_ray_before_it_stops_ray(monkeypatch):
    """A thread inside Ray as Ray stops aborts the process: close() stops each step's call into Ray (a fit's
    controller killed, side tasks cancelled), waits until it has left Ray, then stops Ray; none starts after."""
    import threading

    import ray

    executor = RayExecutor()
    inside, stopped = threading.Event(), threading.Event()
    order = []

    def step() -> None:
        with executor.in_ray(lambda: stopped.set() or True):
            inside.set()
            stopped.wait(10)
            order.append("step left Ray")

    thread = threading.Thread(target=step)
    thread.start()
    inside.wait(10)
    monkeypatch.setattr(ray, "shutdown", lambda: order.append("Ray stopped"))
    executor._started = True  # as if it had started a local Ray
    executor.close()
    assert order == ["step left Ray", "Ray stopped"]
    thread.join()
    with pytest.raises(RuntimeError, match="Ray was stopped"):
        executor.connect()
    with pytest.raises(RuntimeError, match="Ray was stopped"), executor.in_ray(lambda: True):
        pass
