"""OPM: On-the-fly Prediction Modulation (Wei et al., TPAMI 2024), as the official code does it.

Each modality's score is the batch sum of its softmax probability of the true class (from its own logits, which
the fusion splits off). After the warm-up, with probability p_exe per batch, a modality whose score leads the mean
of the others by ratio r > 1 has its embedding dropped per sample with probability
q = clip(q_base (1 + lambda tanh(r - 1)), 0, 1) (the others: 0); the kept embeddings are scaled by 1 / (1 - theta),
theta the dimension-weighted mean drop probability, and fused again; samples left with no modality do not count.
Scores are summed over ranks and the draws come from a generator seeded alike on every rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from mmflow.engine import Params

from ..base import BalanceMethod, Stats, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class OPMParams(Params):
    """OPM (Wei et al., TPAMI 2024): drop the leading modality's embedding per sample, more the more it leads."""

    name: Literal["opm"] = "opm"
    q_base: float = Field(0.5, ge=0, le=1, description="base drop probability of a leading modality (official "
                          "training script: 0.5)")
    lam: float = Field(0.5, ge=0, description="lambda: q = q_base * (1 + lambda * tanh(ratio - 1))")
    p_exe: float = Field(0.7, ge=0, le=1, description="probability that a batch drops at all")
    warmup_epochs: int = Field(6, ge=0, description="epochs without dropping first (official: epochs 0-5)")


def drop_probabilities(scores: torch.Tensor, q_base: float, lam: float) -> torch.Tensor:
    """q_m = clip(q_base (1 + lambda tanh(relu(score_m / mean of the others - 1))), 0, 1) where that tanh > 0,
    else 0."""
    import torch

    others = (scores.sum() - scores) / (scores.numel() - 1)
    lead = torch.tanh(torch.relu(scores / others.clamp(min=torch.finfo(scores.dtype).tiny) - 1))
    return torch.where(lead > 0, q_base * (1 + lam * lead), torch.zeros_like(lead)).clamp(0, 1)


@method("opm", OPMParams)
class OPM(BalanceMethod):
    """Drop the leading modality's embedding per sample before fusing again."""

    params: OPMParams

    @classmethod
    def check(cls, params: OPMParams, model: Any) -> None:
        from ...models.fusions import FUSIONS

        capabilities = FUSIONS.of(model.fusion).capabilities
        if capabilities["stage"] != "late" or not capabilities["splits"]:
            raise ValueError(f"method opm scores each modality by its own logits and drops embeddings before the "
                             f"fusion, but {model.fusion.name} does not split its logits over embeddings: use concat "
                             "or sum")

    def setup(self) -> None:
        self.generator: torch.Generator | None = None

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        import torch

        from ..prototypes import true_class_scores

        context, params = self.context, self.params
        if self.generator is None:
            self.generator = torch.Generator(device=out.logits.device).manual_seed(self.seed)
        if context.epoch < params.warmup_epochs or torch.rand(
                (), generator=self.generator, device=self.generator.device) >= params.p_exe:
            return context.loss(out.logits, labels), {}
        scores = true_class_scores({m: out.modality_logits[m] for m in self.modalities}, labels)
        q = drop_probabilities(context.all_reduce_sum(scores), params.q_base, params.lam)
        dims = torch.tensor([out.embeddings[m].shape[1] for m in self.modalities], device=q.device, dtype=q.dtype)
        theta = float((dims * q).sum() / dims.sum())
        keep = torch.rand(len(labels), len(self.modalities), generator=self.generator,
                          device=self.generator.device).to(q.device) >= q
        dropped = {m: out.embeddings[m] * keep[:, i:i + 1] / (1 - theta) for i, m in enumerate(self.modalities)}
        logits, _ = context.model.fusion(dropped)
        counted = keep.any(dim=1)
        loss = context.loss(logits[counted], labels[counted]) if counted.any() else logits.sum() * 0
        return loss, {**{f"q_{m}": q[i] for i, m in enumerate(self.modalities)},
                      "uncounted": (~counted).float().mean()}
