"""Linear probes: how linearly separable a frozen encoder's embeddings are (OGM-GE's measure of each encoder)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, steps: int,
                 seed: int) -> torch.nn.Linear:
    """A linear classifier on frozen features: full-batch Adam on cross-entropy, standardised inputs."""
    generator = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(probe.weight.shape, generator=generator) * 0.01)
        probe.bias.zero_()
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(probe(train_x), train_y).backward()
        optimizer.step()
    return probe


def probe_predictions(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
                      steps: int, seed: int) -> torch.Tensor:
    """The classes a linear probe trained on `train_x` (standardised by its mean and std) predicts for `test_x`."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    with torch.enable_grad():
        probe = linear_probe((train_x - mean) / std, train_y, num_classes, steps, seed)
    with torch.no_grad():
        return probe((test_x - mean) / std).argmax(1)
