"""`mmflow doctor`: whether this environment is the one mmflow was installed for, and what it can do.

Checks the installed version of every dependency against the distribution's own requirements
(exact pins for torch, torchvision and torchaudio: a patch release of one of them alone may not
load beside the others), reports Ray and CUDA, and runs the self-checks components register
(`mmflow.engine.registry.self_check`), such as decoding audio and video.
"""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass

from packaging.requirements import Requirement

from .registry import REGISTRY, Registry

DISTRIBUTION = "mmflow-ray"  # the PyPI name; `mmflow` there is OpenMMLab's optical-flow toolbox


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report."""

    ok: bool
    text: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.text}"


def version() -> str:
    """mmflow's installed version, or 'unknown' when it runs from a source tree without metadata."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def requirement_findings(extras: tuple[str, ...] = ()) -> list[Finding]:
    """Each dependency of the installed distribution (and of `extras`): installed at a version it allows?"""
    try:
        required = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return [Finding(False, f"{DISTRIBUTION} is not installed: pip install -e . (in the source tree)")]
    findings = []
    for text in required:
        requirement = Requirement(text)
        applies = [requirement.marker is None or requirement.marker.evaluate({"extra": e}) for e in ("", *extras)]
        if not any(applies):
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            findings.append(Finding(False, f"{requirement.name} is missing: pip install '{_bare(requirement)}'"))
            continue
        if requirement.specifier.contains(installed, prereleases=True):
            findings.append(Finding(True, f"{requirement.name} {installed}"))
        else:
            findings.append(Finding(False, f"{requirement.name} {installed} is installed but {DISTRIBUTION} needs "
                                           f"{_bare(requirement)}: pip install '{_bare(requirement)}'"))
    return findings


def _bare(requirement: Requirement) -> str:
    return f"{requirement.name}{requirement.specifier}"


def device_finding() -> Finding:
    """Whether torch sees CUDA devices (a CPU-only machine is fine: training runs on gloo)."""
    import torch

    if not torch.cuda.is_available():
        return Finding(True, f"torch {torch.__version__}: CUDA not available, training runs on the CPU")
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return Finding(True, f"torch {torch.__version__}: CUDA {torch.version.cuda}, {torch.cuda.device_count()} "
                         f"device(s): {names}")


def check_findings(registry: Registry = REGISTRY) -> list[Finding]:
    """Run every registered self-check; a check that raises is a failure with its first line."""
    findings = []
    for name, check in registry.checks().items():
        try:
            findings.append(Finding(True, f"{name}: {check()}"))
        except Exception as exc:  # a broken decoder is a finding, not a crash of the doctor
            reason = (str(exc) or type(exc).__name__).splitlines()[0]
            findings.append(Finding(False, f"{name}: {type(exc).__name__}: {reason}"))
    return findings


def diagnose() -> tuple[str, list[Finding]]:
    """The doctor's header line and findings."""
    header = (f"mmflow {version()} ({DISTRIBUTION}), Python {platform.python_version()} "
              f"on {platform.system()} {platform.machine()}")
    return header, [*requirement_findings(), device_finding(), *check_findings()]
