"""AGM: Adaptive Gradient Modulation (Li et al., ICCV 2023), as the official code does it.

Each modality's share of the fused logits is its Shapley value over the modalities, each coalition's value the
model's logits with the other modalities' inputs zeroed (in eval mode, with gradients), the empty coalition's 0,
so the shares sum to the fused logits. A modality's score is the batch mean of -log p(true class) from its share;
with k modalities, ratio_m = exp(k/(k-1) (mean score - score_m)), its running counterpart from the scores' mean
since training began, and coef_m = exp(alpha * min(running ratio - ratio, max_exponent)). The loss is the problem's
loss on the sum of the shares, each share's gradient scaled by its coefficient (the official backward hooks).
Scores are averaged over ranks, so data-parallel replicas use the same coefficients.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Callable, Literal

from pydantic import Field

from ..base import BalanceMethod, Stats, Windowed, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class AGMParams(Windowed):
    """Adaptive Gradient Modulation (Li et al., ICCV 2023): Shapley shares of the logits, their gradients rescaled."""

    name: Literal["agm"] = "agm"
    end_epoch: int | None = Field(20, ge=0, description="last epoch it modulates (inclusive; official default 20); "
                                  "null: every epoch")
    alpha: float = Field(1.0, ge=0, description="strength: coef = exp(alpha * min(running ratio - ratio, cap))")
    max_exponent: float = Field(10.0, gt=0, description="cap on running ratio - ratio (official: 10 for two "
                                "modalities, 7 for three)")


def shapley_shares(value: Callable[[frozenset[str]], torch.Tensor], modalities: list[str]) -> dict[str, torch.Tensor]:
    """phi_m = sum over coalitions S without m of |S|! (k-|S|-1)! / k! (v(S + m) - v(S)), v(empty) = 0."""
    k = len(modalities)
    cache: dict[frozenset[str], torch.Tensor | float] = {frozenset(): 0.0}

    def v(coalition: frozenset[str]) -> torch.Tensor | float:
        if coalition not in cache:
            cache[coalition] = value(coalition)
        return cache[coalition]

    shares = {}
    for m in modalities:
        others = [o for o in modalities if o != m]
        share: torch.Tensor | float = 0.0
        for size in range(k):
            weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
            for coalition in map(frozenset, itertools.combinations(others, size)):
                share = share + weight * (v(coalition | {m}) - v(coalition))
        shares[m] = share
    return shares


def agm_coefficients(scores: torch.Tensor, running: torch.Tensor, alpha: float, max_exponent: float) -> torch.Tensor:
    """exp(alpha * min(running ratio - ratio, max_exponent)), ratio = exp(k/(k-1) (mean score - score))."""
    import torch

    k = scores.numel()

    def ratio(s: torch.Tensor) -> torch.Tensor:
        return torch.exp(k / (k - 1) * (s.mean() - s))

    return torch.exp(alpha * (ratio(running) - ratio(scores)).clamp(max=max_exponent))


def scaled_gradient(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """x in the forward pass; its gradient times `coef` in the backward pass."""
    return x.detach() + coef * (x - x.detach())


@method("agm", AGMParams)
class AGM(BalanceMethod):
    """Rescale the gradient through each modality's Shapley share of the logits toward its running balance."""

    params: AGMParams

    def setup(self) -> None:
        import torch

        self.running = torch.zeros(len(self.modalities))  # mean score per modality since training began
        self.steps = 0
        self.world_size: torch.Tensor | None = None
        self.inputs: dict[str, torch.Tensor] = {}

    def prepare_inputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.inputs = features  # the coalitions' passes zero some of them
        return features

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        import torch

        context, params = self.context, self.params
        if params.end_epoch is not None and context.epoch > params.end_epoch:  # no running scores needed any more
            return context.loss(out.logits, labels), {}
        everyone = frozenset(self.modalities)
        model = context.model
        model.eval()  # the coalitions' passes leave batch statistics alone, as the official code's
        try:
            shares = shapley_shares(lambda coalition: out.logits if coalition == everyone else model(
                {m: x if m in coalition else torch.zeros_like(x) for m, x in self.inputs.items()}).logits,
                self.modalities)
        finally:
            model.train()
        with torch.no_grad():
            if self.world_size is None:
                self.world_size = context.all_reduce_sum(torch.ones((), device=out.logits.device))
            probs = torch.stack([shares[m].softmax(1).gather(1, labels[:, None]).squeeze(1) for m in self.modalities])
            scores = context.all_reduce_sum(-probs.clamp(min=1e-8).log().mean(1)) / self.world_size
            running = self.running.to(scores.device)
            coefs = agm_coefficients(scores, running, params.alpha, params.max_exponent)
            if not params.active(context.epoch):  # before the window: running scores only
                coefs = torch.ones_like(coefs)
            self.steps += 1
            self.running = (running + (scores - running) / self.steps).cpu()
        logits = sum(scaled_gradient(shares[m], coefs[i]) for i, m in enumerate(self.modalities))
        stats: Stats = {f"coef_{m}": coefs[i] for i, m in enumerate(self.modalities)}
        stats.update({f"score_{m}": scores[i] for i, m in enumerate(self.modalities)})
        return context.loss(logits, labels), stats

    def state_dict(self) -> dict[str, object]:
        return {"running": self.running, "steps": self.steps}
