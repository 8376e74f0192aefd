"""Run directories, atomic outputs, caching across runs, --resume and --dry-run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmflow.engine import StepFailed

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
  third:
    component: test.passthrough
    inputs: {source: "${steps.second.outputs.copy}"}
    params: {suffix: "?"}
"""


@pytest.fixture
def chain(write_workflow, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    counter = tmp_path / "ran.txt"
    monkeypatch.setenv("MMFLOW_TEST_COUNTER", str(counter))
    path = write_workflow(WORKFLOW.replace("FLAG", str(tmp_path / "fail.flag")))
    return path, counter


def ran(counter) -> list[str]:
    steps = counter.read_text().split() if counter.exists() else []
    counter.unlink(missing_ok=True)
    return steps


def test_run_writes_one_folder_per_step(chain, cli, tmp_path):
    path, counter = chain
    status, out, err = cli("run", path, "--run-dir", tmp_path / "r1")
    assert status == 0, err
    for step in ("first", "second", "third"):
        folder = tmp_path / "r1" / step
        assert json.loads((folder / "status.json").read_text())["state"] == "done"
        assert (folder / "params.json").exists() and (folder / "metrics.json").exists()
    assert (tmp_path / "r1" / "third" / "outputs" / "copy").read_text() == "abc!?"
    assert json.loads((tmp_path / "r1" / "third" / "metrics.json").read_text()) == {"chars": 5}
    assert (tmp_path / "r1" / "workflow.yaml").exists()
    assert "third" in out and "ran" in out  # summary table


def test_unchanged_steps_are_reused_and_changed_ones_rerun(chain, cli, tmp_path):
    path, counter = chain
    assert cli("run", path)[0] == 0  # default: ./runs/chain/<run-id>
    assert ran(counter) == ["second", "third"]
    r2 = tmp_path / "runs" / "chain" / "r2"
    status, out, _ = cli("run", path, "--run-dir", r2)
    assert status == 0 and ran(counter) == []
    assert out.count("reused") == 3
    assert (r2 / "third" / "outputs" / "copy").read_text() == "abc!?"
    # a changed param re-runs that step and everything downstream of a changed output
    r3 = tmp_path / "runs" / "chain" / "r3"
    status, out, _ = cli("run", path, "--set", "steps.second.params.suffix=+", "--run-dir", r3)
    assert status == 0 and ran(counter) == ["second", "third"]
    assert (r3 / "third" / "outputs" / "copy").read_text() == "abc+?"
    # another runs root shares nothing
    status, out, _ = cli("run", path, "--runs-root", tmp_path / "elsewhere")
    assert status == 0 and ran(counter) == ["second", "third"]


def test_steps_downstream_of_a_reader_rerun_when_the_files_it_listed_change(write_workflow, cli, tmp_path,
                                                                             monkeypatch):
    """A reader's listing names the media, not their contents: changed media under the same names must
    reach the steps that read them through the listing, not leave them reused."""
    root = tmp_path / "media"
    root.mkdir()
    (root / "a.wav").write_text("one")
    counter = tmp_path / "ran.txt"
    monkeypatch.setenv("MMFLOW_TEST_COUNTER", str(counter))
    path = write_workflow(f"""
name: media
steps:
  data:
    component: test.listing
    params: {{folder: "{root}"}}
  shard:
    component: test.passthrough
    inputs: {{source: "${{steps.data.outputs.copy}}"}}
""")
    runs = ["--runs-root", tmp_path / "runs"]
    assert cli("run", path, *runs)[0] == 0 and ran(counter) == ["shard"]
    assert cli("run", path, *runs)[0] == 0 and ran(counter) == []
    (root / "a.wav").write_text("ONE, re-encoded")  # the same name: the same listing
    status, out, err = cli("run", path, *runs)
    assert status == 0, err
    assert ran(counter) == ["shard"]
    assert cli("run", path, *runs)[0] == 0 and ran(counter) == []


def test_dry_run_shows_the_plan_and_runs_nothing(chain, cli, tmp_path):
    path, counter = chain
    cli("run", path)
    ran(counter)
    before = sorted((tmp_path / "runs" / "chain").iterdir())
    status, out, _ = cli("run", path, "--dry-run", "--set", "steps.third.params.suffix=%")
    assert status == 0 and ran(counter) == []
    lines = [line.split()[:2] for line in out.splitlines()[1:]]
    assert lines == [["reuse", "first"], ["reuse", "second"], ["run", "third"]]
    assert sorted((tmp_path / "runs" / "chain").iterdir()) == before


def test_failure_leaves_no_partial_outputs_and_resume_finishes(chain, cli, tmp_path):
    path, counter = chain
    flag = tmp_path / "fail.flag"
    flag.touch()
    status, _, err = cli("run", path, "--run-dir", tmp_path / "r1")
    assert status == 1
    assert "step 'second' failed: RuntimeError: injected failure" in err and "Traceback" not in err
    assert f"mmflow run --resume {tmp_path / 'r1'}" in err
    second = tmp_path / "r1" / "second"
    status_file = json.loads((second / "status.json").read_text())
    assert status_file["state"] == "failed" and "injected failure" in status_file["error"]
    assert not (second / "outputs").exists() and not (second / ".outputs.tmp").exists()
    assert "RuntimeError: injected failure" in (second / "error.log").read_text()
    assert not (tmp_path / "r1" / "third").exists()
    assert json.loads((tmp_path / "r1" / "run.json").read_text())["state"] == "failed"
    assert ran(counter) == []

    flag.unlink()
    status, out, _ = cli("run", "--resume", tmp_path / "r1")
    assert status == 0
    assert ran(counter) == ["second", "third"]  # the finished first step is kept
    assert "kept" in out
    assert (tmp_path / "r1" / "third" / "outputs" / "copy").read_text() == "abc!?"
    assert json.loads((tmp_path / "r1" / "run.json").read_text())["state"] == "done"


def test_resume_needs_a_run_directory(cli, tmp_path):
    status, _, err = cli("run", "--resume", tmp_path)
    assert status == 2 and "not a run directory" in err


def test_training_steps_key_on_resources(write_workflow):
    from mmflow.engine import load_workflow
    from mmflow.engine.step_cache import cache_key

    from ..conftest import REPO

    path = write_workflow(WORKFLOW)
    one, two = load_workflow(path), load_workflow(path, ["resources.workers=2"])
    assert cache_key(one.steps["second"], one, {}) == cache_key(two.steps["second"], two, {})
    q1 = load_workflow(REPO / "workflows" / "quickstart.yaml")
    q2 = load_workflow(REPO / "workflows" / "quickstart.yaml", ["resources.workers=1"])
    assert cache_key(q1.steps["train"], q1, {}) != cache_key(q2.steps["train"], q2, {})
    assert cache_key(q1.steps["data"], q1, {}) == cache_key(q2.steps["data"], q2, {})


def test_a_killed_process_leaves_no_outputs_and_resume_recovers(write_workflow, tmp_path):
    import subprocess
    import sys

    from ..conftest import REPO

    flag = tmp_path / "kill.flag"
    flag.touch()
    path = write_workflow(WORKFLOW.replace('params: {fail_if_exists: "FLAG"}', f'params: {{kill_if_exists: "{flag}"}}'))
    run_dir = tmp_path / "runs" / "chain" / "killed"

    def mmflow(*args):
        code = "import sys, tests.plugin_components; from mmflow.engine.cli import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    killed = mmflow("run", path, "--run-dir", run_dir)
    assert killed.returncode == -9
    second = run_dir / "second"
    assert json.loads((second / "status.json").read_text())["state"] == "running"  # died mid-step
    assert not (second / "outputs").exists()  # only the staging folder holds the partial write
    flag.unlink()
    resumed = mmflow("run", "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert not (second / ".outputs.tmp").exists()
    assert (run_dir / "third" / "outputs" / "copy").read_text() == "abc!?"


def test_a_list_input_takes_several_outputs_in_order(write_workflow, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_workflow("""
        name: fan-in
        steps:
          x: {component: test.text, params: {text: "1"}}
          y: {component: test.text, params: {text: "2"}}
          both:
            component: test.join
            inputs: {parts: ["${steps.y.outputs.copy}", "${steps.x.outputs.copy}"]}
          more:
            component: test.join
            inputs: {parts: ["${steps.x.outputs.copy}"], extra: ["${steps.y.outputs.copy}"]}
    """)
    run_dir = tmp_path / "runs" / "fan-in" / "r"
    status, _, err = cli("run", path, "--run-dir", run_dir)
    assert status == 0, err
    assert (run_dir / "both" / "outputs" / "joined").read_text() == "y=2,x=1"  # the optional list left unwired
    assert (run_dir / "more" / "outputs" / "joined").read_text() == "x=1,y=2"
    status, out, _ = cli("run", path, "--set", "steps.x.params.text=three", "--dry-run")
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["run", "x"], ["reuse", "y"], ["run", "both"],
                                                                   ["run", "more"]]


def test_list_inputs_are_validated(write_workflow):
    from mmflow.engine import WorkflowError, load_workflow

    path = write_workflow("""
        name: fan-in
        steps:
          x: {component: test.text}
          both:
            component: test.join
            inputs:
              parts: ["${steps.x.outputs.copy}", "${steps.z.outputs.copy}"]
          single:
            component: test.join
            inputs: {parts: "${steps.x.outputs.copy}"}
          none:
            component: test.join
            inputs: {extra: ["${steps.x.outputs.copy}"]}
    """)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:7: steps.both.inputs.parts[1]: unknown step 'z'",
        f"{path}:10: steps.single.inputs.parts: expected a list of references (list of text), "
        "got '${steps.x.outputs.copy}'",
        f"{path}:11: steps.none: missing input 'parts' (expects list of text from another step, e.g. inputs: "
        "{parts: ${steps.<step>.outputs.<output>}})",
    ]


def test_a_run_placed_outside_the_runs_root_is_reused_by_later_runs(chain, cli, tmp_path):
    path, counter = chain
    outside = tmp_path / "scratch" / "exp1"
    assert cli("run", path, "--run-dir", outside)[0] == 0
    assert ran(counter) == ["second", "third"]
    status, out, _ = cli("run", path, "--dry-run")
    assert status == 0 and f"reuse   first  ({outside / 'first'})" in out
    status, out, _ = cli("run", path, "--set", "steps.third.params.suffix=%")
    assert status == 0 and ran(counter) == ["third"]  # first and second come from the run outside
    (run,) = (tmp_path / "runs" / "chain").iterdir()
    assert json.loads((run / "second" / "status.json").read_text())["reused_from"] == str(outside / "second")
    assert cli("run", path, "--run-dir", outside)[0] == 0  # the same folder again is listed once
    assert (tmp_path / "runs" / ".runs_elsewhere").read_text() == f"{outside}\n"


def run_inspect(write_workflow, tmp_path, params: str = "{}", name: str = "r", failure: int = 2):
    from mmflow.engine import load_workflow
    from mmflow.engine.runner import Runner

    path = write_workflow(f"""
        name: look
        executor: inline
        failure: {{max_failures: {failure}}}
        steps:
          look: {{component: test.inspect, params: {params}}}
        """, name="look.yaml")
    echoed: list[str] = []
    runner = Runner(load_workflow(path), tmp_path / name, tmp_path / "runs", echo=echoed.append)
    return runner, echoed


def test_a_running_step_sees_its_own_status_and_context_and_its_records_are_complete(write_workflow, tmp_path):
    from mmflow.engine.run_folder import digest_path

    runner, echoed = run_inspect(write_workflow, tmp_path)
    (outcome,) = runner.run()
    assert (outcome.name, outcome.state, outcome.metrics) == ("look", "ran", {"looked": 1})
    step = tmp_path / "r" / "look"
    seen = json.loads((step / "outputs" / "report").read_text())
    running = seen.pop("status")
    assert seen == {"work_dir": "work", "max_failures": 2, "executor": "inline"}
    assert set(running) == {"state", "component", "version", "cache_key", "started"}
    assert (running["state"], running["component"], running["version"]) == ("running", "test.inspect", "1")
    assert "    looking around" in echoed and echoed[0] == "[1/1] look (test.inspect)"
    done = json.loads((step / "status.json").read_text())
    assert set(done) == set(running) | {"outputs", "files", "seconds", "finished"}
    assert {k: done[k] for k in running if k != "state"} == {k: running[k] for k in running if k != "state"}
    assert done["state"] == "done" and done["outputs"] == {"report": digest_path(step / "outputs" / "report")}
    assert 0 <= done["seconds"] < 60 and round(done["seconds"], 3) == done["seconds"]
    assert outcome.seconds == pytest.approx(done["seconds"], abs=1e-3)
    assert (step / "params.json").read_text() == '{\n  "raise_error": "",\n  "write": true\n}\n'
    assert json.loads((step / "metrics.json").read_text()) == {"looked": 1}
    assert not (step / ".outputs.tmp").exists() and not list(step.glob(".*.tmp"))


@pytest.mark.parametrize("error, state, user_error", [("RuntimeError", "failed", False),
                                                     ("InputDataError", "failed", True),
                                                     ("ResourcesError", "failed", True)])
def test_a_failing_step_records_why_and_keeps_no_output(write_workflow, tmp_path, error, state, user_error):
    from mmflow.engine import StepFailed

    runner, _ = run_inspect(write_workflow, tmp_path, f"{{raise_error: {error}}}")
    with pytest.raises(StepFailed) as caught:
        runner.run()
    step = tmp_path / "r" / "look"
    log = step / "error.log"
    assert (caught.value.step, caught.value.log_path, caught.value.user_error) == ("look", str(log), user_error)
    detail = "boom" if user_error else f"{error}: boom (traceback in {log})"
    assert str(caught.value) == f"step 'look' failed: {detail}"
    status = json.loads((step / "status.json").read_text())
    assert (status["state"], status["error"]) == (state, f"{error}: boom") and "finished" in status
    assert log.read_text().startswith("Traceback (most recent call last):\n") and log.read_text().endswith(
        f"{error}: boom\n")
    assert not (step / "outputs").exists() and not (step / ".outputs.tmp").exists()
    assert json.loads((tmp_path / "r" / "run.json").read_text())["state"] == "failed"
    # a rerun that succeeds leaves no trace of the failure
    runner, _ = run_inspect(write_workflow, tmp_path)
    runner.run()
    assert not log.exists() and json.loads((step / "status.json").read_text())["state"] == "done"


def test_an_interrupted_step_is_marked_so_and_the_interrupt_goes_on(write_workflow, tmp_path):
    runner, _ = run_inspect(write_workflow, tmp_path, "{raise_error: KeyboardInterrupt}")
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert json.loads((tmp_path / "r" / "look" / "status.json").read_text())["state"] == "interrupted"
    assert json.loads((tmp_path / "r" / "run.json").read_text())["state"] == "interrupted"


def test_a_step_that_does_not_write_its_output_fails(write_workflow, tmp_path):
    from mmflow.engine import StepFailed

    runner, _ = run_inspect(write_workflow, tmp_path, "{write: false}")
    with pytest.raises(StepFailed, match=r"RuntimeError: component 'test.inspect' did not write output\(s\) "
                                         r"\['report'\]"):
        runner.run()


def test_the_same_step_twice_in_a_run_runs_once(write_workflow, tmp_path, monkeypatch):
    from mmflow.engine import load_workflow
    from mmflow.engine.runner import Runner

    counter = tmp_path / "ran.txt"
    monkeypatch.setenv("MMFLOW_TEST_COUNTER", str(counter))
    path = write_workflow("""
        name: twice
        steps:
          text: {component: test.text}
          one: {component: test.passthrough, inputs: {source: "${steps.text.outputs.copy}"}}
          two: {component: test.passthrough, inputs: {source: "${steps.text.outputs.copy}"}}
        """)
    outcomes = Runner(load_workflow(path), tmp_path / "r", tmp_path / "runs", echo=lambda _: None).run()
    assert [o.state for o in outcomes] == ["ran", "ran", "reused"] and ran(counter) == ["one"]
    assert outcomes[2].reused_from == str(tmp_path / "r" / "one")
    first, second = tmp_path / "r" / "one" / "outputs" / "copy", tmp_path / "r" / "two" / "outputs" / "copy"
    assert second.read_text() == "hello!" and second.stat().st_ino == first.stat().st_ino  # a hard link
    assert (tmp_path / "r" / "two" / "metrics.json").read_text() == (tmp_path / "r" / "one" / "metrics.json").read_text()
    assert (tmp_path / "r" / "two" / "params.json").read_text() == (tmp_path / "r" / "one" / "params.json").read_text()


def test_cache_keys_and_digests_stay_the_same_across_releases(write_workflow, tmp_path):
    """Finished steps of older runs stay reusable: what goes into a key and a digest, and how, is fixed."""
    from mmflow.engine import load_workflow
    from mmflow.engine.run_folder import digest_path, write_json
    from mmflow.engine.step_cache import cache_key

    wf = load_workflow(write_workflow(WORKFLOW.replace("FLAG", "/no/flag")))
    assert cache_key(wf.steps["second"], wf, {"source": "ab" * 32}) == \
        "4674fbab77dd369bf32725d2fbcaf2849ea500608df1c2c3c754de6dcf56f696"
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "b.txt").write_text("b")
    (folder / "a.txt").write_text("a")
    # sha256 of each file's relative path, a NUL and its bytes, in path order (a single file: no path)
    assert digest_path(folder) == "a584c4f661108570ce1b3bb965d386439458ce62445dcbd14b5de40a6c2c6518"
    assert digest_path(folder / "a.txt") == "022a6979e6dab7aa5ae4c3e5e45f7e977112a7e63593820dbec1ec738a24f93c"
    write_json(tmp_path / "x.json", {"b": 1, "a": [1, "é", tmp_path]})
    assert (tmp_path / "x.json").read_bytes() == (
        '{\n  "a": [\n    1,\n    "\\u00e9",\n    "' + str(tmp_path) + '"\n  ],\n  "b": 1\n}\n').encode()
    assert not list(tmp_path.glob(".*.tmp"))


