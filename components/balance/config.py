"""Parameters of every balancing method, as one discriminated union on `name`.

They live together in this light module (pydantic only) so `mmflow validate` can check a
workflow's `method:` block without importing torch; each method's logic is in its own module.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from mmflow.engine import Params


class _Windowed(Params):
    start_epoch: int = Field(0, ge=0, description="first epoch the method modulates (inclusive)")
    end_epoch: int | None = Field(None, ge=0, description="last epoch it modulates (inclusive); null: every epoch")

    @model_validator(mode="after")
    def _ordered(self) -> "_Windowed":
        if self.end_epoch is not None and self.end_epoch < self.start_epoch:
            raise ValueError(f"end_epoch {self.end_epoch} is before start_epoch {self.start_epoch}")
        return self

    def active(self, epoch: int) -> bool:
        """Whether `epoch` lies in the inclusive window."""
        return self.start_epoch <= epoch and (self.end_epoch is None or epoch <= self.end_epoch)


class NaiveParams(Params):
    """Joint training with cross-entropy on the fused logits."""

    name: Literal["naive"] = "naive"


class UnimodalParams(Params):
    """Train one modality alone (its encoder and a linear head): the per-modality upper reference."""

    name: Literal["unimodal"] = "unimodal"
    modality: str = Field(description="the modality to keep, e.g. gray")


class PMRParams(_Windowed):
    """Prototypical Modal Rebalance (Fan et al., CVPR 2023)."""

    name: Literal["pmr"] = "pmr"
    alpha: float = Field(1.0, ge=0, description="PCE scale (Eq. 10); the authors used 1-5")
    coefficient: Literal["paper", "binary"] = Field(
        "paper", description="paper: Eq. 11's continuous clip; binary: the official code's 1-or-0")
    mu: float = Field(0.0, ge=0, description="PER scale (Eq. 13); 0 disables PER like the official code")
    per_epochs: int = Field(0, ge=0, description="PER applies during the first per_epochs epochs (E_r)")
    eps: float = Field(0.0, ge=0, lt=1, description="prototype momentum (Eq. 12); the authors mostly used 0")
    proto_fraction: float = Field(0.1, gt=0, le=1, description="share of training batches used for prototypes")


class OGMGEParams(_Windowed):
    """On-the-fly Gradient Modulation with Generalization Enhancement (Peng et al., CVPR 2022)."""

    name: Literal["ogm_ge"] = "ogm_ge"
    alpha: float = Field(0.8, ge=0, description="strength: the dominant encoder's coefficient is 1 - tanh(alpha * relu(ratio))")
    noise: bool = Field(True, description="GE: add N(0, std of the unmodulated gradient) to modulated encoders")
    parameters: Literal["conv", "weights"] = Field(
        "weights", description="conv: conv weights only (official code); weights: all non-1-D weights (BalanceBenchmark)")
    proto_fraction: float = Field(0.1, gt=0, le=1, description="prototype subset, when logits do not split by modality")


class ModalityDropoutParams(Params):
    """Drop a whole modality's input (zero it) per sample with probability p during training."""

    name: Literal["modality_dropout"] = "modality_dropout"
    p: float = Field(0.3, ge=0, lt=1, description="probability of dropping each modality of a sample")


class AuxLossParams(Params):
    """Fused cross-entropy plus each modality's own cross-entropy (per-modality heads)."""

    name: Literal["aux_loss"] = "aux_loss"
    weights: dict[str, float] = Field(
        default_factory=dict, description="modality -> weight of its CE; missing modalities weigh 1")
    fused_weight: float = Field(1.0, ge=0, description="weight of the fused CE")


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

    @model_validator(mode="after")
    def _weights_fit_mode(self) -> "GBlendParams":
        if self.weights is not None:
            if self.mode == "online":
                raise ValueError("online G-Blend estimates its own weights: drop weights or use mode: offline")
            if any(w < 0 for w in self.weights.values()) or not sum(self.weights.values()) > 0:
                raise ValueError(f"weights must be >= 0 with a positive sum, got {self.weights}")
        return self

    @staticmethod
    def unsupported_fusion(fusion: str) -> str | None:
        """Why G-Blend cannot train with `fusion`, or None."""
        if fusion == "mmtm":
            return ("method gblend trains each modality's network alone in its probes, but mmtm couples the "
                    "modality streams inside the encoders: use a late fusion or centralnet")
        return None

    def estimate_epochs(self, epochs: int) -> list[int]:
        """Online: the epochs that start a super-epoch (each begins with an estimate)."""
        return [0] + list(range(self.warmup_super_epoch, epochs, self.super_epoch))


MethodParams = Annotated[
    Union[NaiveParams, UnimodalParams, PMRParams, OGMGEParams, ModalityDropoutParams, AuxLossParams, GBlendParams],
    Field(discriminator="name"),
]
