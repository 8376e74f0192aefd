"""The sweep: section: validation at file:line, which steps trials share, results and the best workflow."""

from __future__ import annotations

import csv
import json
import shutil
import threading

import pytest
import yaml

from mmflow.engine import tune
from mmflow.engine.errors import WorkflowError
from mmflow.engine.spec import load_workflow
from mmflow.engine.sweep import Trial, best_workflow, override, swept_steps, write_results

BASE = """\
name: swp
steps:
  data: {component: data.synthetic}
  shard:
    component: data.shard
    inputs: {dataset: "${steps.data.outputs.dataset}"}
  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {epochs: 3}
  eval:
    component: eval.classifier
    inputs: {model: "${steps.train.outputs.model}", train: "${steps.shard.outputs.train}",
             test: "${steps.shard.outputs.test}"}
sweep:
  parameters:
"""


def workflow(tmp_path, parameters: str, rest: str = "  metric: eval.accuracy\n"):
    path = tmp_path / "wf.yaml"
    path.write_text(BASE + parameters + rest)
    return load_workflow(path)


def problems(tmp_path, parameters: str, rest: str = "  metric: eval.accuracy\n") -> str:
    with pytest.raises(WorkflowError) as caught:
        workflow(tmp_path, parameters, rest)
    return str(caught.value)


def test_a_valid_sweep_loads_and_knows_which_steps_trials_share(tmp_path):
    wf = workflow(tmp_path, "    steps.train.params.lr: {loguniform: [0.001, 0.1]}\n"
                            "    steps.train.params.batch_size: {grid: [32, 64]}\n",
                  "  metric: eval.accuracy\n  scheduler: {name: asha, metric: train.loss, mode: min}\n")
    assert wf.spec.sweep.scheduler.name == "asha"
    assert swept_steps(wf) == {"train", "eval"}  # data and shard run once for all trials


@pytest.mark.parametrize("parameters, rest, expected", [
    ("    steps.trian.params.lr: {grid: [0.1]}\n", "  metric: eval.accuracy\n",
     "wf.yaml:17: sweep.parameters.steps.trian.params.lr: unknown step 'trian' (did you mean 'train'?)"),
    ("    steps.train.params.lrr: {grid: [0.1]}\n", "  metric: eval.accuracy\n",
     "wf.yaml:17: sweep.parameters.steps.train.params.lrr: value 0.1: lrr: unknown parameter"),
    ("    steps.train.params.lr: {choice: [0.1, -1]}\n", "  metric: eval.accuracy\n",
     "value -1: lr: Input should be greater than 0"),
    ("    train.lr: {grid: [0.1]}\n", "  metric: eval.accuracy\n", "must look like steps.<step>.params.<name>"),
    ("    steps.train.params.lr: {grid: [0.1], uniform: [0, 1]}\n", "  metric: eval.accuracy\n",
     "wf.yaml:17: sweep.parameters.steps.train.params.lr: give exactly one of grid, choice, uniform"),
    ("    steps.train.params.lr: {uniform: [0.5, 0.1]}\n", "  metric: eval.accuracy\n", "low 0.5 must be below high"),
    ("    steps.train.params.lr: {loguniform: [0, 0.1]}\n", "  metric: eval.accuracy\n", "low must be > 0"),
    ("    steps.train.params.lr: {normal: [0, 1]}\n", "  metric: eval.accuracy\n", "unknown field 'normal'"),
    ("    steps.train.params.lr: {grid: [0.1]}\n", "  metric: evl.accuracy\n",
     "wf.yaml:18: sweep.metric: 'evl.accuracy' must be '<step>.<metric>' of a step of this workflow (did you "
     "mean 'eval'?)"),
    ("    steps.train.params.lr: {grid: [0.1]}\n", "  metric: eval.accuracy\n  scheduler: {name: asha}\n",
     "asha needs metric"),
    ("    steps.train.params.lr: {grid: [0.1]}\n",
     "  metric: eval.accuracy\n  scheduler: {name: asha, metric: eval.accuracy}\n",
     "step 'eval' does not train: ASHA needs a per-epoch metric"),
])
def test_sweep_mistakes_are_reported_at_their_line(tmp_path, parameters, rest, expected):
    assert expected in problems(tmp_path, parameters, rest)


