"""Evaluation of an event-localization model on every test segment."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.shards import ShardReader
from ..models.build import load_classifier
from .model_cost import flops_per_sample, parameter_count
from .model_outputs import model_outputs
from .probes import probe_predictions


def segment_outputs(model: torch.nn.Module, shards: Path, batch_size: int) -> tuple[dict, dict, torch.Tensor]:
    """(fused logits + per-modality logits, embeddings by modality, labels) of every segment, in eval mode."""
    return model_outputs(model, ShardReader(shards, shuffle=False, pad=False).batches(0, batch_size))


def segment_accuracy(predictions: torch.Tensor, labels: torch.Tensor, background: int | None = None) -> float:
    """Share of segments predicted right; with `background`, only over event segments."""
    keep = torch.ones_like(labels, dtype=torch.bool) if background is None else labels != background
    return int((predictions[keep] == labels[keep]).sum()) / int(keep.sum()) if keep.any() else float("nan")


def evaluate_localization(model_dir: Path, train_dir: Path, test_dir: Path, batch_size: int, probe_steps: int,
                          seed: int) -> dict:
    """Segment accuracy (all, events only, per class), confusion matrix, head and probe accuracy per modality, and
    the model's parameters and FLOPs per video."""
    model, architecture = load_classifier(model_dir)
    classes = architecture["num_classes"]
    background = ShardReader(test_dir).manifest["background"]
    logits, embeddings, labels = segment_outputs(model, test_dir, batch_size)
    predicted = logits["fused"].argmax(1)
    confusion = torch.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    metrics: dict = {"accuracy": segment_accuracy(predicted, labels),
                     "event_accuracy": segment_accuracy(predicted, labels, background)}
    for c in range(classes):
        hits = confusion[c]
        if hits.sum():  # classes the test split has
            metrics[f"class_accuracy/{'background' if c == background else c}"] = float(hits[c] / hits.sum())
    for m, value in logits.items():
        if m != "fused":
            metrics[f"accuracy_{m}_head"] = segment_accuracy(value.argmax(1), labels)
    _, train_embeddings, train_labels = segment_outputs(model, train_dir, batch_size)
    for m, train_x in train_embeddings.items():
        predicted = probe_predictions(train_x, train_labels, embeddings[m], classes, probe_steps, seed)
        metrics[f"accuracy_{m}_probe"] = segment_accuracy(predicted, labels)
    metrics.update(test_segments=int(labels.numel()), event_segments=int((labels != background).sum()),
                   chance=float(torch.bincount(labels, minlength=classes).max() / labels.numel()),
                   confusion_matrix=confusion.tolist())
    metrics.update(model_cost(model, test_dir))
    return metrics


def model_cost(model: torch.nn.Module, shards: Path) -> dict[str, float]:
    """The model's parameters and forward FLOPs per video (counted on the first video of `shards`)."""
    videos, _ = next(ShardReader(shards, shuffle=False, pad=False).batches(0, 1))
    return {"parameters": parameter_count(model), "flops_per_sample": flops_per_sample(model, videos)}
