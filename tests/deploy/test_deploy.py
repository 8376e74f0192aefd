"""deploy/: the YAML files parse and say what they should; the image and runtime_env match pyproject."""

from __future__ import annotations

import re

import pytest
import yaml

from ..conftest import REPO

tomllib = pytest.importorskip("tomllib")
DEPLOY = REPO / "deploy"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def ray_pin() -> str:
    pin = next(d for d in PYPROJECT["dependencies"] if d.startswith("ray["))
    return re.search(r"==(\d+\.\d+)", pin).group(1)  # e.g. 2.60


@pytest.mark.parametrize("name", ["cluster.yaml", "rayjob.yaml", "runtime_env.yaml"])
def test_every_yaml_file_parses(name):
    assert isinstance(yaml.safe_load((DEPLOY / name).read_text()), dict)


def test_the_cluster_has_a_cpu_head_and_gpu_workers_running_the_image():
    cluster = yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"]["GPU"] == 0
    assert any(t["resources"].get("GPU", 0) > 0 and t["max_workers"] > 0 for t in types.values())
    assert cluster["docker"]["image"].split("/")[-1].startswith("mmflow:")


def test_the_rayjob_runs_a_workflow_on_a_matching_ray():
    job = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["entrypoint"].startswith("mmflow run workflows/") and "--address auto" in job["spec"]["entrypoint"]
    workflow = job["spec"]["entrypoint"].split()[2]
    assert (REPO / workflow).is_file()
    assert job["spec"]["rayClusterSpec"]["rayVersion"].startswith(ray_pin() + ".")
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert any("nvidia.com/gpu" in c["resources"]["limits"] for w in workers for c in w["template"]["spec"]["containers"])


def test_the_image_matches_pyproject():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+)\.\d+-py3(\d+)", dockerfile, re.M)
    assert base, "the image must build on a rayproject/ray release tag with its Python version"
    assert base.group(1) == ray_pin()
    minimum = int(re.search(r">=\s*3\.(\d+)", PYPROJECT["requires-python"]).group(1))
    assert int(base.group(2)) >= minimum
    assert "pip install --no-cache-dir -c constraints.txt -e ." in dockerfile  # versions come from the lock
    for folder in ("engine", "components", "workflows"):
        assert f"COPY --chown=ray:users {folder}" in dockerfile


def test_the_runtime_env_installs_pyprojects_dependencies_and_wheel():
    env = yaml.safe_load((DEPLOY / "runtime_env.yaml").read_text())
    assert sorted(env["pip"]) == sorted(PYPROJECT["dependencies"])
    wheel = f"{PYPROJECT['name'].replace('-', '_')}-{PYPROJECT['version']}-py3-none-any.whl"  # what `pip wheel` names it
    assert env["py_modules"] == [f"dist/{wheel}"]
