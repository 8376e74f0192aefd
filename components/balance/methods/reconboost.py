"""ReconBoost (Hua et al., ICML 2024): modalities learn in turn, each correcting the others, as gradient boosting.

Training runs in stages, one modality per stage in the data's order, round and round. A stage first trains its
modality alone for `boost_epochs` on the boosting loss: the modality's cross-entropy, each sample weighted by
(w1 - w2 * q), q the probability the rest of the ensemble (the other modalities' logits, summed and scaled by the
boost rate, without gradient) gives the true class, so the modality learns most where the others fail; as in both
official codes the loss is also averaged over the classes (a factor 1/C). Then `correction_epochs` train the whole
ensemble on the fused logits (global rectification). The ensemble is the sum of every modality's logits:
`fusion: shared` with `combine: sum` (one head, a learnt boost rate, as the authors' code), or sum / concat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..base import BalanceMethod, ClassSums, Needs, Stats, TrainingContext, Windowed, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class ReconBoostParams(Windowed):
    """ReconBoost (Hua et al., ICML 2024): stages that boost one modality against the rest, then correct them all."""

    name: Literal["reconboost"] = "reconboost"
    boost_epochs: int = Field(4, ge=1, description="epochs a stage trains its modality on the boosting loss "
                              "(authors' code: 4; BalanceBenchmark: 1)")
    correction_epochs: int = Field(4, ge=0, description="epochs of global rectification after each stage: every "
                                   "modality on the fused loss (authors' code: 4; BalanceBenchmark: 1)")
    weight1: float = Field(5.0, gt=0, description="w1, the weight of the modality's own cross-entropy")
    weight2: float = Field(1.0, ge=0, description="w2, how much the rest of the ensemble's confidence in the true "
                           "class takes off a sample's weight")
    fresh_optimizer: bool = Field(True, description="start each phase with no optimizer state (momentum), as the "
                                  "authors' code builds a new SGD per phase; false: BalanceBenchmark's one optimizer")


def boosting_loss(logits: torch.Tensor, rest: torch.Tensor, labels: torch.Tensor, weight1: float,
                  weight2: float) -> torch.Tensor:
    """mean over samples of -(w1 - w2 softmax(rest)_y) log softmax(logits)_y / C, `rest` the other modalities'
    ensemble logits (no gradient flows into them)."""
    log_p = logits.log_softmax(1).gather(1, labels[:, None])[:, 0]
    q = rest.detach().softmax(1).gather(1, labels[:, None])[:, 0]
    return (-(weight1 - weight2 * q) * log_p).mean() / logits.shape[1]


def stage_phase(epoch: int, modalities: list[str], boost_epochs: int, correction_epochs: int) -> tuple[int, str | None]:
    """(stage number, the modality boosted at `epoch`, counted from the window's start; None: global rectification)."""
    stage, position = divmod(epoch, boost_epochs + correction_epochs)
    return stage, modalities[stage % len(modalities)] if position < boost_epochs else None


@method("reconboost", ReconBoostParams)
class ReconBoost(BalanceMethod):
    """Stages in turn per modality: its boosting loss against the rest of the ensemble, then the ensemble's loss."""

    params: ReconBoostParams
    needs = Needs(partial_steps=True)  # a boosting epoch trains one encoder

    @classmethod
    def check(cls, params: ReconBoostParams, model: Any) -> None:
        fusion = model.fusion
        if fusion.name not in ("sum", "concat") and not (fusion.name == "shared" and fusion.combine == "sum"):
            shown = "shared with combine: entropy" if fusion.name == "shared" else fusion.name
            raise ValueError(f"method reconboost boosts an ensemble whose logits are the sum of each modality's, but "
                             f"the model fuses with {shown}: use fusion shared (combine: sum), sum or concat")

    def setup(self) -> None:
        if len(self.modalities) < 2:
            raise ValueError("method reconboost trains each modality against the others: the data has one")
        self.boosted: str | None = None  # the modality this epoch boosts (None: the ensemble's loss)

    def bind(self, context: TrainingContext) -> None:
        if self.params.fresh_optimizer and context.optimizer is None:
            raise ValueError("method reconboost with fresh_optimizer clears the training loop's optimizer state, "
                             "but the loop offers no optimizer")
        super().bind(context)

    def phase(self, epoch: int) -> tuple[int, str | None] | None:
        """(stage, boosted modality) at `epoch`; None outside the window."""
        params = self.params
        if not params.active(epoch):
            return None
        return stage_phase(epoch - params.start_epoch, self.modalities, params.boost_epochs, params.correction_epochs)

    def before_epoch(self, class_sums: ClassSums | None) -> None:
        epoch, optimizer = self.context.epoch, self.context.optimizer
        phase = self.phase(epoch)
        self.boosted = phase[1] if phase else None
        starts_phase = phase is not None and phase != self.phase(epoch - 1)
        if starts_phase and self.params.fresh_optimizer:
            optimizer.state.clear()

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        if self.boosted is None:
            return self.context.loss(out.logits, labels), {}
        rest = sum(logits for m, logits in out.modality_logits.items() if m != self.boosted)
        rest = rest * getattr(self.context.model.fusion, "boost_rate", 1.0)
        loss = boosting_loss(out.modality_logits[self.boosted], rest, labels, self.params.weight1,
                             self.params.weight2)
        return loss, {f"loss_{self.boosted}": loss.detach()}

    def epoch_metrics(self) -> dict[str, float]:
        boost_rate = getattr(self.context.model.fusion, "boost_rate", None)
        return {} if boost_rate is None else {"boost_rate": float(boost_rate.detach())}
