"""`train.classifier` and `eval.classifier`: multimodal classification on sharded data."""

from __future__ import annotations

import shutil
from typing import Literal

from pydantic import Field, model_validator

from mmflow.engine import Params, StepContext, component

from ..balance.config import MethodParams, NaiveParams, OGMGEParams


class TrainClassifierParams(Params):
    """Model, optimizer and schedule of a multimodal classifier."""

    epochs: int = Field(10, ge=1, description="passes over the training shards")
    batch_size: int = Field(64, ge=1, description="samples per batch on each worker")
    encoder: Literal["mlp", "cnn"] = Field("mlp", description="mlp for vectors; cnn (4 conv layers) for images")
    hidden: list[int] = Field(default_factory=lambda: [128], description="MLP encoder hidden widths")
    embedding_dim: int = Field(64, ge=1, description="each modality's embedding size (fusion input)")
    fusion: Literal["concat", "sum", "film", "gated", "mmtm", "centralnet"] = Field(
        "concat", description="late: concat, sum, film, gated; intermediate (encoder: cnn): mmtm, centralnet")
    method: MethodParams = Field(default_factory=NaiveParams,
                                 description="balancing method: naive, unimodal, pmr, ogm_ge, modality_dropout, aux_loss")
    optimizer: Literal["sgd", "adam", "adagrad"] = Field("sgd", description="optimizer")
    lr: float = Field(0.05, gt=0, description="learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0, description="L2 weight decay")
    grad_clip_norm: float | None = Field(None, gt=0, description="clip the global gradient norm to this (null: no clipping)")
    lr_schedule: Literal["constant", "step", "cosine"] = Field("constant", description="learning-rate schedule")
    lr_step_size: int = Field(10, ge=1, description="epochs between decays (step schedule)")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="decay factor (step schedule)")
    shuffle_buffer: int = Field(1000, ge=1, description="webdataset sample shuffle buffer")
    uneven_shards: Literal["pad", "drop"] = Field(
        "pad", description="when shards don't split evenly over workers: repeat samples or drop them"
    )
    diagnostics: bool = Field(True, description="per-epoch head/prototype accuracy, rho and gradient angles")
    diagnostic_fraction: float = Field(0.1, gt=0, le=1, description="share of batches for diagnostic prototypes")
    angle_batches: int = Field(2, ge=0, description="batches per epoch for the gradient-angle diagnostic")

    @model_validator(mode="after")
    def _fits_encoder(self) -> "TrainClassifierParams":
        if self.fusion in ("mmtm", "centralnet") and self.encoder != "cnn":
            raise ValueError(f"fusion '{self.fusion}' works inside staged encoders: set encoder: cnn")
        if isinstance(self.method, OGMGEParams) and self.method.parameters == "conv" and self.encoder != "cnn":
            raise ValueError("method ogm_ge with parameters: conv modulates convolution kernels, which mlp "
                             "encoders do not have: use parameters: weights")
        return self


@component("train.classifier", params=TrainClassifierParams, inputs={"train": "shards"},
           outputs={"model": "model"}, distributed=True)
def train_classifier(ctx: StepContext, params: TrainClassifierParams) -> dict:
    """Train a multimodal classifier (encoders, fusion, balancing method) on Ray Train workers."""
    from .classifier_training import train_worker

    config = {"params": params.model_dump(), "train": str(ctx.inputs["train"].resolve())}
    result = ctx.train(train_worker, config)
    if result.checkpoint is None or not result.history:
        raise RuntimeError("training reported no checkpoint")
    shutil.copytree(result.checkpoint, ctx.output("model"))
    final = result.history[-1]
    return {**{k: v for k, v in final.items() if k != "epoch"}, "epochs": len(result.history),
            "history": result.history}


class EvalClassifierParams(Params):
    """Evaluation settings."""

    batch_size: int = Field(512, ge=1, description="samples per inference batch")


@component("eval.classifier", params=EvalClassifierParams,
           inputs={"model": "model", "train": "shards", "test": "shards"}, outputs={"metrics": "metrics"})
def eval_classifier(ctx: StepContext, params: EvalClassifierParams) -> dict:
    """Test accuracy of the fused output, of each modality's head and of each modality's train-set prototypes."""
    import json

    from .classifier_training import evaluate

    metrics = evaluate(ctx.inputs["model"], ctx.inputs["train"], ctx.inputs["test"], params.batch_size)
    ctx.output("metrics").write_text(json.dumps(metrics, indent=2))
    ctx.log(", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("accuracy")))
    return metrics