def test_overrides_round_trip_any_yaml_value():
    assert override("steps.t.params.lr", 0.05) == "steps.t.params.lr=0.05"
    assert yaml.safe_load(override("a", {"name": "pmr", "alpha": 2}).split("=", 1)[1]) == {"name": "pmr", "alpha": 2}
    assert yaml.safe_load(override("a", [1, 2]).split("=", 1)[1]) == [1, 2]
    assert yaml.safe_load(override("a", "text").split("=", 1)[1]) == "text"


def test_results_rank_finished_trials_and_the_best_becomes_a_runnable_workflow(tmp_path):
    wf = workflow(tmp_path, "    steps.train.params.lr: {grid: [0.1, 0.01, 0.5]}\n")
    trials = [Trial("t0", {"steps.train.params.lr": 0.1}, {"eval.accuracy": 0.6, "training_iteration": 4}, "done"),
              Trial("t1", {"steps.train.params.lr": 0.01}, {"train.loss": 1.0, "training_iteration": 1}, "stopped"),
              Trial("t2", {"steps.train.params.lr": 0.5}, {"eval.accuracy": 0.8, "training_iteration": 4}, "done")]
    table = write_results(wf.spec.sweep, trials, tmp_path)
    assert [line.split()[0] for line in table.splitlines()] == ["trial", "t2", "t0", "t1"]
    rows = list(csv.reader((tmp_path / "results.csv").open()))
    assert rows[1][:4] == ["t2", "done", "0.5", "0.8"] and rows[3][:3] == ["t1", "stopped", "0.01"]
    best, text = best_workflow(wf, wf.spec.sweep, trials)
    assert best.name == "t2" and text.startswith("# best trial t2")
    (tmp_path / "best.yaml").write_text(text)
    again = load_workflow(tmp_path / "best.yaml")
    assert again.spec.sweep is None and again.steps["train"].params.lr == 0.5


def test_trials_on_a_node_without_the_sweep_folder_fetch_its_shared_steps_once(write_workflow, cli, tmp_path,
                                                                              monkeypatch):
    shared = """
name: shared
executor: inline
storage: STORE
steps:
  data: {component: data.synthetic, params: {train_size: 64, test_size: 16}}
  shard: {component: data.shard, inputs: {dataset: "${steps.data.outputs.dataset}"}}
""".replace("STORE", str(tmp_path / "store"))
    status, _, err = cli("run", write_workflow(shared), "--run-dir", tmp_path / "runs" / "shared" / "sweep-1")
    assert status == 0, err
    fetched = []
    fetch_run = tune.fetch_run
    monkeypatch.setattr(tune, "fetch_run", lambda *args: fetched.append(args) or fetch_run(*args))
    elsewhere = tmp_path / "other-node" / "shared" / "sweep-1"
    stored = str(tmp_path / "store" / "shared" / "sweep-1")
    trials = [threading.Thread(target=tune.fetch_shared_steps, args=(stored, elsewhere)) for _ in range(2)]
    for trial in trials:
        trial.start()
    for trial in trials:
        trial.join()
    assert len(fetched) == 1
    for step in ("data", "shard"):
        assert json.loads((elsewhere / step / "status.json").read_text())["state"] == "done"
    assert (elsewhere / "shard" / "outputs" / "train" / "manifest.json").exists()


