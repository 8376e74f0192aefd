"""data.shard on media datasets: raw and array storage, manifests, decoding, and bad media."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from mmflow.components.data import media_shards
from mmflow.components.data.shards import ShardReader, load_manifest
from mmflow.engine import InputDataError

from .media_trees import EMOTIONS, cremad_tree

TINY = """
name: media
executor: inline
steps:
  data:
    component: data.cremad
    params: {{root: "{root}", val_fraction: 0.1}}
  shard:
    component: data.shard
    inputs: {{dataset: "${{steps.data.outputs.dataset}}"}}
    params:
      samples_per_shard: 5
      store: {store}
      on_error: {on_error}
      audio: {{preset: null, sample_rate: 8000, duration: 1.0, features: stft, n_fft: 128, hop: 64}}
      visual: {{num_frames: 2, size: 24, store_size: 28}}
"""


def shard(cli, write_workflow, tmp_path, root, store="raw", on_error="fail", run="run"):
    """Read and shard `root` inline; return (status, stderr, shard step folder)."""
    wf = write_workflow(TINY.format(root=root, store=store, on_error=on_error))
    status, out, err = cli("run", wf, "--run-dir", tmp_path / run)
    return status, out + err, tmp_path / run / "shard"


@pytest.mark.parametrize("store", ["raw", "arrays"])
def test_media_become_shards_with_counts_sizes_and_digests(cli, write_workflow, tmp_path, store):
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=4)
    status, log, step = shard(cli, write_workflow, tmp_path, root, store)
    assert status == 0, log
    train = load_manifest(step / "outputs" / "train")
    assert train["num_samples"] == 22 and len(train["shards"]) == 5 and train["classes"] == EMOTIONS
    assert sum(train["class_histogram"]) == 22
    assert [sum(s["class_counts"]) for s in train["shards"]] == [s["count"] for s in train["shards"]]
    for entry in train["shards"]:
        data = (step / "outputs" / "train" / entry["name"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert train["modalities"] == {"audio": {"shape": [65, 126], "dtype": "float32"},
                                   "visual": {"shape": [2, 3, 24, 24], "dtype": "float32"}}
    assert train["media"]["store"] == store
    metrics = json.loads((step / "metrics.json").read_text())
    assert (metrics["train_samples"], metrics["val_samples"], metrics["test_samples"]) == (22, 2, 6)
    features, labels = next(ShardReader(step / "outputs" / "test", shuffle=False).batches(0, 6))
    assert features["audio"].shape == (6, 65, 126) and features["visual"].shape == (6, 2, 3, 24, 24)
    assert sorted(labels.tolist()) == list(range(6))
    augmented, _ = next(ShardReader(step / "outputs" / "train", augment=True).batches(0, 4))
    assert augmented["visual"].shape == (4, 2, 3, 24, 24) and np.isfinite(augmented["visual"].numpy()).all()


def test_shards_written_on_a_node_without_the_run_folder_come_back_identical(cli, write_workflow, tmp_path,
                                                                           on_another_node):
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=2)
    status, log, here = shard(cli, write_workflow, tmp_path, root, run="here")
    assert status == 0, log
    on_another_node(media_shards)
    status, log, elsewhere = shard(cli, write_workflow, tmp_path, root, run="elsewhere")
    assert status == 0, log
    for split in ("train", "val", "test"):
        assert load_manifest(elsewhere / "outputs" / split) == load_manifest(here / "outputs" / split)
        assert sorted(p.name for p in (elsewhere / "outputs" / split).iterdir()) == \
            sorted(p.name for p in (here / "outputs" / split).iterdir())


def test_raw_and_arrays_give_the_same_audio_features(cli, write_workflow, tmp_path):
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=1)
    runs = {}
    for store in ("raw", "arrays"):
        status, log, step = shard(cli, write_workflow, tmp_path, root, store, run=store)
        assert status == 0, log
        reader = ShardReader(step / "outputs" / "test", shuffle=False)
        runs[store] = {s["__key__"]: s["audio.npy"] for s in reader.samples(0)}
    for key, audio in runs["raw"].items():
        np.testing.assert_allclose(audio, runs["arrays"][key], atol=1e-5)


def corrupt(root, case):
    """Break one test clip of a CREMA-D tree; return the file the error must name."""
    wav = root / "AudioWAV" / "1001_TEST_HAP_XX.wav"
    jpg = root / "Image-01-FPS" / "1001_TEST_SAD_XX" / "000002.jpg"
    if case == "missing wav":
        wav.unlink()
        return wav
    if case == "unreadable wav":
        wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
        return wav
    jpg.write_bytes(jpg.read_bytes()[:200])  # a truncated JPEG
    return jpg


@pytest.mark.parametrize("case", ["missing wav", "unreadable wav", "corrupt jpg"])
def test_bad_media_fail_naming_the_file_and_leave_nothing_behind(cli, write_workflow, tmp_path, case):
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=1)
    bad = corrupt(root, case)
    status, log, step = shard(cli, write_workflow, tmp_path, root)
    assert status == 2 and str(bad) in log and "Traceback" not in log
    assert not (step / "outputs").exists() and not (step / ".outputs.tmp").exists()
    assert json.loads((step / "status.json").read_text())["state"] == "failed"


@pytest.mark.parametrize("case", ["missing wav", "unreadable wav", "corrupt jpg"])
def test_bad_media_are_skipped_and_counted_with_on_error_skip(cli, write_workflow, tmp_path, case):
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=1)
    bad = corrupt(root, case)
    status, log, step = shard(cli, write_workflow, tmp_path, root, on_error="skip")
    assert status == 0, log
    metrics = json.loads((step / "metrics.json").read_text())
    assert metrics["test_skipped"] == 1 and metrics["skipped_samples"] == 1 and metrics["test_samples"] == 5
    test = load_manifest(step / "outputs" / "test")
    assert len(test["skipped"]) == 1 and str(bad) in test["skipped"][0]["error"]
    assert test["num_samples"] == 5


def test_a_truncated_shard_is_named_when_read(cli, write_workflow, tmp_path):
    from .test_shards import record_as_written

    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=1)
    status, log, step = shard(cli, write_workflow, tmp_path, root, store="arrays")
    assert status == 0, log
    tar = step / "outputs" / "test" / "shard-000000.tar"
    tar.chmod(0o644)
    tar.write_bytes(tar.read_bytes()[:30_000])
    record_as_written(tar)
    with pytest.raises(InputDataError, match=f"{tar}: truncated or corrupt shard"):
        list(ShardReader(tar.parent, shuffle=False).samples(0))


def test_an_empty_split_is_refused_by_the_reader(tmp_path):
    from mmflow.components.data.shards import write_shards

    write_shards([], tmp_path / "val", 4, num_classes=2)
    with pytest.raises(InputDataError, match="no samples"):
        ShardReader(tmp_path / "val")


SKIPPING = """
name: skipping
executor: inline
steps:
  data: {component: data.synthetic, params: {train_size: 60, test_size: 20}}
  shard:
    component: data.shard
    inputs: {dataset: "${steps.data.outputs.dataset}"}
    params: {samples_per_shard: 10, shuffle: false}
  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {epochs: 2, batch_size: 16, on_error: skip, diagnostics: false}
  eval:
    component: eval.classifier
    inputs: {model: "${steps.train.outputs.model}", train: "${steps.shard.outputs.train}",
             test: "${steps.shard.outputs.test}"}
    params: {on_error: skip}
