"""`train.localization` and `eval.localization`: audio-visual event localization (AVEL) per segment.

Training runs the shared multimodal loop with segments as samples, by default with
cross-entropy on each segment's logits over the events plus background. The original AVEL code
instead applies a softmax and then a multi-label soft-margin loss against one-hot targets
(`loss: avel_margin`): the softmax squashes its inputs into [0, 1], so the loss saturates and
its gradients are small; cross-entropy is also what PMR's prototype terms are defined against.
"""

from __future__ import annotations

from pydantic import Field

from mmflow.engine import Maybe, Params, StepContext, component

from .training_params import TrainLocalizationParams


@component("train.localization", params=TrainLocalizationParams, version="7", inputs={"train": "shards"},
           outputs={"model": "model", "cost": "metrics"}, distributed=True, headline=("loss", "train_accuracy"),
           seeds="each")
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


@component("eval.localization", params=EvalLocalizationParams, version="2",
           inputs={"model": "model", "train": "shards", "test": "shards", "cost": Maybe("metrics")},
           outputs={"metrics": "metrics"}, headline=("accuracy", "event_accuracy", "accuracy_*_probe"))
def eval_localization(ctx: StepContext, params: EvalLocalizationParams) -> dict:
    """Per-segment test accuracy (background included, the published metric), event-only and per-class
    accuracy, the confusion matrix, each modality's accuracy from a linear probe on its embeddings, the model's
    cost, and with `cost` wired to its training step's, what training it cost (for the comparison table)."""
    import json

    from .localization_eval import evaluate_localization
    from .model_cost import wired_training_cost

    metrics = evaluate_localization(ctx.inputs["model"], ctx.inputs["train"], ctx.inputs["test"],
                                    params.batch_size, params.probe_steps, ctx.seed)
    metrics.update(wired_training_cost(ctx.inputs))
    ctx.output("metrics").write_text(json.dumps(metrics, indent=2))
    ctx.log(", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("accuracy", "event_accuracy"))))
    return metrics