STORED = """
name: stored
storage: STORAGE
steps:
  first: {component: test.text, params: {text: abc}}
  second: {component: test.passthrough, inputs: {source: "${steps.first.outputs.copy}"}}
"""


def stored_run(write_workflow, cli, tmp_path) -> Path:
    """A finished run of STORED and its folder in a folder storage."""
    path = write_workflow(STORED.replace("STORAGE", str(tmp_path / "store")))
    assert cli("run", path, "--runs-root", tmp_path / "first")[0] == 0
    (run,) = (tmp_path / "store" / "stored").iterdir()
    return run


@pytest.mark.parametrize("tamper, says", [
    (lambda record, elsewhere: {**record, "workflow": elsewhere, "order": ["../../victim2"]},
     "names workflow 'ELSEWHERE', but its workflow.yaml is 'stored'"),
    (lambda record, elsewhere: [record], "not a run record (expected an object with a list of overrides)"),
])
def test_a_tampered_stored_run_cannot_reach_outside_the_runs_root(write_workflow, cli, tmp_path, tamper, says):
    elsewhere = str(tmp_path / "elsewhere" / "escaped")
    says = says.replace("ELSEWHERE", elsewhere)
    stored = stored_run(write_workflow, cli, tmp_path)
    victim = tmp_path / "victim2" / "precious"
    victim.mkdir(parents=True)
    (victim / "file.txt").write_text("mine")
    record = json.loads((stored / "run.json").read_text())
    (stored / "run.json").write_text(json.dumps(tamper(record, elsewhere)))
    status, out, err = cli("run", "--resume", f"file://{stored}", "--runs-root", tmp_path / "second")
    assert status == 2 and err.strip() == f"file://{stored / 'run.json'}: {says}", err
    assert (victim / "file.txt").read_text() == "mine" and list(victim.parent.iterdir()) == [victim]
    assert not (tmp_path / "second").exists() and not (tmp_path / "elsewhere").exists()


