"""Auxiliary losses: fused cross-entropy plus each modality's own cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import BalanceMethod, LoopState, Stats
from .config import AuxLossParams


class AuxLoss(BalanceMethod):
    """fused_weight * CE(fused) + sum_m w_m * CE(logits_m); fusions that don't split get heads."""

    params: AuxLossParams
    modality_heads = "unsplit"

    def setup(self) -> None:
        unknown = set(self.params.weights) - set(self.modalities)
        if unknown:
            raise ValueError(f"method aux_loss: weights name unknown modalities {sorted(unknown)} "
                             f"(the data has: {', '.join(self.modalities)})")

    def loss(self, out, labels, state: LoopState) -> tuple[torch.Tensor, Stats]:
        loss = self.params.fused_weight * F.cross_entropy(out.logits, labels)
        stats = {}
        for m in self.modalities:
            own = F.cross_entropy(out.modality_logits[m], labels)
            loss = loss + self.params.weights.get(m, 1.0) * own
            stats[f"loss_{m}"] = own.detach()
        return loss, stats
