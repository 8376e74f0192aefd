"""`seeds:`: the steps that depend on the seed run once per seed, a comparison shows mean ± std over them."""

from __future__ import annotations

import json

import pytest

from mmflow.engine import WorkflowError, load_workflow
from mmflow.engine.runs import find_runs
from mmflow.engine.step_cache import cache_key

SEEDED = """
name: seeded
seeds: [0, 1, 2]
steps:
  data: {component: test.text}
  score:
    component: test.score
    inputs: {after: "${steps.data.outputs.copy}"}
    params: {by_seed: [0.5, 0.7, 0.9]}
  other:
    component: test.score
    params: {by_seed: [0.25, 0.25, 0.25]}
  compare:
    component: report.compare
    inputs: {results: ["${steps.score.outputs.metrics}", "${steps.other.outputs.metrics}"]}
  copy:
    component: test.passthrough
    inputs: {source: "${steps.score.outputs.seed}"}
"""


def test_a_step_per_seed_for_what_depends_on_the_seed_and_one_for_the_rest(write_workflow):
    workflow = load_workflow(write_workflow(SEEDED))
    assert sorted(workflow.order) == ["compare", "copy@0", "copy@1", "copy@2", "data", "other@0", "other@1", "other@2",
                                      "score@0", "score@1", "score@2"]
    assert workflow.order.index("data") < workflow.order.index("score@0") < workflow.order.index("compare")
    # a step that reads a per-seed step's output runs per seed too, each on its own seed's
    assert [workflow.steps[f"copy@{s}"].inputs["source"].step for s in range(3)] == ["score@0", "score@1", "score@2"]
    assert [workflow.steps[f"score@{s}"].inputs["after"].step for s in range(3)] == ["data"] * 3
    assert [e.step for e in workflow.steps["compare"].inputs["results"]] == [
        "score@0", "score@1", "score@2", "other@0", "other@1", "other@2"]
    keys = {cache_key(workflow.steps[f"score@{s}"], workflow, {"after": "d"}) for s in range(3)}
    assert len(keys) == 3  # each seed its own cache key
    plain = load_workflow(write_workflow(SEEDED.replace("seeds: [0, 1, 2]", "seed: 1"), "plain.yaml"))
    assert sorted(plain.order) == ["compare", "copy", "data", "other", "score"]
    assert cache_key(plain.steps["score"], plain, {"after": "d"}) != cache_key(workflow.steps["score@0"], workflow,
                                                                               {"after": "d"})


def test_the_comparison_shows_mean_and_std_over_seeds_and_each_seed(write_workflow, cli, tmp_path):
    status, out, err = cli("run", write_workflow(SEEDED), "--run-dir", tmp_path / "r")
    assert status == 0, err
    run = tmp_path / "r"
    assert [(run / f"copy@{s}" / "outputs" / "copy").read_text() for s in range(3)] == ["0!", "1!", "2!"]
    metrics = json.loads((run / "compare" / "metrics.json").read_text())
    # mean of 0.5, 0.7, 0.9 and their sample standard deviation: sqrt((0.04 + 0 + 0.04) / 2) = 0.2
    assert metrics["score.accuracy"] == pytest.approx(0.7) and metrics["score.accuracy_std"] == pytest.approx(0.2)
    assert metrics["other.accuracy"] == 0.25 and metrics["other.accuracy_std"] == 0.0
    assert "score@2.accuracy" not in metrics  # each seed's own is in its step's metrics and the table
    table = (run / "compare" / "outputs" / "table").read_text().splitlines()
    assert "| score (mean ± std, 3 seeds) | 0.7000 ± 0.2000 |" in table[2:4] and "| score@1 | 0.7000 |" in table
    # mmflow runs: the comparison's means with their spread; a run that ends in per-seed steps (copy@0..2, 2 chars
    # each) shows its last step's mean ± std over the seeds
    record = find_runs(tmp_path / "runs")[0]
    assert record.headline("compare") == {"score.accuracy": "0.7±0.2", "other.accuracy": "0.25±0"}
    assert record.result() == {"copy.chars": "2±0"}


def test_seeds_from_the_command_line_reuse_the_seeds_already_run(write_workflow, cli, tmp_path):
    path = write_workflow(SEEDED)
    assert cli("run", path, "--seeds", "0,1", "--run-dir", tmp_path / "r1")[0] == 0
    status, _, err = cli("run", path, "--seeds", "0,1,2", "--run-dir", tmp_path / "r2")
    assert status == 0, err
    states = {s: json.loads((tmp_path / "r2" / s / "status.json").read_text()) for s in ("score@1", "score@2")}
    assert "reused_from" in states["score@1"] and "reused_from" not in states["score@2"]
    status, _, err = cli("run", path, "--seeds", "1,1")
    assert status == 2 and "--set seeds=[1,1]" in err and "each seed once" in err, err


def test_a_step_named_as_the_workflow_names_it_selects_every_seed(write_workflow, cli, tmp_path):
    path = write_workflow(SEEDED)
    assert cli("run", path, "--to", "data")[0] == 0
    status, _, err = cli("run", path, "--only", "score", "--run-dir", tmp_path / "r")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_dir()) == ["data", "score@0", "score@1",
                                                                                  "score@2"]
    status, _, err = cli("run", path, "--only", "copy@1", "--run-dir", tmp_path / "r1")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "r1").iterdir() if p.is_dir()) == ["copy@1", "data", "score@1"]


def test_a_step_over_every_seed_takes_them_through_a_list_input_only(write_workflow):
    path = write_workflow(SEEDED + """
  best:
    component: test.best
    inputs: {result: "${steps.score.outputs.metrics}"}
""")
    with pytest.raises(WorkflowError) as found:
        load_workflow(path)
    assert str(found.value) == (f"{path}:21: steps.best.inputs.result: 'score' runs once per seed: best (test.best) "
                                "takes every seed's outputs through a list input only")


def test_the_report_puts_each_steps_mean_and_std_over_seeds_beside_every_seed(write_workflow, cli, tmp_path):
    from mmflow.engine.report import load_series, results_table

    assert cli("run", write_workflow(SEEDED), "--run-dir", tmp_path / "r")[0] == 0
    rows = results_table(load_series([tmp_path / "r"])[0])
    header, accuracy = rows[0], next(row for row in rows if row[0] == "accuracy")
    assert sorted(header[1:4]) == ["copy (mean ± std)", "other (mean ± std)", "score (mean ± std)"]
    assert accuracy[header.index("score (mean ± std)")] == "0.7±0.2" and accuracy[header.index("score@2")] == "0.9"
    assert accuracy[header.index("other (mean ± std)")] == "0.25±0" and accuracy[header.index("copy (mean ± std)")] == ""


def test_a_swept_step_is_swept_at_every_seed_and_what_reads_it_too(write_workflow):
    from mmflow.engine.sweep import swept_steps

    workflow = load_workflow(write_workflow(SEEDED + """
sweep:
  parameters:
    steps.score.params.by_seed: {grid: [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]}
  metric: compare.score.accuracy
"""))
    assert swept_steps(workflow) == {"score@0", "score@1", "score@2", "copy@0", "copy@1", "copy@2", "compare"}