def test_a_stored_step_cannot_point_its_outputs_elsewhere(write_workflow, cli, tmp_path):
    stored = stored_run(write_workflow, cli, tmp_path)
    status_file = stored / "second" / "status.json"
    status_file.write_text(json.dumps({**json.loads(status_file.read_text()), "outputs_at": f"file://{tmp_path}"}))
    status, _, err = cli("run", "--resume", f"file://{stored}", "--runs-root", tmp_path / "second")
    assert status == 2 and err.strip() == (f"file://{status_file}: outputs_at 'file://{tmp_path}' is not the same "
                                           "step of the sweep this run belongs to")
    assert not (tmp_path / "second").exists()


def test_a_stored_workflow_with_a_step_named_like_a_path_is_refused(write_workflow, cli, tmp_path):
    stored = stored_run(write_workflow, cli, tmp_path)
    (stored / "workflow.yaml").write_text((stored / "workflow.yaml").read_text().replace("  second:", "  ../x:"))
    status, _, err = cli("run", "--resume", f"file://{stored}", "--runs-root", tmp_path / "second")
    assert status == 2 and "step name '../x' must be letters, digits" in err and not (tmp_path / "second").exists()


def test_run_dir_refuses_a_folder_of_the_users_own_files(chain, cli, tmp_path):
    path, counter = chain
    victim = tmp_path / "victim"
    (victim / "data" / "outputs").mkdir(parents=True)
    (victim / "data" / "outputs" / "thesis.txt").write_text("years of work")
    (victim / "workflow.yaml").write_text("mine")
    status, _, err = cli("run", path, "--run-dir", victim)
    assert status == 2 and err.strip() == (f"--run-dir {victim}: the folder is not empty and is no mmflow run folder "
                                           "(it has no run.json); give a new or empty folder, or a run folder of "
                                           "'chain'")
    assert (victim / "data" / "outputs" / "thesis.txt").read_text() == "years of work"
    assert (victim / "workflow.yaml").read_text() == "mine" and ran(counter) == []
    (victim / "run.json").write_text(json.dumps({"workflow": "other"}))
    status, _, err = cli("run", path, "--run-dir", victim)
    assert status == 2 and "is a run of workflow 'other'" in err
    (tmp_path / "empty").mkdir()
    assert cli("run", path, "--run-dir", tmp_path / "empty")[0] == 0  # an empty folder, then its own run again
    assert cli("run", path, "--run-dir", tmp_path / "empty")[0] == 0
    (tmp_path / "a-file").write_text("x")
    assert cli("run", path, "--run-dir", tmp_path / "a-file")[1:] == ("", f"--run-dir {tmp_path / 'a-file'}: a file, "
                                                                         "not a folder\n")


