"""MLA: Multimodal Learning with Alternating unimodal adaptation (Zhang, Latham & Yao, CVPR 2024), as
BalanceBenchmark's code does it.

One linear head is shared by every modality (`fusion: shared`). Each training batch takes one optimizer step per
modality in turn, on that modality's own loss CE(fc(z_m)), so no modality's gradient competes with another's.
Before each step but the very first, the head's weight gradient gains its product with P^T, where P is updated from
the batch's mean embedding r of the modality being trained (orthogonal weight modification, to keep what the head
learnt from the other modalities): k = P r^T, P <- P - k k^T / (alpha + k r) elementwise, P <- P / |P|_F, with
alpha = 0.1^(1 + batch / batches). The shared fusion's entropy weights combine the modalities at test time.
Outside the epoch window, training is joint on the fused logits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from ..base import BalanceMethod, Needs, Stats, TrainingContext, Windowed, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class MLAParams(Windowed):
    """MLA (Zhang et al., CVPR 2024): one optimizer step per modality in turn through a shared head."""

    name: Literal["mla"] = "mla"


def projection_update(projection: torch.Tensor, mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """P - k k^T / (alpha + k r) with k = P r^T, divided elementwise as both official codes do, then scaled to unit
    Frobenius norm; `mean` is r, a 1 x d row."""
    k = projection @ mean.T
    updated = projection - (k @ k.T) / (alpha + k @ mean)
    return updated / updated.norm()


def projection_alpha(batch: int, batches: int) -> float:
    """0.1^(1 + batch / batches): from 0.1 at an epoch's first batch toward 0.01 at its last."""
    return 0.1 ** (1 + batch / batches)


@method("mla", MLAParams)
class MLA(BalanceMethod):
    """Each batch: one step per modality on its own loss through the shared head, the head's gradient projected."""

    params: MLAParams
    needs = Needs(partial_steps=True)  # a step trains one encoder

    @classmethod
    def check(cls, params: MLAParams, model: Any) -> None:
        if model.fusion.name != "shared":
            raise ValueError(f"method mla trains one head shared by every modality, each in turn, but the model "
                             f"fuses with {model.fusion.name}: use fusion: shared")

    def setup(self) -> None:
        self.turn: str | None = None  # the modality the current step trains (None: joint)
        self.projection: torch.Tensor | None = None
        self.projected_steps = 0  # steps taken in the window, the first of which keeps its gradient

    def bind(self, context: TrainingContext) -> None:
        import torch

        super().bind(context)
        if self.projection is None:  # else restored with the rest of the method's state
            dim = context.model.fusion.fc.in_features
            self.projection = torch.eye(dim, device=context.device)

    def substeps(self) -> Iterator[None]:
        if not self.params.active(self.context.epoch):
            yield
            return
        for modality in self.modalities:
            self.turn = modality
            yield
        self.turn = None

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        if self.turn is None:
            return self.context.loss(out.logits, labels), {}
        loss = self.context.loss(out.modality_logits[self.turn], labels)
        return loss, {f"loss_{self.turn}": loss.detach()}

    def after_backward(self, out: MultimodalOutput, labels: torch.Tensor) -> Stats:
        import torch

        if self.turn is None:
            return {}
        context, embeddings = self.context, out.embeddings[self.turn].detach()
        if self.projected_steps > 0:
            # every replica must project alike: the mean embedding over all ranks' samples
            total = context.all_reduce_sum(torch.cat([embeddings.sum(0), embeddings.new_tensor([len(embeddings)])]))
            mean = (total[:-1] / total[-1])[None]
            alpha = projection_alpha(context.batch, context.batches)
            self.projection = projection_update(self.projection, mean, alpha)
            weight = context.model.fusion.fc.weight
            weight.grad.add_(weight.grad @ self.projection.T)
        self.projected_steps += 1
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"projection": self.projection, "projected_steps": self.projected_steps}
