"""Each modality's Shapley contribution to test accuracy, exact over every subset of modalities, overall and per class.

The value of a set S of modalities is the fused prediction's accuracy when every modality outside S is absent, its
input replaced by zeros, as BalanceBenchmark's `Calculate_Shapley` does (the modality valuation of Wei et al.,
CVPR 2024). phi_m = sum over S without m of |S|! (k - |S| - 1)! / k! * (v(S + m) - v(S)); the values
sum to v(all) - v(none). Per class, v is the accuracy over that class's samples.
"""

from __future__ import annotations

from itertools import combinations
from math import factorial

import torch

Subset = frozenset[str]


def subsets(modalities: list[str]) -> list[Subset]:
    """Every subset of `modalities`, the empty one first."""
    return [frozenset(chosen) for size in range(len(modalities) + 1) for chosen in combinations(modalities, size)]


def shapley_values(values: dict[Subset, torch.Tensor], modalities: list[str]) -> dict[str, torch.Tensor]:
    """phi_m for each modality from the value of every subset (tensors: one Shapley value per entry)."""
    k = len(modalities)
    phi = {}
    for m in modalities:
        others = [o for o in modalities if o != m]
        phi[m] = sum(factorial(len(s)) * factorial(k - len(s) - 1) / factorial(k) * (values[s | {m}] - values[s])
                     for s in subsets(others))
    return phi


def subset_name(subset: Subset, modalities: list[str]) -> str:
    """The subset's modalities joined by '_and_' (tracking servers such as MLflow refuse '+'), in the model's order
    ('none' for the empty set)."""
    return "_and_".join(m for m in modalities if m in subset) or "none"


class SubsetAccuracy:
    """Per-class hits of the fused prediction for every subset of modalities, the others' inputs zeroed."""

    def __init__(self, modalities: list[str], num_classes: int) -> None:
        self.modalities, self.num_classes = list(modalities), num_classes
        self.hits = {s: torch.zeros(num_classes, dtype=torch.float64) for s in subsets(self.modalities)}
        self.counts = torch.zeros(num_classes, dtype=torch.float64)

    def add(self, model: torch.nn.Module, features: dict[str, torch.Tensor], labels: torch.Tensor,
            fused: torch.Tensor) -> None:
        """Score one batch; `fused` are the model's logits with every modality present."""
        everything = frozenset(self.modalities)
        for subset in self.hits:
            logits = fused if subset == everything else model(
                {m: x if m in subset else torch.zeros_like(x) for m, x in features.items()}).logits
            hit = logits.argmax(1) == labels
            self.hits[subset] += torch.bincount(labels[hit], minlength=self.num_classes)
        self.counts += torch.bincount(labels, minlength=self.num_classes)

    def metrics(self) -> dict[str, float]:
        """`subset_accuracy_<a>_and_<b>` for every subset, `contribution_<m>` overall and `contribution_<m>_class_<c>`
        for each class with test samples."""
        present = self.counts > 0
        overall = {s: hits.sum() / self.counts.sum() for s, hits in self.hits.items()}
        per_class = {s: hits[present] / self.counts[present] for s, hits in self.hits.items()}
        metrics = {f"subset_accuracy_{subset_name(s, self.modalities)}": float(v) for s, v in overall.items()}
        classes = present.nonzero()[:, 0].tolist()
        for m, phi in shapley_values(overall, self.modalities).items():
            metrics[f"contribution_{m}"] = float(phi)
        for m, phi in shapley_values(per_class, self.modalities).items():
            metrics.update({f"contribution_{m}_class_{c}": float(p) for c, p in zip(classes, phi)})
        return metrics
