"""How Gradient-Blending weights come from probe losses (Wang, Tran, Feiszli, CVPR 2020, Algorithm 1).

With L_T and L_V a head's losses on a training subset and on blend-validation data held out of
training, measured before (N) and after (N+n) its probe:

    O = L_V - L_T,   G = L_V(N) - L_V(N+n),   dO = O(N+n) - O(N),   w_k = G_k / dO_k^2

normalised to sum to one (`formula: paper`). `formula: multibench` is MultiBench's variant:
w_k = L_V(N+n) / O(N+n)^2. Both clamp |dO| (or O) to at least `min_delta_o` so a head whose
overfitting did not move cannot take every weight. A head whose blend-validation loss did not
improve (G <= 0) learned nothing that generalizes: it gets weight 0. If no head improved, the
estimate carries no information (`fallback` is set): online training keeps its current weights,
and a first estimate falls back to uniform weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import Field

from mmflow.engine import Params

FUSED_HEAD = "fused"  # G-Blend's name for the fused head next to the modality heads


class BlendEstimateParams(Params):
    """How Gradient-Blending weights are estimated (Wang et al., CVPR 2020, Algorithm 1)."""

    holdout: float = Field(0.08, gt=0, lt=1, description="share of the training data held out as blend-validation")
    probe_epochs: int = Field(1, ge=1, description="epochs each probe (uni-modal and fused) trains")
    probe_fraction: float = Field(
        0.5, gt=0, le=1, description="share of the remaining training data the probes train on (redrawn each estimate)")
    formula: Literal["paper", "multibench"] = Field(
        "paper", description="paper: w = G / dO^2 from before/after deltas; multibench: L_val / O^2 after the probe")
    min_delta_o: float = Field(1e-3, gt=0, description="|dO| (or O) is clamped to at least this before squaring")


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
