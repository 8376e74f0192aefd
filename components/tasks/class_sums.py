"""Per-class embedding sums over training batches: the raw material of class prototypes."""

from __future__ import annotations

import itertools
from typing import Iterable

import torch

from mmflow.engine import TrainSession

from ..balance.base import ClassSums
from ..data.shards import ShardReader
from ..models.batch_statistics import batch_statistics
from ..models.multimodal import MultimodalClassifier

_SUBSET_EPOCH_OFFSET = 1_000_003
KEPT_BYTES = 256 * 2**20  # at most this much of an epoch's batches is kept for the next epoch's prototypes

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


class KeptBatches:
    """The inputs of every `every`-th batch of an epoch (a random share of the training set), kept for the next
    epoch's prototype pass while they fit in KEPT_BYTES (`batches` is None once they do not)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.batches: list[Batch] | None = []
        self._bytes = 0

    def offer(self, step: int, features: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Keep batch `step` of the epoch if it is one of the share and there is room."""
        if self.batches is None or step % self.every:
            return
        self.batches.append((features, labels))
        self._bytes += sum(x.numel() * x.element_size() for x in (*features.values(), labels))
        if self._bytes > KEPT_BYTES:
            self.batches = None  # too large to hold: the pass reads its batches


def kept_batches(reader: ShardReader, epoch: int, batch_size: int, every: int) -> list[Batch] | None:
    """What KeptBatches held after `epoch`, read again (a run resumed after it)."""
    kept = KeptBatches(every)
    for step, (features, labels) in enumerate(reader.batches(epoch, batch_size)):
        kept.offer(step, features, labels)
    return kept.batches


@torch.no_grad()
def class_sums(model: MultimodalClassifier, batches: Iterable[Batch],
               num_classes: int, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-class sums of each modality's embeddings and per-class sample counts over `batches`."""
    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros(num_classes, device=device)
    for features, labels in batches:
        labels = labels.to(device).reshape(-1)
        counts += torch.bincount(labels, minlength=num_classes)
        for m, z in model({m: x.to(device) for m, x in features.items()}).embeddings.items():
            sums.setdefault(m, torch.zeros(num_classes, z.shape[1], device=device)).index_add_(0, labels, z)
    return sums, counts


def add_class_sums(found: ClassSums | None, embeddings: dict[str, torch.Tensor], labels: torch.Tensor,
                   num_classes: int) -> ClassSums:
    """`found` (None: zeros) plus one batch's per-class sums of each modality's embeddings (detached) and counts."""
    if found is None:
        found = ClassSums({m: torch.zeros(num_classes, z.shape[1], device=z.device) for m, z in embeddings.items()},
                          torch.zeros(num_classes, device=labels.device))
    found.counts += torch.bincount(labels, minlength=num_classes)
    for m, z in embeddings.items():
        found.sums[m].index_add_(0, labels, z.detach())
    return found


def subset_class_sums(model: MultimodalClassifier, reader: ShardReader, epoch: int, fraction: float,
                      batch_size: int, session: TrainSession) -> ClassSums:
    """pass_class_sums over a random `fraction` of training batches, read from the shards."""
    take = max(1, round(fraction * reader.steps_per_epoch(batch_size)))
    # a differently seeded pass: its first batches are a random subset of the training set
    subset = itertools.islice(reader.batches(_SUBSET_EPOCH_OFFSET + epoch, batch_size), take)
    return pass_class_sums(model, subset, reader.manifest["num_classes"], session)


def pass_class_sums(model: MultimodalClassifier, batches: Iterable[Batch], num_classes: int,
                    session: TrainSession) -> ClassSums:
    """class_sums over training `batches`, summed over all ranks, with batch statistics.

    The prototypes are compared with training-step embeddings (PCE, OGM-GE's scores, the diagnostics), so
    they are computed the same way: with few steps an epoch, BatchNorm's running statistics lag the weights
    and eval-mode prototypes land far from every training embedding.
    """
    with batch_statistics(model):
        sums, counts = class_sums(model, batches, num_classes, session.device)
    for m in sums:
        session.all_reduce_sum(sums[m])
    return ClassSums(sums, session.all_reduce_sum(counts))
