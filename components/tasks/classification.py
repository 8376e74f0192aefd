"""`train.classifier` and `eval.classifier`: multimodal classification on sharded data."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, field_validator

from mmflow.engine import Many, Maybe, Params, StepContext, component

from .training_params import TrainClassifierParams


def _check_inputs(params: TrainClassifierParams, wired: set[str]) -> list[tuple[tuple[str, ...], str]]:
    """The method's inputs: blend weights for offline G-Blend, teachers for a method that learns from them."""
    return _check_teachers(params, wired) + _check_blend_weights(params, wired)


def _check_teachers(params: TrainClassifierParams, wired: set[str]) -> list[tuple[tuple[str, ...], str]]:
    from ..balance.base import METHODS

    takes = METHODS.of(params.method).target.takes_teachers
    if "teachers" in wired and not takes:
        return [(("inputs", "teachers"), f"method {params.method.name} takes no teachers")]
    if takes and "teachers" not in wired:
        return [(("params", "method"), f"method {params.method.name} learns from a uni-modal model per modality: "
                 "wire inputs.teachers to train.classifier steps with method unimodal")]
    return []


def _check_blend_weights(params: TrainClassifierParams, wired: set[str]) -> list[tuple[tuple[str, ...], str]]:
    """G-Blend offline needs weights from exactly one place; the weights input is only for it."""
    method = params.method
    offline = method.name == "gblend" and method.mode == "offline"
    if "weights" in wired and not offline:
        return [(("inputs", "weights"), "only method gblend (mode: offline) takes blend weights")]
    if offline and "weights" in wired and method.weights is not None:
        return [(("params", "method", "weights"), "weights are given twice: here and through inputs.weights")]
    if offline and "weights" not in wired and method.weights is None:
        return [(("params", "method"), "method gblend (offline) needs weights: give method.weights or wire "
                 "inputs.weights to a gblend.estimate step")]
    return []


@component("train.classifier", params=TrainClassifierParams, version="7",
           inputs={"train": "shards", "weights": Maybe("gblend_weights"), "teachers": Many("model", optional=True)},
           outputs={"model": "model", "cost": "metrics"}, distributed=True, check=_check_inputs,
           headline=("loss", "train_accuracy"), seeds="each")
def train_classifier(ctx: StepContext, params: TrainClassifierParams) -> dict:
    """Train a multimodal classifier (encoders, fusion, balancing method) on Ray Train workers."""
    if "weights" in ctx.inputs:  # offline G-Blend: the estimate step's weights
        estimate = json.loads(ctx.inputs["weights"].read_text())
        params = params.model_copy(update={"method": params.method.model_copy(update={"weights": estimate["weights"]})})
    return train_model(ctx, params, "classification")


def train_model(ctx: StepContext, params: TrainClassifierParams, problem: str) -> dict:
    """Run the shared training loop for `problem` on the step's `train` shards; keep the model, and apart from it
    (its bytes stay the same from one training to the next) what training it cost; return metrics."""
    from ..balance.base import build_method
    from ..data.shards import load_manifest
    from ..models.build import copy_model
    from .model_cost import training_cost
    from .problems import PROBLEMS
    from .training_loop import train_worker

    modalities = list(load_manifest(ctx.inputs["train"])["modalities"])
    method = build_method(params.method, modalities, PROBLEMS[problem].fusion(params), ctx.seed)
    config = {"params": params.model_dump(), "train": str(ctx.inputs["train"].resolve()), "problem": problem,
              "teachers": [str(path.resolve()) for path in ctx.inputs.get("teachers", [])]}
    result = ctx.train(train_worker, config, parallel_tasks=method.needs.parallel_tasks)  # a checkpoint every epoch
    copy_model(result.checkpoint, ctx.output("model"))
    ctx.output("cost").write_text(json.dumps(training_cost(result.history)))
    final = result.history[-1]
    return {**{k: v for k, v in final.items() if k != "epoch"}, "epochs": len(result.history),
            "history": result.history}


class EvalClassifierParams(Params):
    """Evaluation settings."""

    batch_size: int = Field(512, ge=1, description="samples per inference batch")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="a truncated or corrupt shard stops the step naming it, or is skipped and counted "
        "(corrupt_shard_reads); each readable sample is scored once (test_samples, unreadable_test_samples)")
    contribution: bool = Field(
        True, description="score every subset of modalities, the others' inputs zeroed "
        "(subset_accuracy_<a>_and_<b>), and each modality's exact Shapley contribution to accuracy, overall and per "
        "class (contribution_<m>, contribution_<m>_class_<c>): 2^k forward passes per test batch")
    probe_steps: int = Field(300, ge=0, description="full-batch Adam steps of each modality's linear probe on its "
                             "frozen train embeddings, scored on test (accuracy_<m>_probe; 0: no probes)")
    noise_levels: list[float] = Field(
        default_factory=lambda: [i / 10 for i in range(11)],
        description="levels of MultiBench's test-time noise on one modality at a time (Gaussian at the level times "
        "each sample's spread, then that share of entries dropped; 0 to 1 by 0.1 as MultiBench): the fused accuracy "
        "at each (the curve accuracy_under_noise/<m>) and its area (relative_robustness_<m>); a forward pass per "
        "level and modality per test batch; []: none")

    @field_validator("noise_levels")
    @classmethod
    def _levels_from_clean(cls, levels: list[float]) -> list[float]:
        if levels and (levels[0] != 0 or any(b <= a for a, b in zip(levels, levels[1:])) or levels[-1] > 1):
            raise ValueError("noise levels rise from 0 (the clean accuracy) to at most 1, e.g. [0, 0.5, 1]")
        return levels


@component("eval.classifier", params=EvalClassifierParams, version="4",
           inputs={"model": "model", "train": "shards", "test": "shards", "cost": Maybe("metrics")},
           outputs={"metrics": "metrics"},
           headline=("accuracy", "accuracy_*_head"))
def eval_classifier(ctx: StepContext, params: EvalClassifierParams) -> dict:
    """Test accuracy, macro-F1 and confusion of the fused output and of each modality's head, train-set prototypes
    and linear probe; each modality's Shapley contribution and robustness to noise; the model's cost, and with
    `cost` wired to its training step's, what training it cost (for the comparison table)."""
    from .classifier_eval import evaluate
    from .model_cost import wired_training_cost

    metrics = evaluate(ctx.inputs["model"], ctx.inputs["train"], ctx.inputs["test"], params.batch_size,
                       params.on_error, params.contribution, params.probe_steps, params.noise_levels, ctx.seed)
    metrics.update(wired_training_cost(ctx.inputs))
    ctx.output("metrics").write_text(json.dumps(metrics, indent=2))
    shown = [k for k, v in metrics.items() if isinstance(v, float) and (
        k.startswith(("accuracy", "relative_robustness")) or (k.startswith("contribution_") and "_class_" not in k))]
    ctx.log(", ".join(f"{k}={metrics[k]:.4f}" for k in shown))
    return metrics