def test_one_run_folder_serves_one_run_at_a_time(chain, cli, tmp_path):
    import fcntl

    path, counter = chain
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    with open(run_dir / ".lock", "a") as held:  # another mmflow run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        status, _, err = cli("run", path, "--run-dir", run_dir)
    assert status == 2 and err.strip().splitlines()[-1] == (f"{run_dir}: another mmflow run is using this run "
                                                            "folder; wait for it to finish or give another --run-dir")
    assert ran(counter) == [] and not (run_dir / "first").exists()
    assert cli("run", path, "--run-dir", run_dir)[0] == 0  # released: the next run goes ahead


def finished_chain(chain, cli, tmp_path) -> tuple[Path, Path]:
    """A finished run of the chain in the runs root, and the second step's output."""
    r1 = tmp_path / "runs" / "chain" / "r1"
    assert cli("run", chain[0], "--run-dir", r1)[0] == 0
    ran(chain[1])
    return r1, r1 / "second" / "outputs" / "copy"


def test_a_changed_or_missing_output_is_not_reused(chain, cli, tmp_path):
    path, counter = chain
    r1, copy = finished_chain(chain, cli, tmp_path)
    copy.unlink()  # a deleted output: resume runs the step again rather than fail on it forever
    status, _, err = cli("run", "--resume", r1)
    assert status == 0 and ran(counter) == ["second"] and f"not reusing {r1 / 'second'}: outputs/copy is missing" in err
    assert copy.read_text() == "abc!"
    assert cli("run", "--resume", r1)[0] == 0 and ran(counter) == []
    copy.write_text("")  # zeroed after the step finished: another run does not take it
    status, out, err = cli("run", path)
    assert status == 0 and ran(counter) == ["second"]  # third's input is the same again: third is reused
    assert f"not reusing {r1 / 'second'}: outputs/copy changed after the step finished" in err


