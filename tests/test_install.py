"""The install is the locked one: pyproject.toml and constraints.txt agree, and what is installed is what they say."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mmflow.engine.doctor import DISTRIBUTION, requirement_findings

from .conftest import REPO

tomllib = pytest.importorskip("tomllib")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
TRIO = ("torch", "torchvision", "torchaudio")


def locked() -> dict[str, str]:
    """constraints.txt's pins that apply to this interpreter and platform."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate():
                (pin,) = requirement.specifier
                assert pin.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
                pins[canonicalize_name(requirement.name)] = pin.version
    return pins


def project_requirements() -> list[tuple[str, Requirement]]:
    found = [("dependencies", Requirement(r)) for r in PROJECT["dependencies"]]
    for extra, requirements in PROJECT["optional-dependencies"].items():
        found += [(f"optional-dependencies.{extra}", Requirement(r)) for r in requirements]
    return found


def test_torch_torchvision_and_torchaudio_are_pinned_exactly_in_pyproject():
    pins = {r.name: r.specifier for _, r in project_requirements() if r.name in TRIO}
    assert set(pins) == set(TRIO)
    for name, specifier in pins.items():
        (pin,) = specifier
        assert pin.operator == "==" and "*" not in pin.version, f"{name}{specifier} must be an exact pin (==X.Y.Z)"


def test_every_requirement_of_pyproject_is_locked_at_a_version_it_allows():
    pins = locked()
    for where, requirement in project_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, (f"pyproject.toml {where}: {requirement} is not in constraints.txt; "
                              "refresh the lock (README.md, 'Dependencies')")
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"pyproject.toml {where}: {requirement} but constraints.txt locks {name}=={pins[name]}; refresh the lock")


def test_the_installed_packages_are_the_locked_versions():
    drifted = []
    for name, version in locked().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            drifted.append(f"{name} is locked at {version} but not installed")
            continue
        if installed.split("+")[0] != version:  # a local label (+cu130, +cpu) is the same release
            drifted.append(f"{name} {installed} is installed, the lock says {version}")
    assert not drifted, "; ".join(drifted) + " -- reinstall: pip install -c constraints.txt -e '.[dev]'"


def test_torchaudios_native_library_loads_beside_torch():
    # in a subprocess: a broken libtorchaudio must fail this test, not the interpreter running the suite
    code = "import torch, torchaudio; torch.ops._torchaudio.is_align_available(); print(torchaudio.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]


def test_the_doctor_finds_every_requirement_satisfied_and_names_a_drifted_one(monkeypatch):
    assert [str(f) for f in requirement_findings(("dev",)) if not f.ok] == []
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "2.11.1" if name == "torchaudio" else real_version(name))
    pin = next(f"{r.name}{r.specifier}" for _, r in project_requirements() if r.name == "torchaudio")
    failed = [f.text for f in requirement_findings() if not f.ok]
    assert failed == [f"torchaudio 2.11.1 is installed but {DISTRIBUTION} needs {pin}: pip install '{pin}'"]
