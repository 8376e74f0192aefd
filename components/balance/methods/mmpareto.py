"""MMPareto: the fused loss's and each modality's own loss's gradients integrated by Pareto weights (Wei & Hu,
ICML 2024), as the official code does it.

The loss is CE(fused) + sum_m CE(head_m), every modality with its own linear head. For encoder m, g_mm is the
gradient of the fused loss and g_u that of its own loss, each over all of the encoder's parameters. Where
cos(g_mm, g_u) > 0 both weigh 1/2; else the weights are the min-norm point of their convex hull (MGDA's closed
form for two). Each encoder parameter's gradient becomes gamma * max(1, |g_mm + g_u| / |d|) * d with
d = 2 (w_mm g_mm + w_u g_u), norms per parameter tensor; heads and fusion keep the plain sum's gradients.
Gradients are averaged over ranks before the choice, so data-parallel replicas make the same one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from mmflow.engine import Params

from ..base import BalanceMethod, Needs, Stats, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class MMParetoParams(Params):
    """MMPareto (Wei & Hu, ICML 2024): fused and unimodal losses, encoder gradients integrated by Pareto weights."""

    name: Literal["mmpareto"] = "mmpareto"
    gamma: float = Field(1.5, gt=0, description="factor on the integrated encoder gradients (official code: 1.5)")


def pareto_weights(g_mm: torch.Tensor, g_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_mm, w_u): 1/2 each where the flat gradients agree (cosine > 0), else the minimiser of
    |w g_mm + (1 - w) g_u| over w in [0, 1] (the official MinNormSolver, 0.999 / 0.001 at the ends)."""
    import torch
    import torch.nn.functional as F

    v11, v12, v22 = g_mm @ g_mm, g_mm @ g_u, g_u @ g_u
    inner = (v22 - v12) / (v11 + v22 - 2 * v12)
    min_norm = torch.where(v12 >= v11, 0.999, torch.where(v12 >= v22, 0.001, inner))
    w_mm = torch.where(F.cosine_similarity(g_mm, g_u, dim=0) > 0, 0.5, min_norm)
    return w_mm, 1 - w_mm


def integrated(g_mm: torch.Tensor, g_u: torch.Tensor, w_mm: torch.Tensor, w_u: torch.Tensor,
               gamma: float) -> torch.Tensor:
    """One parameter's new gradient: gamma * max(1, |g_mm + g_u| / |d|) * d, d = 2 (w_mm g_mm + w_u g_u)."""
    import torch

    d = 2 * (w_mm * g_mm + w_u * g_u)
    norm = d.norm()
    scale = torch.where(norm > 0, (g_mm + g_u).norm() / norm, 1.0).clamp(min=1)  # d = 0: nothing to scale
    return gamma * scale * d


@method("mmpareto", MMParetoParams)
class MMPareto(BalanceMethod):
    """Fused plus unimodal cross-entropy; each encoder's two gradients integrated by Pareto weights."""

    params: MMParetoParams
    needs = Needs(modality_heads="own")

    @classmethod
    def check(cls, params: MMParetoParams, model: Any) -> None:
        from ...models.fusions import FUSIONS

        if FUSIONS.of(model.fusion).capabilities["couples_encoders"]:
            raise ValueError(f"method mmpareto splits each encoder's gradient into the fused loss's and its own "
                             f"modality's, but {model.fusion.name} couples the encoders (every modality's loss "
                             "reaches every encoder): use a late fusion or centralnet")

    def setup(self) -> None:
        self.unimodal: dict[str, list[torch.Tensor]] = {}  # each encoder's own-loss gradients, this batch
        self.world_size: torch.Tensor | None = None

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        import torch
        import torch.nn.functional as F

        own = {m: F.cross_entropy(out.modality_logits[m], labels) for m in self.modalities}
        unimodal = sum(own.values())
        encoders = {m: list(self.context.model.encoders[m].parameters()) for m in self.modalities}
        # each modality's loss reaches its own encoder only, so one pass gives every encoder its g_u
        grads = torch.autograd.grad(unimodal, [p for ps in encoders.values() for p in ps], retain_graph=True,
                                    allow_unused=True)
        flat = iter(grads)
        self.unimodal = {m: [g if (g := next(flat)) is not None else torch.zeros_like(p) for p in ps]
                         for m, ps in encoders.items()}
        return self.context.loss(out.logits, labels) + unimodal, {f"loss_{m}": v.detach() for m, v in own.items()}

    def after_backward(self, out: MultimodalOutput, labels: torch.Tensor) -> Stats:
        import torch
        import torch.nn.functional as F

        context = self.context
        if self.world_size is None:  # the backward averaged the gradients over ranks: g_u must be too
            self.world_size = context.all_reduce_sum(torch.ones((), device=context.device))
        stats: Stats = {}
        for m, g_u in self.unimodal.items():
            params = list(context.model.encoders[m].parameters())
            summed = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]  # g_mm + g_u
            g_u = torch.cat([g.flatten() for g in g_u])
            g_u = context.all_reduce_sum(g_u) / self.world_size
            g_mm = torch.cat([g.flatten() for g in summed]) - g_u
            w_mm, w_u = pareto_weights(g_mm, g_u)
            offset = 0
            for p, both in zip(params, summed):
                n = both.numel()
                p.grad = integrated(g_mm[offset:offset + n].view_as(both), g_u[offset:offset + n].view_as(both),
                                    w_mm, w_u, self.params.gamma)
                offset += n
            stats[f"cos_{m}"] = F.cosine_similarity(g_mm, g_u, dim=0)  # below 0: the two gradients conflict
            stats[f"weight_{m}"] = w_u
        self.unimodal = {}
        return stats
