"""`mmflow doctor` and `mmflow --version`: what this environment can do, one line per check."""

from __future__ import annotations

import importlib.metadata

from mmflow.engine.doctor import DISTRIBUTION
from mmflow.engine.registry import REGISTRY


def test_version_names_the_installed_distribution(cli):
    status, out, _ = cli("--version")
    assert status == 0
    assert out.strip() == f"mmflow {importlib.metadata.version(DISTRIBUTION)} ({DISTRIBUTION})"


def test_doctor_decodes_audio_and_video_here(cli):
    status, out, _ = cli("doctor")
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("mmflow ") and "Python" in lines[0]
    for needed in ("torch ", "torchaudio ", "ray ", "audio decoding: soundfile", "video decoding: PyAV"):
        assert any(line.startswith("ok") and needed in line for line in lines), needed
    assert any("CUDA" in line for line in lines)
    assert lines[-1] == "everything mmflow needs works here"


def test_a_failing_check_is_one_line_and_exit_status_1(cli, monkeypatch):
    def broken() -> str:
        raise OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace\nmore")

    monkeypatch.setitem(REGISTRY._checks, "audio decoding", broken)
    status, out, _ = cli("doctor")
    assert status == 1
    assert ("FAIL  audio decoding: OSError: libtorchaudio.so: undefined symbol: "
            "torch_exception_get_what_without_backtrace") in out.splitlines()
    assert out.splitlines()[-1] == "1 problem(s) found"
