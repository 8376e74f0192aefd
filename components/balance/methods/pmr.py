"""PMR: Prototypical Modal Rebalance (Fan et al., CVPR 2023), for any fusion and k >= 2 modalities.

Per batch: prototype logits -d(z_m, c_m) (plain Euclidean, Eq. 7); each modality's score s_m,
the batch sum of its prototype probability of the true class (Eq. 8, rho = s_0 / s_1); the
dominant modality is the highest score. Every other modality m gets a coefficient,
clip(0, s_dom / s_m - 1, 1) (`paper`, Eq. 11) or 1 if weaker else 0 (`binary`, official code),
and the loss is CE(fused) + alpha * sum_m coef_m * PCE_m (Eqs. 9-10). PER (Eq. 13) subtracts
mu * max(coef) * H(prototype softmax of the dominant modality) during the first epochs.
With k = 2 these are exactly the paper's beta and gamma.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..base import BalanceMethod, ClassSums, Needs, Stats, Windowed, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class PMRParams(Windowed):
    """Prototypical Modal Rebalance (Fan et al., CVPR 2023)."""

    name: Literal["pmr"] = "pmr"
    alpha: float = Field(1.0, ge=0, description="PCE scale (Eq. 10); the authors used 1-5")
    coefficient: Literal["paper", "binary"] = Field(
        "paper", description="paper: Eq. 11's continuous clip; binary: the official code's 1-or-0")
    mu: float = Field(0.0, ge=0, description="PER scale (Eq. 13); 0 disables PER like the official code")
    per_epochs: int = Field(0, ge=0, description="PER applies during the first per_epochs epochs (E_r)")
    eps: float = Field(0.0, ge=0, lt=1, description="prototype momentum (Eq. 12); the authors mostly used 0")
    proto_fraction: float = Field(0.1, gt=0, le=1, description="share of training batches used for prototypes")


def modality_coefficients(scores: torch.Tensor, rule: Literal["paper", "binary"]) -> torch.Tensor:
    """PCE coefficient per modality from their scores; the dominant (first highest) gets 0."""
    import torch

    dominant = int(torch.argmax(scores))
    if rule == "paper":  # s_dom / s_m >= 1: only the upper clip can bind
        coefs = (scores[dominant] / scores.clamp(min=torch.finfo(scores.dtype).tiny) - 1).clamp(max=1)
    else:
        coefs = (scores < scores[dominant]).to(scores.dtype)
    coefs[dominant] = 0
    return coefs


def pmr_penalty(embeddings: dict[str, torch.Tensor], labels: torch.Tensor, prototypes: dict[str, torch.Tensor], *,
                alpha: float, mu: float, coefficient: Literal["paper", "binary"],
                regularize: bool) -> tuple[torch.Tensor, Stats]:
    """PMR's terms beyond the fused cross-entropy (PCE, PER) and statistics, as tensors (no host sync)."""
    import torch
    import torch.nn.functional as F

    from ..prototypes import imbalance_ratio, prototype_logits, true_class_scores

    names = list(embeddings)
    logits = {m: prototype_logits(embeddings[m], prototypes[m]) for m in names}
    scores = true_class_scores(logits, labels)
    coefs = modality_coefficients(scores, coefficient)
    loss = sum(alpha * coefs[i] * F.cross_entropy(logits[m], labels) for i, m in enumerate(names))
    if regularize and mu > 0:
        log_p = F.log_softmax(logits[names[int(torch.argmax(scores))]], dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1).mean()
        loss = loss - mu * coefs.max() * entropy
    stats = {"rho": imbalance_ratio(scores)}
    for i, m in enumerate(names):
        stats[f"coef_{m}"] = coefs[i]
        stats[f"score_{m}"] = scores[i] / labels.numel()
    return loss, stats


def pmr_terms(fused_logits: torch.Tensor, embeddings: dict[str, torch.Tensor], labels: torch.Tensor,
              prototypes: dict[str, torch.Tensor], *, alpha: float, mu: float,
              coefficient: Literal["paper", "binary"], regularize: bool) -> tuple[torch.Tensor, Stats]:
    """PMR loss (Eq. 10, with PER) and statistics as tensors: the training loop's version of pmr_loss."""
    import torch.nn.functional as F

    penalty, stats = pmr_penalty(embeddings, labels, prototypes, alpha=alpha, mu=mu, coefficient=coefficient,
                                 regularize=regularize)
    return F.cross_entropy(fused_logits, labels) + penalty, stats


def pmr_loss(fused_logits: torch.Tensor, embeddings: dict[str, torch.Tensor], labels: torch.Tensor,
             prototypes: dict[str, torch.Tensor], *, alpha: float, mu: float,
             coefficient: Literal["paper", "binary"] = "paper", regularize: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """PMR's batch loss (Eqs. 7-13) and stats as floats: rho, coef_<m>, score_<m> (mean true-class prob).

    `embeddings` and `prototypes` are dicts keyed by modality name in workflow order.
    """
    loss, stats = pmr_terms(fused_logits, embeddings, labels, prototypes, alpha=alpha, mu=mu,
                            coefficient=coefficient, regularize=regularize)
    return loss, {k: float(v) for k, v in stats.items()}


@method("pmr", PMRParams, localization=True)
class PMR(BalanceMethod):
    """PCE on the slow modalities and PER on the dominant one, inside the modulation window."""

    params: PMRParams

    @property
    def needs(self) -> Needs:
        return Needs(prototype_fraction=self.params.proto_fraction)

    def setup(self) -> None:
        from ..prototypes import PrototypeTracker

        self.tracker = PrototypeTracker(self.params.eps)

    def before_epoch(self, class_sums: ClassSums | None) -> None:
        """Prototypes before the first epoch and after every epoch, with momentum eps (Eq. 12)."""
        assert class_sums is not None  # needs.prototype_fraction > 0
        self.tracker.update(class_sums.sums, class_sums.counts)

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """CE on every sample; PCE and PER on the samples that are not background (all, in classification)."""
        fused, epoch = self.context.loss(out.logits, labels), self.context.epoch
        if not self.params.active(epoch):
            return fused, {}
        embeddings = out.embeddings
        if self.context.background is not None:  # localization: PMR applies to event segments only, as the paper
            events = labels != self.context.background
            embeddings, labels = {m: z[events] for m, z in embeddings.items()}, labels[events]
        penalty, stats = pmr_penalty(embeddings, labels, self.tracker.prototypes, alpha=self.params.alpha,
                                     mu=self.params.mu, coefficient=self.params.coefficient,
                                     regularize=epoch < self.params.per_epochs)
        return fused + penalty, stats

    def state_dict(self) -> dict:
        return {"prototypes": self.tracker.prototypes}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.prototypes = state["prototypes"]
