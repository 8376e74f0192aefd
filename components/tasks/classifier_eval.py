"""eval.classifier's measures on the test split: fused, per-modality head and per-modality prototype accuracy,
each modality's Shapley contribution, and the model's cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..balance.prototypes import update_prototypes
from ..data.shards import ShardReader
from ..models.build import load_classifier
from .class_sums import class_sums
from .modality_contribution import SubsetAccuracy
from .model_cost import flops_per_sample, parameter_count


@torch.no_grad()
def evaluate(model_dir: Path, train_dir: Path, test_dir: Path, batch_size: int,
             on_error: str = "fail", contribution: bool = True) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion matrix (rows: true class) of the fused output, of each modality's head and
    of each modality's prototypes over every test sample; with `contribution` the accuracy of every subset of
    modalities and each modality's Shapley contribution; the model's parameters and forward FLOPs per sample.

    Prototypes are the class-mean training embeddings of the trained model (nearest-centroid).
    """
    model, architecture = load_classifier(model_dir)
    classes = architecture["num_classes"]
    train = ShardReader(train_dir, shuffle=False, on_error=on_error, pad=False)  # every sample once
    sums, counts = class_sums(model, train.batches(0, batch_size), classes, torch.device("cpu"))
    prototypes = {m: update_prototypes(None, s, counts) for m, s in sums.items()}
    reader = ShardReader(test_dir, shuffle=False, on_error=on_error, pad=False)
    scores: dict[str, ClassificationScores] = {}  # by metric suffix: "" fused, "_<m>_head", "_<m>_prototype"
    total = 0
    subset_accuracy = SubsetAccuracy(list(architecture["modalities"]), classes)
    flops = None
    for features, labels in reader.batches(0, batch_size):
        if flops is None:
            flops = flops_per_sample(model, features)
        out = model(features)
        if contribution:
            subset_accuracy.add(model, features, labels, out.logits)
        predicted = {"": out.logits.argmax(1)}
        for m, logits in out.modality_logits.items():
            predicted[f"_{m}_head"] = logits.argmax(1)
        for m, centers in prototypes.items():
            predicted[f"_{m}_prototype"] = torch.cdist(out.embeddings[m], centers).argmin(1)
        for suffix, prediction in predicted.items():
            scores.setdefault(suffix, ClassificationScores(classes)).update(prediction, labels)
        total += labels.numel()
    metrics: dict[str, Any] = {}
    for suffix, score in scores.items():
        metrics.update({f"{name}{suffix}": value for name, value in score.compute().items()})
    metrics["chance"] = 1 / classes
    metrics.update(parameters=parameter_count(model), flops_per_sample=flops)
    if contribution:
        metrics.update(subset_accuracy.metrics())
    if on_error == "skip":
        metrics["corrupt_shard_reads"] = train.corrupt_reads + reader.corrupt_reads
        metrics["unreadable_test_samples"] = reader.manifest["num_samples"] - total
    metrics["test_samples"] = total  # scored, each once
    return metrics


class ClassificationScores:
    """One predictor's confusion matrix and macro-F1 (torchmetrics', which reduce over processes when distributed);
    accuracy is the matrix's trace over its sum, exact."""

    def __init__(self, classes: int) -> None:
        from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassF1Score

        self.confusion = MulticlassConfusionMatrix(classes)
        self.f1 = MulticlassF1Score(classes, average="macro")

    def update(self, predicted: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch's predicted classes."""
        self.confusion.update(predicted, labels)
        self.f1.update(predicted, labels)

    def compute(self) -> dict[str, Any]:
        """`accuracy`, `f1_macro` and `confusion_matrix` (a list of rows, one per true class)."""
        matrix = self.confusion.compute()
        return {"accuracy": matrix.trace().item() / matrix.sum().item(), "f1_macro": self.f1.compute().item(),
                "confusion_matrix": matrix.tolist()}
