"""InfoReg: Information Acquisition Regulation (Huang et al., CVPR 2025), as the official code does it.

The loss is CE(fused) + sum_m CE(logits_m). During the prime learning window, a modality whose batch score (the
sum of its softmax probability of the true class) leads the mean of the others is slowed by a proximal term: its
encoder's gradients get beta * (theta - theta_epoch_start) added, beta = strength * exp(tanh(lead)). A modality's
window is open while its information acquisition still grows: with T_e the trace of its encoder's empirical
Fisher information over epoch e (the sum over its weight tensors of the mean of the epoch's summed squared
gradients), k = (mean of the last 10 traces - mean of the 10 before the last one) / the former, and the window
closes once k <= 0.05 (the first epoch counts as open). Scores are summed over ranks, so replicas agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from mmflow.engine import Params

from ..base import BalanceMethod, ClassSums, Needs, Stats, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput

WINDOW = 10  # traces averaged on each side of the acquisition rate


class InfoRegParams(Params):
    """InfoReg (Huang et al., CVPR 2025): slow the leading modality with a proximal term in its prime window."""

    name: Literal["inforeg"] = "inforeg"
    strength: float = Field(0.95, ge=0, description="beta = strength * exp(tanh(score lead)) (official: 0.95 when "
                            "audio leads, 0.1 when video does)")
    threshold: float = Field(0.05, ge=0, description="the prime learning window closes once the acquisition rate "
                             "k falls to this")


def acquisition_rate(traces: list[float]) -> float:
    """k = (mean of the last 10 traces - mean of the 10 before the last) / the former, the history padded with
    ten zeros in front (official); 1 before any trace."""
    if not traces:
        return 1.0
    padded = [0.0] * WINDOW + traces
    recent, before = sum(padded[-WINDOW:]) / WINDOW, sum(padded[-WINDOW - 1:-1]) / WINDOW
    return (recent - before) / recent if recent else 0.0


def proximal_strengths(scores: torch.Tensor, strength: float, open_window: torch.Tensor) -> torch.Tensor:
    """beta_m = strength * exp(tanh(score_m - mean of the others)) where m leads and its window is open, else 0."""
    import torch

    others = (scores.sum() - scores) / (scores.numel() - 1)
    lead = scores - others
    return torch.where((lead > 0) & open_window, strength * torch.exp(torch.tanh(lead)), torch.zeros_like(lead))


@method("inforeg", InfoRegParams)
class InfoReg(BalanceMethod):
    """Fused plus modality losses; a proximal pull on the leading modality's encoder in its prime window."""

    params: InfoRegParams
    needs = Needs(modality_heads="unsplit")

    def setup(self) -> None:
        self.traces: dict[str, list[float]] = {m: [] for m in self.modalities}  # per epoch, per modality
        self.anchor: dict[str, list[torch.Tensor]] = {}  # each encoder's parameters at the epoch's start
        self.fisher: dict[str, list[torch.Tensor]] = {}  # summed squared gradients of its weight tensors
        self.scores: torch.Tensor | None = None

    def _weights(self, m: str) -> list[torch.Tensor]:
        return [p for p in self.context.model.encoders[m].parameters() if p.dim() > 1]

    def before_epoch(self, class_sums: ClassSums | None) -> None:
        import torch

        model = self.context.model
        self.anchor = {m: [p.detach().clone() for p in model.encoders[m].parameters()] for m in self.modalities}
        self.fisher = {m: [torch.zeros_like(w) for w in self._weights(m)] for m in self.modalities}

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        import torch.nn.functional as F

        from ..prototypes import true_class_scores

        loss = self.context.loss(out.logits, labels)
        for m in self.modalities:
            loss = loss + F.cross_entropy(out.modality_logits[m], labels)
        self.scores = true_class_scores({m: out.modality_logits[m] for m in self.modalities}, labels)
        return loss, {}

    def after_backward(self, out: MultimodalOutput, labels: torch.Tensor) -> Stats:
        import torch

        context = self.context
        scores = context.all_reduce_sum(self.scores)
        open_window = torch.tensor([acquisition_rate(self.traces[m]) > self.params.threshold
                                    for m in self.modalities], device=scores.device)
        betas = proximal_strengths(scores, self.params.strength, open_window)
        with torch.no_grad():
            for i, m in enumerate(self.modalities):
                for p, start in zip(context.model.encoders[m].parameters(), self.anchor[m]):
                    if p.grad is not None:
                        p.grad.add_(p - start, alpha=float(betas[i]))
                for total, w in zip(self.fisher[m], self._weights(m)):
                    if w.grad is not None:
                        total.add_(w.grad.square())
        return {f"beta_{m}": betas[i] for i, m in enumerate(self.modalities)}

    def after_epoch(self) -> None:
        for m in self.modalities:
            self.traces[m].append(float(sum(total.mean() for total in self.fisher[m])))

    def epoch_metrics(self) -> dict[str, float]:
        return {**{f"trace_{m}": t[-1] for m, t in self.traces.items() if t},
                **{f"rate_{m}": acquisition_rate(t) for m, t in self.traces.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"traces": self.traces}
