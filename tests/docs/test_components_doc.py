"""docs/components.md's worked example, installed as a plugin through its entry point, runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib

import pytest

from mmflow.engine.doctor import DISTRIBUTION

from ..conftest import REPO

BLOCK = re.compile(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", re.S)


@pytest.fixture
def plugin(tmp_path):
    """Lay the doc's files out as an installed distribution (what `pip install` leaves behind)."""
    files = dict(BLOCK.findall((REPO / "docs" / "components.md").read_text()))
    assert set(files) == {"my_mmflow_plugin/components.py", "my_mmflow_plugin/training.py", "pyproject.toml",
                          "balance.yaml", "probe.yaml"}
    site = tmp_path / "site"
    (site / "my_mmflow_plugin").mkdir(parents=True)
    (site / "my_mmflow_plugin" / "__init__.py").write_text("")
    for module in ("components.py", "training.py"):
        (site / "my_mmflow_plugin" / module).write_text(files[f"my_mmflow_plugin/{module}"])
    project = tomllib.loads(files["pyproject.toml"])
    assert project["project"]["dependencies"] == [DISTRIBUTION]  # PyPI's `mmflow` is another project
    dist = site / "my_mmflow_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['project']['name']}\nVersion: 0.1.0\n")
    points = project["project"]["entry-points"]["mmflow.components"]
    (dist / "entry_points.txt").write_text(
        "[mmflow.components]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    for name in ("balance.yaml", "probe.yaml"):
        (tmp_path / name).write_text(files[name])
    env = {**os.environ, "PYTHONPATH": str(site)}
    return tmp_path / "balance.yaml", env


def mmflow(*args, env, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "mmflow.engine.cli", *map(str, args)],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_plugin_is_discovered_through_its_entry_point(plugin, tmp_path):
    workflow, env = plugin
    listed = mmflow("components", "report.class_balance", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (described,) = json.loads(listed.stdout)
    assert described["inputs"] == {"shards": "shards"} and described["params"][0]["name"] == "warn_ratio"
    # without the plugin on the path the name is unknown
    missing = mmflow("validate", workflow, env={**env, "PYTHONPATH": ""}, cwd=tmp_path)
    assert missing.returncode == 2 and "unknown component 'report.class_balance'" in missing.stderr


def test_worked_example_runs_and_reports(plugin, tmp_path):
    workflow, env = plugin
    bad = mmflow("validate", workflow, "--set", "steps.balance.params.warn_ratio=0.5", env=env, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (f"{workflow} (--set steps.balance.params.warn_ratio=0.5): "
                                  "steps.balance.params.warn_ratio: Input should be greater than 1 (got 0.5)")
    done = mmflow("run", workflow, "--run-dir", tmp_path / "run", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "run" / "balance" / "metrics.json").read_text())
    report = json.loads((tmp_path / "run" / "balance" / "outputs" / "report").read_text())
    assert metrics["num_samples"] == 400 == sum(report["histogram"])
    assert metrics["imbalance_ratio"] == pytest.approx(max(report["histogram"]) / min(report["histogram"]))


def test_worked_training_example_trains_inline_and_resumes_from_its_checkpoint(plugin, tmp_path):
    _, env = plugin
    done = mmflow("run", tmp_path / "probe.yaml", "--run-dir", tmp_path / "run", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    probe = tmp_path / "run" / "probe"
    history = json.loads((probe / "outputs" / "probe" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert history[-1]["accuracy"] > history[0]["accuracy"] and history[-1]["accuracy"] > 0.5  # 4 classes
    assert json.loads((probe / "metrics.json").read_text()) == {"epochs": 4, "accuracy": history[-1]["accuracy"]}
    # two epochs more, continuing from the checkpoint the first attempt left (as `mmflow run --resume` does)
    more = mmflow("run", tmp_path / "probe.yaml", "--run-dir", tmp_path / "run", "--set", "steps.probe.params.epochs=6",
                  env=env, cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    longer = json.loads((probe / "outputs" / "probe" / "history.json").read_text())
    assert longer[:4] == history and [h["epoch"] for h in longer] == list(range(6))


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_worked_training_example_trains_on_two_ray_workers(plugin, tmp_path):
    _, env = plugin
    done = mmflow("run", tmp_path / "probe.yaml", "--run-dir", tmp_path / "run", "--set", "executor=ray", env=env,
                  cwd=tmp_path, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Ray Train: 2 worker(s)" in done.stderr
    history = json.loads((tmp_path / "run" / "probe" / "outputs" / "probe" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3] and history[-1]["accuracy"] > 0.5
    assert (tmp_path / "run" / "probe" / "outputs" / "probe" / "probe.pt").is_file()
