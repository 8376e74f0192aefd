"""The multimodal classifier and its one structured output, which every balancing method reads."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class MultimodalOutput(NamedTuple):
    """Fused logits, each modality's embedding (fusion input) and, where defined, its logits."""

    logits: torch.Tensor
    embeddings: dict[str, torch.Tensor]
    modality_logits: dict[str, torch.Tensor]


class MultimodalClassifier(nn.Module):
    """One encoder per modality, then a fusion over their embeddings.

    `heads` (optional) are per-modality linear classifiers for fusions whose logits don't
    split, for methods that need each modality's own logits (auxiliary losses).
    """

    #: whether the fused loss can leave some parameters without a gradient (DDP must be told)
    may_leave_parameters_unused = False

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module, heads: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.modalities = list(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.heads = nn.ModuleDict(heads or {})

    def forward(self, inputs: dict[str, torch.Tensor]) -> MultimodalOutput:
        embeddings = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        logits, modality_logits = self.fusion(embeddings)
        if self.heads:
            modality_logits = {m: head(embeddings[m]) for m, head in self.heads.items()}
        return MultimodalOutput(logits, embeddings, modality_logits)
