"""Auxiliary losses: fused cross-entropy plus each modality's own cross-entropy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from mmflow.engine import Params

from ..base import BalanceMethod, Needs, Stats, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class AuxLossParams(Params):
    """Fused cross-entropy plus each modality's own cross-entropy (per-modality heads)."""

    name: Literal["aux_loss"] = "aux_loss"
    weights: dict[str, float] = Field(
        default_factory=dict, description="modality -> weight of its CE; missing modalities weigh 1")
    fused_weight: float = Field(1.0, ge=0, description="weight of the fused CE")


@method("aux_loss", AuxLossParams)
class AuxLoss(BalanceMethod):
    """fused_weight * CE(fused) + sum_m w_m * CE(logits_m); fusions that don't split get heads."""

    params: AuxLossParams
    needs = Needs(modality_heads="unsplit")

    def setup(self) -> None:
        unknown = set(self.params.weights) - set(self.modalities)
        if unknown:
            raise ValueError(f"method aux_loss: weights name unknown modalities {sorted(unknown)} "
                             f"(the data has: {', '.join(self.modalities)})")

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        import torch.nn.functional as F

        loss = self.params.fused_weight * F.cross_entropy(out.logits, labels)
        stats: Stats = {}
        for m in self.modalities:
            own = F.cross_entropy(out.modality_logits[m], labels)
            loss = loss + self.params.weights.get(m, 1.0) * own
            stats[f"loss_{m}"] = own.detach()
        return loss, stats
