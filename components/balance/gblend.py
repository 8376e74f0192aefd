"""Gradient-Blending (Wang, Tran, Feiszli, CVPR 2020): weigh each head's loss by how well it generalizes.

Every modality gets its own linear head next to the fused head; the loss is
`sum_k w_k * CE(head_k)` over the k modality heads and the fused one (Eq. 7).

The weights come from probe trainings (Algorithm 1): starting from the same model, each
modality's own network and the fused network train for a few epochs. With L_T and L_V the
losses on a training subset and on blend-validation data held out of training, measured
before (N) and after (N+n) the probe:

    O = L_V - L_T,   G = L_V(N) - L_V(N+n),   dO = O(N+n) - O(N),   w_k = G_k / dO_k^2

normalised to sum to one (`formula: paper`). `formula: multibench` is MultiBench's variant:
w_k = L_V(N+n) / O(N+n)^2. Both clamp |dO| (or O) to at least `min_delta_o` so a head whose
overfitting did not move cannot take every weight. A head whose blend-validation loss did not
improve (G <= 0) learned nothing that generalizes: it gets weight 0. If no head improved, the
estimate carries no information (`fallback` is set): online training keeps its current weights,
and a first estimate falls back to uniform weights.

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
current model at the start of every super-epoch; the training loop runs the probes for this
method (`LoopState.run_probes`) and holds the blend-validation data out of training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .base import BalanceMethod, LoopState, Stats
from ..models.fusion import LATE_FUSIONS
from .config import FUSED_HEAD, GBlendParams


@dataclass(frozen=True)
class ProbeLosses:
    """One head's mean losses on the training subset (T') and blend-validation (V), before and after its probe."""

    train_before: float
    val_before: float
    train_after: float
    val_after: float


@dataclass(frozen=True)
class BlendEstimate:
    """Normalised weights per head and what they came from."""

    weights: dict[str, float]
    overfitting: dict[str, float]  # O after the probe
    generalization: dict[str, float]  # G (paper) or L_V after the probe (multibench)
    delta_overfitting: dict[str, float]  # dO (paper) or O after the probe (multibench)
    fallback: bool  # no head improved: uniform weights

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """Flat `kind/head` metrics for the per-epoch history."""
        flat = {f"weight/{h}": w for h, w in self.weights.items()}
        for kind, values in (("O", self.overfitting), ("G", self.generalization), ("dO", self.delta_overfitting)):
            flat.update({f"{kind}/{h}": v for h, v in values.items()})
        flat["fallback"] = float(self.fallback)
        return flat


def blend_weights(losses: dict[str, ProbeLosses], formula: str = "paper", min_delta_o: float = 1e-3) -> BlendEstimate:
    """G-Blend weights from each head's probe losses (see the module docstring for the rules)."""
    raw, overfit, gen, delta = {}, {}, {}, {}
    for head, loss in losses.items():
        o_before, o_after = loss.val_before - loss.train_before, loss.val_after - loss.train_after
        overfit[head] = o_after
        if formula == "paper":
            gen[head], delta[head] = loss.val_before - loss.val_after, o_after - o_before
            raw[head] = max(gen[head], 0.0) / max(abs(delta[head]), min_delta_o) ** 2
        elif formula == "multibench":
            gen[head], delta[head] = loss.val_after, o_after
            raw[head] = gen[head] / max(delta[head], min_delta_o) ** 2
        else:
            raise ValueError(f"unknown G-Blend formula '{formula}' (paper or multibench)")
    total = sum(raw.values())
    fallback = not total > 0
    weights = {h: 1 / len(raw) for h in raw} if fallback else {h: r / total for h, r in raw.items()}
    return BlendEstimate(weights, overfit, gen, delta, fallback)


def with_fused_floor(weights: dict[str, float], floor: float) -> dict[str, float]:
    """The weights with the fused head's raised to at least `floor`, the others scaled to sum to the rest."""
    if weights[FUSED_HEAD] >= floor:
        return weights
    scale = (1 - floor) / (1 - weights[FUSED_HEAD])
    return {h: floor if h == FUSED_HEAD else w * scale for h, w in weights.items()}


class GBlend(BalanceMethod):
    """Blended loss over the modality heads and the fused head; online, re-estimated every super-epoch."""

    params: GBlendParams
    modality_heads = "own"

    def setup(self) -> None:
        params = self.params
        if FUSED_HEAD in self.modalities:
            raise ValueError(f"method gblend calls the fused head '{FUSED_HEAD}': rename that modality")
        self.heads = [*self.modalities, FUSED_HEAD]
        self.holdout = params.holdout if params.mode == "online" else 0.0
        self.refits_fused_head, self.fused_floor = False, 0.0  # set by check(), which knows the fusion
        self.weights: dict[str, float] | None = None
        self.estimate: BlendEstimate | None = None  # the latest, reported in the epoch that made it
        if params.weights is not None:
            given = set(params.weights)
            if given != set(self.heads):
                raise ValueError(f"method gblend: weights must name exactly {', '.join(self.heads)} "
                                 f"(missing: {sorted(set(self.heads) - given)}, unknown: {sorted(given - set(self.heads))})")
            total = sum(params.weights.values())
            self.weights = {h: params.weights[h] / total for h in self.heads}
        elif params.mode == "offline":
            raise ValueError("method gblend (offline) needs weights: give method.weights or wire inputs.weights "
                             "to a gblend.estimate step")

    def check(self, fusion: str) -> None:
        reason = self.params.unsupported_fusion(fusion)
        if reason:
            raise ValueError(reason)
        self.refits_fused_head = self.params.refit_fused_head and fusion in LATE_FUSIONS
        self.fused_floor = 0.0 if self.refits_fused_head else self.params.min_fused_weight
        if self.weights is not None:
            self.weights = with_fused_floor(self.weights, self.fused_floor)

    def before_epoch(self, state: LoopState) -> None:
        self.estimate = None
        if self.params.mode == "online" and state.epoch in self.params.estimate_epochs(state.epochs):
            if state.run_probes is None:
                raise RuntimeError("online G-Blend needs a training loop that runs probes")
            self.estimate = blend_weights(state.run_probes(self.heads), self.params.formula, self.params.min_delta_o)
            if not (self.estimate.fallback and self.weights):  # no new information: keep the current blend
                self.weights = with_fused_floor(self.estimate.weights, self.fused_floor)

    def loss(self, out, labels, state: LoopState) -> tuple[torch.Tensor, Stats]:
        assert self.weights is not None
        stats: Stats = {}
        loss = self.weights[FUSED_HEAD] * F.cross_entropy(out.logits, labels)
        for m in self.modalities:
            own = F.cross_entropy(out.modality_logits[m], labels)
            loss = loss + self.weights[m] * own
            stats[f"loss_{m}"] = own.detach()
        if self.refits_fused_head:  # gradient for the fusion layers only: the encoders' blend is unchanged
            refit, _ = state.model.fusion({m: z.detach() for m, z in out.embeddings.items()})
            loss = loss + F.cross_entropy(refit, labels)
        return loss, stats

    def epoch_metrics(self) -> dict[str, float]:
        found = self.estimate.metrics() if self.estimate is not None else {}
        return {**found, **{f"weight/{h}": w for h, w in (self.weights or {}).items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}
