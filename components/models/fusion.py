"""Late fusions: embeddings by modality -> fused logits (+ per-modality logits where they split)."""

from __future__ import annotations

import torch
from torch import nn


class ConcatFusion(nn.Module):
    """`fc(cat(z_1..z_k))`; each modality's logits use its block of the weight and 1/k of the bias."""

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.dims = dict(dims)
        self.fc = nn.Linear(sum(self.dims.values()), num_classes)

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fused = self.fc(torch.cat([embeddings[m] for m in self.dims], dim=1))
        share = self.fc.bias / len(self.dims)
        per_modality, start = {}, 0
        for m, dim in self.dims.items():
            per_modality[m] = embeddings[m] @ self.fc.weight[:, start:start + dim].T + share
            start += dim
        return fused, per_modality
