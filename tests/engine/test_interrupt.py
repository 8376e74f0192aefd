"""Ctrl-C and SIGTERM stop an inline run at once: `interrupted`, exit 130/143, run and step marked, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

INLINE = """
name: interrupted
executor: inline
steps:
  data: {component: data.synthetic, params: {train_size: 1000, test_size: 100}}
  shard:
    component: data.shard
    inputs: {dataset: "${steps.data.outputs.dataset}"}
    params: {samples_per_shard: 250}
  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {epochs: 20, batch_size: 16, hidden: [64]}
"""


def interrupt_once_checkpointed(workflow: Path, run: Path, signum: int, whole_group: bool) -> subprocess.Popen:
    """Start `mmflow run`, wait for its training step's first checkpoint, then send `signum` to the
    process (as `kill` does) or to its whole process group (as a terminal's Ctrl-C does)."""
    process = subprocess.Popen([sys.executable, "-m", "mmflow.engine.cli", "run", str(workflow), "--run-dir", str(run)],
                               cwd=run.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its runs root (./runs) is the test's own
    deadline = time.time() + 120
    while not list((run / "train" / "work").glob("**/checkpoint*")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.1)
    (os.killpg if whole_group else os.kill)(process.pid, signum)
    return process


def assert_interrupted(process: subprocess.Popen, run: Path, signum: int, within_s: float = 30) -> str:
    """The run stopped within seconds, said so in one word, and left its record saying so too."""
    started = time.time()
    _, err = process.communicate(timeout=60)
    assert time.time() - started < within_s
    assert process.returncode == 128 + signum, err[-3000:]
    assert err.rstrip().splitlines()[-1] == "interrupted" and "Traceback" not in err, err[-3000:]
    assert f"resume with: mmflow run --resume {run}" in err
    assert json.loads((run / "run.json").read_text())["state"] == "interrupted"
    assert json.loads((run / "train" / "status.json").read_text())["state"] == "interrupted"
    assert json.loads((run / "shard" / "status.json").read_text())["state"] == "done"
    return err


@pytest.mark.timeout(240)
@pytest.mark.parametrize("signum, whole_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_an_interrupted_inline_run_is_marked_and_resumes_from_its_checkpoint(tmp_path, signum, whole_group):
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(INLINE)
    run = tmp_path / "run"
    assert_interrupted(interrupt_once_checkpointed(workflow, run, signum, whole_group), run, signum)
    resumed = subprocess.run([sys.executable, "-m", "mmflow.engine.cli", "run", "--resume", str(run)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((run / "train" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(20))
    (first,) = [h["resumed_at_epoch"] for h in history if "resumed_at_epoch" in h]
    assert 1 <= first < 20
    assert json.loads((run / "run.json").read_text())["state"] == "done"


def test_an_interrupt_a_library_swallowed_stops_the_training_at_its_next_report(tmp_path):
    """CPython drops an exception raised while a file object is finalized (a tar member read by webdataset):
    the interrupt still stops the run, at the end of the epoch it arrived in."""
    from mmflow.engine import InlineExecutor, Resources, TrainingJob
    from mmflow.engine.cli import _interrupt
    from mmflow.engine.errors import Interrupted

    def swallowing(session, config):
        try:
            _interrupt(signal.SIGTERM, None)
        except KeyboardInterrupt:
            pass  # as the finalizer does
        session.report({"epoch": 0})
        raise AssertionError("the epoch was reported")

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(Interrupted) as raised:
            InlineExecutor().train(swallowing, {}, TrainingJob(Resources(), tmp_path, log=lambda _: None))
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert raised.value.signum == signal.SIGTERM and Interrupted.pending is None
