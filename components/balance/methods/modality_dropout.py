"""Modality dropout: zero a whole modality's input per sample with probability p during training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from mmflow.engine import Params

from ..base import BalanceMethod, method

if TYPE_CHECKING:
    import torch


class ModalityDropoutParams(Params):
    """Drop a whole modality's input (zero it) per sample with probability p during training."""

    name: Literal["modality_dropout"] = "modality_dropout"
    p: float = Field(0.3, ge=0, lt=1, description="probability of dropping each modality of a sample")


@method("modality_dropout", ModalityDropoutParams)
class ModalityDropout(BalanceMethod):
    """Each sample keeps at least one modality: where every modality was drawn, none is dropped."""

    params: ModalityDropoutParams

    def prepare_inputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        batch = next(iter(features.values())).shape[0]
        drop = torch.rand(batch, len(self.modalities), device=self.context.device) < self.params.p
        drop &= ~drop.all(dim=1, keepdim=True)
        out = dict(features)
        for i, m in enumerate(self.modalities):
            out[m] = features[m] * (~drop[:, i]).view(-1, *[1] * (features[m].dim() - 1))
        return out
