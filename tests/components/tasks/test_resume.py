"""A training step continues from its last checkpoint: weights, optimizer, schedule, method state, epoch."""

from __future__ import annotations

import pytest
import torch

from mmflow.components.data.datasets import generate_synthetic, iter_samples, save_tensor_dataset
from mmflow.components.data.shards import write_shards
from mmflow.components.data.synthetic import SyntheticParams
from mmflow.components.tasks.training_params import TrainClassifierParams
from mmflow.components.tasks.training_loop import train_worker
from mmflow.engine import InlineExecutor, Resources, TrainingJob
from mmflow.engine.inline_executor import InlineSession


class Crash(Exception):
    """The driver 'dies' right after a checkpoint."""


@pytest.fixture
def shards(tmp_path):
    save_tensor_dataset(tmp_path / "ds", generate_synthetic(SyntheticParams(train_size=256, test_size=8), 0), 6)
    write_shards(iter_samples(tmp_path / "ds", "train"), tmp_path / "shards", 64, num_classes=6)
    return tmp_path / "shards"


def train(shards, storage, method, epochs=4):
    params = TrainClassifierParams(epochs=epochs, batch_size=32, lr=0.05, lr_schedule="step", lr_step_size=2,
                                   lr_gamma=0.5, method=method)
    config = {"params": params.model_dump(), "train": str(shards)}
    return InlineExecutor().train(train_worker, config, TrainingJob(Resources(), storage, log=lambda _: None))


@pytest.mark.parametrize("method", [{"name": "naive"}, {"name": "pmr", "alpha": 1.0}])
def test_a_crashed_run_continues_where_it_stopped_and_ends_as_if_uninterrupted(shards, tmp_path, monkeypatch, method):
    whole = train(shards, tmp_path / "whole", method)
    report = InlineSession._report
    calls = []

    def crash_after_second_epoch(self, metrics, checkpoint_dir):
        report(self, metrics, checkpoint_dir)
        calls.append(metrics["epoch"])
        if len(calls) == 2:
            raise Crash

    monkeypatch.setattr(InlineSession, "_report", crash_after_second_epoch)
    with pytest.raises(Crash):
        train(shards, tmp_path / "crashed", method)
    monkeypatch.setattr(InlineSession, "_report", report)
    resumed = train(shards, tmp_path / "crashed", method)  # the same step storage, as mmflow run --resume
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    assert resumed.history[2]["resumed_at_epoch"] == 2 and "resumed_at_epoch" not in resumed.history[3]
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in whole.history]  # the schedule went on
    for before, after in zip(whole.history[2:], resumed.history[2:]):
        assert after["loss"] == pytest.approx(before["loss"], rel=1e-5)
    final, uninterrupted = (torch.load(r.checkpoint / "model.pt", weights_only=True) for r in (resumed, whole))
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(final[name], tensor)


def test_a_run_that_died_after_its_last_epoch_returns_that_checkpoint(shards, tmp_path, monkeypatch):
    report = InlineSession._report

    def crash_after_last_epoch(self, metrics, checkpoint_dir):
        report(self, metrics, checkpoint_dir)
        if metrics["epoch"] == 1:
            raise Crash

    monkeypatch.setattr(InlineSession, "_report", crash_after_last_epoch)
    with pytest.raises(Crash):
        train(shards, tmp_path / "s", {"name": "naive"}, epochs=2)
    monkeypatch.setattr(InlineSession, "_report", report)
    again = train(shards, tmp_path / "s", {"name": "naive"}, epochs=2)
    assert [h["epoch"] for h in again.history] == [0, 1] and (again.checkpoint / "model.pt").exists()


def test_a_checkpoint_of_another_configuration_is_not_resumed(shards, tmp_path):
    train(shards, tmp_path / "s", {"name": "naive"}, epochs=2)
    other = train(shards, tmp_path / "s", {"name": "naive"}, epochs=3)
    assert [h["epoch"] for h in other.history] == [0, 1, 2] and "resumed_at_epoch" not in other.history[0]
