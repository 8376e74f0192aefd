"""`train.classifier` and `eval.classifier`: multimodal classification on sharded data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mmflow.engine import Maybe, Params, StepContext, component

from ..balance.config import GBlendParams, MethodParams, NaiveParams, OGMGEParams


class ClassifierParams(Params):
    """Model, optimizer and batching of a multimodal classifier (shared by training and G-Blend probes)."""

    batch_size: int = Field(64, ge=1, description="samples per batch on each worker")
    encoder: Literal["mlp", "cnn", "resnet18"] = Field(
        "mlp", description="mlp for vectors; cnn (4 conv layers) for images; resnet18 for spectrograms and frames")
    hidden: list[int] = Field(default_factory=lambda: [128], description="MLP encoder hidden widths")
    embedding_dim: int | None = Field(None, ge=1, description="each modality's embedding size (fusion input); "
                                      "null: 512 for resnet18 (its only size), 64 otherwise")
    fusion: Literal["concat", "sum", "film", "gated", "mmtm", "centralnet"] = Field(
        "concat", description="late: concat, sum, film, gated; intermediate (encoder: cnn or resnet18): mmtm, centralnet")
    optimizer: Literal["sgd", "adam", "adagrad"] = Field("sgd", description="optimizer")
    lr: float = Field(0.05, gt=0, description="learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0, description="L2 weight decay")
    grad_clip_norm: float | None = Field(None, gt=0, description="clip the global gradient norm to this (null: no clipping)")
    shuffle_buffer: int = Field(1000, ge=1, description="webdataset sample shuffle buffer")
    loader_workers: int = Field(0, ge=0, le=64, description="processes decoding samples for each training worker "
                                "(media shards; count them in cpus_per_worker); 0: in the training process")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="a truncated or corrupt shard stops the step naming it, or is skipped and counted "
        "(corrupt_shard_reads; ranks stay even by padding)")
    verify_shards: Literal["once", "every_epoch"] = Field(
        "once", description="check each shard against the SHA-256 in its manifest before a worker first reads it, "
        "or before every epoch (for shards that may change during training)")

    @model_validator(mode="after")
    def _fits_encoder(self) -> "ClassifierParams":
        if self.fusion in ("mmtm", "centralnet") and self.encoder == "mlp":
            raise ValueError(f"fusion '{self.fusion}' works inside staged encoders: set encoder: cnn or resnet18")
        if self.encoder == "resnet18" and self.embedding_dim not in (None, 512):
            raise ValueError("encoder resnet18 gives 512-d embeddings: leave embedding_dim out or set it to 512")
        return self

    def architecture(self, manifest: dict, modalities: list[str], modality_heads: str = "fusion") -> dict[str, Any]:
        """The JSON-able model description for `build_classifier`, from the shards' manifest."""
        return {"modalities": {m: manifest["modalities"][m]["shape"] for m in modalities},
                "num_classes": manifest["num_classes"], "encoder": self.encoder, "hidden": self.hidden,
                "embedding_dim": self.embedding_dim or (512 if self.encoder == "resnet18" else 64),
                "fusion": self.fusion, "modality_heads": modality_heads}


class TrainClassifierParams(ClassifierParams):
    """Model, optimizer, schedule and balancing method of a multimodal classifier."""

    epochs: int = Field(10, ge=1, description="passes over the training shards")
    method: MethodParams = Field(default_factory=NaiveParams,
                                 description="balancing method: naive, unimodal, pmr, ogm_ge, modality_dropout, "
                                 "aux_loss, gblend")
    lr_schedule: Literal["constant", "step", "cosine"] = Field("constant", description="learning-rate schedule")
    lr_step_size: int = Field(10, ge=1, description="epochs between decays (step schedule)")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="decay factor (step schedule)")
    uneven_shards: Literal["pad", "drop"] = Field(
        "pad", description="when shards don't split evenly over workers: repeat samples or drop them"
    )
    diagnostics: bool = Field(True, description="per-epoch head/prototype accuracy, rho and gradient angles")
    diagnostic_fraction: float = Field(0.1, gt=0, le=1, description="share of batches for diagnostic prototypes")
    angle_batches: int = Field(2, ge=0, description="batches per epoch for the gradient-angle diagnostic")

    @model_validator(mode="after")
    def _fits_method(self) -> "TrainClassifierParams":
        if isinstance(self.method, OGMGEParams) and self.method.parameters == "conv" and self.encoder == "mlp":
            raise ValueError("method ogm_ge with parameters: conv modulates convolution kernels, which mlp "
                             "encoders do not have: use parameters: weights")
        if isinstance(self.method, GBlendParams) and self.method.unsupported_fusion(self.fusion):
            raise ValueError(self.method.unsupported_fusion(self.fusion))
        return self


