"""Modality dropout: zero a whole modality's input per sample with probability p during training."""

from __future__ import annotations

import torch

from .base import BalanceMethod, LoopState
from .config import ModalityDropoutParams


class ModalityDropout(BalanceMethod):
    """Each sample keeps at least one modality: where every modality was drawn, none is dropped."""

    params: ModalityDropoutParams

    def prepare_inputs(self, features: dict[str, torch.Tensor], state: LoopState) -> dict[str, torch.Tensor]:
        batch = next(iter(features.values())).shape[0]
        drop = torch.rand(batch, len(self.modalities), device=state.device) < self.params.p
        drop &= ~drop.all(dim=1, keepdim=True)
        out = dict(features)
        for i, m in enumerate(self.modalities):
            out[m] = features[m] * (~drop[:, i]).view(-1, *[1] * (features[m].dim() - 1))
        return out