def test_verify_reads_every_output_the_fast_path_trusts(chain, cli, tmp_path):
    import os

    path, counter = chain
    r1, copy = finished_chain(chain, cli, tmp_path)
    copy.touch()  # only the mtime changes: the SHA-256 is read, matches, and the fast path holds again
    status, _, err = cli("run", "--resume", r1)
    assert status == 0 and ran(counter) == [] and "not reusing" not in err
    recorded = json.loads((r1 / "second" / "status.json").read_text())["files"]["copy"]
    assert recorded == [["", 4, copy.stat().st_mtime_ns]]
    before = copy.stat()
    copy.write_text("abc?")  # the same size, the mtime put back: only --verify sees it
    os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert cli("run", "--resume", r1)[0] == 0 and ran(counter) == []
    status, _, err = cli("run", "--resume", r1, "--verify")
    assert status == 0 and ran(counter) == ["second"] and "outputs/copy changed after the step finished" in err


def test_changed_outputs_covers_every_file_of_a_folder(tmp_path):
    from mmflow.engine.run_folder import changed_outputs, digest_path, stat_fingerprint

    folder = tmp_path / "step" / "outputs" / "shards"
    folder.mkdir(parents=True)
    for name in ("a.tar", "b.tar"):
        (folder / name).write_bytes(b"x" * 10)
    status = {"outputs": {"shards": digest_path(folder)}, "files": {"shards": stat_fingerprint(folder)}}
    assert changed_outputs(tmp_path / "step", status) is None
    assert changed_outputs(tmp_path / "step", {**status, "files": {}}) is None  # no fast path: the SHA-256 agrees
    (folder / "c.tar").write_bytes(b"")  # an extra file
    assert changed_outputs(tmp_path / "step", status) == ("outputs/shards changed after the step finished (its "
                                                           "SHA-256 is not the one in status.json)")
    (folder / "c.tar").unlink()
    (folder / "b.tar").unlink()  # a deleted shard
    assert "outputs/shards changed" in changed_outputs(tmp_path / "step", status)


