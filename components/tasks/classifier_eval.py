"""eval.classifier's measures on the test split: fused, per-modality head and per-modality prototype accuracy,
each modality's Shapley contribution, and the model's cost."""

from __future__ import annotations

from pathlib import Path

import torch

from ..balance.prototypes import update_prototypes
from ..data.shards import ShardReader
from ..models.build import load_classifier
from .class_sums import class_sums
from .modality_contribution import SubsetAccuracy
from .model_cost import flops_per_sample, parameter_count


@torch.no_grad()
def evaluate(model_dir: Path, train_dir: Path, test_dir: Path, batch_size: int,
             on_error: str = "fail", contribution: bool = True) -> dict[str, float]:
    """Fused, per-modality head and per-modality prototype accuracy over every test sample, and with `contribution`
    the accuracy of every subset of modalities and each modality's Shapley contribution; the model's parameters and
    forward FLOPs per sample.

    Prototypes are the class-mean training embeddings of the trained model (nearest-centroid).
    """
    model, architecture = load_classifier(model_dir)
    train = ShardReader(train_dir, shuffle=False, on_error=on_error, pad=False)  # every sample once
    sums, counts = class_sums(model, train.batches(0, batch_size), architecture["num_classes"], torch.device("cpu"))
    prototypes = {m: update_prototypes(None, s, counts) for m, s in sums.items()}
    reader = ShardReader(test_dir, shuffle=False, on_error=on_error, pad=False)
    correct: dict[str, int] = {}
    total = 0
    subset_accuracy = SubsetAccuracy(list(architecture["modalities"]), architecture["num_classes"])
    flops = None
    for features, labels in reader.batches(0, batch_size):
        if flops is None:
            flops = flops_per_sample(model, features)
        out = model(features)
        if contribution:
            subset_accuracy.add(model, features, labels, out.logits)
        hits = {"accuracy": out.logits.argmax(1) == labels}
        for m, logits in out.modality_logits.items():
            hits[f"accuracy_{m}_head"] = logits.argmax(1) == labels
        for m, centers in prototypes.items():
            hits[f"accuracy_{m}_prototype"] = torch.cdist(out.embeddings[m], centers).argmin(1) == labels
        for name, hit in hits.items():
            correct[name] = correct.get(name, 0) + int(hit.sum())
        total += labels.numel()
    metrics = {name: c / total for name, c in correct.items()}
    metrics["chance"] = 1 / architecture["num_classes"]
    metrics.update(parameters=parameter_count(model), flops_per_sample=flops)
    if contribution:
        metrics.update(subset_accuracy.metrics())
    if on_error == "skip":
        metrics["corrupt_shard_reads"] = train.corrupt_reads + reader.corrupt_reads
        metrics["unreadable_test_samples"] = reader.manifest["num_samples"] - total
    metrics["test_samples"] = total  # scored, each once
    return metrics
