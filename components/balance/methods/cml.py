"""CML: Calibrating Multimodal Learning (Ma et al., ICML 2023), with BalanceBenchmark's training scheme and the
authors' confidence penalty.

A prediction should not grow more confident when a modality is taken away. Each epoch the modalities are put in a
random order (from the seed and the epoch, so replicas and resumed runs agree); each batch removes them one at a
time from the end of that order, the logits of each smaller set being the fusion's with the removed modalities'
embeddings set to zero. The loss is (CE(fused) + sum of the smaller sets' CE) / k plus lam times the batch sum
of relu(conf(smaller) - conf(larger)), conf the top softmax probability, over the samples where the smaller set
is not right while the larger one is wrong (the authors' mask).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..base import BalanceMethod, ClassSums, Stats, Windowed, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class CMLParams(Windowed):
    """CML (Ma et al., ICML 2023): penalise a prediction that grows more confident without a modality."""

    name: Literal["cml"] = "cml"
    lam: float = Field(0.1, ge=0, description="weight of the confidence penalty (BalanceBenchmark: 0.1)")


def confidence_penalty(larger: torch.Tensor, smaller: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch sum of relu(conf(smaller) - conf(larger)), conf the top softmax probability, leaving out samples the
    smaller set gets right and the larger one wrong (the authors' mask)."""
    import torch

    conf_large, pred_large = larger.softmax(1).max(1)
    conf_small, pred_small = smaller.softmax(1).max(1)
    counted = ~((pred_small == labels) & (pred_large != labels))
    return torch.relu((conf_small - conf_large) * counted).sum()


@method("cml", CMLParams)
class CML(BalanceMethod):
    """Cross-entropy of the fused and of ever smaller modality sets, plus a penalty on confidence gained."""

    params: CMLParams

    @classmethod
    def check(cls, params: CMLParams, model: Any) -> None:
        from ...models.fusions import FUSIONS

        if FUSIONS.of(model.fusion).capabilities["stage"] != "late":
            raise ValueError(f"method cml takes modalities away by zeroing their embeddings before the fusion, but "
                             f"{model.fusion.name} mixes the modalities inside the encoders: use a late fusion")

    def setup(self) -> None:
        if len(self.modalities) < 2:
            raise ValueError("method cml takes modalities away from the fused prediction: the data has one")
        self.order: list[str] = list(self.modalities)

    def before_epoch(self, class_sums: ClassSums | None) -> None:
        import torch

        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.context.epoch)
        self.order = [self.modalities[i] for i in torch.randperm(len(self.modalities), generator=generator)]

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        import torch

        context = self.context
        if not self.params.active(context.epoch):
            return context.loss(out.logits, labels), {}
        ce, penalty = context.loss(out.logits, labels), out.logits.new_zeros(())
        embeddings, larger = dict(out.embeddings), out.logits
        for removed in reversed(self.order[1:]):
            embeddings[removed] = torch.zeros_like(embeddings[removed])
            smaller, _ = context.model.fusion(embeddings)
            ce = ce + context.loss(smaller, labels)
            penalty = penalty + confidence_penalty(larger, smaller, labels)
            larger = smaller
        loss = ce / len(self.modalities) + self.params.lam * penalty
        return loss, {"penalty": penalty.detach()}
