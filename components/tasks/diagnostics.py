"""Per-epoch diagnostics of modality imbalance, for every method and fusion.

Over the epoch's training batches: loss and fused accuracy. Over a sample of them (every k-th batch, k from
`diagnostic_fraction`), computed from the training step's own outputs: each modality's head accuracy (where
per-modality logits exist) and prototype (nearest class mean) accuracy, and the mean imbalance ratio rho from
prototype scores (PMR's Eq. 8). On the first few batches, the angle between each encoder's gradient from its own
loss and from the fused loss (PMR Fig. 2c), from the training step's own forward pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..balance.prototypes import imbalance_ratio, prototype_logits, true_class_scores
from ..models.multimodal import MultimodalClassifier, MultimodalOutput


class EpochTotals:
    """Sums of per-batch quantities, reduced over ranks once per epoch."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, key: str, value: torch.Tensor, count: int = 1) -> None:
        """Accumulate `value` (a sum over `count` items) under `key`."""
        value = value.detach().float()
        self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.counts[key] = self.counts.get(key, 0) + count

    def means(self, all_reduce_sum) -> dict[str, float]:
        """Mean of each key over all ranks (every rank must have the same keys)."""
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        device = self.sums[keys[0]].device
        packed = torch.stack([self.sums[k] for k in keys] + [torch.tensor(float(self.counts[k]), device=device) for k in keys])
        packed = all_reduce_sum(packed).tolist()
        return {k: packed[i] / max(packed[len(keys) + i], 1) for i, k in enumerate(keys)}


def batch_results(totals: EpochTotals, out: MultimodalOutput, labels: torch.Tensor, loss: torch.Tensor) -> None:
    """Add one training batch's loss and fused accuracy to the epoch totals."""
    n = labels.numel()
    totals.add("loss", loss * n, n)
    totals.add("train_accuracy", (out.logits.argmax(1) == labels).sum(), n)


def batch_diagnostics(totals: EpochTotals, out: MultimodalOutput, labels: torch.Tensor,
                      prototypes: dict[str, torch.Tensor]) -> None:
    """Add one training batch's accuracy per modality head and prototype, and imbalance ratio, to the totals."""
    n = labels.numel()
    for m, logits in out.modality_logits.items():
        totals.add(f"head_accuracy_{m}", (logits.argmax(1) == labels).sum(), n)
    if prototypes:
        logits = {m: prototype_logits(out.embeddings[m].detach(), prototypes[m]) for m in prototypes}
        for m, proto in logits.items():
            totals.add(f"prototype_accuracy_{m}", (proto.argmax(1) == labels).sum(), n)
        if len(logits) > 1:
            totals.add("rho", imbalance_ratio(true_class_scores(logits, labels)))


def _flat(grads: tuple[torch.Tensor | None, ...], params: list[torch.Tensor]) -> torch.Tensor:
    # a parameter one loss doesn't reach (CentralNet's fused path skips the encoder's fc) has a zero gradient
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params, strict=True)])


def gradient_angles(model: MultimodalClassifier, out: MultimodalOutput, labels: torch.Tensor,
                    prototypes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Degrees between each encoder's gradient from its own loss and from the fused loss, from a training step's
    outputs before its backward pass (whose graph is kept): no forward pass of its own, and nothing of the step changes.

    A modality's own loss is CE on its logits where the model has them, else PCE on its prototypes. The fused loss's
    gradient on every encoder comes from one backward pass.
    """
    own = {}
    for m in model.modalities:
        if m in out.modality_logits:
            own[m] = F.cross_entropy(out.modality_logits[m], labels)
        elif m in prototypes:
            own[m] = F.cross_entropy(prototype_logits(out.embeddings[m], prototypes[m]), labels)
    params = {m: [p for p in model.encoders[m].parameters() if p.requires_grad] for m in own}
    every = [p for m in own for p in params[m]]
    if not every:
        return {}
    fused = iter(torch.autograd.grad(F.cross_entropy(out.logits, labels), every, retain_graph=True, allow_unused=True))
    angles = {}
    for m, loss in own.items():
        a = _flat(torch.autograd.grad(loss, params[m], retain_graph=True, allow_unused=True), params[m])
        b = _flat(tuple(next(fused) for _ in params[m]), params[m])
        cosine = F.cosine_similarity(a, b, dim=0).clamp(-1, 1)
        angles[m] = torch.rad2deg(torch.arccos(cosine)) if torch.isfinite(cosine) else torch.tensor(math.nan)
    return angles
