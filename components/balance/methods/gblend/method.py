"""Gradient-Blending (Wang, Tran, Feiszli, CVPR 2020): weigh each head's loss by how well it generalizes.

Every modality gets its own linear head next to the fused head; the loss is
`sum_k w_k * CE(head_k)` over the k modality heads and the fused one (Eq. 7). The weights come
from probe trainings (probes.py) turned into weights by estimate.py.

The fused head makes the prediction, yet the formula can give it a weight of 0 (its probe
overfits or does not improve), and a head with weight 0 is never trained. So the fused head
always learns, one of two ways. By default its weight is raised to at least `min_fused_weight`
(0.1), the other weights scaled to fill the rest. With `refit_fused_head` (late fusions) the
fusion layers instead also learn from the fused CE on detached embeddings, which keeps the
predicting head fitted to the current encoders without changing the blend of gradients that
reaches them (MultiBench fine-tunes the head after every super-epoch; the paper evaluates
trunks with a fine-tuned head, Fig. 5b); centralnet's fused stream reads the encoders' stage
maps, so it always takes the floor.

Offline: fixed weights (given, or from a `gblend.estimate` step). Online: re-estimated from the
current model at the start of every super-epoch by probes that rank 0 runs as side tasks on
blend-validation data the training loop holds out (`Needs.holdout`). Training waits for the first
estimate; by default (`overlap_probes`) a later one's probes train beside the first epoch of their
super-epoch, which keeps the weights before, and its weights apply from the second epoch: the
probes cost no training time where they have CPUs or GPUs of their own (Ray tasks), and the
numbers do not depend on the executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field, model_validator

from ...base import BalanceMethod, ClassSums, Needs, Stats, TrainingContext, method
from .estimate import FUSED_HEAD, BlendEstimate, BlendEstimateParams, ProbeLosses, blend_weights, with_fused_floor

if TYPE_CHECKING:
    import torch

    from ....models.multimodal import MultimodalOutput
    from .probes import OnlineProbes


class GBlendParams(BlendEstimateParams):
    """Gradient-Blending: loss sum_k w_k * CE(head_k) over each modality's own head and the fused head."""

    name: Literal["gblend"] = "gblend"
    mode: Literal["offline", "online"] = Field(
        "offline", description="offline: fixed weights (given, or wired from gblend.estimate); online: "
        "re-estimated at the start of every super-epoch by probe trainings")
    weights: dict[str, float] | None = Field(
        None, description="offline: head -> weight (each modality and 'fused'); or wire inputs.weights")
    refit_fused_head: bool = Field(
        False, description="late fusions: the fusion layers also learn from the fused CE on detached embeddings, so "
        "the head that predicts stays trained whatever its blend weight")
    min_fused_weight: float = Field(
        0.1, ge=0, lt=1, description="where the fused head is not refit (centralnet, or refit_fused_head false): "
        "its blend weight is raised to at least this, the other weights scaled to fill the rest")
    warmup_super_epoch: int = Field(10, ge=1, description="online: length of the first super-epoch (paper: 10)")
    super_epoch: int = Field(5, ge=1, description="online: length of every later super-epoch (paper: 5)")
    overlap_probes: bool = Field(
        True, description="online: an estimate after the first trains its probes beside the first epoch of its "
        "super-epoch, which keeps the weights before, and applies from the second (false: training waits for the "
        "probes, the paper's order)")

    @model_validator(mode="after")
    def _weights_fit_mode(self) -> "GBlendParams":
        if self.weights is not None:
            if self.mode == "online":
                raise ValueError("online G-Blend estimates its own weights: drop weights or use mode: offline")
            if any(w < 0 for w in self.weights.values()) or not sum(self.weights.values()) > 0:
                raise ValueError(f"weights must be >= 0 with a positive sum, got {self.weights}")
        return self

    def estimate_epochs(self, epochs: int) -> list[int]:
        """Online: the epochs that start a super-epoch (each begins with an estimate)."""
        return [0] + list(range(self.warmup_super_epoch, epochs, self.super_epoch))


