"""The inline executor: the training function as rank 0 of a world of size 1, side tasks in turn."""

from __future__ import annotations

import json

import pytest

from mmflow.engine import InlineExecutor, Resources, TrainingJob
from mmflow.engine.executor import HISTORY_FILE, run_in_turn


def reporting(session, config):
    for epoch in range(config["epochs"]):
        checkpoint = config["dir"] / f"ck{epoch}"
        checkpoint.mkdir()
        (checkpoint / "weights").write_text(str(epoch))
        session.report({"epoch": epoch, "rank": session.rank, "world": session.world_size}, checkpoint)


def describe(config, device):
    return f"{config['n']} on {device.type}"


def test_inline_runs_the_function_as_rank_0_and_keeps_the_last_checkpoint(tmp_path):
    result = InlineExecutor().train(reporting, {"epochs": 3, "dir": tmp_path}, TrainingJob(Resources(), tmp_path / "store"))
    assert result.history == [{"epoch": e, "rank": 0, "world": 1} for e in range(3)]
    assert (result.checkpoint / "weights").read_text() == "2"
    assert json.loads((result.checkpoint / HISTORY_FILE).read_text()) == result.history


def test_inline_side_tasks_run_in_order_on_the_given_device():
    import torch

    assert InlineExecutor().run_tasks(describe, [{"n": 1}, {"n": 2}], Resources(cpus_per_task=3)) == ["1 on cpu",
                                                                                                     "2 on cpu"]
    assert run_in_turn(describe, [{"n": 3}], torch.device("meta")) == ["3 on meta"]


def test_inline_refuses_gpus_it_does_not_have(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        InlineExecutor().train(reporting, {"epochs": 1, "dir": tmp_path},
                               TrainingJob(Resources(gpus_per_worker=1), tmp_path / "s"))


def test_inline_returns_every_report_with_or_without_checkpoints(tmp_path):
    from ..plugin_components import count_epochs

    for every, last_checkpoint in ((0, None), (2, 3)):
        result = InlineExecutor().train(count_epochs, {"epochs": 5, "checkpoint_every": every},
                                        TrainingJob(Resources(), tmp_path / str(every), seed=1))
        assert result.history == [{"epoch": e, "value": 2 * (e + 1), "rank_sum": 0.0} for e in range(5)]
        if last_checkpoint is None:
            assert result.checkpoint is None
        else:
            assert json.loads((result.checkpoint / "state.json").read_text()) == {"epoch": last_checkpoint}
            assert json.loads((result.checkpoint / HISTORY_FILE).read_text()) == result.history[:4]