"""


def record_outputs_as_they_are(step_dir):
    """Rewrite a finished step's status so that its outputs, as they are now, are the ones it wrote."""
    from mmflow.engine.run_folder import digest_path, stat_fingerprint

    status = json.loads((step_dir / "status.json").read_text())
    outputs = {name: step_dir / "outputs" / name for name in status["outputs"]}
    status["outputs"] = {name: digest_path(path) for name, path in outputs.items()}
    status["files"] = {name: stat_fingerprint(path) for name, path in outputs.items()}
    (step_dir / "status.json").write_text(json.dumps(status))


def test_training_and_evaluation_skip_and_count_a_truncated_shard(cli, write_workflow, tmp_path):
    from .test_shards import truncate_at_sample

    wf = write_workflow(SKIPPING)
    status, out, err = cli("run", wf, "--runs-root", tmp_path / "runs", "--set", "steps.train.params.epochs=1")
    assert status == 0, out + err
    shards = next((tmp_path / "runs" / "skipping").glob("*/shard/outputs"))
    truncate_at_sample(shards / "train" / "shard-000002.tar", 3, inside=False)
    truncate_at_sample(shards / "test" / "shard-000001.tar", 3, inside=True)  # 3 of 10 test samples readable
    record_outputs_as_they_are(shards.parent)  # shards cut short as they were written, not after
    run = tmp_path / "runs" / "skipping" / "again"
    status, out, err = cli("run", wf, "--runs-root", tmp_path / "runs", "--run-dir", run)
    assert status == 0, out + err
    history = json.loads((run / "train" / "metrics.json").read_text())["history"]
    assert [epoch["corrupt_shard_reads"] for epoch in history] == [1, 1]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    # each readable test sample scored once: no padding with repeats, and the count says so
    assert (metrics["test_samples"], metrics["unreadable_test_samples"], metrics["corrupt_shard_reads"]) == (13, 7, 2)


def test_a_shard_changed_in_place_is_not_trained_on(cli, write_workflow, tmp_path):
    import os

    from .test_shards import overwrite_label

    wf = write_workflow(SKIPPING)
    run = tmp_path / "runs" / "skipping"
    assert cli("run", wf, "--runs-root", tmp_path / "runs", "--run-dir", run / "first",
               "--set", "steps.train.params.epochs=1")[0] == 0
    tar = run / "first" / "shard" / "outputs" / "train" / "shard-000002.tar"
    before = tar.stat()
    overwrite_label(tar, json.loads((tar.parent / "manifest.json").read_text())["shards"][2]["keys"][0], 0)
    os.utime(tar, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same size and mtime: the run reuses the step
    status, _, err = cli("run", wf, "--runs-root", tmp_path / "runs", "--run-dir", run / "failing",
                         "--set", "steps.train.params.on_error=fail")
    reused = run / "failing" / "shard" / "outputs" / "train" / "shard-000002.tar"
    assert status == 2 and f"{reused}: the shard changed after it was written" in err
    status, out, err = cli("run", wf, "--runs-root", tmp_path / "runs", "--run-dir", run / "skipping")
    assert status == 0, err
    history = json.loads((run / "skipping" / "train" / "metrics.json").read_text())["history"]
    assert [epoch["corrupt_shard_reads"] for epoch in history] == [1, 1]