def test_filesystem_mistakes_are_one_line(chain, cli, tmp_path):
    path, counter = chain
    (tmp_path / "a-file").write_text("x")
    status, _, err = cli("run", path, "--runs-root", tmp_path / "a-file")
    assert status == 2 and err.splitlines()[-1].startswith(f"error: {tmp_path / 'a-file'}/chain/") and \
        err.splitlines()[-1].endswith(": Not a directory") and "Traceback" not in err
    status, _, err = cli("schema", "-o", tmp_path / "nowhere" / "x.json")
    assert (status, err) == (2, f"error: {tmp_path / 'nowhere' / 'x.json'}: No such file or directory\n")
    r1 = tmp_path / "r1"
    assert cli("run", path, "--run-dir", r1)[0] == 0
    shutil.rmtree(r1 / "third")
    (r1 / "third").write_text("in the way")  # a file where a step folder goes
    status, _, err = cli("run", "--resume", r1)
    assert status == 2 and err.splitlines()[-1] == f"error: {r1 / 'third'}: File exists", err
    assert json.loads((r1 / "run.json").read_text())["state"] == "failed"
    (r1 / "run.json").write_text('{"overrides": [')  # cut short
    status, _, err = cli("run", "--resume", r1)
    assert (status, err) == (2, f"{r1 / 'run.json'}: not a run record (expected JSON with a list of overrides)\n")


