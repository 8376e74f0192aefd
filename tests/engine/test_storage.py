"""Storage through pyarrow filesystems (a folder, an S3 bucket served by moto): copies, the run's
mirror, and finishing a run on 'another machine' from its storage URI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.fs
import pytest

from mmflow.engine import InlineExecutor
from mmflow.engine.inline_executor import InlineSession
from mmflow.engine.storage import Storage

WORKFLOW = """
name: stored
executor: inline
storage: STORAGE
steps:
  data: {component: data.synthetic, params: {train_size: 192, test_size: 32}}
  shard:
    component: data.shard
    inputs: {dataset: "${steps.data.outputs.dataset}"}
    params: {samples_per_shard: 64}
  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {epochs: 3, batch_size: 32}
"""


@pytest.fixture(params=["folder", "s3"])
def location(request, tmp_path) -> str:
    return str(tmp_path / "store") if request.param == "folder" else request.getfixturevalue("s3_storage")


def test_a_folder_goes_up_and_comes_back(location, tmp_path):
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_text("a")
    (local / "sub" / "b.bin").write_bytes(b"\0\1")
    store = Storage.open(location).joinpath("wf", "run")
    store.joinpath("step").upload(local)
    assert store.folders() == ["step"] and store.joinpath("step").folders() == ["sub"]
    store.joinpath("step", "a.txt").write_text("changed")
    store.joinpath("step").download(tmp_path / "back")
    assert (tmp_path / "back" / "a.txt").read_text() == "changed"
    assert (tmp_path / "back" / "sub" / "b.bin").read_bytes() == b"\0\1"
    store.joinpath("step").copy_to(store.joinpath("copy"))
    assert store.joinpath("copy", "sub", "b.bin").exists()
    store.joinpath("step").delete()
    assert store.folders() == ["copy"] and store.joinpath("missing", "x").read_text() is None


def test_the_file_named_last_is_copied_after_the_others(tmp_path, monkeypatch):
    for name in ("z.pt", "mmflow_history.json", "a.pt"):
        (tmp_path / "ckpt").mkdir(exist_ok=True)
        (tmp_path / "ckpt" / name).write_text(name)
    copied = []
    copy = pyarrow.fs.copy_files
    monkeypatch.setattr(pyarrow.fs, "copy_files", lambda src, dst, **kw: (copied.append(dst.rsplit("/", 1)[1]),
                                                                           copy(src, dst, **kw)))
    Storage.open(tmp_path / "store").upload(tmp_path / "ckpt", last="mmflow_history.json")
    assert copied[-1] == "mmflow_history.json" and sorted(copied) == sorted(["z.pt", "mmflow_history.json", "a.pt"])


def test_a_sub_folder_keeps_the_uri_options():
    store = Storage.open("s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1")
    assert store.joinpath("wf", "run").uri == "s3://bucket/prefix/wf/run?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1"
    assert store.joinpath("wf").path == "bucket/prefix/wf"


def test_a_storage_that_is_no_filesystem_is_an_error_at_its_line(write_workflow, cli):
    path = write_workflow(WORKFLOW.replace("STORAGE", "ftp://host/runs"))
    status, _, err = cli("validate", path)
    assert status == 2 and re.search(r"wf\.yaml:3: storage: .*'ftp://' is not a pyarrow filesystem", err)


def test_an_unreachable_store_is_one_line_naming_it(write_workflow, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.chdir(tmp_path)
    uri = "s3://mmflow/runs?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    status, _, err = cli("run", write_workflow(WORKFLOW.replace("STORAGE", f"'{uri}'")))
    assert status == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("storage s3://mmflow/runs/stored/")
    assert "Could not connect" in err and not (tmp_path / "runs").exists()  # nothing written


def test_a_dry_run_contacts_no_store(write_workflow, cli, tmp_path, monkeypatch):
    def contacted(*args):
        raise AssertionError("a plan must not open the storage (an s3:// URI without region= looks it up)")

    monkeypatch.setattr(Storage, "open", contacted)
    status, out, err = cli("run", write_workflow(WORKFLOW.replace("STORAGE", "s3://bucket/mmflow")), "--dry-run",
                           "--runs-root", tmp_path / "runs")
    assert status == 0, err
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["run", "data"], ["run", "shard"], ["run", "train"]]


def test_a_crashed_run_is_finished_on_another_machine_from_its_storage(location, write_workflow, cli, tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = InlineSession._report

    def crash_after_second_epoch(self, metrics, checkpoint_dir):
        report(self, metrics, checkpoint_dir)
        if metrics["epoch"] == 1:
            raise RuntimeError("the machine went away")

    monkeypatch.setattr(InlineSession, "_report", crash_after_second_epoch)
    path = write_workflow(WORKFLOW.replace("STORAGE", f"'{location}'"))
    status, _, err = cli("run", path, "--runs-root", tmp_path / "first")
    assert status == 1 and "the machine went away" in err
    (run_uri,) = re.findall(r"on another machine: mmflow run --resume '(.+)'", err)
    stored = Storage.open(run_uri)
    assert {"data", "shard", "train"} <= set(stored.folders())
    assert json.loads(stored.joinpath("shard", "status.json").read_text())["state"] == "done"
    assert stored.joinpath("shard", "outputs", "train", "manifest.json").exists()
    assert not stored.joinpath("train", "status.json").exists()  # only finished steps are copied
    assert stored.joinpath("train", "train", "inline").folders() == ["checkpoint_000002"]

    monkeypatch.setattr(InlineSession, "_report", report)
    status, out, err = cli("run", "--resume", run_uri, "--runs-root", tmp_path / "second")
    assert status == 0, err
    assert out.count("kept") == 2  # data and shard came from the storage, not re-run
    (run_dir,) = (tmp_path / "second" / "stored").iterdir()
    history = json.loads((run_dir / "train" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2] and history[2]["resumed_at_epoch"] == 2
    assert json.loads(stored.joinpath("train", "status.json").read_text())["state"] == "done"
    assert json.loads(stored.joinpath("run.json").read_text())["state"] == "done"


def test_a_node_without_the_run_directory_fetches_the_step_inputs_from_the_storage(location, write_workflow, cli,
                                                                                   tmp_path, monkeypatch):
    given = {}
    train = InlineExecutor.train

    def remember_inputs(self, fn, config, job):
        given["inputs"] = job.inputs
        return train(self, fn, config, job)

    monkeypatch.setattr(InlineExecutor, "train", remember_inputs)
    status, _, err = cli("run", write_workflow(WORKFLOW.replace("STORAGE", f"'{location}'")),
                         "--runs-root", tmp_path / "runs")
    assert status == 0, err
    inputs = given["inputs"]
    assert inputs.paths == ("shard/outputs/train",)
    shards = Path(inputs.run_dir, "shard", "outputs", "train")
    written = {p.name: p.read_bytes() for p in shards.iterdir()}
    shutil.rmtree(inputs.run_dir)  # what a worker on another node sees without a shared filesystem
    inputs.ensure_local()
    assert {p.name: p.read_bytes() for p in shards.iterdir()} == written
    assert [p.name for p in shards.parent.iterdir()] == ["train"]  # no partial copy left beside it

