"""A small model folder with train and test shards, for eval.classifier's measures; a memory spike, for the
measure of peak memory."""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Callable

import pytest
import torch


@pytest.fixture
def evaluated(tmp_path: Path) -> Path:
    """tmp_path holding `model` (an untrained 2-modality concat MLP classifier), `train` and `test` shards (40
    samples, 4 equal classes; modality a carries the label, b is noise)."""
    from mmflow.components.data.datasets import iter_samples, save_tensor_dataset
    from mmflow.components.data.shards import write_shards
    from mmflow.components.models.build import build_classifier, save_classifier

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    data = {"label": labels, "a": torch.randn(40, 5, generator=gen) + labels[:, None],
            "b": torch.randn(40, 3, generator=gen)}
    save_tensor_dataset(tmp_path / "ds", {"train": data, "test": data}, num_classes=4)
    for split in ("train", "test"):
        write_shards(iter_samples(tmp_path / "ds", split), tmp_path / split, 16, num_classes=4)
    architecture = {"modalities": {"a": [5], "b": [3]}, "num_classes": 4, "hidden": [8], "embedding_dim": 6,
                    "fusion": "concat"}
    torch.manual_seed(0)
    save_classifier(tmp_path / "model", build_classifier(architecture), architecture)
    return tmp_path


@pytest.fixture
def memory_spike() -> Callable[[int], None]:
    """Take `mib` MiB of fresh pages, write every one, and give them back to the system. A mapping of its own:
    an allocation through malloc can reuse pages the process already holds, which moves no peak."""

    def spike(mib: int) -> None:
        with mmap.mmap(-1, mib * 2**20) as block:
            for page in range(0, len(block), mmap.PAGESIZE):
                block[page] = 1

    return spike
