"""Accuracy as noise on one modality grows, and MultiBench's relative and effective robustness of that curve.

The noise is MultiBench's for time series (`robustness/timeseries_robust.py`), which fits any tensor: at level p,
zero-mean Gaussian noise is added to every entry, then each entry is dropped (zeroed) with probability p.
MultiBench's noise has standard deviation p on its normalised features; here it is p times the sample's own standard
deviation in that modality, so that a level means the same on pixels, spectrograms and embeddings. MultiBench's
structured drop (runs of time steps) is left out: not every modality has a time axis.

Relative robustness is the curve's area (trapezoids over the levels; MultiBench's levels are 0 to 1 by 0.1).
Effective robustness is the sum over levels of f - (ref + f(0) - ref(0)): how much better the curve holds than a
reference model's (MultiBench's late fusion) shifted to the same clean accuracy. MultiBench then rescales both
min-max over the methods of its table; here they stay raw, comparable across any set of steps.
"""

from __future__ import annotations

import torch

AXIS = "noise level"


def add_noise(x: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
    """`x` (a batch) with Gaussian noise of `level` times each sample's standard deviation on every entry, then each
    entry zeroed with probability `level`. Byte images get the noise on their 0-255 scale, rounded and clipped back
    to bytes; other integer inputs (token ids) are only dropped."""
    if x.is_floating_point() or x.dtype == torch.uint8:
        values = x.float() if x.dtype == torch.uint8 else x
        scale = values.flatten(1).std(dim=1, correction=0).view(-1, *[1] * (x.dim() - 1))
        noisy = values + level * scale * torch.randn(x.shape, generator=generator, dtype=values.dtype).to(x.device)
        x = noisy.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else noisy
    return x.masked_fill(torch.rand(x.shape, generator=generator).to(x.device) < level, 0)


def relative_robustness(levels: list[float], accuracies: list[float]) -> float:
    """The area under accuracy over noise level (trapezoids)."""
    return sum((b - a) * (fa + fb) / 2 for a, b, fa, fb in zip(levels, levels[1:], accuracies, accuracies[1:]))


def effective_robustness(accuracies: list[float], reference: list[float]) -> float:
    """Sum over levels of f - (ref + f(0) - ref(0)): f's accuracy above the reference curve moved to f's clean
    accuracy."""
    return sum(f - (r + accuracies[0] - reference[0]) for f, r in zip(accuracies, reference, strict=True))


class NoiseRobustness:
    """The fused prediction's hits at each noise level on each modality, the other modalities clean."""

    def __init__(self, modalities: list[str], levels: list[float], seed: int) -> None:
        self.modalities, self.levels = list(modalities), list(levels)
        self.hits = {m: [0] * len(levels) for m in self.modalities}
        self.count = 0
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, model: torch.nn.Module, features: dict[str, torch.Tensor], labels: torch.Tensor,
            clean: torch.Tensor) -> None:
        """Score one batch; `clean` are the model's logits without noise."""
        for m in self.modalities:
            for i, level in enumerate(self.levels):
                logits = clean if level == 0 else model(
                    {**features, m: add_noise(features[m], level, self.generator)}).logits
                self.hits[m][i] += int((logits.argmax(1) == labels).sum())
        self.count += labels.numel()

    def metrics(self) -> dict[str, object]:
        """Per modality, the curve `accuracy_under_noise/<m>` ({"x": "noise level", "points": [[level, accuracy],
        ...]}) and its area `relative_robustness_<m>`."""
        metrics: dict[str, object] = {}
        for m, hits in self.hits.items():
            accuracies = [h / self.count for h in hits]
            points = [[level, accuracy] for level, accuracy in zip(self.levels, accuracies)]
            metrics[f"accuracy_under_noise/{m}"] = {"x": AXIS, "points": points}
            metrics[f"relative_robustness_{m}"] = relative_robustness(self.levels, accuracies)
        return metrics