def test_a_step_is_marked_failed_when_its_log_cannot_be_written_and_leftovers_go(chain, cli, tmp_path, monkeypatch):
    from mmflow.engine import load_workflow
    from mmflow.engine.runner import Runner

    path, counter = chain
    (tmp_path / "fail.flag").touch()
    write_text = Path.write_text

    def disk_full(self, *args, **kwargs):
        if self.name == "error.log":
            raise OSError(28, "No space left on device", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    r1 = tmp_path / "r1"
    with pytest.raises(StepFailed):
        Runner(load_workflow(path), r1, tmp_path / "runs", echo=lambda _: None).run()
    assert json.loads((r1 / "second" / "status.json").read_text())["state"] == "failed"
    assert json.loads((r1 / "run.json").read_text())["state"] == "failed" and not list(r1.rglob("*.tmp"))
    monkeypatch.setattr(Path, "write_text", write_text)
    leftovers = [r1 / "second" / ".outputs.tmp" / "copy", r1 / ".run.json.tmp", r1 / "first" / ".status.json.tmp"]
    for leftover in leftovers:
        leftover.parent.mkdir(exist_ok=True)
        leftover.write_text("half")
    (tmp_path / "fail.flag").unlink()
    assert cli("run", "--resume", r1)[0] == 0
    assert not any(p.exists() for p in leftovers) and ran(counter) == ["second", "third"]


def test_an_atomic_write_that_fails_leaves_no_temporary(tmp_path, monkeypatch):
    from mmflow.engine.run_folder import atomic_write_text

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", full)
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "status.json", "{}")
    assert list(tmp_path.iterdir()) == []


PARALLEL = """
name: side_by_side
executor: EXECUTOR
steps:
  text: {component: test.text}
  left:
    component: test.meet
    inputs: {after: "${steps.text.outputs.copy}"}
    params: {folder: MEET, LEFT}
  right:
    component: test.meet
    inputs: {after: "${steps.text.outputs.copy}"}
    params: {folder: MEET, RIGHT}
  after_right:
    component: test.passthrough
    inputs: {source: "${steps.right.outputs.mark}"}
"""


def side_by_side(write_workflow, tmp_path, left: str = "hold_s: 0", right: str = "hold_s: 0.01",
                 executor: str = "ray") -> Path:
    """Two steps that fail unless they run at the same time (test.meet), after one step and before another (with the
    same params they would be the same step, run once)."""
    return write_workflow(PARALLEL.replace("EXECUTOR", executor).replace("MEET", str(tmp_path / "meet"))
                          .replace("LEFT", left).replace("RIGHT", right))


def states(run: Path) -> dict[str, str]:
    return {step.name: json.loads((step / "status.json").read_text())["state"]
            for step in run.iterdir() if (step / "status.json").exists()}


def test_independent_steps_run_side_by_side_and_name_their_lines(write_workflow, cli, tmp_path):
    status, out, err = cli("run", side_by_side(write_workflow, tmp_path), "--run-dir", tmp_path / "r")
    assert status == 0, err
    assert states(tmp_path / "r") == dict.fromkeys(["text", "left", "right", "after_right"], "done")
    # while both run, a step's lines carry its name
    assert "    left: met 1 other step(s)" in err and "    right: met 1 other step(s)" in err
    assert "[4/4]" in err


