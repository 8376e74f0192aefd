"""On-disk datasets a source step produces, and iteration over their samples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # torch and numpy load only when data is made or read
    import numpy as np
    import torch

    from .synthetic import SyntheticParams

META_FILE = "dataset.json"


SEGMENTS = "segments"  # per-segment labels of a sequence dataset (event localization)


def is_file_name(name: object) -> bool:
    """Whether a name read from a dataset's own files (a list line, a manifest) names a file in one folder:
    no separators, not `.` or `..`, so that joined to that folder it cannot reach outside it."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds: modalities (name -> per-sample shape), classes, split sizes, and for
    sequence datasets the background class of their per-segment labels."""

    modalities: dict[str, list[int]]
    num_classes: int
    splits: dict[str, int]
    background: int | None = None


@dataclass(frozen=True)
class Sample:
    """One labelled multimodal sample; sequence samples also label each segment."""

    key: str
    features: dict[str, np.ndarray]
    label: int
    segments: np.ndarray | None = None


def generate_synthetic(params: SyntheticParams, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Draw train/test splits: x_m = signal_m[y] * mean_m[y] + noise_m * N(0, I), with unit-norm means
    supported on `informative` random dimensions of each modality (all by default)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    means = {}
    for m in params.modalities:
        directions = torch.randn(params.num_classes, m.dim, generator=gen)
        if m.informative is not None:
            support = torch.zeros(m.dim)
            support[torch.randperm(m.dim, generator=gen)[:m.informative]] = 1
            directions = directions * support
        strength = torch.as_tensor(m.signal, dtype=torch.float32).expand(params.num_classes)
        means[m.name] = directions / directions.norm(dim=1, keepdim=True) * strength[:, None]
    splits = {}
    for split, size in (("train", params.train_size), ("test", params.test_size)):
        labels = torch.randint(params.num_classes, (size,), generator=gen)
        data = {"label": labels}
        for m in params.modalities:
            noise = torch.randn(size, m.dim, generator=gen) * m.noise
            data[m.name] = means[m.name][labels] + noise
        splits[split] = data
    return splits


def save_tensor_dataset(out: Path, splits: dict[str, dict[str, torch.Tensor]], num_classes: int,
                        background: int | None = None) -> None:
    """Write splits as `<split>.pt` tensor dicts (features, `label`, optional per-segment `segments`)
    plus `dataset.json`."""
    import torch

    out.mkdir(parents=True)
    first = next(iter(splits.values()))
    info = {
        "format": "tensors",
        "num_classes": num_classes,
        "modalities": {k: list(v.shape[1:]) for k, v in first.items() if k not in ("label", SEGMENTS)},
        "splits": {name: int(data["label"].shape[0]) for name, data in splits.items()},
        **({"background": background} if background is not None else {}),
    }
    for name, data in splits.items():
        torch.save(data, out / f"{name}.pt")
    (out / META_FILE).write_text(json.dumps(info, indent=2))


def read_info(path: Path) -> DatasetInfo:
    """Read a dataset's description."""
    meta = json.loads((path / META_FILE).read_text())
    return DatasetInfo(meta["modalities"], meta["num_classes"], meta["splits"], meta.get("background"))


def iter_samples(path: Path, split: str, order: list[int] | None = None) -> Iterator[Sample]:
    """Yield the samples of one split of a tensors dataset, in stored order or by the indices in `order`, one at a
    time."""
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("format") != "tensors":
        raise ValueError(f"{path / META_FILE}: unsupported dataset format {meta.get('format')!r}")
    import torch

    data = torch.load(path / f"{split}.pt", weights_only=True)
    labels = data.pop("label")
    segments = data.pop(SEGMENTS, None)
    arrays = {name: tensor.numpy() for name, tensor in data.items()}
    for i in range(labels.shape[0]) if order is None else order:
        yield Sample(f"{split}-{i:08d}", {name: a[i] for name, a in arrays.items()}, int(labels[i]),
                     None if segments is None else segments[i].numpy())
