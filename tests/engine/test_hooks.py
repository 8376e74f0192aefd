"""Run hooks: a plugin's hook, turned on by the workflow, sees every event of a run in order."""

from __future__ import annotations

import pytest

HOOK = '''
from mmflow.engine import RunHook


class RecordingHook(RunHook):
    """Writes down every event it is called with."""

    events = []

    def before_run(self, run):
        RecordingHook.events.append(["before_run", run.workflow.name, (run.run_dir / "run.json").exists()])

    def before_step(self, run, step):
        RecordingHook.events.append(["before_step", step])

    def after_step(self, run, outcome):
        RecordingHook.events.append(["after_step", outcome.name, outcome.state,
                                     (run.run_dir / outcome.name / "status.json").exists()])

    def on_step_error(self, run, step, error):
        RecordingHook.events.append(["on_step_error", step, type(error).__name__])

    def after_run(self, run, outcomes, error):
        RecordingHook.events.append(["after_run", [o.state for o in outcomes], type(error).__name__ if error else None])
'''

WORKFLOW = """
name: hooked
executor: inline
hooks: [recording]
steps:
  a: {component: test.text, params: {text: hi}}
  b: {component: test.passthrough, inputs: {source: "${steps.a.outputs.copy}"}, params: {fail_if_exists: FLAG}}
"""


@pytest.fixture
def events(install_plugin):
    install_plugin("recording_hook", HOOK, "mmflow.hooks", "recording = recording_hook:RecordingHook")
    import recording_hook

    return recording_hook.RecordingHook.events


def test_a_registered_hook_sees_the_run_and_every_step_in_order(events, write_workflow, cli, tmp_path):
    flag = tmp_path / "fail"
    path = write_workflow(WORKFLOW.replace("FLAG", str(flag)))
    assert cli("run", path, "--run-dir", tmp_path / "run")[0] == 0
    assert events == [["before_run", "hooked", False],
                      ["before_step", "a"], ["after_step", "a", "ran", True],
                      ["before_step", "b"], ["after_step", "b", "ran", True],
                      ["after_run", ["ran", "ran"], None]]
    events.clear()
    flag.touch()
    assert cli("run", path, "--run-dir", tmp_path / "again", "--set", "steps.b.params.suffix=x")[0] == 1
    assert events == [["before_run", "hooked", False],
                      ["before_step", "a"], ["after_step", "a", "reused", True],
                      ["before_step", "b"], ["on_step_error", "b", "StepFailed"],
                      ["after_run", ["reused", "pending"], "StepFailed"]]


def test_the_schema_offers_the_installed_hooks(events):
    import jsonschema

    from mmflow.engine.schema import workflow_schema

    hooks = workflow_schema()["properties"]["hooks"]
    jsonschema.validate(["recording"], hooks)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(["recordnig"], hooks)


def test_an_unregistered_hook_is_a_validation_error_at_its_line(events, write_workflow, cli):
    path = write_workflow(WORKFLOW.replace("recording", "recordnig"))
    status, _, err = cli("validate", path)
    assert (status, err.strip()) == (2, f"{path}:3: hooks: 'recordnig' is not a registered run hook (did you mean "
                                        "'recording'?); registered: recording")
