"""What a run shows: plain lines off a terminal, a live table on one (checked in a pseudo-terminal), -q and -v,
run.log with everything, and training progress passed on without flooding the driver."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time

from mmflow.engine import load_workflow
from mmflow.engine.console import QUIET, RunConsole, StepRow, _training
from mmflow.engine.executor import TrainSession
from mmflow.engine.hooks import RunHook
from mmflow.engine.registry import REGISTRY
from mmflow.engine.runner import Runner
from mmflow.engine.spec import Resources

from ..conftest import REPO

WORKFLOW = """
name: shown
executor: inline
steps:
  first: {component: test.text, params: {text: abc}}
  count: {component: test.count, params: {epochs: 4, epoch_seconds: EPOCH}}
"""


class Shouting(RunHook):
    """Prints as a library would, outside the run's own lines."""

    def before_step(self, run, step):
        print(f"library says {step}")


def run_shown(write_workflow, tmp_path, console: RunConsole):
    path = write_workflow(WORKFLOW.replace("EPOCH", "0"))
    runner = Runner(load_workflow(path), tmp_path / "run", tmp_path / "runs", echo=console.line,
                    hooks=[console, Shouting()])
    try:
        runner.run()
    finally:
        console.close()
    return (tmp_path / "run" / "run.log").read_text()


def test_off_a_terminal_lines_are_printed_as_they_come_and_run_log_has_everything(write_workflow, tmp_path, capsys):
    stream = io.StringIO()
    log = run_shown(write_workflow, tmp_path, RunConsole(stream))
    shown = stream.getvalue().splitlines()
    assert shown[0] == "[1/2] first (test.text)" and "    counted epoch 4" in shown
    assert "\x1b[" not in stream.getvalue()  # plain text: no cursor movement or colour
    summary = capsys.readouterr().out
    assert re.search(r"^count  ran     \d+\.\ds  epochs=4, final_value=4, checkpoint_epoch=-1$", summary, re.M)
    stamped = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")
    assert all(stamped.match(line) for line in log.splitlines())
    bare = [stamped.sub("", line) for line in log.splitlines()]
    assert bare[:2] == ["[1/2] first (test.text)", "library says first"]  # what the process printed too
    assert "    counted epoch 4" in bare and bare[-1].startswith("finished in ")


def test_quiet_prints_only_the_summary_and_run_log_still_has_every_line(write_workflow, tmp_path, capsys):
    stream = io.StringIO()
    log = run_shown(write_workflow, tmp_path, RunConsole(stream, verbosity=QUIET))
    assert stream.getvalue() == ""
    assert "count  ran" in capsys.readouterr().out
    assert "counted epoch 4" in log and "[2/2] count (test.count)" in log


def test_a_resumed_run_appends_to_its_run_log(write_workflow, tmp_path, capsys):
    run_shown(write_workflow, tmp_path, RunConsole(io.StringIO()))
    log = run_shown(write_workflow, tmp_path, RunConsole(io.StringIO()))
    assert log.count("[1/2] first (test.text)") == 2 and "kept (this run)" in log


def test_on_a_terminal_the_steps_are_a_live_table_with_the_training_steps_epoch_bar(write_workflow, tmp_path):
    path = write_workflow(WORKFLOW.replace("EPOCH", "0.8"))
    code = "import sys, tests.plugin_components; from mmflow.engine.cli import main; sys.exit(main(sys.argv[1:]))"
    shown = in_terminal([sys.executable, "-c", code, "run", path, "--runs-root", tmp_path / "runs"], cwd=tmp_path)
    assert re.search(r"step\s+component\s+state\s+time", shown)  # the live table
    assert re.search(r"count\s+test\.count\s+running\s+\d+\.\ds\s+━+.*epoch [2-4]/4  batch \d/4", shown)
    assert re.search(r"first\s+test\.text\s+ran\s+\d+\.\ds\s+chars=3", shown)  # a finished step's headline
    assert "counted epoch 2" in shown  # the step's lines scroll above the table
    assert re.search(r"^count\s+ran\s+", shown, re.M)  # the summary, when the live table is gone


def test_verbose_and_quiet_are_flags_of_run(cli):
    status, _, err = cli("run", "quickstart", "-q", "-v")
    assert status == 2 and "not allowed with argument" in err