def _check_blend_weights(params: TrainClassifierParams, wired: set[str]) -> list[tuple[tuple[str, ...], str]]:
    """G-Blend offline needs weights from exactly one place; the weights input is only for it."""
    method = params.method
    offline = isinstance(method, GBlendParams) and method.mode == "offline"
    if "weights" in wired and not offline:
        return [(("inputs", "weights"), "only method gblend (mode: offline) takes blend weights")]
    if offline and "weights" in wired and method.weights is not None:
        return [(("params", "method", "weights"), "weights are given twice: here and through inputs.weights")]
    if offline and "weights" not in wired and method.weights is None:
        return [(("params", "method"), "method gblend (offline) needs weights: give method.weights or wire "
                 "inputs.weights to a gblend.estimate step")]
    return []


@component("train.classifier", params=TrainClassifierParams, version="3",
           inputs={"train": "shards", "weights": Maybe("gblend_weights")},
           outputs={"model": "model"}, distributed=True, check=_check_blend_weights)
def train_classifier(ctx: StepContext, params: TrainClassifierParams) -> dict:
    """Train a multimodal classifier (encoders, fusion, balancing method) on Ray Train workers."""
    import json

    if "weights" in ctx.inputs:  # offline G-Blend: the estimate step's weights
        estimate = json.loads(ctx.inputs["weights"].read_text())
        params = params.model_copy(update={"method": params.method.model_copy(update={"weights": estimate["weights"]})})
    online_probes = isinstance(params.method, GBlendParams) and params.method.mode == "online"
    return train_model(ctx, params, "classification", parallel_tasks=len(_modalities(ctx)) + 1 if online_probes else 0)


def train_model(ctx: StepContext, params: TrainClassifierParams, task: str, parallel_tasks: int = 0) -> dict:
    """Run the shared training loop for `task` on the step's `train` shards; keep the model; return metrics."""
    from ..models.build import copy_model
    from .classifier_training import train_worker

    config = {"params": params.model_dump(), "train": str(ctx.inputs["train"].resolve()), "task": task}
    result = ctx.train(train_worker, config, parallel_tasks=parallel_tasks)  # a checkpoint every epoch
    copy_model(result.checkpoint, ctx.output("model"))
    final = result.history[-1]
    return {**{k: v for k, v in final.items() if k != "epoch"}, "epochs": len(result.history),
            "history": result.history}


def _modalities(ctx: StepContext) -> list[str]:
    from ..data.shards import load_manifest

    return list(load_manifest(ctx.inputs["train"])["modalities"])


class EvalClassifierParams(Params):
    """Evaluation settings."""

    batch_size: int = Field(512, ge=1, description="samples per inference batch")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="a truncated or corrupt shard stops the step naming it, or is skipped and counted "
        "(corrupt_shard_reads); each readable sample is scored once (test_samples, unreadable_test_samples)")


@component("eval.classifier", params=EvalClassifierParams, version="2",
           inputs={"model": "model", "train": "shards", "test": "shards"}, outputs={"metrics": "metrics"})
def eval_classifier(ctx: StepContext, params: EvalClassifierParams) -> dict:
    """Test accuracy of the fused output, of each modality's head and of each modality's train-set prototypes."""
    import json

    from .classifier_training import evaluate

    metrics = evaluate(ctx.inputs["model"], ctx.inputs["train"], ctx.inputs["test"], params.batch_size,
                       params.on_error)
    ctx.output("metrics").write_text(json.dumps(metrics, indent=2))
    ctx.log(", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("accuracy")))
    return metrics