def test_trials_refer_to_the_sweeps_stored_shared_steps_instead_of_copying_them(write_workflow, cli, tmp_path,
                                                                               monkeypatch):
    from mmflow.engine import InlineExecutor
    from mmflow.engine.storage import Storage

    path = write_workflow(f"""
name: shared
executor: inline
storage: {tmp_path / "store"}
steps:
  data: {{component: data.synthetic, params: {{train_size: 64, test_size: 16}}}}
  shard: {{component: data.shard, inputs: {{dataset: "${{steps.data.outputs.dataset}}"}}}}
  train:
    component: train.classifier
    inputs: {{train: "${{steps.shard.outputs.train}}"}}
    params: {{epochs: 1}}
""")
    runs = tmp_path / "runs"
    status, _, err = cli("run", path, "--run-dir", runs / "shared" / "sweep-1", "--runs-root", runs)
    assert status == 0, err
    given = {}
    train = InlineExecutor.train
    monkeypatch.setattr(InlineExecutor, "train",
                        lambda self, fn, config, job: given.update(inputs=job.inputs) or train(self, fn, config, job))
    trial_dir = runs / "shared" / "sweep-1" / "trials" / "t1"
    status, _, err = cli("run", path, "--run-dir", trial_dir, "--runs-root", runs, "--set", "steps.train.params.epochs=2")
    assert status == 0, err

    sweep = Storage.open(tmp_path / "store" / "shared" / "sweep-1")
    trial = sweep.joinpath("trials", "t1")
    for step in ("data", "shard"):
        stored = json.loads(trial.joinpath(step, "status.json").read_text())
        assert stored["state"] == "done" and stored["outputs_at"] == sweep.joinpath(step).uri
        assert not trial.joinpath(step, "outputs").exists() and trial.joinpath(step, "params.json").exists()
    assert trial.joinpath("train", "outputs", "model").exists()  # what the trial ran is its own
    # a worker on a node without the trial's folder gets the shards from the sweep's copy
    shards = trial_dir / "shard" / "outputs" / "train"
    written = {p.name: p.read_bytes() for p in shards.iterdir()}
    shutil.rmtree(trial_dir)
    given["inputs"].ensure_local()
    assert {p.name: p.read_bytes() for p in shards.iterdir()} == written
    # the trial resumed from its storage on another machine follows the reference too
    status, out, err = cli("run", "--resume", trial.uri, "--runs-root", tmp_path / "elsewhere")
    assert status == 0 and out.count("kept") == 3, err
    assert (tmp_path / "elsewhere" / "shared" / "t1" / "shard" / "outputs" / "train" / "manifest.json").exists()
    # a run outside the sweep's folder copies what it reuses (the sweep may be deleted without it)
    status, _, err = cli("run", path, "--run-dir", runs / "shared" / "other", "--runs-root", runs,
                         "--set", "steps.train.params.epochs=2")
    assert status == 0, err
    other = Storage.open(tmp_path / "store" / "shared" / "other")
    assert other.joinpath("shard", "outputs", "train", "manifest.json").exists()
    assert "outputs_at" not in json.loads(other.joinpath("shard", "status.json").read_text())


def test_after_an_interrupt_tunes_lines_go_to_run_log_alone(capsys):
    """Each trial killed by Ctrl-C is no error to show on the terminal, yet what Tune logs then (did it save its
    final state?) tells why a sweep's last record still held a pending trial (seen once)."""
    import logging

    ray, logger = logging.getLogger("mmflow_test_ray"), logging.getLogger("mmflow_test_ray.tune.controller")
    terminal = logging.StreamHandler()
    ray.addHandler(terminal)  # as Ray's own logger: its handler writes to the terminal
    ray.setLevel(logging.INFO)
    kept: list[str] = []
    tune.log_only_to(logging.getLogger("mmflow_test_ray.tune"), kept.append)
    try:
        raise RuntimeError("snapshot failed")
    except RuntimeError:
        logger.error("Experiment state snapshotting failed:", exc_info=True)
    logger.info("Wrote the latest version of all result files")
    ray.removeHandler(terminal)
    assert capsys.readouterr().err == ""
    assert kept[0].startswith("mmflow_test_ray.tune.controller ERROR: Experiment state snapshotting failed:\nTraceback")
    assert "RuntimeError: snapshot failed" in kept[0]
    assert kept[1] == "mmflow_test_ray.tune.controller INFO: Wrote the latest version of all result files\n"
