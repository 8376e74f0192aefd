"""The inline executor's session, and how Ray worker failures are reported."""

from __future__ import annotations

import json

import pytest

from mmflow.engine.distributed import HISTORY_FILE, _root_cause, run_tasks, run_training
from mmflow.engine.spec import Resources


def reporting(session, config):
    for epoch in range(config["epochs"]):
        checkpoint = config["dir"] / f"ck{epoch}"
        checkpoint.mkdir()
        (checkpoint / "weights").write_text(str(epoch))
        session.report({"epoch": epoch, "rank": session.rank, "world": session.world_size}, checkpoint)


def test_inline_runs_the_function_as_rank_0_and_keeps_the_last_checkpoint(tmp_path):
    result = run_training(reporting, {"epochs": 3, "dir": tmp_path}, executor="inline", resources=Resources(),
                          storage=tmp_path / "store", seed=0, log=print)
    assert result.history == [{"epoch": e, "rank": 0, "world": 1} for e in range(3)]
    assert (result.checkpoint / "weights").read_text() == "2"
    assert json.loads((result.checkpoint / HISTORY_FILE).read_text()) == result.history


def describe(config, device):
    return f"{config['n']} on {device.type}"


def test_inline_side_tasks_run_in_order_on_the_given_device():
    import torch

    found = run_tasks(describe, [{"n": 1}, {"n": 2}], executor="inline", resources=Resources(cpus_per_task=3))
    assert found == ["1 on cpu", "2 on cpu"]
    assert run_tasks(describe, [{"n": 3}], executor="inline", resources=Resources(),
                     device=torch.device("meta")) == ["3 on meta"]


def test_inline_refuses_gpus_it_does_not_have(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        run_training(reporting, {"epochs": 1, "dir": tmp_path}, executor="inline",
                     resources=Resources(gpus_per_worker=1), storage=tmp_path / "s", seed=0, log=print)


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
    import os

    import ray

    from mmflow.engine import distributed

    started = {}

    def init(**options):
        started.update(options, gcs_port=os.environ.get("RAY_GCS_SERVER_PORT"))

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_GCS_SERVER_PORT", raising=False)
    monkeypatch.setattr(distributed, "_RAY_ADDRESS", None)
    monkeypatch.setattr(distributed, "_STARTED_RAY", False)
    distributed.ensure_ray()
    assert started["address"] == "local" and started["gcs_port"].isdigit()
    assert started["runtime_env"]["env_vars"]["RAY_ADDRESS"] == f"127.0.0.1:{started['gcs_port']}"
    assert "RAY_GCS_SERVER_PORT" not in os.environ  # only for the start; a later Ray picks its own
    module, _, name = started["runtime_env"]["worker_process_setup_hook"].rpartition(".")
    getattr(importlib.import_module(module), name)()  # what each worker process runs first
    from ray.train.v2._internal.execution.scaling_policy import autoscaling_coordinator_client

    assert not autoscaling_coordinator_client.logger.isEnabledFor(logging.WARNING)
    autoscaling_coordinator_client.logger.setLevel(logging.NOTSET)


def test_inline_returns_every_report_with_or_without_checkpoints(tmp_path):
    from ..plugin_components import count_epochs

    for every, last_checkpoint in ((0, None), (2, 3)):
        result = run_training(count_epochs, {"epochs": 5, "checkpoint_every": every}, executor="inline",
                              resources=Resources(), storage=tmp_path / str(every), seed=1, log=print)
        assert result.history == [{"epoch": e, "value": 2 * (e + 1), "rank_sum": 0.0} for e in range(5)]
        if last_checkpoint is None:
            assert result.checkpoint is None
        else:
            assert json.loads((result.checkpoint / "state.json").read_text()) == {"epoch": last_checkpoint}
            assert json.loads((result.checkpoint / HISTORY_FILE).read_text()) == result.history[:4]


def test_an_address_where_no_ray_answers_fails_in_seconds(cli, write_workflow, tmp_path):
    import socket
    import time

    from mmflow.engine.distributed import check_address
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

    from mmflow.engine.distributed import TrainSession

    class Worker(TrainSession):  # a Ray worker whose Ray cannot hold its side tasks beside the workers
        executor, tasks_inside, device = "ray", True, torch.device("cpu")

    assert Worker(Resources()).run_tasks(describe, [{"n": 1}, {"n": 2}]) == ["1 on cpu", "2 on cpu"]
