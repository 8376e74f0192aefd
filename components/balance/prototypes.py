"""Class prototypes: per-class mean embeddings, prototype logits and modality scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prototype_logits(embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Negative plain Euclidean distance of each sample to each class prototype (B x C)."""
    return -torch.cdist(embeddings, prototypes.detach())


def update_prototypes(previous: torch.Tensor | None, sums: torch.Tensor, counts: torch.Tensor,
                      eps: float = 0.0) -> torch.Tensor:
    """New class means from (sums, counts), blended as eps*old + (1-eps)*new (Eq. 12).

    A class with no sample keeps its previous prototype (zero if there is none), never NaN.
    """
    seen = counts > 0
    fresh = sums / counts.clamp(min=1)[:, None]
    if previous is None:
        return torch.where(seen[:, None], fresh, torch.zeros_like(fresh))
    blended = eps * previous + (1 - eps) * fresh
    return torch.where(seen[:, None], blended, previous)


def true_class_scores(logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Per modality, the batch sum of softmax(logits)[true class] (Eq. 8's numerator/denominator)."""
    return torch.stack([F.softmax(x.detach(), dim=1).gather(1, labels[:, None]).sum() for x in logits.values()])


def imbalance_ratio(scores: torch.Tensor) -> torch.Tensor:
    """rho: s_0 / s_1 for two modalities (Eq. 8); strongest over weakest score for more."""
    tiny = torch.finfo(scores.dtype).tiny
    if scores.numel() == 2:
        return scores[0] / scores[1].clamp(min=tiny)
    return scores.max() / scores.min().clamp(min=tiny)


class PrototypeTracker:
    """Each modality's class prototypes, refreshed before every epoch from the loop's class sums with momentum
    eps (Eq. 12); PMR, OGM-GE (where the fusion's logits do not split) and the diagnostics share it."""

    def __init__(self, eps: float = 0.0) -> None:
        self.eps = eps
        self.prototypes: dict[str, torch.Tensor] = {}

    def update(self, sums: dict[str, torch.Tensor], counts: torch.Tensor) -> None:
        """Blend in the class means of the latest sums; a class with no sample keeps its prototype."""
        self.prototypes = {m: update_prototypes(self.prototypes.get(m), s, counts, self.eps) for m, s in sums.items()}

    def logits(self, embeddings: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each modality's prototype logits (Eq. 7) for the given embeddings."""
        return {m: prototype_logits(z, self.prototypes[m]) for m, z in embeddings.items()}
