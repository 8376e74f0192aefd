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

import torch

from ..models.fusion import fusion_splits
from .base import BalanceMethod, LoopState, Stats
from .config import OGMGEParams
from .prototypes import prototype_logits, true_class_scores, update_prototypes


def ogm_coefficients(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """1 - tanh(alpha * relu(ratio)) where ratio = score / mean(other scores) > 1, else 1."""
    others = (scores.sum() - scores) / (scores.numel() - 1)
    ratio = scores / others.clamp(min=torch.finfo(scores.dtype).tiny)
    return torch.where(ratio > 1, 1 - torch.tanh(alpha * torch.relu(ratio)), torch.ones_like(ratio))


def touched(name: str, parameter: torch.Tensor, which: str) -> bool:
    """conv: convolution kernels (4-D, as the official code); weights: every non-1-D weight."""
    return parameter.dim() == 4 if which == "conv" else parameter.dim() > 1 and name.endswith("weight")


class OGMGE(BalanceMethod):
    """Scale the dominant encoder's gradients down and add generalization noise."""

    params: OGMGEParams

    def setup(self) -> None:
        self.prototypes: dict[str, torch.Tensor] = {}
        self.generator: torch.Generator | None = None

    def check(self, fusion: str) -> None:
        self.uses_prototypes = not fusion_splits(fusion)
        self.prototype_fraction = self.params.proto_fraction if self.uses_prototypes else 0.0

    def before_epoch(self, state: LoopState) -> None:
        if self.uses_prototypes:
            self.prototypes = {m: update_prototypes(self.prototypes.get(m), s, state.subset_counts)
                               for m, s in state.subset_sums.items()}

    def after_backward(self, out, labels, state: LoopState) -> Stats:
        if not self.params.active(state.epoch):
            return {}
        with torch.no_grad():  # scores only steer the modulation
            if self.uses_prototypes:
                logits = {m: prototype_logits(out.embeddings[m], self.prototypes[m]) for m in self.modalities}
            else:
                logits = {m: out.modality_logits[m] for m in self.modalities}
            scores = state.all_reduce_sum(true_class_scores(logits, labels))
        coefs = ogm_coefficients(scores, self.params.alpha)
        if self.generator is None:
            self.generator = torch.Generator(device=state.device).manual_seed(self.seed)
        for i, m in enumerate(self.modalities):
            for name, p in state.model.encoders[m].named_parameters():
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