@pytest.mark.parametrize("limit", [["--max-parallel-steps", "1"], ["--set", "executor=inline"]])
def test_one_step_at_a_time_when_capped_or_inline(write_workflow, cli, tmp_path, limit):
    path = side_by_side(write_workflow, tmp_path, "wait_s: 1", "wait_s: 1.01")
    status, _, err = cli("run", path, "--run-dir", tmp_path / "r", *limit)
    assert status == 1 and "ran alone" in err, err


def test_a_failing_step_lets_the_others_finish_and_nothing_else_starts(write_workflow, cli, tmp_path):
    path = side_by_side(write_workflow, tmp_path, "then: fail", "hold_s: 0.5")
    status, out, err = cli("run", path, "--run-dir", tmp_path / "r")
    assert status == 1
    assert err.strip().splitlines()[-1].startswith("error: step 'left' failed: RuntimeError: injected failure")
    # right, running when left failed, finished; after_right, which could have run next, never started
    assert states(tmp_path / "r") == {"text": "done", "left": "failed", "right": "done"}
    assert json.loads((tmp_path / "r" / "run.json").read_text())["state"] == "failed"
    shutil.rmtree(tmp_path / "meet")
    status, _, err = cli("run", side_by_side(write_workflow, tmp_path, "others: 0", "hold_s: 0.5"), "--run-dir",
                         tmp_path / "r2")
    assert status == 0 and f"right: reused ({tmp_path / 'r' / 'right'})" in err, err  # what finished is kept


def test_every_failed_step_is_listed(write_workflow, cli, tmp_path):
    path = side_by_side(write_workflow, tmp_path, "then: fail", "then: fail, hold_s: 0.01")
    status, _, err = cli("run", path, "--run-dir", tmp_path / "r")
    assert status == 1
    lines = err.strip().splitlines()[-3:]
    assert lines[0] == "error: 2 steps failed:"
    assert sorted(line.split(":")[0] for line in lines[1:]) == ["  step 'left' failed", "  step 'right' failed"]
    assert states(tmp_path / "r") == {"text": "done", "left": "failed", "right": "failed"}


def test_an_interrupt_marks_every_running_step(write_workflow, cli, tmp_path):
    path = side_by_side(write_workflow, tmp_path, "then: interrupt, hold_s: 5", "hold_s: 5")
    status, _, err = cli("run", path, "--run-dir", tmp_path / "r")
    assert status == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert states(tmp_path / "r") == {"text": "done", "left": "interrupted", "right": "interrupted"}
    assert json.loads((tmp_path / "r" / "run.json").read_text())["state"] == "interrupted"


def test_steps_run_side_by_side_are_each_copied_to_the_storage(write_workflow, cli, tmp_path):
    path = side_by_side(write_workflow, tmp_path)
    path.write_text(path.read_text().replace("executor: ray", f"executor: ray\nstorage: '{tmp_path / 'store'}'"))
    status, _, err = cli("run", path)
    assert status == 0, err
    (stored,) = (tmp_path / "store" / "side_by_side").iterdir()
    assert states(stored) == dict.fromkeys(["text", "left", "right", "after_right"], "done")
    assert (stored / "left" / "outputs" / "mark").read_text() == "left"


def test_the_executor_warms_up_while_earlier_steps_run_only_when_a_step_will_train(write_workflow, tmp_path,
                                                                                   monkeypatch):
    """A local Ray starts in the background as the run begins: not for a run whose training comes from the cache,
    nor for one that trains nothing."""
    from mmflow.engine import load_workflow, runner
    from mmflow.engine.inline_executor import InlineExecutor

    warmed = []

    class Recording(InlineExecutor):
        def warm_up(self) -> None:
            warmed.append(True)

    monkeypatch.setattr(runner, "create_executor", lambda name, settings: Recording(settings))
    steps = "name: w\nsteps:\n  text: {component: test.text}\n"
    trains = load_workflow(write_workflow(steps + "  count: {component: test.count, params: {epochs: 1}}\n"))
    for run, expected in (("r1", [True]), ("r2", [])):  # r2 finds count's outputs in the cache
        runner.Runner(trains, tmp_path / run, tmp_path / "runs", echo=lambda _: None).run()
        assert warmed == expected
        warmed.clear()
    runs_but_trains_nothing = steps.replace("test.text}", "test.text, params: {text: new}}")
    runner.Runner(load_workflow(write_workflow(runs_but_trains_nothing)), tmp_path / "r3", tmp_path / "runs",
                  echo=lambda _: None).run()
    assert warmed == []
