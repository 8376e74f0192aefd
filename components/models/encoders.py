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


class StagedEncoder(nn.Module):
    """An encoder run stage by stage: `prepare` -> `stages` -> `embed`, so intermediate fusions
    (MMTM, CentralNet) can reach between stages. Feature maps are N x C x H x W; the hooks
    below let an encoder whose N is not the batch (frames folded in) take part."""

    stages: nn.ModuleList
    fc: nn.Module  # applied to the pooled last map

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the first stage takes it."""
        return x

    def as_map(self, x: torch.Tensor) -> torch.Tensor:
        """A stage's output as a per-sample B x C x H x W map (CentralNet mixes these)."""
        return x

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """A stage's output pooled to B x C (MMTM's squeeze)."""
        return self.as_map(x).mean(dim=(2, 3))

    def excite(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """A stage's output rescaled channel-wise by per-sample B x C weights (MMTM's excitation)."""
        return x * weights[:, :, None, None]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output -> the embedding fed to fusion."""
        return self.fc(self.squeeze(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        for stage in self.stages:
            x = stage(x)
        return self.embed(x)


class ConvEncoder(StagedEncoder):
    """The PMR paper's CG-MNIST encoder, as the official code builds and initializes it: batch norm on the
    input, a 5x5 conv and max pooling, three 3x3 convs (the second with stride 2), average pooling,
    Linear(64 -> out_dim).

    No ReLU after the Linear (as the reference): with one, a suppressed modality's units die
    early in joint training and its embedding collapses. The input batch norm is what lets SGD at the
    paper's lr 1e-3 learn: without it, raw [0, 1] pixels left both encoders near chance for 30 epochs.
    Input: C x H x W images (uint8 or float); uint8 is scaled to [0, 1].
    """

    def __init__(self, in_shape: list[int], out_dim: int = 512) -> None:
        super().__init__()
        channels = in_shape[0] if len(in_shape) == 3 else 1
        self.stages = nn.ModuleList([
            nn.Sequential(nn.BatchNorm2d(channels), nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(),
                          nn.MaxPool2d(3, stride=2, padding=1)),
            nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()),
        ])
        self.fc = nn.Linear(64, out_dim)
        self.out_dim = out_dim
        # the official initialization (as torchvision's ResNet for the convolutions)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.xavier_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Scale uint8 images to [0, 1] and give gray images their channel axis."""
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return x.unsqueeze(1) if x.dim() == 3 else x
