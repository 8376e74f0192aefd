"""`data.ave_features`: the public AVE feature files (Tian et al., ECCV 2018), read lazily.

    root/audio_feature.h5    avadataset: (videos, 10, 128)          VGGish per second
    root/visual_feature.h5   avadataset: (videos, 10, 7, 7, 512)    VGG-19 pool5 per second (~4 GB)
    root/labels.h5           avadataset: (videos, 10, 29)           one-hot, the last column background
    root/train_order.h5, val_order.h5, test_order.h5   order: video indices of each split

The step checks the files and writes an index; samples are read one video at a time (h5py
slices), so memory does not grow with the visual file. `data.shard` turns them into shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pydantic import Field

from mmflow.engine import StepContext, component

from .media_dataset import RootParams, root_folder

FILES = {"audio": "audio_feature.h5", "visual": "visual_feature.h5", "labels": "labels.h5"}


class AVEFeaturesParams(RootParams):
    """Where the AVE feature files are (`root`), and their names and keys."""

    files: dict[str, str] = Field(default_factory=lambda: dict(FILES), description="audio, visual, labels -> file")
    orders: dict[str, str] = Field(
        default_factory=lambda: {"train": "train_order.h5", "val": "val_order.h5", "test": "test_order.h5"},
        description="split -> file of video indices")
    key: str = Field("avadataset", description="dataset key inside the feature and label files")
    order_key: str = Field("order", description="dataset key inside the order files")


@component("data.ave_features", params=AVEFeaturesParams, outputs={"dataset": "dataset"}, reads=root_folder)
def ave_features(ctx: StepContext, params: AVEFeaturesParams) -> dict:
    """AVE's pre-extracted audio (10 x 128) and visual (10 x 7 x 7 x 512) features with per-second labels."""
    import json

    from .datasets import META_FILE

    meta = describe(params)
    out = ctx.output("dataset")
    out.mkdir()
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    ctx.log(f"{meta['splits']} videos; audio {meta['modalities']['audio']}, visual {meta['modalities']['visual']}")
    return {f"{split}_videos": n for split, n in meta["splits"].items()}


def describe(params: AVEFeaturesParams) -> dict[str, Any]:
    """Check the files' keys, shapes and orders; the dataset index (file paths, split indices)."""
    from mmflow.engine import InputDataError

    root = Path(params.root).expanduser().resolve()
    paths = {name: root / params.files.get(name, default) for name, default in FILES.items()}
    shapes = {}
    for name, path in paths.items():
        with _open(path) as handle:
            if params.key not in handle:
                raise InputDataError(f"{path}: no dataset '{params.key}' (has {sorted(handle)})")
            shapes[name] = list(handle[params.key].shape)
    videos = shapes["labels"][0]
    if shapes["audio"][:2] != shapes["labels"][:2] or shapes["visual"][:2] != shapes["labels"][:2]:
        raise InputDataError(f"{root}: videos x segments differ: audio {shapes['audio'][:2]}, visual "
                             f"{shapes['visual'][:2]}, labels {shapes['labels'][:2]}")
    orders = {}
    for split, name in params.orders.items():
        with _open(root / name) as handle:
            if params.order_key not in handle:
                raise InputDataError(f"{root / name}: no dataset '{params.order_key}'")
            order = [int(i) for i in handle[params.order_key][()].reshape(-1)]
        if order and not 0 <= min(order) <= max(order) < videos:
            raise InputDataError(f"{root / name}: video index out of range 0..{videos - 1}")
        orders[split] = order
    classes = shapes["labels"][2]
    return {"format": "ave_features", "files": {k: str(v) for k, v in paths.items()}, "key": params.key,
            "orders": orders, "num_classes": classes, "background": classes - 1,
            "modalities": {"audio": shapes["audio"][1:], "visual": shapes["visual"][1:]},
            "splits": {split: len(order) for split, order in orders.items()}}


def iter_feature_samples(meta: dict[str, Any], split: str, order: list[int] | None = None) -> Iterator[Any]:
    """The split's videos one at a time (in `order` of split positions), read by h5py slices."""
    import h5py
    import numpy as np

    from .datasets import Sample

    indices = meta["orders"][split]
    background = meta["background"]
    with h5py.File(meta["files"]["audio"], "r") as audio, h5py.File(meta["files"]["visual"], "r") as visual, \
            h5py.File(meta["files"]["labels"], "r") as labels:
        key = meta["key"]
        for position in range(len(indices)) if order is None else order:
            video = indices[position]
            segments = np.asarray(labels[key][video]).argmax(-1)
            events = segments[segments != background]
            label = int(np.bincount(events).argmax()) if events.size else background
            yield Sample(f"{split}-{video:06d}", {"audio": np.asarray(audio[key][video], dtype=np.float32),
                                                  "visual": np.asarray(visual[key][video], dtype=np.float32)},
                         label, segments.astype(np.int64))


def _open(path: Path):
    import h5py

    from mmflow.engine import InputDataError

    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise InputDataError(f"{path}: not found") from None
    except OSError as exc:
        raise InputDataError(f"{path}: not a readable HDF5 file ({exc})") from None
