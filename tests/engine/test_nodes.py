"""A run directory only the driver's node has: inputs fetched from the storage, task outputs shipped back."""

from __future__ import annotations

import shutil

import pytest

from mmflow.engine.errors import StorageError
from mmflow.engine.nodes import StepInputs, node_folder, write_shipped
from mmflow.engine.storage import Storage


def test_inputs_already_on_the_node_are_not_fetched(tmp_path):
    (tmp_path / "shard" / "outputs" / "train").mkdir(parents=True)
    StepInputs(str(tmp_path), (("shard/outputs/train", "nosuchscheme://never/opened"),)).ensure_local()


def test_an_input_neither_here_nor_in_the_storage_is_named(tmp_path):
    inputs = StepInputs(str(tmp_path / "run"), (("shard/outputs/train", str(tmp_path / "store" / "shard")),))
    with pytest.raises(StorageError, match=r"run/shard/outputs/train: not on node .*, nor in the storage"):
        inputs.ensure_local()


def test_a_fetch_that_another_worker_finished_first_leaves_no_partial_copy(tmp_path, monkeypatch):
    store = tmp_path / "store" / "shard" / "outputs" / "train"
    store.mkdir(parents=True)
    (store / "manifest.json").write_text("{}")
    local = tmp_path / "run" / "shard" / "outputs" / "train"
    download = Storage.download

    def other_worker_first(self, target):
        shutil.copytree(store, local)
        download(self, target)

    monkeypatch.setattr(Storage, "download", other_worker_first)
    StepInputs(str(tmp_path / "run"), (("shard/outputs/train", str(store)),)).ensure_local()
    assert [p.name for p in local.parent.iterdir()] == ["train"] and (local / "manifest.json").exists()


def test_a_folder_this_node_has_is_written_in_place(tmp_path):
    with node_folder(tmp_path) as (folder, shipped):
        (folder / "a.tar").write_bytes(b"x")
    assert folder == tmp_path and shipped == {} and (tmp_path / "a.tar").read_bytes() == b"x"


def test_a_folder_this_node_lacks_is_written_to_a_stand_in_and_shipped(tmp_path):
    driver_folder = tmp_path / "run" / "shard" / ".outputs.tmp" / "train"
    with node_folder(driver_folder) as (folder, shipped):
        (folder / "frames" / "clip").mkdir(parents=True)
        (folder / "frames" / "clip" / "000000.jpg").write_bytes(b"jpg")
        (folder / "a.tar").write_bytes(b"tar")
    assert shipped == {"frames/clip/000000.jpg": b"jpg", "a.tar": b"tar"}
    assert not folder.exists() and not (tmp_path / "run").exists()  # stand-in removed, nothing made here
    write_shipped(driver_folder, shipped)
    assert (driver_folder / "frames" / "clip" / "000000.jpg").read_bytes() == b"jpg"
