"""Hostile workflow files: each is one line naming file, line and field, in bounded time and memory."""

from __future__ import annotations

import re
import time
import tracemalloc

import pytest

from mmflow.engine import UsageError

from ..conftest import REPO

LAUGHS = "a: &a [" + ", ".join(["lol"] * 9) + "]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
QUICKSTART = REPO / "workflows" / "quickstart.yaml"


@pytest.mark.parametrize("text, expected", [
    (LAUGHS, "wf.yaml:6: more than 100000 values once aliases are expanded"),
    ("name: x\na: &a {params: {x: *a}}\n", "wf.yaml:2: recursive alias '*a' (it refers to itself)"),
    ("name: x\nsteps: " + "[" * 500 + "]" * 500 + "\n", "wf.yaml:2: nested more than 64 levels deep"),
    ("name: x\nsteps:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)), "nested more than 64 levels deep"),
    ("name: x\nseed: " + "9" * 5000 + "\n", "wf.yaml:2: number of 5000 characters is too long"),
    ("name: x\nseed: 1\nsteps: {a: {component: data.synthetic, params: {train_size: " + "1" * 41 + "}}}\n",
     "wf.yaml:3: number of 41 characters is too long"),
])
def test_a_hostile_file_is_one_line_in_bounded_time_and_memory(write_workflow, cli, text, expected):
    path = write_workflow(text)
    tracemalloc.start()
    started = time.perf_counter()
    status, out, err = cli("validate", path)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert status == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()] and err.strip().endswith(expected), err
    assert err.startswith(str(path))
    assert seconds < 2 and peak < 200 << 20, (seconds, peak)


@pytest.mark.parametrize("setting, expected", [
    ("steps.train.params.lr=1e309", "steps.train.params.lr: Input should be a finite number (got '1e309')"),
    ("steps.train.params.lr=.inf", "steps.train.params.lr: expected a finite number (got inf)"),
    ("steps.train.params.lr=.nan", "steps.train.params.lr: expected a finite number (got nan)"),
    ("resources.cpus_per_worker=.inf", "resources.cpus_per_worker: expected a finite number (got inf)"),
    ("resources.cpus_per_worker=1.0e+300", "resources.cpus_per_worker: number too large: 1e+300 (at most 2^53 in "
                                          "magnitude)"),
    ("resources.workers=100001", "resources.workers: Input should be less than or equal to 100000 (got 100001)"),
    ("steps.data.params.train_size=true", "steps.data.params.train_size: expected a number (got true)"),
    ("steps.train.params.epochs=1000000000000000000000000000000",
     "steps.train.params.epochs: number too large: 1e+30 (at most 2^53 in magnitude)"),
    ("seed=" + "9" * 5000, "number of 5000 characters is too long"),
])
def test_numbers_no_workflow_means_are_refused(cli, setting, expected):
    tracemalloc.start()
    started = time.perf_counter()
    status, _, err = cli("validate", QUICKSTART, "--set", setting)
    seconds, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert status == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"{QUICKSTART} (--set {setting[:77]}") and line.endswith(expected), line
    assert seconds < 2 and peak < 200 << 20, (seconds, peak)


def test_the_same_numbers_in_the_file_are_refused_at_their_line(write_workflow, cli):
    text = QUICKSTART.read_text().replace("seed: 0", "seed: .inf").replace("workers: 2", "workers: true")
    at = {key: text.splitlines().index(line) + 1 for key, line in (("seed", "seed: .inf"), ("workers", "  workers: true"))}
    status, _, err = cli("validate", write_workflow(text))
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 2
    assert lines[0].endswith(f":{at['seed']}: seed: expected a finite number (got inf)"), lines
    assert lines[1].endswith(f":{at['workers']}: resources.workers: expected a number (got true)"), lines


def test_a_file_over_4_mb_is_refused_unread(write_workflow, cli):
    status, _, err = cli("validate", write_workflow("name: x\n" + "#" * (5 << 20) + "\n"))
    assert status == 2 and err.strip().endswith("wf.yaml: file is larger than 4 MB")


def test_set_reaches_list_items_keys_with_dots_and_bracketed_keys():
    from mmflow.engine.yaml_source import apply_overrides, parse_yaml

    doc = parse_yaml("steps:\n  data:\n    params:\n      modalities: [{name: a, signal: 1}, {name: b}]\n"
                     "sweep:\n  parameters:\n    steps.train.params.lr: {grid: [0.1]}\n", "wf.yaml")
    apply_overrides(doc, ["steps.data.params.modalities.1.signal=3", "steps.data.params.modalities.-2.name=x",
                          "sweep.parameters.steps.train.params.lr.grid=[0.5, 0.05]",
                          "sweep.parameters[steps.train.params.method.alpha]={choice: [1, 2]}"])
    assert doc.data["steps"]["data"]["params"]["modalities"] == [{"name": "x", "signal": 1}, {"name": "b", "signal": 3}]
    assert ("steps", "data", "params", "modalities", 0, "name") in doc.overrides  # -2 counted as errors count
    assert doc.data["sweep"]["parameters"] == {"steps.train.params.lr": {"grid": [0.5, 0.05]},
                                               "steps.train.params.method.alpha": {"choice": [1, 2]}}
    for bad, message in (("steps.data.params.modalities.2.signal=1", "'steps.data.params.modalities.2': the list has "
                                                                      "2 item(s)"),
                         ("steps.data.params.modalities.x=1", "the list has 2 item(s)"),
                         ("steps.data.params.modalities.0.name.first=1", "'steps.data.params.modalities.0.name' is "
                                                                          "not a mapping or a list"),
                         ("steps..params=1", "expected PATH=VALUE")):
        with pytest.raises(UsageError, match=re.escape(message)):
            apply_overrides(doc, [bad])


def test_grid_on_the_command_line_makes_or_extends_the_sweep_section():
    from mmflow.engine import load_workflow
    from mmflow.engine.cli import grid_overrides

    grid = grid_overrides(["steps.train.params.lr=0.1, 0.01", "steps.train.params.method=naive,pmr"], "eval.accuracy")
    sweep = load_workflow(REPO / "workflows" / "quickstart.yaml", grid).spec.sweep
    assert sweep.metric == "eval.accuracy"
    assert {p: s.grid for p, s in sweep.parameters.items()} == {"steps.train.params.lr": [0.1, 0.01],
                                                                "steps.train.params.method": ["naive", "pmr"]}
    more = grid_overrides(["steps.train.params.batch_size=32,64"], None)
    extended = load_workflow(REPO / "workflows" / "sweep_pmr.yaml", more).spec.sweep
    assert extended.parameters["steps.train.params.batch_size"].grid == [32, 64] and len(extended.parameters) == 3
    with pytest.raises(UsageError, match="expected PATH=V1,V2"):
        grid_overrides(["steps.train.params.lr"], None)
