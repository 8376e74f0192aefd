"""Executors are chosen by name from the `mmflow.executors` entry points; a plugin's executor runs a workflow."""

from __future__ import annotations

import json

import pytest

from mmflow.engine import Executor, InlineExecutor, UsageError, create_executor
from mmflow.engine.executor import executor_names
from mmflow.engine.ray_executor import RayExecutor

PLUGIN = '''
from mmflow.engine import InlineExecutor


class RecordingExecutor(InlineExecutor):
    """Inline, writing down what it is asked to run."""

    name = "recording"
    calls = []

    def train(self, fn, config, job):
        RecordingExecutor.calls.append(["train", job.name, job.seed])
        return super().train(fn, config, job)

    def close(self):
        RecordingExecutor.calls.append(["close"])
'''

WORKFLOW = """
name: w
seed: 4
executor: recording
steps:
  data: {component: data.synthetic, params: {train_size: 64, test_size: 16}}
  shard: {component: data.shard, inputs: {dataset: "${steps.data.outputs.dataset}"}}
  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {epochs: 1, batch_size: 32}
"""


@pytest.fixture
def recording_plugin(install_plugin):
    install_plugin("recording_executor", PLUGIN, "mmflow.executors", "recording = recording_executor:RecordingExecutor")


def test_the_built_in_executors_are_registered_by_name():
    assert {"inline", "ray"} <= set(executor_names())
    assert type(create_executor("inline")) is InlineExecutor and type(create_executor("ray")) is RayExecutor
    with pytest.raises(UsageError, match="unknown executor 'nowhere'"):
        create_executor("nowhere")


def test_a_plugin_executor_runs_the_workflow_and_is_closed_at_the_end(recording_plugin, write_workflow, cli,
                                                                       tmp_path):
    status, _, err = cli("run", write_workflow(WORKFLOW), "--run-dir", tmp_path / "run")
    assert status == 0, err
    import recording_executor

    assert issubclass(recording_executor.RecordingExecutor, Executor)
    assert recording_executor.RecordingExecutor.calls == [["train", "train", 4], ["close"]]
    assert json.loads((tmp_path / "run" / "train" / "metrics.json").read_text())["epochs"] == 1


def test_the_schema_offers_the_installed_executors(recording_plugin):
    from mmflow.engine.schema import workflow_schema

    assert workflow_schema()["properties"]["executor"]["enum"] == ["inline", "ray", "recording"]


def test_an_unregistered_executor_is_a_validation_error_at_its_line(write_workflow, cli):
    path = write_workflow(WORKFLOW)
    status, _, err = cli("validate", path)
    assert status == 2
    assert err.strip() == f"{path}:3: executor: should be a registered executor: inline, ray (got 'recording')"
    status, _, err = cli("validate", write_workflow(WORKFLOW.replace("recording", "rey")))
    assert status == 2 and "registered executor: inline, ray (did you mean 'ray'?) (got 'rey')" in err
