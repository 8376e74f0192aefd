"""torchvision's ResNet-18, adapted (not rewritten) into the papers' audio and visual encoders.

- Audio: F x T spectrograms through a 1-channel stem.
- Visual: T x 3 x H x W frames folded into the batch, average-pooled over time and space after
  the last block.
Both give 512-d embeddings, trained from scratch. The stem + layer1, layer2, layer3 and layer4
are exposed as `stages`, with the staged-encoder hooks MMTM and CentralNet use.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from .encoders import StagedEncoder

EMBEDDING_DIM = 512


def _stages(in_channels: int) -> nn.ModuleList:
    net = resnet18(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return nn.ModuleList([nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1),
                          net.layer2, net.layer3, net.layer4])


class AudioResNet18(StagedEncoder):
    """ResNet-18 over a 1-channel F x T spectrogram -> 512-d."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = _stages(in_channels=1)
        self.fc = nn.Identity()  # the embedding is the pooled last block, as in the reference
        self.out_dim = EMBEDDING_DIM

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().unsqueeze(1)


class FramesResNet18(StagedEncoder):
    """ResNet-18 over T frames folded into the batch, pooled over T, H, W -> 512-d."""

    def __init__(self, num_frames: int) -> None:
        super().__init__()
        self.stages = _stages(in_channels=3)
        self.fc = nn.Identity()
        self.out_dim = EMBEDDING_DIM
        self.num_frames = num_frames

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().flatten(0, 1)  # B x T x 3 x H x W -> (B*T) x 3 x H x W

    def as_map(self, x: torch.Tensor) -> torch.Tensor:
        return self._unfold(x).mean(dim=1)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        return self._unfold(x).mean(dim=(1, 3, 4))

    def excite(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return x * weights.repeat_interleave(self.num_frames, dim=0)[:, :, None, None]

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(0, (-1, self.num_frames))
