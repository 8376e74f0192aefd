"""Intermediate fusions that reach inside staged encoders (the PMR paper's Table 3).

- MMTM (Joze et al., CVPR 2020): after each chosen stage, squeeze every modality's feature map
  by global average pooling, excite jointly, and rescale each map channel-wise by
  2 * sigmoid(excitation). The embeddings are then fused by concatenation, whose logits split.
- CentralNet (Vielzeuf et al., 2018): a central stream that, at every stage, combines its own
  running features with each modality's features by learned scalar weights; the fused logits
  come from the central stream, which does not split by modality.

Both need staged encoders (`encoders.StagedEncoder`: the CNN and the ResNet-18s).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import StagedEncoder
from .fusion import ConcatFusion
from .multimodal import MultimodalClassifier, MultimodalOutput


def _staged(encoders: dict[str, nn.Module], fusion: str) -> None:
    if not all(isinstance(e, StagedEncoder) for e in encoders.values()):
        raise ValueError(f"fusion '{fusion}' needs encoders that expose their stages (encoder: cnn or resnet18)")


class MMTM(nn.Module):
    """Multimodal transfer module over k feature maps: joint squeeze, per-modality excitation."""

    def __init__(self, channels: dict[str, int], ratio: int = 4) -> None:
        super().__init__()
        total = sum(channels.values())
        self.squeeze = nn.Sequential(nn.Linear(total, max(1, total // ratio)), nn.ReLU())
        self.excite = nn.ModuleDict({m: nn.Linear(max(1, total // ratio), c) for m, c in channels.items()})

    def forward(self, maps: dict[str, torch.Tensor], encoders: nn.ModuleDict) -> dict[str, torch.Tensor]:
        joint = self.squeeze(torch.cat([encoders[m].squeeze(x) for m, x in maps.items()], dim=1))
        return {m: encoders[m].excite(x, 2 * torch.sigmoid(self.excite[m](joint))) for m, x in maps.items()}


class MMTMClassifier(MultimodalClassifier):
    """Staged encoders with MMTM after the last `mmtm_stages` stages, then concat fusion."""

    def __init__(self, encoders: dict[str, nn.Module], num_classes: int, mmtm_stages: int = 3, ratio: int = 4) -> None:
        _staged(encoders, "mmtm")
        super().__init__(encoders, ConcatFusion({m: e.out_dim for m, e in encoders.items()}, num_classes))
        depth = len(next(iter(encoders.values())).stages)
        if not 1 <= mmtm_stages <= depth:
            raise ValueError(f"fusion mmtm: stages {mmtm_stages}, but the encoders have {depth} stages")
        self.mmtm_at = list(range(depth - mmtm_stages, depth))
        self.mmtm = nn.ModuleList(
            MMTM({m: _out_channels(e.stages[i]) for m, e in encoders.items()}, ratio) for i in self.mmtm_at)

    def forward(self, inputs: dict[str, torch.Tensor]) -> MultimodalOutput:
        maps = {m: self.encoders[m].prepare(inputs[m]) for m in self.modalities}
        for i in range(len(next(iter(self.encoders.values())).stages)):
            maps = {m: self.encoders[m].stages[i](x) for m, x in maps.items()}
            if i in self.mmtm_at:
                maps = self.mmtm[self.mmtm_at.index(i)](maps, self.encoders)
        embeddings = {m: self.encoders[m].embed(x) for m, x in maps.items()}
        logits, modality_logits = self.fusion(embeddings)
        return MultimodalOutput(logits, embeddings, modality_logits)


class CentralStream(nn.Module):
    """CentralNet's central stream: c_i = a_c,i * stage_i(c_{i-1}) + sum_m a_m,i * h_m,i, then a head."""

    def __init__(self, template: nn.Module, modalities: int, num_classes: int) -> None:
        super().__init__()
        # the encoders' architecture from their second stage on, freshly initialized
        self.stages = nn.ModuleList(copy.deepcopy(template.stages[i]) for i in range(1, len(template.stages)))
        self.fc = copy.deepcopy(template.fc)
        for module in (*self.stages, self.fc):
            module.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
        self.alpha_central = nn.Parameter(torch.ones(len(template.stages)))
        self.alpha_modality = nn.Parameter(torch.ones(len(template.stages), modalities))
        self.head = nn.Linear(template.out_dim, num_classes)

    def mix(self, i: int, maps: list[torch.Tensor], central: torch.Tensor | None) -> torch.Tensor:
        """The central features after stage i, from the modality maps of stage i (B x C x H x W;
        every map is average-pooled to the first modality's size, which leaves that one as it is)."""
        size = maps[0].shape[2:]
        mixed = sum(self.alpha_modality[i, j] * F.adaptive_avg_pool2d(x, size) for j, x in enumerate(maps))
        return mixed if central is None else mixed + self.alpha_central[i] * self.stages[i - 1](central)

    def forward(self, central: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(central.mean(dim=(2, 3))))


class CentralNetClassifier(MultimodalClassifier):
    """Modality streams plus a central stream (the fusion) mixing them at every stage by learned weights."""

    may_leave_parameters_unused = True  # the fused logits never pass through the encoders' own fc

    def __init__(self, encoders: dict[str, nn.Module], num_classes: int,
                 heads: dict[str, nn.Module] | None = None) -> None:
        _staged(encoders, "centralnet")
        super().__init__(encoders, CentralStream(next(iter(encoders.values())), len(encoders), num_classes), heads)

    def forward(self, inputs: dict[str, torch.Tensor]) -> MultimodalOutput:
        maps = {m: self.encoders[m].prepare(inputs[m]) for m in self.modalities}
        central = None
        for i in range(len(self.fusion.alpha_central)):
            maps = {m: self.encoders[m].stages[i](x) for m, x in maps.items()}
            central = self.fusion.mix(i, [self.encoders[m].as_map(x) for m, x in maps.items()], central)
        embeddings = {m: self.encoders[m].embed(x) for m, x in maps.items()}
        modality_logits = {m: head(embeddings[m]) for m, head in self.heads.items()}
        return MultimodalOutput(self.fusion(central), embeddings, modality_logits)


def _out_channels(stage: nn.Module) -> int:
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
