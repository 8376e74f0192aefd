"""eval.classifier's measures on the test split: fused, per-modality head and per-modality prototype accuracy,
each modality's Shapley contribution and robustness to noise, and the model's cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..balance.prototypes import update_prototypes
from ..data.shards import ShardReader
from ..models.build import load_classifier
from .modality_contribution import SubsetAccuracy
from .model_cost import flops_per_sample, parameter_count
from .model_outputs import model_outputs
from .noise_robustness import NoiseRobustness
from .probes import probe_predictions


@torch.no_grad()
def evaluate(model_dir: Path, train_dir: Path, test_dir: Path, batch_size: int, on_error: str = "fail",
             contribution: bool = True, probe_steps: int = 300, noise_levels: list[float] | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion matrix (rows: true class) of the fused output and, per modality, of its
    head, its prototypes and a linear probe on its frozen embeddings (`probe_steps` > 0) over every test sample;
    with `contribution` the accuracy of every subset of modalities and each modality's Shapley contribution; with
    `noise_levels` the fused accuracy at each level of noise on each modality; the model's parameters and forward
    FLOPs per sample.

    Prototypes are the class-mean training embeddings of the trained model (nearest-centroid); the probes learn from
    the same embeddings.
    """
    model, architecture = load_classifier(model_dir)
    classes = architecture["num_classes"]
    train = ShardReader(train_dir, shuffle=False, on_error=on_error, pad=False)  # every sample once
    _, train_embeddings, train_labels = model_outputs(model, train.batches(0, batch_size))
    counts = torch.bincount(train_labels, minlength=classes).float()
    prototypes = {m: update_prototypes(None, torch.zeros(classes, z.shape[1]).index_add_(0, train_labels, z), counts)
                  for m, z in train_embeddings.items()}
    reader = ShardReader(test_dir, shuffle=False, on_error=on_error, pad=False)
    scores: dict[str, ClassificationScores] = {}  # by metric suffix: "" fused, "_<m>_head", "_<m>_prototype", ...
    total = 0
    subset_accuracy = SubsetAccuracy(list(architecture["modalities"]), classes)
    robustness = NoiseRobustness(list(architecture["modalities"]), noise_levels or [], seed)
    flops = None
    test_embeddings: dict[str, list[torch.Tensor]] = {}
    test_labels = []
    for features, labels in reader.batches(0, batch_size):
        if flops is None:
            flops = flops_per_sample(model, features)
        out = model(features)
        if probe_steps > 0:  # the probes score every test sample at once, after the pass
            for m, z in out.embeddings.items():
                test_embeddings.setdefault(m, []).append(z)
            test_labels.append(labels)
        if contribution:
            subset_accuracy.add(model, features, labels, out.logits)
        if noise_levels:
            robustness.add(model, features, labels, out.logits)
        predicted = {"": out.logits.argmax(1)}
        for m, logits in out.modality_logits.items():
            predicted[f"_{m}_head"] = logits.argmax(1)
        for m, centers in prototypes.items():
            predicted[f"_{m}_prototype"] = torch.cdist(out.embeddings[m], centers).argmin(1)
        for suffix, prediction in predicted.items():
            scores.setdefault(suffix, ClassificationScores(classes)).update(prediction, labels)
        total += labels.numel()
    if probe_steps > 0 and total:
        labels = torch.cat(test_labels)
        for m, z in train_embeddings.items():
            predicted = probe_predictions(z, train_labels, torch.cat(test_embeddings[m]), classes, probe_steps, seed)
            scores.setdefault(f"_{m}_probe", ClassificationScores(classes)).update(predicted, labels)
    metrics: dict[str, Any] = {}
    for suffix, score in scores.items():
        metrics.update({f"{name}{suffix}": value for name, value in score.compute().items()})
    metrics["chance"] = 1 / classes
    metrics.update(parameters=parameter_count(model), flops_per_sample=flops)
    if contribution:
        metrics.update(subset_accuracy.metrics())
    if noise_levels and total:
        metrics.update(robustness.metrics())
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
