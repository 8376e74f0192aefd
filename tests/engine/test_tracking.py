"""`tracking:`: TensorBoard event files and MLflow runs, read back with TensorBoard's event reader and
MlflowClient."""

from __future__ import annotations

import importlib.util

import pytest
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mmflow.engine import WorkflowError, load_workflow
from mmflow.engine.tracking import tracking_overrides

WORKFLOW = """
name: tracked
executor: inline
tracking: {mlflow: "sqlite:///DB", experiment: lab}
steps:
  first: {component: test.text, params: {text: abc}}
  count: {component: test.count, params: {epochs: 3}}
"""


@pytest.fixture
def tracked(write_workflow, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    return write_workflow(WORKFLOW.replace("DB", str(db))), f"sqlite:///{db}"


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_runs_epochs_params_and_results_go_to_tensorboard_and_mlflow(tracked, cli, tmp_path):
    path, uri = tracked
    status, _, err = cli("run", path, "--run-dir", tmp_path / "run", "--set", "seed=2")
    assert status == 0, err
    board = scalars(tmp_path / "run" / "tensorboard" / "count")
    assert board["value"] == [(1, 3.0), (2, 6.0), (3, 9.0)]  # every epoch as reported: (epoch + 1) * (seed + 1)
    assert board["final/final_value"] == [(0, 9.0)] and board["final/epochs"] == [(0, 3.0)]
    text = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "count"), size_guidance={"tensors": 0})
    text.Reload()
    assert "epochs: 3" in text.Tensors("params/text_summary")[0].tensor_proto.string_val[0].decode()
    assert scalars(tmp_path / "run" / "tensorboard" / "first")["final/chars"] == [(0, 3.0)]

    client = MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("lab").experiment_id])}
    parent = runs["run"]
    assert parent.info.status == "FINISHED" and parent.data.params == {"seed": "2"}  # the overrides
    artifact = client.download_artifacts(parent.info.run_id, "workflow.yaml", str(tmp_path))
    assert open(artifact).read() == path.read_text()
    count = runs["count"]
    assert count.data.tags["mlflow.parentRunId"] == parent.info.run_id and count.info.status == "FINISHED"
    assert count.data.params["epochs"] == "3" and count.data.tags["mmflow.state"] == "ran"
    history = client.get_metric_history(count.info.run_id, "value")
    assert sorted((m.step, m.value) for m in history) == [(1, 3.0), (2, 6.0), (3, 9.0)]  # epoch by epoch
    assert count.data.metrics["final_value"] == 9.0 and count.data.metrics["epochs"] == 3.0  # final, at the last
    assert runs["first"].data.metrics == {"chars": 3.0}


def test_a_failed_step_and_its_run_are_marked_failed_in_mlflow(tracked, cli, tmp_path):
    path, uri = tracked
    path.write_text(path.read_text().replace("params: {text: abc}}", "params: {text: abc}}\n  broken: "
                                             "{component: test.inspect, params: {raise_error: RuntimeError}}"))
    assert cli("run", path, "--run-dir", tmp_path / "run")[0] == 1
    client = MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("lab").experiment_id])}
    assert runs["run"].info.status == "FAILED" and runs["first"].info.status == "FINISHED"


def test_tracking_on_the_command_line_overrides_the_workflow(tracked, cli, tmp_path):
    path, _ = tracked
    assert tracking_overrides("tensorboard, mlflow=sqlite:///m.db,experiment=x") == [
        "tracking.tensorboard=true", "tracking.mlflow=sqlite:///m.db", "tracking.experiment=x"]
    assert tracking_overrides("none") == ["tracking=null"]
    status, _, _ = cli("run", path, "--run-dir", tmp_path / "run", "--tracking", "none")
    assert status == 0 and not (tmp_path / "run" / "tensorboard").exists()
    status, _, err = cli("run", path, "--tracking", "wandb")
    assert status == 2 and "'wandb' is not tensorboard, mlflow=URI" in err


def test_mlflow_tracking_without_mlflow_installed_fails_validation_naming_the_extra(tracked, monkeypatch):
    path, _ = tracked
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(WorkflowError, match=r"wf.yaml:3: tracking.mlflow: .*pip install 'mmflow-ray\[mlflow\]'"):
        load_workflow(path)


def test_an_mlflow_store_that_cannot_be_opened_is_a_one_line_error_before_the_run_starts(tracked, cli, tmp_path):
    path, _ = tracked
    (tmp_path / "a_file").write_text("")
    uri = f"sqlite:///{tmp_path}/a_file/m.db"  # inside a file: no folder can be made there
    status, _, err = cli("run", path, "--run-dir", tmp_path / "run", "--tracking", f"mlflow={uri}")
    assert status == 2 and err.splitlines()[-1].startswith(f"tracking.mlflow {uri}: MLflow cannot record there:")
    assert "Traceback" not in err and not (tmp_path / "run").exists()
