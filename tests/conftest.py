"""Shared fixtures: writing workflow files and running the CLI in-process."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Iterator

import pytest

from mmflow.engine.cli import main

from . import plugin_components  # noqa: F401  (registers test.* components)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder: a run's default runs root (./runs) is the test's, so no test
    reuses another's cached steps or writes into the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def write_workflow(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write dedented YAML text to tmp_path/<name> and return its path."""

    def write(text: str, name: str = "wf.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str, str]]:
    """Run `mmflow ARGS` in-process; return (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            status = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            status = exc.code
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def s3_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An S3 bucket served by moto on localhost; yields its URI for a workflow's `storage`.

    Credentials go through the environment, so subprocesses and Ray workers reach it too.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="mmflow")
    yield f"s3://mmflow/runs?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    server.stop()


@pytest.fixture
def opened_readers(monkeypatch: pytest.MonkeyPatch) -> Callable[[object], list[dict]]:
    """Make a component module's ShardReader record the options each reader is opened with; returns the list."""

    def patch(module: object) -> list[dict]:
        opened: list[dict] = []
        reader = module.ShardReader

        class Recording(reader):  # type: ignore[misc, valid-type]
            def __init__(self, folder, **options):
                opened.append(options)
                super().__init__(folder, **options)

        monkeypatch.setattr(module, "ShardReader", Recording)
        return opened

    return patch


@pytest.fixture
def on_another_node(monkeypatch: pytest.MonkeyPatch) -> Callable[[object], None]:
    """Make a component module's tasks write as on a node without the run directory (no shared filesystem)."""
    from mmflow.engine import nodes

    def patch(module: object) -> None:
        monkeypatch.setattr(module, "node_folder", lambda folder: nodes.node_folder(folder / "absent-on-this-node"))

    return patch


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, with one sentence per problem, when the environment drifted from the install
    (e.g. a torchaudio whose native library does not load beside torch fails dozens of tests)."""
    from mmflow.engine.doctor import requirement_findings

    problems = [f.text for f in requirement_findings() if not f.ok]
    if problems:
        pytest.exit("the environment is not the one mmflow needs: " + "; ".join(problems), returncode=4)


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str, str, str], None]]:
    """Install a one-module distribution on sys.path (what `pip install` leaves behind): `install(module, source,
    group, "name = module:Class")` registers the class under the entry-point group."""
    import sys

    installed = []

    def install(module: str, source: str, group: str, entry: str) -> None:
        site = tmp_path / f"site-{module}"
        dist = site / f"{module}-0.1.dist-info"
        dist.mkdir(parents=True)
        (site / f"{module}.py").write_text(source)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")
        monkeypatch.syspath_prepend(str(site))
        installed.append(module)

    yield install
    for module in installed:
        sys.modules.pop(module, None)
