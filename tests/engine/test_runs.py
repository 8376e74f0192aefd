"""`mmflow runs`: past runs listed, one shown, several compared; each step's headline metrics."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from mmflow.engine.registry import REGISTRY

WORKFLOW = """
name: chain
steps:
  first:
    component: test.text
    params: {text: abc}
  second:
    component: test.passthrough
    inputs: {source: "${steps.first.outputs.copy}"}
    params: {fail_if_exists: "FLAG"}
"""


@pytest.fixture
def chain(write_workflow, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_workflow(WORKFLOW.replace("FLAG", str(tmp_path / "fail.flag")))


def run_ids(tmp_path) -> list[str]:
    """The runs' ids in the order they started."""
    folders = (tmp_path / "runs" / "chain").iterdir()
    return [p.name for p in sorted(folders, key=lambda p: json.loads((p / "run.json").read_text())["started"])]


def test_runs_lists_each_run_with_name_state_time_overrides_and_result(chain, cli, tmp_path):
    assert cli("run", chain)[0] == 0
    assert cli("run", chain, "--name", "plus", "--set", "steps.second.params.suffix=++")[0] == 0
    (tmp_path / "fail.flag").touch()
    assert cli("run", chain, "--set", "steps.second.params.suffix=??")[0] == 1
    status, out, _ = cli("runs")
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["id", "name", "workflow", "started", "state", "time", "overrides", "result"]
    assert [row.split()[0] for row in rows] == run_ids(tmp_path)  # oldest first
    assert "plus  chain" in rows[1] and "steps.second.params.suffix=++" in rows[1] and "second.chars=5" in rows[1]
    assert " done " in rows[0] and "second.chars=4" in rows[0]
    assert " failed " in rows[2] and "first.chars=3" in rows[2]  # the last step that finished
    assert all(re.search(r"  \d+\.\ds  ", row) for row in rows)  # a duration
    assert cli("runs", "chain")[1] == out
    status, _, err = cli("runs", "other")
    assert status == 2 and "no runs of workflow 'other'" in err


def test_runs_show_names_what_the_overrides_changed_and_each_step(chain, cli, tmp_path):
    assert cli("run", chain, "--name", "plus", "--set", "steps.second.params.suffix=++", "--set", "seed=3")[0] == 0
    run_id = run_ids(tmp_path)[0]
    for given in ("plus", run_id, tmp_path / "runs" / "chain" / run_id):
        status, out, _ = cli("runs", "show", given)
        assert status == 0 and out.startswith(f"run {run_id} (plus)")
    assert "    steps.second.params.suffix: (default) -> ++" in out and "    seed: (default) -> 3" in out
    step_rows = out.split("\n\n")[1].splitlines()
    assert step_rows[1].split()[:3] == ["first", "test.text", "done"] and "chars=3" in step_rows[1]
    assert step_rows[2].split()[:3] == ["second", "test.passthrough", "done"] and "chars=5" in step_rows[2]
    status, _, err = cli("runs", "show", "plsu")
    assert status == 2 and "did you mean 'plus'" in err
    assert cli("run", chain, "--name", "plus")[0] == 0
    status, _, err = cli("runs", "show", "plus")
    assert status == 2 and "2 runs have this name" in err


def test_runs_compare_puts_runs_side_by_side_with_what_differs(chain, cli, tmp_path):
    assert cli("run", chain, "--name", "a")[0] == 0
    assert cli("run", chain, "--name", "b", "--set", "steps.second.params.suffix=++")[0] == 0
    status, out, _ = cli("runs", "compare", "a", "b")
    assert status == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == ["a", "b"]
    assert rows["steps.second.params.suffix"] == ["!", "++"]
    assert "steps.first.params.text" not in rows  # the same in both
    assert rows["second.chars"] == ["4", "5"] and rows["first.chars"] == ["3", "3"]
    status, _, err = cli("runs", "compare", "a")
    assert status == 2 and "compare RUN RUN" in err


def test_a_resumed_run_keeps_its_start_and_name_and_adds_its_time(chain, cli, tmp_path):
    (tmp_path / "fail.flag").touch()
    assert cli("run", chain, "--name", "long")[0] == 1
    run_dir = tmp_path / "runs" / "chain" / run_ids(tmp_path)[0]
    first = json.loads((run_dir / "run.json").read_text())
    (tmp_path / "fail.flag").unlink()
    assert cli("run", "--resume", run_dir)[0] == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["state"] == "done" and record["name"] == "long" and record["started"] == first["started"]
    assert record["seconds"] > first["seconds"] > 0


def test_a_sweep_folder_says_how_many_trials_it_holds(chain, cli, tmp_path):
    assert cli("run", chain)[0] == 0
    sweep_dir = tmp_path / "runs" / "chain" / run_ids(tmp_path)[0]
    for trial in ("t0", "t1"):
        (sweep_dir / "trials" / trial).mkdir(parents=True)
        (sweep_dir / "trials" / trial / "run.json").write_text("{}")
    assert "done (sweep, 2 trials)" in cli("runs")[1]


def test_headline_metrics_are_the_declared_ones_in_order_else_the_first_numbers():
    spec = REGISTRY.get("test.text")
    metrics = {"a_count": 3, "flag": True, "loss": 0.5, "accuracy_audio_head": 0.7, "accuracy": 0.9,
               "name": "x", "accuracy_visual_head": 0.4}
    declared = dataclasses.replace(spec, headline=("accuracy", "accuracy_*_head", "loss", "missing"))
    assert declared.headline_of(metrics) == {"accuracy": 0.9, "accuracy_audio_head": 0.7,
                                             "accuracy_visual_head": 0.4, "loss": 0.5}
    assert list(declared.headline_of(metrics, most=2)) == ["accuracy", "accuracy_audio_head"]
    assert spec.headline_of(metrics) == {"a_count": 3, "loss": 0.5, "accuracy_audio_head": 0.7, "accuracy": 0.9}


def test_the_run_summary_shows_a_training_steps_loss_and_accuracy_first():
    train = REGISTRY.get("train.classifier")
    metrics = {"grad_angle_audio": 55.0, "head_accuracy_audio": 0.8, "loss": 0.13, "train_accuracy": 0.96}
    assert train.headline_of(metrics) == {"loss": 0.13, "train_accuracy": 0.96}
    evaluate = REGISTRY.get("eval.classifier")
    assert list(evaluate.headline_of({"accuracy_audio_prototype": 0.7, "accuracy_audio_head": 0.7, "chance": 0.1,
                                      "accuracy": 0.8})) == ["accuracy", "accuracy_audio_head"]


def test_a_run_records_when_it_started_not_when_it_ended(write_workflow, cli, tmp_path):
    path = write_workflow(f"""
        name: slow
        steps:
          wait: {{component: test.meet, params: {{folder: "{tmp_path / 'meet'}", others: 0, hold_s: 1.2}}}}
        """)
    assert cli("run", path, "--run-dir", tmp_path / "r")[0] == 0
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    step = json.loads((tmp_path / "r" / "wait" / "status.json").read_text())
    assert record["started"][:19] <= step["started"] < step["finished"] <= record["updated"]
