"""Shipped workflows: installed as package data, listed, copied to edit, and run by name from any folder."""

from __future__ import annotations

import pytest
import yaml

from mmflow.engine.shipped import shipped_workflows

from ..conftest import REPO

IN_REPO = sorted(p.stem for p in (REPO / "workflows").glob("*.yaml"))


def test_every_workflow_of_the_repository_is_shipped_with_a_one_line_description():
    shipped = shipped_workflows()
    assert list(shipped) == IN_REPO
    for name, path in shipped.items():
        data = yaml.safe_load(path.read_text())
        assert data["name"] == name, f"{path}: its name is its file name, so runs/<name>/ is where it lands"
        assert isinstance(data.get("description"), str) and 20 < len(data["description"]) < 140, path


def test_workflows_lists_each_with_its_description(cli):
    status, out, _ = cli("workflows")
    assert status == 0
    lines = dict(line.split(None, 1) for line in out.splitlines()[:len(IN_REPO)])
    assert list(lines) == IN_REPO
    assert lines["quickstart"].startswith("Synthetic audio/visual data where audio dominates")


def test_a_shipped_workflow_runs_by_name_from_any_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, _ = cli("validate", "quickstart")
    assert status == 0 and "quickstart.yaml: ok (4 steps" in out
    status, out, _ = cli("run", "quickstart", "--dry-run")
    assert status == 0 and "plan for quickstart" in out and not (tmp_path / "runs").exists()
    status, _, err = cli("validate", "quickstrt")
    assert status == 2 and "no shipped workflow of that name (did you mean 'quickstart'?)" in err
    status, _, err = cli("validate", "quickstart.yaml")  # a path: the file must be here
    assert status == 2 and "quickstart.yaml: cannot read file" in err


def test_copy_writes_a_workflow_to_edit_and_keeps_an_existing_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, _ = cli("workflows", "copy", "quickstart")
    assert status == 0 and "wrote quickstart.yaml" in out
    assert (tmp_path / "quickstart.yaml").read_text() == (REPO / "workflows" / "quickstart.yaml").read_text()
    (tmp_path / "quickstart.yaml").write_text("mine")
    status, _, err = cli("workflows", "copy", "quickstart", ".")  # a folder: NAME.yaml inside it
    assert status == 2 and "quickstart.yaml exists" in err and "--force" in err
    assert (tmp_path / "quickstart.yaml").read_text() == "mine"
    assert cli("workflows", "copy", "quickstart", ".", "--force")[0] == 0
    assert (tmp_path / "quickstart.yaml").read_text() != "mine"
    status, _, _ = cli("workflows", "copy", "gblend_online", tmp_path / "g.yaml")
    assert status == 0 and cli("validate", tmp_path / "g.yaml")[0] == 0
    status, _, err = cli("workflows", "copy", "quikstart")
    assert status == 2 and "did you mean 'quickstart'" in err


COMMANDS = ["run", "sweep", "validate", "graph", "report", "components", "workflows", "doctor"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_every_command_with_examples(cli, command):
    status, out, _ = cli("--help")
    assert status == 0 and f"\n    {command}" in out and "examples:" in out and "mmflow run quickstart" in out