def in_terminal(argv: list, cwd) -> str:
    """Run `argv` with a pseudo-terminal as its stdout and stderr; what it showed, without escape sequences."""
    pid, fd = pty.fork()
    if pid == 0:  # the child
        os.chdir(cwd)
        os.environ.update(COLUMNS="160", LINES="40", PYTHONPATH=str(REPO))
        os.execv(argv[0], [str(a) for a in argv])
    output, deadline = b"", time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        try:
            chunk = os.read(fd, 65536) if ready else b""
        except OSError:  # the child closed the terminal
            break
        if ready and not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8", "replace"))


def test_training_progress_is_passed_on_at_most_twice_a_second_and_every_epoch_end():
    events: list[dict] = []
    session = TrainSession(Resources(), progress=events.append)
    for batch in range(1, 101):
        session.progress(1, 2, batch, 100)
    session.progress(1, 2, metrics={"loss": 0.5})
    session.progress(2, 2, metrics={"loss": 0.4})
    assert [e["batch"] for e in events] == [1, None, None]  # the next batch position waits 0.5 s
    assert [e["metrics"] for e in events[1:]] == [{"loss": 0.5}, {"loss": 0.4}]
    other = TrainSession(Resources(), progress=events.append)
    other.rank = 1
    other.progress(1, 2, metrics={"loss": 1.0})
    assert len(events) == 3  # rank 0 speaks for the step


def test_the_epoch_bar_shows_epoch_batch_eta_and_the_last_metrics():
    from rich.console import Console

    metrics = {"rho": 2.0, "grad_angle_audio": 40.0, "loss": 0.25, "train_accuracy": 0.9}  # headline: loss, accuracy
    row = StepRow(REGISTRY.get("train.classifier"), "running", training_started=100.0,
                  progress={"epoch": 2, "epochs": 4, "batch": 5, "batches": 10, "metrics": metrics})
    console = Console(record=True, width=120)
    console.print(_training(row, now=130.0))  # 1.5 of 4 epochs in 30 s: 50 s to go
    text = console.export_text()
    assert "epoch 2/4  batch 5/10  ETA 0:50  loss=0.25, train_accuracy=0.9" in text and "rho" not in text
    assert "grad_angle" not in text


def test_the_console_imports_rich_only_for_a_live_display():
    probe = ("import sys, io; from mmflow.engine.console import RunConsole; RunConsole(io.StringIO()).line('x'); "
             "print('rich' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_a_sweep_shows_a_row_per_trial_with_its_values_state_and_latest_metric():
    from rich.console import Console

    from mmflow.engine.console import SweepConsole

    stream = io.StringIO()
    sweep = SweepConsole(["eval.accuracy", "train.train_accuracy"], stream)
    sweep.trial("trial_00000", {"steps.train.params.lr": 0.3}, "running")
    sweep.trial("trial_00001", {"steps.train.params.lr": 0.05}, "running")
    for accuracy in (0.4, 0.6):
        sweep.trial("trial_00001", {"steps.train.params.lr": 0.05}, "running", {"train.train_accuracy": accuracy})
    sweep.trial("trial_00000", {"steps.train.params.lr": 0.3}, "stopped")
    sweep.trial("trial_00001", {"steps.train.params.lr": 0.05}, "running",
                {"train.train_accuracy": 0.7, "eval.accuracy": 0.81})
    sweep.trial("trial_00001", {"steps.train.params.lr": 0.05}, "done")
    assert stream.getvalue().splitlines() == [  # off a terminal: a line per start and end
        "trial_00000 lr=0.3: running", "trial_00001 lr=0.05: running", "trial_00000 lr=0.3: stopped",
        "trial_00001 lr=0.05: done eval.accuracy=0.81"]
    recorded = Console(record=True, width=100)
    recorded.print(sweep._render())
    rows = [line.split() for line in recorded.export_text().splitlines()]
    assert rows[0] == ["trial", "lr", "state", "reports", "latest"]
    assert rows[1] == ["trial_00000", "0.3", "stopped", "0", "-"]
    assert rows[2] == ["trial_00001", "0.05", "done", "3", "eval.accuracy=0.81"]
