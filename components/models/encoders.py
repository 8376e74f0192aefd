"""Per-modality encoders: map one modality's input to the embedding fed to fusion."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLPEncoder(nn.Module):
    """Flatten, then Linear-ReLU layers ending in an `out_dim` embedding (ReLU'd, like a CNN trunk)."""

    def __init__(self, in_shape: list[int], hidden: list[int], out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for size in [*hidden, out_dim]:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
