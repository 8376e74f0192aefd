"""OGM-GE: On-the-fly Gradient Modulation with Generalization Enhancement (Peng et al., CVPR 2022).

Per batch, each modality's score is the batch sum of its softmax probability of the true class,
from its own logits where the fusion splits them, else from its prototype logits (so it works
with every fusion). A modality whose score exceeds the mean of the others by ratio > 1 has its
encoder gradients scaled by 1 - tanh(alpha * relu(ratio)) after backward, before the step; the
others keep 1 (with two modalities this is the official rule). GE adds N(0, std of the
unmodulated gradient) to every encoder's touched gradients. Scores are summed over ranks and the
noise comes from a generator seeded alike on every rank, so data-parallel replicas stay equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..base import BalanceMethod, ClassSums, Needs, Stats, Windowed, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class OGMGEParams(Windowed):
    """On-the-fly Gradient Modulation with Generalization Enhancement (Peng et al., CVPR 2022)."""

    name: Literal["ogm_ge"] = "ogm_ge"
    alpha: float = Field(0.8, ge=0, description="strength: the dominant encoder's coefficient is 1 - tanh(alpha * relu(ratio))")
    noise: bool = Field(True, description="GE: add N(0, std of the unmodulated gradient) to modulated encoders")
    parameters: Literal["conv", "weights"] = Field(
        "weights", description="conv: conv weights only (official code); weights: all non-1-D weights (BalanceBenchmark)")
    proto_fraction: float = Field(0.1, gt=0, le=1, description="prototype subset, when logits do not split by modality")


def ogm_coefficients(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """1 - tanh(alpha * relu(ratio)) where ratio = score / mean(other scores) > 1, else 1."""
    import torch

    others = (scores.sum() - scores) / (scores.numel() - 1)
    ratio = scores / others.clamp(min=torch.finfo(scores.dtype).tiny)
    return torch.where(ratio > 1, 1 - torch.tanh(alpha * torch.relu(ratio)), torch.ones_like(ratio))


def touched(name: str, parameter: torch.Tensor, which: str) -> bool:
    """conv: convolution kernels (4-D, as the official code); weights: every non-1-D weight."""
    return parameter.dim() == 4 if which == "conv" else parameter.dim() > 1 and name.endswith("weight")


@method("ogm_ge", OGMGEParams)
class OGMGE(BalanceMethod):
    """Scale the dominant encoder's gradients down and add generalization noise."""

    params: OGMGEParams

    @classmethod
    def check(cls, params: OGMGEParams, model: Any) -> None:
        if params.parameters == "conv" and model.encoder == "mlp":
            raise ValueError("method ogm_ge with parameters: conv modulates convolution kernels, which mlp "
                             "encoders do not have: use parameters: weights")

    @property
    def needs(self) -> Needs:
        return Needs(prototype_fraction=0.0 if self.fusion.capabilities["splits"] else self.params.proto_fraction)

    def setup(self) -> None:
        from ..prototypes import PrototypeTracker

        self.tracker = PrototypeTracker()  # scores where the fusion's logits do not split
        self.generator: torch.Generator | None = None

    def before_epoch(self, class_sums: ClassSums | None) -> None:
        if class_sums is not None:
            self.tracker.update(class_sums.sums, class_sums.counts)

    def after_backward(self, out: MultimodalOutput, labels: torch.Tensor) -> Stats:
        import torch

        from ..prototypes import true_class_scores

        context = self.context
        if not self.params.active(context.epoch):
            return {}
        with torch.no_grad():  # scores only steer the modulation
            if self.fusion.capabilities["splits"]:
                logits = {m: out.modality_logits[m] for m in self.modalities}
            else:
                logits = self.tracker.logits({m: out.embeddings[m] for m in self.modalities})
            scores = context.all_reduce_sum(true_class_scores(logits, labels))
        coefs = ogm_coefficients(scores, self.params.alpha)
        if self.generator is None:
            self.generator = torch.Generator(device=context.device).manual_seed(self.seed)
        for i, m in enumerate(self.modalities):
            for name, p in context.model.encoders[m].named_parameters():
                if p.grad is None or not touched(name, p, self.params.parameters):
                    continue
                noise = None
                if self.params.noise:
                    std = p.grad.std() if p.grad.numel() > 1 else p.grad.new_zeros(())
                    noise = torch.empty_like(p.grad).normal_(generator=self.generator) * std
                p.grad.mul_(coefs[i])
                if noise is not None:
                    p.grad.add_(noise)
        return {f"coef_{m}": coefs[i] for i, m in enumerate(self.modalities)}
