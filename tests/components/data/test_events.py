"""data.synthetic_events and data.ave_features: per-segment labels, AVE file layout, lazy reading."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mmflow.components.data.ave_features import AVEFeaturesParams, describe, iter_feature_samples
from mmflow.components.data.events import SyntheticEventsParams, generate_events
from mmflow.components.data.shards import ShardReader


def test_every_synthetic_video_has_one_contiguous_event_and_background_elsewhere():
    params = SyntheticEventsParams(num_classes=4, train_size=50, test_size=10, min_event=3)
    split = generate_events(params, seed=1)["train"]
    assert split["audio"].shape == (50, 10, 32) and split["visual"].shape == (50, 10, 3, 3, 32)
    for label, segments in zip(split["label"], split["segments"]):
        event = (segments != 4).nonzero().flatten()
        assert len(event) >= 3 and (event.diff() == 1).all()  # one contiguous run
        assert (segments[event] == label).all()


def write_ave_features(root, videos=12, segments=10, regions=7, visual_dim=512, classes=29, seed=0):
    """The public AVE feature files with their names, keys, shapes and dtypes (tiny or large)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "audio_feature.h5", "w") as f:
        f["avadataset"] = rng.normal(size=(videos, segments, 128)).astype(np.float32)
    with h5py.File(root / "visual_feature.h5", "w") as f:
        data = f.create_dataset("avadataset", (videos, segments, regions, regions, visual_dim), dtype=np.float32)
        for v in range(videos):  # written a video at a time: the test must not hold it all either
            data[v] = rng.normal(size=(segments, regions, regions, visual_dim)).astype(np.float32)
    labels = np.zeros((videos, segments, classes), dtype=np.float64)
    for v in range(videos):
        event = v % (classes - 1)
        labels[v, :, classes - 1] = 1
        labels[v, 2:6, classes - 1], labels[v, 2:6, event] = 0, 1
    with h5py.File(root / "labels.h5", "w") as f:
        f["avadataset"] = labels
    orders = {"train": list(range(0, videos - 4)), "val": [videos - 4, videos - 3], "test": [videos - 2, videos - 1]}
    for split, order in orders.items():
        with h5py.File(root / f"{split}_order.h5", "w") as f:
            f["order"] = np.array(order, dtype=np.int64)
    return root


def test_ave_feature_files_are_read_and_sharded_with_segment_labels(cli, write_workflow, tmp_path):
    root = write_ave_features(tmp_path / "features")
    wf = write_workflow(f"""
        name: avef
        executor: inline
        steps:
          data: {{component: data.ave_features, params: {{root: "{root}"}}}}
          shard:
            component: data.shard
            inputs: {{dataset: "${{steps.data.outputs.dataset}}"}}
            params: {{samples_per_shard: 4}}
        """)
    status, out, err = cli("run", wf, "--run-dir", tmp_path / "run")
    assert status == 0, out + err
    meta = json.loads((tmp_path / "run" / "data" / "outputs" / "dataset" / "dataset.json").read_text())
    assert meta["splits"] == {"train": 8, "val": 2, "test": 2} and meta["background"] == 28
    assert meta["modalities"] == {"audio": [10, 128], "visual": [10, 7, 7, 512]}
    reader = ShardReader(tmp_path / "run" / "shard" / "outputs" / "test", shuffle=False)
    assert reader.manifest["background"] == 28
    features, labels = next(reader.batches(0, 2))
    assert features["audio"].shape == (2, 10, 128) and features["visual"].shape == (2, 10, 7, 7, 512)
    assert labels.shape == (2, 10) and labels[:, 0].tolist() == [28, 28] and labels[:, 3].tolist() == [10, 11]


def test_missing_or_malformed_feature_files_are_named(tmp_path):
    from mmflow.engine import InputDataError

    root = write_ave_features(tmp_path / "f", videos=6, regions=2, visual_dim=4)
    (root / "val_order.h5").unlink()
    with pytest.raises(InputDataError, match="val_order.h5: not found"):
        describe(AVEFeaturesParams(root=str(root)))
    with h5py.File(root / "val_order.h5", "w") as f:
        f["order"] = np.array([99])
    with pytest.raises(InputDataError, match="video index out of range"):
        describe(AVEFeaturesParams(root=str(root)))


PEAK = """
import resource, sys
from mmflow.components.data.ave_features import AVEFeaturesParams, describe, iter_feature_samples
meta = describe(AVEFeaturesParams(root=sys.argv[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
count = sum(1 for _ in iter_feature_samples(meta, "train"))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(count, grown)
"""


def test_reading_is_lazy_peak_memory_does_not_grow_with_the_visual_file(tmp_path):
    root = write_ave_features(tmp_path / "big", videos=200)  # visual file: 200 x 10 x 7 x 7 x 512 float32 = 200 MB
    assert (root / "visual_feature.h5").stat().st_size > 190 * 2**20
    done = subprocess.run([sys.executable, "-c", PEAK, str(root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, grown_kib = map(int, done.stdout.split())
    assert count == 196 and grown_kib < 40 * 1024  # a video is 1 MB; reading all at once would add 200 MB


def test_a_split_is_iterated_in_any_order_one_video_at_a_time(tmp_path):
    root = write_ave_features(tmp_path / "f", videos=8, regions=2, visual_dim=4)
    meta = describe(AVEFeaturesParams(root=str(root)))
    keys = [s.key for s in iter_feature_samples(meta, "train", order=[3, 0])]
    assert keys == ["train-000003", "train-000000"]