@method("gblend", GBlendParams)
class GBlend(BalanceMethod):
    """Blended loss over the modality heads and the fused head; online, re-estimated every super-epoch."""

    params: GBlendParams

    @classmethod
    def check(cls, params: GBlendParams, model: Any) -> None:
        reason = unsupported_fusion(model.fusion.name)
        if reason:
            raise ValueError(reason)

    @property
    def needs(self) -> Needs:
        online = self.params.mode == "online"
        return Needs(modality_heads="own", holdout=self.params.holdout if online else 0.0,
                     parallel_tasks=len(self.heads) if online else 0)

    def setup(self) -> None:
        params = self.params
        if FUSED_HEAD in self.modalities:
            raise ValueError(f"method gblend calls the fused head '{FUSED_HEAD}': rename that modality")
        self.heads = [*self.modalities, FUSED_HEAD]
        self.refits_fused_head = params.refit_fused_head and self.fusion.capabilities["stage"] == "late"
        self.fused_floor = 0.0 if self.refits_fused_head else params.min_fused_weight
        self.weights: dict[str, float] | None = None
        self.estimate: BlendEstimate | None = None  # the latest, reported in the epoch that made it
        self.pending: Callable[[], dict[str, ProbeLosses]] | None = None  # probes training beside this epoch
        self.probes: OnlineProbes  # online: made when bound
        if params.weights is not None:
            given = set(params.weights)
            if given != set(self.heads):
                raise ValueError(f"method gblend: weights must name exactly {', '.join(self.heads)} "
                                 f"(missing: {sorted(set(self.heads) - given)}, unknown: {sorted(given - set(self.heads))})")
            total = sum(params.weights.values())
            self.weights = with_fused_floor({h: params.weights[h] / total for h in self.heads}, self.fused_floor)
        elif params.mode == "offline":
            raise ValueError("method gblend (offline) needs weights: give method.weights or wire inputs.weights "
                             "to a gblend.estimate step")

    def bind(self, context: TrainingContext) -> None:
        super().bind(context)
        if self.params.mode == "online":
            from .probes import OnlineProbes

            self.probes = OnlineProbes(context, self.params)

    def before_epoch(self, class_sums: ClassSums | None) -> None:
        self.estimate = None
        epoch = self.context.epoch
        if self.params.mode != "online" or epoch not in self.params.estimate_epochs(self.context.epochs):
            return
        losses = self.probes.start(self.heads, draw=epoch)
        if self.weights is not None and self.params.overlap_probes:  # this epoch trains with the weights before
            self.pending = losses
        else:
            self._blend(losses())

    def after_epoch(self) -> None:
        if self.pending is not None:
            losses, self.pending = self.pending, None
            self._blend(losses())

    def _blend(self, losses: dict[str, ProbeLosses]) -> None:
        self.estimate = blend_weights(losses, self.params.formula, self.params.min_delta_o)
        if not (self.estimate.fallback and self.weights):  # no new information: keep the current blend
            self.weights = with_fused_floor(self.estimate.weights, self.fused_floor)

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        import torch.nn.functional as F

        assert self.weights is not None
        stats: Stats = {}
        loss = self.weights[FUSED_HEAD] * F.cross_entropy(out.logits, labels)
        for m in self.modalities:
            own = F.cross_entropy(out.modality_logits[m], labels)
            loss = loss + self.weights[m] * own
            stats[f"loss_{m}"] = own.detach()
        if self.refits_fused_head:  # gradient for the fusion layers only: the encoders' blend is unchanged
            refit, _ = self.context.model.fusion({m: z.detach() for m, z in out.embeddings.items()})
            loss = loss + F.cross_entropy(refit, labels)
        return loss, stats

    def epoch_metrics(self) -> dict[str, float]:
        found = self.estimate.metrics() if self.estimate is not None else {}
        return {**found, **{f"weight/{h}": w for h, w in (self.weights or {}).items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}


def unsupported_fusion(fusion: str) -> str | None:
    """Why G-Blend's probes cannot train with `fusion`, or None."""
    from ....models.fusions import FUSIONS

    if FUSIONS.get(fusion).capabilities["couples_encoders"]:
        return (f"method gblend trains each modality's network alone in its probes, but {fusion} couples the "
                "modality streams inside the encoders: use a late fusion or centralnet")
    return None
