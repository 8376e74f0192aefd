"""`train.localization` and `eval.localization`: audio-visual event localization (AVEL) per segment.

Training runs the shared multimodal loop with segments as samples, by default with
cross-entropy on each segment's logits over the events plus background. The original AVEL code
instead applies a softmax and then a multi-label soft-margin loss against one-hot targets
(`loss: avel_margin`): the softmax squashes its inputs into [0, 1], so the loss saturates and
its gradients are small; cross-entropy is also what PMR's prototype terms are defined against.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from mmflow.engine import Params, StepContext, component

from ..balance.config import NaiveParams, PMRParams
from .classification import TrainClassifierParams


class TrainLocalizationParams(TrainClassifierParams):
    """AVEL model (attention + BiLSTMs), fusion, optimizer and method (naive or PMR on event segments)."""

    encoder: Literal["avel"] = Field("avel", description="audio-guided visual attention + a BiLSTM per modality")
    hidden: int = Field(128, ge=1, description="LSTM hidden size per direction (embeddings are 2 x hidden)")
    attention_dim: int = Field(256, ge=1, description="hidden size of the audio-guided attention")
    fusion: Literal["concat", "dmrn"] = Field("concat", description="concat, or dmrn (dual multimodal residual)")
    dmrn_blocks: int = Field(1, ge=1, le=8, description="residual blocks of the DMRN fusion")
    loss: Literal["cross_entropy", "avel_margin"] = Field(
        "cross_entropy", description="per-segment loss: cross-entropy, or AVEL's original softmax + multi-label "
        "soft-margin loss")
    optimizer: Literal["sgd", "adam", "adagrad"] = Field("adam", description="optimizer (AVEL: Adam)")
    lr: float = Field(1e-3, gt=0, description="learning rate (AVEL: 1e-3)")
    batch_size: int = Field(64, ge=1, description="videos per batch on each worker")
    method: Annotated[Union[NaiveParams, PMRParams], Field(discriminator="name")] = Field(
        default_factory=NaiveParams, description="naive, or pmr (prototypes over segments; PCE and PER on "
        "event segments only)")

    @model_validator(mode="after")
    def _no_embedding_dim(self) -> "TrainLocalizationParams":
        if self.embedding_dim is not None:
            raise ValueError("localization embeddings are the BiLSTM outputs (2 x hidden): set hidden, not "
                             "embedding_dim")
        return self

    def architecture(self, manifest: dict, modalities: list[str], modality_heads: str = "fusion") -> dict[str, Any]:
        """The JSON-able localization model description, from the shards' manifest."""
        return {"task": "localization", "modalities": {m: manifest["modalities"][m]["shape"] for m in modalities},
                "num_classes": manifest["num_classes"], "hidden": self.hidden, "attention_dim": self.attention_dim,
                "fusion": self.fusion, "dmrn_blocks": self.dmrn_blocks, "modality_heads": modality_heads}


@component("train.localization", params=TrainLocalizationParams, version="3", inputs={"train": "shards"},
           outputs={"model": "model"}, distributed=True)
def train_localization(ctx: StepContext, params: TrainLocalizationParams) -> dict:
    """Train an AVEL event-localization model (per-segment labels) on Ray Train workers."""
    from mmflow.engine import InputDataError

    from ..data.shards import load_manifest
    from .classification import train_model

    if load_manifest(ctx.inputs["train"]).get("background") is None:
        raise InputDataError(f"{ctx.inputs['train']}: these shards have no per-segment labels "
                             "(use data.synthetic_events or data.ave_features)")
    return train_model(ctx, params, "localization")


class EvalLocalizationParams(Params):
    """Evaluation settings."""

    batch_size: int = Field(64, ge=1, description="videos per inference batch")
    probe_steps: int = Field(300, ge=1, description="full-batch Adam steps of each modality's linear probe")


@component("eval.localization", params=EvalLocalizationParams,
           inputs={"model": "model", "train": "shards", "test": "shards"}, outputs={"metrics": "metrics"})
def eval_localization(ctx: StepContext, params: EvalLocalizationParams) -> dict:
    """Per-segment test accuracy (background included, the published metric), event-only and per-class
    accuracy, the confusion matrix, and each modality's accuracy from a linear probe on its embeddings."""
    import json

    from .localization_eval import evaluate_localization

    metrics = evaluate_localization(ctx.inputs["model"], ctx.inputs["train"], ctx.inputs["test"],
                                    params.batch_size, params.probe_steps, ctx.seed)
    ctx.output("metrics").write_text(json.dumps(metrics, indent=2))
    ctx.log(", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("accuracy", "event_accuracy"))))
    return metrics
