"""Partial runs: --only, --from, --to and --tags; what the selected steps read comes from the cache, or the run
fails before it starts, naming the steps to run first."""

from __future__ import annotations

import json

import pytest

from mmflow.engine import UsageError, load_workflow
from mmflow.engine.selection import select_steps

WORKFLOW = """
name: partial
steps:
  first: {component: test.text, params: {text: abc}, tags: [data]}
  second:
    component: test.passthrough
    inputs: {source: "${steps.first.outputs.copy}"}
    tags: [data, slow]
  third:
    component: test.passthrough
    inputs: {source: "${steps.second.outputs.copy}"}
    params: {suffix: "?"}
  aside: {component: test.text, params: {text: xyz}, tags: [slow]}
"""


@pytest.fixture
def partial(write_workflow, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMFLOW_TEST_COUNTER", str(tmp_path / "ran.txt"))
    return write_workflow(WORKFLOW)


def ran(tmp_path) -> list[str]:
    counter = tmp_path / "ran.txt"
    steps = counter.read_text().split() if counter.exists() else []
    counter.unlink(missing_ok=True)
    return steps


def test_the_options_pick_steps_and_the_steps_upstream_of_them_come_from_the_cache(partial):
    wf = load_workflow(partial)
    assert select_steps(wf) is None
    only = select_steps(wf, only=["third"])
    assert only.run == {"third"} and only.cached == {"first", "second"}
    assert select_steps(wf, start="second").run == {"second", "third"}
    to = select_steps(wf, stop="second")
    assert to.run == {"first", "second"} and to.cached == set()
    assert select_steps(wf, tags=["slow"]).run == {"second", "aside"}
    assert select_steps(wf, start="second", stop="second").run == {"second"}
    assert select_steps(wf, tags=["data"], start="second").run == {"second"}
    with pytest.raises(UsageError, match=r"--only thrid: no step 'thrid' in workflow 'partial' \(did you mean 'third'"):
        select_steps(wf, only=["thrid"])
    with pytest.raises(UsageError, match=r"--tags fast: no step of 'partial' has this tag; tags: data, slow"):
        select_steps(wf, tags=["fast"])
    with pytest.raises(UsageError, match="select no step"):
        select_steps(wf, start="third", stop="first")


def test_only_runs_the_step_and_reuses_what_it_reads(partial, cli, tmp_path):
    assert cli("run", partial, "--run-dir", tmp_path / "full")[0] == 0
    assert ran(tmp_path) == ["second", "third"]
    status, out, err = cli("run", partial, "--only", "third", "--set", "steps.third.params.suffix=x",
                           "--run-dir", tmp_path / "part")
    assert status == 0, err
    assert ran(tmp_path) == ["third"]  # first and second came from the full run
    assert (tmp_path / "part" / "third" / "outputs" / "copy").read_text() == "abc!x"
    assert not (tmp_path / "part" / "aside").exists()  # left out
    assert json.loads((tmp_path / "part" / "run.json").read_text())["selection"] == ["third"]
    assert "[1/3] first (test.text)" in err and "reused" in err and "aside" not in out + err


def test_a_partial_run_whose_upstream_never_ran_fails_first_naming_the_steps_to_run(partial, cli, tmp_path):
    status, out, _ = cli("run", partial, "--only", "third", "--dry-run")
    assert status == 0
    assert "  missing first  (no run has its outputs: run it first)" in out and "  skip    aside" in out
    status, _, err = cli("run", partial, "--only", "third", "--run-dir", tmp_path / "part")
    assert status == 2 and "first, second: upstream of the steps this run selects" in err
    assert "run them first (mmflow run WF --to second)" in err
    assert not (tmp_path / "part").exists() and ran(tmp_path) == []  # nothing written, nothing ran


def test_from_and_to_run_a_stretch_of_the_graph(partial, cli, tmp_path):
    assert cli("run", partial, "--to", "second", "--run-dir", tmp_path / "to")[0] == 0
    assert ran(tmp_path) == ["second"] and not (tmp_path / "to" / "third").exists()
    status, _, err = cli("run", partial, "--from", "second", "--set", "steps.second.params.suffix=+",
                         "--run-dir", tmp_path / "from")
    assert status == 0, err
    assert ran(tmp_path) == ["second", "third"]
    assert (tmp_path / "from" / "third" / "outputs" / "copy").read_text() == "abc+?"
